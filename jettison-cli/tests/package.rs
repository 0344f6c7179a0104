//! The Debian package as `scripts/package` makes it, from this test
//! build's own `jettison` (no release build): what it installs where, with
//! which modes, that the installed binary runs, and that lintian finds no
//! error in it. The package is built once and its files are read from a
//! scratch root made with `dpkg-deb -x`; nothing is installed on the host.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is the test failing

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// Bound on building the package (stripping, pages, compression) and on
/// lintian: each takes seconds; this turns a hang into a failure.
const LIMIT: Duration = Duration::from_secs(300);

/// The tools the package is made and checked with: dpkg-deb (dpkg),
/// dpkg-shlibdeps (dpkg-dev), lintian.
const TOOLS: [&str; 3] = ["dpkg-deb", "dpkg-shlibdeps", "lintian"];

/// A built package, the root its files were extracted into and the
/// directory its control files were.
struct Built {
    deb: PathBuf,
    root: PathBuf,
    control: PathBuf,
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The package, built and extracted once for every test here; `None`
/// (having said why) where this machine lacks a tool to make it.
fn package() -> Option<&'static Built> {
    if let Some(tool) = TOOLS.into_iter().find(|tool| !on_path(tool)) {
        tests::skip(format!("{tool} is not installed (scripts/install-deps installs it)"));
        return None;
    }
    static BUILT: OnceLock<Built> = OnceLock::new();
    Some(BUILT.get_or_init(build))
}

fn build() -> Built {
    // One directory per test process, as nextest runs each test in its own
    // process, several at once; those of processes that have ended (and
    // anything else there) are removed.
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
    for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
        if pid.is_none_or(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
    let dir = parent.join(std::process::id().to_string());
    let out = dir.join("out");
    let mut script = Command::new(tests::repo_root().join("scripts/package"));
    script.arg("--binary").arg(env!("CARGO_BIN_EXE_jettison")).arg("--out").arg(&out).args(["--compression", "gzip"]);
    let made = tests::output_within(&mut script, LIMIT).unwrap();
    assert!(made.status.success(), "scripts/package failed: {}", text(&made));
    let stdout = String::from_utf8(made.stdout).unwrap();
    let deb = PathBuf::from(stdout.lines().last().expect("scripts/package prints the package's path"));
    let arch = Command::new("dpkg").arg("--print-architecture").output().unwrap();
    let arch = String::from_utf8(arch.stdout).unwrap();
    let name = format!("jettison_{}-1_{}.deb", env!("CARGO_PKG_VERSION"), arch.trim());
    assert_eq!(deb, out.join(name), "the package's name and place");
    let root = dir.join("root");
    let extracted = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).output().unwrap();
    assert!(extracted.status.success(), "dpkg-deb -x: {}", text(&extracted));
    let control = dir.join("control");
    let extracted = Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&control).output().unwrap();
    assert!(extracted.status.success(), "dpkg-deb --control: {}", text(&extracted));
    Built { deb, root, control }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

