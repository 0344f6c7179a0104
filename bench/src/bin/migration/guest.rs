//! The guest the benchmark moves, and the parts of a run that differ
//! between guests: its VM profile, how it boots to the checkpoint, how the
//! benchmark sees it execute on a host, what it does on the server, and how
//! it is checked once back. The methods (QEMU precopy, postcopy, Jettison)
//! are the same code for every guest.
//!
//! - **The small guest** (`--guest small`): the busybox test guest booted
//!   directly, filling part of its RAM with random data; a counter on its
//!   serial console every 0.2 s says it runs; on the server a client host
//!   tells its line service to dirty a known amount.
//! - **The desktop guest** (`--guest desktop`): the Debian desktop of
//!   `scripts/desktop-guest-image` (Xfce, Firefox ESR, qemu-ga, 2 vCPUs)
//!   booting from its qcow2 disk through SeaBIOS, with a VGA screen. Its
//!   disk is shared storage, as QEMU's live migration is usually run: one
//!   file both namespaces see (network namespaces do not isolate files),
//!   so only memory and device state cross the link. The checkpoint's disk
//!   is a qcow2 file the guest booted on; each method runs on an overlay of
//!   its own over it, so each starts from the disk the checkpoint saw. It
//!   runs because its guest agent answers a sync on the destination's
//!   channel (`qemu-ga` must execute in the guest to answer); on the server
//!   it runs `--run-secs` as an idle desktop does, and after each move the
//!   agent finds its session's programs and the screen shows the session.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use qemu_driver::{
    screendump, Boot, DiskBackend, DiskFormat, Display, GuestAgent, GuestImage, QemuProcess, Qmp, VmSpec,
};
use tests::desktop_guest::SESSION_TIMEOUT;
use tests::screen::Screenshot;
use tests::{BOOT_TIMEOUT, COUNT_TIMEOUT};

use crate::office::{CappedOffice, VM_CIDR, VM_PORT};
use crate::{BenchResult, MIGRATION_TIMEOUT, POLL};

/// The desktop guest's vCPUs, as its end-to-end test and the office give it.
const DESKTOP_VCPUS: u32 = 2;
/// The file the desktop guest boots on, in its disk directory: the
/// checkpoint's disk, the backing file of every method's overlay.
const BOOT_DISK: &str = "boot.qcow2";
/// Programs of the desktop's session that must run after every move.
const SESSION_PROGRAMS: [&str; 3] = ["Xorg", "xfce4-session", "firefox-esr"];

/// Which guest the benchmark moves (`--guest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestKind {
    /// The busybox test guest, filled with random data, dirtying a known
    /// amount on the server.
    Small,
    /// The Debian desktop guest of `scripts/desktop-guest-image`, idle in
    /// its Xfce session with Firefox, its disk on shared storage.
    Desktop,
}

/// One RAM size's guest: what its QEMUs are given.
pub enum Guest {
    /// The small test guest.
    Small {
        /// Its kernel and initramfs.
        image: GuestImage,
        /// Its `jt.*` kernel arguments (fill, network, line service).
        kernel_args: String,
    },
    /// The desktop guest.
    Desktop {
        /// [`BOOT_DISK`] and each method's overlay over it, on a file
        /// system that takes `O_DIRECT` (QEMU opens disks `cache=none`).
        disks: tempfile::TempDir,
    },
}

impl Guest {
    /// The small guest filling `fill_mib` of its RAM.
    pub fn small(image: GuestImage, fill_mib: u64) -> Guest {
        Guest::Small { image, kernel_args: format!("jt.fill={fill_mib} jt.net={VM_CIDR} jt.serve={VM_PORT}") }
    }

    /// The desktop guest, its disk a fresh qcow2 copy of
    /// `.cache/desktop-guest/disk.raw` whose kernel command line gives it
    /// the VM's address.
    ///
    /// # Errors
    /// When the copy cannot be made (the script failed, no space).
    pub fn desktop() -> BenchResult<Guest> {
        let disks = tempfile::Builder::new().prefix("jt-migration-disk-").tempdir()?;
        let disk = tests::desktop_guest_disk(disks.path(), &format!("jt.net={VM_CIDR}"))
            .map_err(|e| format!("the desktop guest's disk: {e}"))?;
        std::fs::rename(&disk, disks.path().join(BOOT_DISK))?;
        Ok(Guest::Desktop { disks })
    }

