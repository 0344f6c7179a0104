//! Helpers shared by the end-to-end tests under `tests/tests/`: finding out
//! whether this machine can run a test (and saying why not), and starting
//! the project's daemons in-process.
//!
//! A test that cannot run here prints `SKIPPED: <reason>` and returns; it
//! never pretends to pass by doing less.
#![warn(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is the test failing

pub mod arp;
pub mod desktop_guest;
pub mod etcd;
pub mod keys;
pub mod netns;
pub mod office;
pub mod screen;
pub mod spice;
pub mod vmnet;
pub mod xvfb;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use image_server::{ServeConfig, StopHandle};
use qemu_driver::GuestImage;
use wire::{Hello, NoWake, RemoteConfig, Service};

pub use keys::TestKeys;

/// Generous bound on a TCG boot on a shared 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on waiting for a running guest to count further.
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(90);

/// Bound on one `jettison` command in a test: the longest a command waits
/// for is a reintegration or a guest's ACPI shutdown (`--timeout`, 120 s by
/// default). Not a speed figure: it turns a command that hangs into a
/// failure that says so, instead of a test run that never ends.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// Runs `command` to its end, its output captured, as
/// [`Command::output`] does, but kills it if it runs past `limit`.
///
/// # Errors
/// A text naming the command, when it cannot start or ran too long (its
/// output so far included).
pub fn output_within(command: &mut Command, limit: Duration) -> Result<std::process::Output, String> {
    use std::io::Read;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait().map_err(|e| format!("cannot wait for {command:?}: {e}"))? {
            Some(status) => break status,
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let said = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
                return Err(format!("{command:?} was still running after {limit:?}: killed; it said: {said}"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(std::process::Output { status, stdout, stderr })
}

/// Whether process `pid` runs under a seccomp filter (`Seccomp: 2` in its
/// `/proc/<pid>/status`), as QEMU's `-sandbox on` puts it.
pub fn runs_under_seccomp_filter(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|status| status.lines().any(|l| l.split_whitespace().eq(["Seccomp:", "2"])))
}

/// The kilobytes of the line `field:` of a `/proc/<pid>/status` or
/// `smaps_rollup` text (`VmRSS:   1234 kB`); None without that field.
pub fn proc_kib(text: &str, field: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The real user id of process `pid` (the first field of the `Uid:` line
/// of its `/proc/<pid>/status`), if it runs.
pub fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The unprivileged user the office's daemons have QEMU drop to
/// (`qemu_user`), as the packaged configurations do.
pub const QEMU_USER: &str = "jettison-qemu";

/// Panics unless process `pid`, the QEMU on `host`, runs as [`QEMU_USER`]
/// (read from its `/proc/<pid>/status`), which is not root.
pub fn assert_runs_as_qemu_user(pid: u32, host: &str) {
    let uid = process_uid(pid);
    assert_ne!(uid, Some(0), "the {host}'s QEMU (pid {pid}) runs as root");
    let expected = qemu_driver::QemuUser::lookup(QEMU_USER).map(|user| user.uid()).ok();
    assert!(expected.is_some(), "no user {QEMU_USER}");
    assert_eq!(uid, expected, "the {host}'s QEMU (pid {pid}) runs as uid {uid:?}, not as {QEMU_USER}");
}

/// `Ok` if [`QEMU_USER`] is an unprivileged user of this host, else the
/// reason and what makes it.
pub fn qemu_user_available() -> Result<(), String> {
    qemu_driver::QemuUser::lookup(QEMU_USER).map(drop).map_err(|e| format!("{e} (scripts/test makes it)"))
}

/// Says why a test cannot run on this machine and lets it pass: on stderr,
/// and, because the test harness hides the output of tests that pass, also
/// as a line appended to the file named by `JETTISON_SKIP_LOG` (which
/// `scripts/test` sets and prints).
///
/// Under CI (`CI` set, as `.ci/run` is run) the machine has everything the
/// suite needs, because `scripts/test` installs it: a skip there would be a
/// test passing without running, so this fails the test instead. Only
/// [`skip_absent_here`] skips under CI too.
///
/// # Panics
/// Under CI, always.
pub fn skip(reason: impl std::fmt::Display) {
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} would be skipped, but under CI the machine must have what it needs: {reason}",
            std::thread::current().name().unwrap_or("a test")
        );
    }
    note_skip(reason);
}

/// Like [`skip`], also under CI: for what no machine of this project's kind
/// can have (a kernel module the kernel lacks, systemd as PID 1), never
/// for anything a package install gives.
pub fn skip_absent_here(reason: impl std::fmt::Display) {
    note_skip(reason);
}

fn note_skip(reason: impl std::fmt::Display) {
    let line = format!("SKIPPED: {}: {reason}", std::thread::current().name().unwrap_or("a test"));
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("JETTISON_SKIP_LOG") {
        use std::io::Write;
        let appended =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("cannot note the skip in {}: {e}", PathBuf::from(path).display());
        }
    }
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The test guest, built if needed, or the reason this machine cannot run
/// a QEMU guest (no TCG QEMU, no way to build the image).
pub fn guest() -> Result<GuestImage, String> {
    match Command::new("qemu-system-x86_64").args(["-accel", "help"]).output() {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("tcg") => {}
        Ok(_) => return Err("qemu-system-x86_64 has no TCG accelerator".into()),
        Err(e) => return Err(format!("qemu-system-x86_64 not runnable ({e}); run scripts/install-deps")),
    }
    GuestImage::build(&repo_root()).map_err(|e| format!("no test guest image: {e}"))
}

/// A copy of the test guest's boot disk under `dir` (`vm-disk.raw` or
/// `vm-disk.qcow2`, as `format` says) whose bootloader passes `args` and
/// whose FAT partition also holds `files` (name, one line of text each).
/// `qcow2-backed` makes `vm-disk.qcow2` an empty overlay over
/// [`BACKING_IMAGE`], which holds the content, as a user's qcow2 over a
/// base image is.
///
/// # Errors
/// Why it cannot be made (the script or mtools failed).
pub fn boot_disk(dir: &Path, args: &str, files: &[(&str, &str)], format: &str) -> Result<PathBuf, String> {
    let raw = dir.join("vm-disk.raw");
    let script = repo_root().join("scripts/guest-image");
    run(Command::new(&script).arg("--disk").arg(&raw).args(["--args", args]))?;
    for (name, text) in files {
        let file = dir.join(name);
        std::fs::write(&file, format!("{text}\n")).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        // The FAT partition starts at 1 MiB (see scripts/guest-image).
        let image = format!("{}@@1M", raw.display());
        run(Command::new("mcopy").args(["-o", "-i", &image]).arg(&file).arg(format!("::{name}")))?;
    }
    if format == "raw" {
        return Ok(raw);
    }
    let backed = format == "qcow2-backed";
    let format = if backed { "qcow2" } else { format };
    let converted = dir.join(if backed { BACKING_IMAGE.to_owned() } else { format!("vm-disk.{format}") });
    run(Command::new("qemu-img").args(["convert", "-q", "-f", "raw", "-O", format]).arg(&raw).arg(&converted))?;
    std::fs::remove_file(&raw).map_err(|e| format!("cannot remove {}: {e}", raw.display()))?;
    if !backed {
        return Ok(converted);
    }
    let top = dir.join("vm-disk.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(&converted).arg(&top))?;
    Ok(top)
}

/// A qcow2 copy of the Debian desktop guest's disk (`vm-disk.qcow2` under
/// `dir`) whose kernel command line ends with `args`, made by
/// `scripts/desktop-guest-image --disk` (which builds the guest first if
/// `.cache/desktop-guest` lacks it: about 10 minutes, as root).
///
/// # Errors
/// Why it cannot be made: no TCG QEMU, or the script failed (its output).
pub fn desktop_guest_disk(dir: &Path, args: &str) -> Result<PathBuf, String> {
    guest()?;
    let disk = dir.join("vm-disk.qcow2");
    let script = repo_root().join("scripts/desktop-guest-image");
    run(Command::new(&script).arg("--disk").arg(&disk).args(["--args", args]))?;
    Ok(disk)
}

/// The backing file of a `qcow2-backed` [`boot_disk`], in its directory.
pub const BACKING_IMAGE: &str = "vm-disk-base.qcow2";

/// Runs `command`; its output in the error if it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// An ext4 image of `mib` MiB under `dir` holding `files` (name, one line
/// of text each), made with `mkfs.ext4 -d`; or why it cannot be made.
pub fn ext4_image(dir: &Path, files: &[(&str, &str)], mib: u64) -> Result<PathBuf, String> {
    let content = dir.join("disk-content");
    std::fs::create_dir_all(&content).map_err(|e| format!("cannot create {}: {e}", content.display()))?;
    for (name, text) in files {
        std::fs::write(content.join(name), format!("{text}\n")).map_err(|e| format!("cannot write {name}: {e}"))?;
    }
    let image = dir.join("disk.img");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&image)
        .arg(format!("{mib}M"))
        .output()
        .map_err(|e| format!("mkfs.ext4 not runnable ({e}): apt-get install e2fsprogs"))?;
    if !out.status.success() {
        return Err(format!("mkfs.ext4 failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(image)
}

/// The contents of `path` inside the ext4 image `image`, read with debugfs.
pub fn file_in_image(image: &Path, path: &str) -> String {
    let out = Command::new("debugfs").arg("-R").arg(format!("cat {path}")).arg(image).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `jettison` binary of this build profile, built by cargo first (a
/// test cannot name another crate's binary with `CARGO_BIN_EXE_`).
pub fn jettison_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_jettison).clone()
}

fn build_jettison() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<a test>, target/<profile>/examples/<an example>
    // or target/<profile>/<a binary>: the profile directory is the one
    // whose parent is the target directory (which holds CACHEDIR.TAG).
    let profile_dir = exe
        .ancestors()
        .find(|dir| dir.parent().is_some_and(|target| target.join("CACHEDIR.TAG").exists()))
        .expect("the running binary is under target/<profile>/");
    let target_dir = profile_dir.parent().expect("a profile directory is under the target directory");
    let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cargo
        .args(["build", "--quiet", "-p", "jettison-cli", "--bin", "jettison"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(repo_root());
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        cargo.arg("--release");
    }
    assert!(cargo.status().expect("cargo runs").success(), "building the jettison binary failed");
    profile_dir.join("jettison")
}

/// Bytes of `files` in the page cache, as util-linux's `fincore` counts them.
///
/// # Panics
/// If `fincore` does not run.
pub fn page_cache_bytes(files: &[PathBuf]) -> u64 {
    if files.is_empty() {
        return 0;
    }
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .args(files)
        .output()
        .expect("fincore (util-linux) runs");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse::<u64>().ok()).sum()
}

/// `Ok` if a FUSE filesystem can be mounted here, else the reason.
pub fn fuse_available() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("mounting FUSE here needs root".into());
    }
    let on_path =
        |bin: &str| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()));
    if !on_path("fusermount3") && !on_path("fusermount") {
        return Err("fusermount3 is not installed (apt-get install fuse3)".into());
    }
    Ok(())
}

