//! Helpers shared by the end-to-end tests under `tests/tests/`: finding out
//! whether this machine can run a test (and saying why not), and starting
//! the project's daemons in-process.
//!
//! A test that cannot run here prints `SKIPPED: <reason>` and returns; it
//! never pretends to pass by doing less.
#![warn(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is the test failing

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jettison_image_server::{ServeConfig, StopHandle};
use jettison_qemu::GuestImage;
use jettison_wire::{Hello, RemoteConfig, Service, SharedKey};

/// Generous bound on a TCG boot on a shared 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on waiting for a running guest to count further.
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(90);

/// Prints why a test is skipped.
pub fn skip(reason: impl std::fmt::Display) {
    eprintln!("SKIPPED: {reason}");
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

/// A memserv running on a thread of the test process; stopped on drop.
#[derive(Debug)]
pub struct Memserv {
    /// The address it listens on.
    pub addr: String,
    stop: StopHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Memserv {
    /// Serves `ram` as export `vm` on `listen` (use port 0 for any).
    pub fn start(ram: &Path, vm: &str, key: &SharedKey, listen: &str) -> Memserv {
        let config = ServeConfig {
            listen: listen.parse().unwrap(),
            key: key.clone(),
            service: Service::Memory,
            export: vm.into(),
            events: None,
        };
        let server = memserv::bind(ram, config).unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let stop = server.stop_handle();
        let thread = Some(std::thread::spawn(move || server.run().unwrap()));
        Memserv { addr, stop, thread }
    }

    /// How memtap reaches this memserv for `vm`, with short retry pauses.
    pub fn remote(&self, vm: &str, key: &SharedKey) -> RemoteConfig {
        let hello = Hello { service: Service::Memory, export: vm.into() };
        let mut remote = RemoteConfig::new(&self.addr, key.clone(), hello);
        remote.timeout = Duration::from_secs(5);
        remote.max_backoff = Duration::from_millis(200);
        remote
    }
}

impl Drop for Memserv {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}