    /// The VM of method `tag` (`boot` for the checkpoint's boot) on RAM
    /// file `ram`, its QEMU's files in `run_dir`.
    pub fn spec(&self, ram: &Path, run_dir: PathBuf, tag: &str, ram_mib: u64) -> VmSpec {
        match self {
            Guest::Small { image, kernel_args } => {
                VmSpec::new(image, ram, run_dir).memory_mib(ram_mib).kernel_args(kernel_args)
            }
            Guest::Desktop { disks } => {
                let screen = Display::LocalSpice { socket: run_dir.join("spice.sock") };
                let disk = DiskBackend::Image { path: disk(disks.path(), tag), format: DiskFormat::Qcow2 };
                VmSpec::booting(Boot::Bios, ram, run_dir)
                    .memory_mib(ram_mib)
                    .vcpus(DESKTOP_VCPUS)
                    .display(screen)
                    .extra_args(disk.qemu_args())
            }
        }
    }

    /// Gives method `tag` a disk as the checkpoint left it: for the desktop
    /// guest a fresh qcow2 overlay over the boot disk (which the checkpoint
    /// flushed and no QEMU writes any more); nothing for the small guest.
    ///
    /// # Errors
    /// When `qemu-img` cannot make the overlay.
    pub fn fresh_disk(&self, tag: &str) -> BenchResult<()> {
        let Guest::Desktop { disks } = self else { return Ok(()) };
        let overlay = disk(disks.path(), tag);
        if overlay.exists() {
            std::fs::remove_file(&overlay)?;
        }
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(disks.path().join(BOOT_DISK))
            .arg(&overlay)
            .output()
            .map_err(|e| format!("qemu-img does not run ({e}): install qemu-utils"))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(format!("qemu-img create of the overlay {}: {}", overlay.display(), why.trim()).into());
        }
        Ok(())
    }

    /// Waits, after the first boot, until the guest is what the benchmark
    /// moves: the small guest has filled its RAM and counts; the desktop
    /// guest's agent answers and its screen shows the session with
    /// Firefox. Returns what it waited for, for the log.
    ///
    /// # Errors
    /// When the guest does not get there in time (with what it showed).
    pub fn wait_ready(&self, qemu: &mut QemuProcess, qmp: &mut Qmp, fill_mib: u64) -> BenchResult<String> {
        let boot = Instant::now();
        match self {
            Guest::Small { .. } => {
                qemu.wait_for_line("JTREADY", BOOT_TIMEOUT + Duration::from_secs(fill_mib / 4))?;
                let filled = boot.elapsed();
                qemu.wait_for_count_above(3, COUNT_TIMEOUT)?;
                Ok(format!("booted and filled {fill_mib} MiB in {:.1} s", filled.as_secs_f64()))
            }
            Guest::Desktop { .. } => {
                let socket = agent_socket(qemu);
                agent_within(&socket, SESSION_TIMEOUT)?;
                let agent_at = boot.elapsed();
                let shot = qemu.output_log().with_file_name("session.ppm");
                loop {
                    let screen = screen(qmp, &shot)?;
                    if screen.shows_desktop_session() {
                        break;
                    }
                    if boot.elapsed() > SESSION_TIMEOUT {
                        return Err(format!(
                            "the desktop guest's screen shows no session after {SESSION_TIMEOUT:?}: {}",
                            describe(&screen, &shot)
                        )
                        .into());
                    }
                    sleep(Duration::from_secs(10));
                }
                let mut agent = agent_within(&socket, COUNT_TIMEOUT)?;
                session_programs(&mut agent, "after the boot")?;
                Ok(format!(
                    "booted: guest agent answered at {:.1} s, the session with Firefox on the screen at {:.1} s",
                    agent_at.as_secs_f64(),
                    boot.elapsed().as_secs_f64()
                ))
            }
        }
    }

    /// The last number the small guest's counter printed on `qemu`'s
    /// console (0 for the desktop guest, whose arrival the agent tells).
    ///
    /// # Errors
    /// When the small guest never counted there.
    pub fn last_count(&self, qemu: &QemuProcess) -> BenchResult<u64> {
        match self {
            Guest::Small { .. } => {
                Ok(qemu.serial().counts()?.last().copied().ok_or("no JTCOUNT on the guest's console")?)
            }
            Guest::Desktop { .. } => Ok(0),
        }
    }

    /// Starts watching for the guest to execute on `dest`, where the small
    /// guest must count above `after` (see [`Guest::last_count`]).
    pub fn watch(&self, after: u64, dest: &QemuProcess) -> Arrival {
        match self {
            Guest::Small { .. } => Arrival::Count { after },
            Guest::Desktop { .. } => Arrival::agent(agent_socket(dest)),
        }
    }

    /// Whether this is the small guest (its line service and fill exist).
    pub fn is_small(&self) -> bool {
        matches!(self, Guest::Small { .. })
    }

    /// What the guest does on the server, running on `server`: the small
    /// guest is told to write `dirty_mib` MiB and must answer `dirtied`;
    /// the desktop guest runs `run` as an idle desktop, then its session
    /// is checked (see [`Guest::check_desktop`]). Returns what it did, for
    /// the report, and the small guest's service number.
    ///
    /// # Errors
    /// When the guest does not answer as it should.
    pub fn stay(
        &self,
        office: &CappedOffice,
        server: (&QemuProcess, &mut Qmp),
        dirty_mib: u64,
        run: Duration,
    ) -> BenchResult<(String, Option<u64>)> {
        if self.is_small() {
            let reply = office.ask_vm(&format!("dirty {dirty_mib}"))?;
            return match reply.split(' ').collect::<Vec<_>>()[..] {
                ["dirtied", n, m] if m == dirty_mib.to_string() => {
                    Ok((format!("dirtied {dirty_mib} MiB"), Some(n.parse()?)))
                }
                _ => Err(format!(
                    "the guest answered {reply:?} to `dirty {dirty_mib}` (a guest without room for that much more \
                     in RAM cannot: lower --dirty-mib for this size)"
                )
                .into()),
            };
        }
        sleep(run);
        self.check_desktop(server.0, server.1, "on the server")?;
        Ok((format!("ran {} s as an idle desktop, then its session was checked", run.as_secs()), None))
    }

    /// Checks the guest back on the desktop, running on `desktop`: the
    /// small guest's service answers with its next number after `serial`
    /// (the state it wrote on the server came back); the desktop guest's
    /// session is whole.
    ///
    /// # Errors
    /// What `method` got wrong.
    pub fn check_back(
        &self,
        office: &CappedOffice,
        serial: Option<u64>,
        desktop: (&QemuProcess, &mut Qmp),
        method: &str,
    ) -> BenchResult<()> {
        match serial {
            Some(serial) => {
                let reply = office.ask_vm("back")?;
                let want = format!("echo {} back", serial + 1);
                if reply != want {
                    return Err(
                        format!("{method}: back on the desktop the guest answered {reply:?}, not {want:?}").into()
                    );
                }
                Ok(())
            }
            None => self.check_desktop(desktop.0, desktop.1, &format!("{method}, back on the desktop")),
        }
    }

    /// Checks, through `qmp` and the guest agent of `qemu`, that the
    /// desktop guest is whole on its host: the session's programs run and
    /// the screen shows the session. Nothing for the small guest (its line
    /// service checks it).
    ///
    /// # Errors
    /// What is missing, on which host.
    pub fn check_desktop(&self, qemu: &QemuProcess, qmp: &mut Qmp, host: &str) -> BenchResult<()> {
        if self.is_small() {
            return Ok(());
        }
        let mut agent = agent_within(&agent_socket(qemu), COUNT_TIMEOUT)?;
        session_programs(&mut agent, host)?;
        let shot = qemu.output_log().with_file_name("screen.ppm");
        let screen = screen(qmp, &shot)?;
        if !screen.shows_desktop_session() {
            return Err(format!("{host}: the screen shows no session: {}", describe(&screen, &shot)).into());
        }
        Ok(())
    }
}