/// A desktop daemon (memserv or diskserv) running on a thread of the test
/// process; stopped on drop.
#[derive(Debug)]
pub struct DesktopServer {
    /// The address it listens on.
    pub addr: String,
    service: Service,
    stop: StopHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DesktopServer {
    /// memserv serving `ram` as export `vm` on `listen` (port 0 for any).
    pub fn memserv(ram: &Path, vm: &str, keys: &TestKeys, listen: &str) -> DesktopServer {
        Self::memserv_with(ram, serve_config(Service::Memory, vm, keys, listen))
    }

    /// memserv serving `ram` as `config` says (an event socket, say).
    pub fn memserv_with(ram: &Path, config: ServeConfig) -> DesktopServer {
        Self::run(memserv::bind(ram, config).unwrap(), Service::Memory)
    }

    /// diskserv serving `image` in `block_size` blocks as export `vm` on
    /// `listen` (port 0 for any).
    pub fn diskserv(image: &Path, vm: &str, keys: &TestKeys, listen: &str, block_size: u32) -> DesktopServer {
        Self::diskserv_with(image, serve_config(Service::Disk, vm, keys, listen), block_size)
    }

    /// diskserv serving `image` in `block_size` blocks as `config` says.
    pub fn diskserv_with(image: &Path, config: ServeConfig, block_size: u32) -> DesktopServer {
        Self::run(diskserv::bind(image, config, block_size).unwrap(), Service::Disk)
    }

    /// diskserv serving `image` as `config` says and each of `more` (an
    /// export name and an image) beside it on the same port, as a VM's
    /// further disks are.
    pub fn diskserv_disks(
        image: &Path,
        more: &[(String, &Path)],
        config: ServeConfig,
        block_size: u32,
    ) -> DesktopServer {
        let mut server = diskserv::bind(image, config, block_size).unwrap();
        for (name, image) in more {
            diskserv::add_disk(&mut server, name.clone(), image, block_size).unwrap();
        }
        Self::run(server, Service::Disk)
    }

    fn run(server: image_server::Server, service: Service) -> DesktopServer {
        let addr = server.local_addr().unwrap().to_string();
        let stop = server.stop_handle();
        let thread = Some(std::thread::spawn(move || server.run().unwrap()));
        DesktopServer { addr, service, stop, thread }
    }

    /// How the server side (`keys`' server) reaches this daemon for `vm`,
    /// with short retry pauses.
    pub fn remote(&self, vm: &str, keys: &TestKeys) -> RemoteConfig {
        let hello = Hello::new(self.service, vm);
        let mut remote = RemoteConfig::new(&self.addr, keys.server(), hello);
        remote.peer = Some(keys::DESKTOP_NAME.parse().expect("a valid host name"));
        remote.timeout = Duration::from_secs(5);
        remote.max_backoff = Duration::from_millis(200);
        remote
    }
}

/// How a desktop daemon (`keys`' desktop) serves export `vm` on `listen`,
/// without an event socket.
pub fn serve_config(service: Service, vm: &str, keys: &TestKeys, listen: &str) -> ServeConfig {
    ServeConfig {
        listen: listen.parse().unwrap(),
        credentials: keys.desktop(),
        service,
        export: vm.into(),
        events: None,
        fence: None,
    }
}

impl Drop for DesktopServer {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() && !std::thread::panicking() {
                panic!("the {} server's thread panicked", self.service);
            }
        }
    }
}