fn field(deb: &Path, name: &str) -> String {
    let out = Command::new("dpkg-deb").arg("--field").arg(deb).arg(name).output().unwrap();
    assert!(out.status.success(), "dpkg-deb --field {name}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn package_installs_the_binary_units_configs_pages_and_completions_where_debian_looks() {
    let Some(built) = package() else { return };
    let root = &built.root;

    assert_eq!(mode(&root.join("usr/bin/jettison")), 0o755, "the binary is executable");
    assert!(!root.join("usr/local").exists(), "nothing under /usr/local");

    // Every unit of packaging/systemd/, running the package's binary.
    let units = std::fs::read_dir(tests::repo_root().join("packaging/systemd")).unwrap();
    let mut checked = 0;
    for unit in units.map(|entry| entry.unwrap().path()) {
        let installed = root.join("usr/lib/systemd/system").join(unit.file_name().unwrap());
        assert_eq!(mode(&installed), 0o644, "{}", installed.display());
        let source = std::fs::read_to_string(&unit).unwrap();
        let packaged = std::fs::read_to_string(&installed).unwrap();
        assert!(!packaged.contains("/usr/local"), "{} still names /usr/local", installed.display());
        assert_eq!(packaged, source.replace("/usr/local/bin/jettison", "/usr/bin/jettison"), "{}", installed.display());
        checked += 1;
    }
    for daemon in ["jettison-desktop.service", "jettison-server.service"] {
        let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system").join(daemon)).unwrap();
        assert!(unit.lines().any(|l| l.starts_with("ExecStart=/usr/bin/jettison ")), "{daemon}: {unit}");
    }
    assert!(checked >= 2, "packaging/systemd/ holds the units");

    // The example configurations, as conffiles.
    for config in ["desktop.toml", "server.toml"] {
        let installed = root.join("etc/jettison").join(config);
        assert_eq!(mode(&installed), 0o644);
        let source = tests::repo_root().join("packaging/config").join(config);
        assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(source).unwrap(), "{config}");
    }
    let control = &built.control;
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    let mut in_etc: Vec<String> = std::fs::read_dir(root.join("etc/jettison"))
        .unwrap()
        .map(|entry| format!("/etc/jettison/{}", entry.unwrap().file_name().to_string_lossy()))
        .collect();
    in_etc.sort();
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), in_etc, "every file under /etc is a conffile");
    for config in ["/etc/jettison/desktop.toml", "/etc/jettison/server.toml"] {
        assert!(conffiles.lines().any(|line| line == config), "{config} is no conffile: {conffiles}");
    }
    for script in ["postinst", "prerm", "postrm"] {
        assert_eq!(mode(&control.join(script)), 0o755, "{script}");
    }

    // Man pages, gzipped, one per subcommand; completions for three shells.
    for page in ["jettison.1.gz", "jettison-consolidate.1.gz", "jettison-server.1.gz"] {
        let path = root.join("usr/share/man/man1").join(page);
        assert_eq!(mode(&path), 0o644, "{page}");
        assert_eq!(std::fs::read(&path).unwrap()[..2], [0x1f, 0x8b], "{page} is gzipped");
    }
    let bash = std::fs::read_to_string(root.join("usr/share/bash-completion/completions/jettison")).unwrap();
    assert!(bash.contains("_jettison()") && bash.contains("consolidate"), "{bash}");
    for completion in
        ["usr/share/zsh/vendor-completions/_jettison", "usr/share/fish/vendor_completions.d/jettison.fish"]
    {
        assert!(std::fs::read_to_string(root.join(completion)).unwrap().contains("reintegrate"), "{completion}");
    }
    for doc in ["copyright", "changelog.Debian.gz"] {
        assert_eq!(mode(&root.join("usr/share/doc/jettison").join(doc)), 0o644, "{doc}");
    }

    // Every entry owned by root, directories 0755.
    let listing = Command::new("dpkg-deb").arg("--contents").arg(&built.deb).output().unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for line in listing.lines() {
        assert!(line.split_whitespace().nth(1) == Some("root/root"), "not root's: {line}");
        assert!(!line.starts_with('d') || line.starts_with("drwxr-xr-x"), "a directory not 0755: {line}");
    }

    assert_eq!(field(&built.deb, "Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    let depends = field(&built.deb, "Depends");
    for package in ["libc6", "qemu-system-x86", "qemu-utils", "fuse3", "iproute2"] {
        assert!(
            depends.split(", ").any(|d| d.split(' ').next() == Some(package)),
            "Depends lacks {package}: {depends}"
        );
    }
}

#[test]
fn packaged_binary_runs_and_says_its_version() {
    let Some(built) = package() else { return };
    let out = Command::new(built.root.join("usr/bin/jettison")).arg("--version").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("jettison {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn lintian_finds_no_error_in_the_package() {
    let Some(built) = package() else { return };
    let mut lintian = Command::new("lintian");
    lintian.args(["--fail-on", "error"]).arg(&built.deb);
    let out = tests::output_within(&mut lintian, LIMIT).unwrap();
    let said = text(&out);
    let errors: Vec<&str> = said.lines().filter(|line| line.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian's errors:\n{}", errors.join("\n"));
    assert!(out.status.success(), "lintian failed: {said}");
}