/// How the benchmark sees that the guest executes on a destination.
pub enum Arrival {
    /// The small guest's counter printed a number above `after` on the
    /// destination's serial console (it ticks every 0.2 s).
    Count {
        /// The last number the source printed.
        after: u64,
    },
    /// The desktop guest's agent answered a sync on the destination's
    /// channel: a thread asks until it does.
    Agent {
        /// The thread's answer: `Ok` once the agent answered.
        answered: Receiver<Result<(), String>>,
        /// Set on drop: the thread stops asking.
        stop: Arc<AtomicBool>,
    },
}

impl Arrival {
    /// Asks the agent at `socket` from a thread until it answers.
    fn agent(socket: PathBuf) -> Arrival {
        let (tell, answered) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            let start = Instant::now();
            let outcome = loop {
                match GuestAgent::connect(&socket) {
                    Ok(_) => break Ok(()),
                    Err(e) if start.elapsed() > MIGRATION_TIMEOUT => {
                        break Err(format!("the guest agent at {} never answered: {e}", socket.display()))
                    }
                    Err(_) if stopped.load(Ordering::Relaxed) => return,
                    // No socket yet (QEMU starting) or no answer in 5 s.
                    Err(_) => sleep(POLL),
                }
            };
            let _ = tell.send(outcome);
        });
        Arrival::Agent { answered, stop }
    }

    /// Whether the guest has executed on `dest` yet.
    ///
    /// # Errors
    /// When the console cannot be read or the agent never answered.
    pub fn poll(&mut self, dest: &QemuProcess) -> BenchResult<bool> {
        match self {
            Arrival::Count { after } => Ok(dest.serial().counts()?.last().is_some_and(|n| n > after)),
            Arrival::Agent { answered, .. } => match answered.try_recv() {
                Ok(Ok(())) => Ok(true),
                Ok(Err(why)) => Err(why.into()),
                Err(TryRecvError::Empty) => Ok(false),
                Err(TryRecvError::Disconnected) => Err("the guest agent's watcher ended without a word".into()),
            },
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if let Arrival::Agent { stop, .. } = self {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// The desktop guest's disk of method `tag` in `disks`: the boot disk for
/// `boot`, else the method's overlay.
fn disk(disks: &Path, tag: &str) -> PathBuf {
    if tag == "boot" {
        disks.join(BOOT_DISK)
    } else {
        disks.join(format!("{tag}.qcow2"))
    }
}

/// The guest agent's socket of `qemu`: `VmSpec` puts it beside the QMP
/// socket, in the run directory.
fn agent_socket(qemu: &QemuProcess) -> PathBuf {
    qemu.qmp_socket().with_file_name("qga.sock")
}

/// The guest agent at `socket` once it answers, within `timeout`.
fn agent_within(socket: &Path, timeout: Duration) -> BenchResult<GuestAgent> {
    let start = Instant::now();
    loop {
        match GuestAgent::connect(socket) {
            Ok(agent) => return Ok(agent),
            Err(e) if start.elapsed() > timeout => {
                return Err(format!("the guest agent at {} did not answer in {timeout:?}: {e}", socket.display()).into())
            }
            Err(_) => sleep(Duration::from_secs(1)),
        }
    }
}

/// Checks through `agent` that every program of [`SESSION_PROGRAMS`] runs.
fn session_programs(agent: &mut GuestAgent, host: &str) -> BenchResult<()> {
    for program in SESSION_PROGRAMS {
        agent
            .run("pgrep", &["-o", "-x", program])
            .map_err(|e| format!("{host}: {program} does not run in the desktop guest: {e}"))?;
    }
    Ok(())
}

/// The screen of the VM behind `qmp`, written to `file`.
fn screen(qmp: &mut Qmp, file: &Path) -> BenchResult<Screenshot> {
    screendump(qmp, file)?;
    Ok(Screenshot::read_ppm(file)?)
}

/// What a screenshot shows, for an error.
fn describe(screen: &Screenshot, file: &Path) -> String {
    format!(
        "{}x{}, {} colours, {:.1}% Firefox's page ({})",
        screen.width,
        screen.height,
        screen.distinct_colours(),
        screen.share_of(tests::screen::PAGE_COLOUR) * 100.0,
        file.display()
    )
}