/// cownetdisk on threads of the test process, on a Unix socket and TCP, in
/// front of a diskserv; stopped (and flushed) on drop.
pub struct Cownetdisk {
    socket: PathBuf,
    tcp: std::net::SocketAddr,
    disk: std::sync::Arc<cownetdisk::Disk>,
    stop: cownetdisk::StopHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Cownetdisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cownetdisk").field("socket", &self.socket).field("tcp", &self.tcp).finish()
    }
}

impl Cownetdisk {
    /// Serves export `vm` of `diskserv`, keeping its slices in `state_dir`.
    pub fn start(state_dir: &Path, socket: &Path, diskserv: &DesktopServer, vm: &str, keys: &TestKeys) -> Cownetdisk {
        let config = cownetdisk::DiskConfig::new(vm, state_dir, diskserv.remote(vm, keys));
        let disk = std::sync::Arc::new(cownetdisk::Disk::open(config, std::sync::Arc::new(NoWake)).unwrap());
        let listen = cownetdisk::Listen { unix: Some(socket.to_owned()), tcp: Some("127.0.0.1:0".parse().unwrap()) };
        let server = cownetdisk::NbdServer::bind(std::sync::Arc::clone(&disk), &listen).unwrap();
        let tcp = server.tcp_addr().unwrap();
        let stop = server.stop_handle();
        let thread = Some(std::thread::spawn(move || server.run().unwrap()));
        Cownetdisk { socket: socket.to_owned(), tcp, disk, stop, thread }
    }

    /// The Unix socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `nbd+unix://` URI of the export.
    pub fn unix_uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    /// The TCP address it listens on.
    pub fn tcp_addr(&self) -> std::net::SocketAddr {
        self.tcp
    }

    /// `nbd://` URI of the export over TCP.
    pub fn tcp_uri(&self) -> String {
        format!("nbd://{}", self.tcp)
    }

    /// The disk's counters now.
    pub fn stats(&self) -> cownetdisk::DiskStats {
        self.disk.stats()
    }

    /// Stops the server and waits for it (it flushes and writes the stats).
    pub fn stop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() && !std::thread::panicking() {
                panic!("cownetdisk's thread panicked");
            }
        }
    }
}

impl Drop for Cownetdisk {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Checks `document` against `docs/status.schema.json`: the status
/// document of `jettison status --json`, or with `definition` one of the
/// schema's `$defs` (`error`: a `--json` failure).
///
/// # Panics
/// If the schema does not compile or the document does not match it, with
/// every mismatch and the document.
pub fn check_status_schema(document: &serde_json::Value, definition: Option<&str>) {
    let path = repo_root().join("docs/status.schema.json");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut compiler = boon::Compiler::new();
    let location = "status.schema.json";
    compiler.add_resource(location, schema).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let at = definition.map_or_else(|| location.to_owned(), |d| format!("{location}#/$defs/{d}"));
    let mut schemas = boon::Schemas::new();
    let index = compiler.compile(&at, &mut schemas).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    if let Err(e) = schemas.validate(document, index) {
        panic!("the document does not match {at}:\n{e}\n{document:#}");
    }
}

/// A server configuration file in `dir` for a server daemon alone on
/// loopback (no bridge, no VM will run): its own key and an empty peers
/// directory beside it, `capacity_mib` and the lines `extra` (each ending
/// in a newline). Returns the file's path.
pub fn standalone_server_config(dir: &Path, capacity_mib: u64, extra: &str) -> PathBuf {
    wire::HostKey::generate().save(&dir.join("host.key")).expect("a key file in a fresh directory");
    std::fs::create_dir(dir.join("peers")).expect("a peers directory in a fresh directory");
    let d = dir.display();
    let config = dir.join("server.toml");
    let text = format!(
        "name = \"server\"\nlisten = \"127.0.0.1:0\"\nhost_key = \"{d}/host.key\"\npeers = \"{d}/peers\"\n\
         state_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\nbridge = \"br0\"\naccel = \"tcg\"\n\
         capacity_mib = {capacity_mib}\n{extra}"
    );
    std::fs::write(&config, text).expect("the configuration can be written");
    config
}
