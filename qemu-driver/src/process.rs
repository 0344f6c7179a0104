//! A running QEMU: its process, QMP socket and logs.
//!
//! QEMU must never outlive its owner *by accident*: tests fail half-way.
//! So the owner holds a [`QemuProcess`], and dropping it kills QEMU. But a
//! user's VM must outlive a daemon restart *on purpose*: QEMU runs in its
//! own process group, writes its pid file, and a daemon that stops leaves
//! it running ([`QemuProcess::leave_running`]); the next daemon adopts it
//! ([`QemuProcess::attach`]) and drives it through QMP as before.
//!
//! Every wait on QEMU also watches the process, so a QEMU that quits (bad
//! argument, guest panic with `-no-reboot`) fails the wait at once, quoting
//! QEMU's output, instead of running into a timeout.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{QemuError, Result};
use crate::poll::poll_until;
use crate::qmp::Qmp;
use crate::serial::{self, SerialLog};
use crate::vm::VmSpec;

/// The emulator we run.
pub(crate) const QEMU_BINARY: &str = "qemu-system-x86_64";

/// How long QEMU may take to create its QMP socket after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a killed QEMU that an earlier daemon started may take to go.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to an existing QMP socket may take.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of QEMU's output an [`QemuError::Exited`] quotes.
const OUTPUT_TAIL_BYTES: u64 = 4096;

/// How we know the QEMU process.
#[derive(Debug)]
enum Owner {
    /// We started it: we can wait for it and read its exit status.
    Child(Child),
    /// An earlier daemon started it; we know its pid only.
    Adopted(u32),
    /// It was left running on purpose, or is gone and reaped.
    Released,
}

/// A running QEMU. Dropping it kills QEMU (SIGKILL) and reaps it, unless
/// it was [left running](QemuProcess::leave_running).
#[derive(Debug)]
pub struct QemuProcess {
    owner: Owner,
    qmp_socket: PathBuf,
    serial: SerialLog,
    output_log: PathBuf,
}

impl QemuProcess {
    /// Starts QEMU as `spec` says; see [`VmSpec::spawn`].
    pub(crate) fn start(spec: &VmSpec) -> Result<QemuProcess> {
        fs::create_dir_all(spec.run_dir()).map_err(|source| QemuError::File {
            action: "create the run directory",
            path: spec.run_dir().to_owned(),
            source,
        })?;
        let socket = spec.qmp_socket();
        // A socket left by an earlier QEMU would look like this one is up.
        match fs::remove_file(&socket) {
            Err(err) if err.kind() != ErrorKind::NotFound => {
                return Err(QemuError::File { action: "remove the stale QMP socket", path: socket, source: err })
            }
            _ => {}
        }
        SerialLog::new(spec.serial_log()).rotate()?;
        let output_log = spec.output_log();
        let log_error =
            |source| QemuError::File { action: "create QEMU's output log", path: output_log.clone(), source };
        let stdout = File::create(&output_log).map_err(log_error)?;
        let stderr = stdout.try_clone().map_err(log_error)?;
        tracing::debug!(args = ?spec.args(), "starting {QEMU_BINARY}");
        let mut command = Command::new(QEMU_BINARY);
        // Its own process group: a stop signal meant for the daemon (a
        // terminal's Ctrl-C, systemd's KillMode=process) does not reach it.
        command.process_group(0);
        // SAFETY: `clear_signal_mask` and `install` only build values on the
        // stack and make async-signal-safe calls (pthread_sigmask, prctl);
        // nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                clear_signal_mask()?;
                crate::no_hugepage::install()
            });
        }
        let child = command
            .args(spec.args())
            .arg("-pidfile")
            .arg(spec.pid_file())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| QemuError::Spawn { binary: QEMU_BINARY.into(), source })?;
        let mut process = QemuProcess {
            owner: Owner::Child(child),
            qmp_socket: socket,
            serial: SerialLog::new(spec.serial_log()),
            output_log,
        };
        let QemuProcess { owner, qmp_socket, output_log, .. } = &mut process;
        poll_until("QEMU to create its QMP socket", START_TIMEOUT, || {
            check_running(owner, output_log, "starting")?;
            Ok(qmp_socket.exists().then_some(()))
        })?;
        Ok(process)
    }

    /// The QEMU an earlier owner started with `spec` and left running, if
    /// its pid file names a live QEMU: adopted, to be driven through QMP.
    /// `None` when there is none (never started, powered off, crashed).
    pub fn attach(spec: &VmSpec) -> Option<QemuProcess> {
        QemuProcess::attach_in(spec.run_dir())
    }

    /// [`QemuProcess::attach`] for the QEMU whose [run
    /// directory](VmSpec::run_dir) is `run_dir`.
    pub fn attach_in(run_dir: &Path) -> Option<QemuProcess> {
        let pid: u32 = fs::read_to_string(VmSpec::pid_file_in(run_dir)).ok()?.trim().parse().ok()?;
        // QEMU by its command line, which anyone may read: its `exe` link
        // could not be read without CAP_SYS_PTRACE once QEMU runs as
        // another user (a change of uid makes a process non-dumpable), and
        // the daemons' units do not grant that capability. We started it
        // as `qemu-system-x86_64`, which an upgrade of QEMU does not change.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let program = cmdline.split(|&b| b == 0).next()?;
        if program != QEMU_BINARY.as_bytes() || !alive(pid) {
            return None;
        }
        // The same VM: its command line names our QMP socket.
        let socket = VmSpec::qmp_socket_in(run_dir);
        let needle = socket.as_os_str().as_encoded_bytes();
        if !cmdline.windows(needle.len()).any(|w| w == needle) {
            return None;
        }
        Some(QemuProcess {
            owner: Owner::Adopted(pid),
            qmp_socket: socket,
            serial: SerialLog::new(VmSpec::serial_log_in(run_dir)),
            output_log: VmSpec::output_log_in(run_dir),
        })
    }

    /// Lets QEMU run on after this handle is gone: for a daemon that stops
    /// while its VMs keep running. A later [`QemuProcess::attach`] adopts it.
    pub fn leave_running(&mut self) {
        if let Owner::Child(child) = std::mem::replace(&mut self.owner, Owner::Released) {
            // Not reaped by us: when we exit, init adopts and reaps it.
            drop(child);
        }
    }

    /// Kills QEMU (SIGKILL), and reaps it if we started it; what dropping
    /// the handle does.
    pub fn kill(&mut self) {
        match std::mem::replace(&mut self.owner, Owner::Released) {
            Owner::Child(mut child) => {
                // Both fail only if QEMU is already gone and reaped; nothing to do then.
                let _ = child.kill();
                let _ = child.wait();
            }
            Owner::Adopted(pid) => {
                // SAFETY: kill(2) with a pid we checked was QEMU's; no memory involved.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                // Not our child, so no wait(2): watch it go (init reaps
                // it), so that what it had open (a memtap mount, a disk)
                // is free when this returns, as for a child.
                let gone = poll_until("QEMU to exit after SIGKILL", KILL_TIMEOUT, || Ok((!alive(pid)).then_some(())));
                if gone.is_err() {
                    tracing::warn!(pid, "QEMU still runs {} s after SIGKILL", KILL_TIMEOUT.as_secs());
                }
            }
            Owner::Released => {}
        }
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        match &self.owner {
            Owner::Child(child) => child.id(),
            Owner::Adopted(pid) => *pid,
            Owner::Released => 0,
        }
    }

    /// The better account of a QMP failure: QEMU's own exit and output when
    /// the failure is QEMU going away (it closes the socket a moment before
    /// it exits), else `err` as it was.
    pub fn explain(&mut self, err: QemuError) -> QemuError {
        if !matches!(err, QemuError::QmpIo { .. } | QemuError::QmpConnect { .. }) {
            return err;
        }
        self.wait_exit(Duration::from_secs(2));
        self.check_running().err().unwrap_or(err)
    }

    /// Waits up to `timeout` for QEMU to exit by itself (a guest that
    /// powers off); `true` if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        poll_until("QEMU to exit", timeout, || Ok(self.check_running().is_err().then_some(()))).is_ok()
    }

    /// `Ok` while QEMU runs; [`QemuError::Exited`] with its status and output
    /// once it has quit (a crash, a kill, a guest panic).
    ///
    /// # Errors
    /// [`QemuError::Exited`] as said.
    pub fn check_running(&mut self) -> Result<()> {
        check_running(&mut self.owner, &self.output_log, "running the VM")
    }

    /// The QMP socket QEMU listens on.
    pub fn qmp_socket(&self) -> &Path {
        &self.qmp_socket
    }

    /// The guest's serial console log.
    pub fn serial(&self) -> &SerialLog {
        &self.serial
    }

    /// The file holding QEMU's own stdout and stderr.
    pub fn output_log(&self) -> &Path {
        &self.output_log
    }

    /// Opens a QMP connection to this QEMU.
    ///
    /// # Errors
    /// [`QemuError::Exited`] if QEMU has quit; otherwise as [`Qmp::connect`].
    pub fn connect_qmp(&mut self) -> Result<Qmp> {
        Qmp::connect(&self.qmp_socket, QMP_CONNECT_TIMEOUT).map_err(|err| {
            match check_running(&mut self.owner, &self.output_log, "connecting to QMP") {
                Err(exited) => exited,
                Ok(()) => err,
            }
        })
    }

    /// Waits for a complete serial line starting with `prefix` and returns it.
    ///
    /// # Errors
    /// [`QemuError::Timeout`], or [`QemuError::Exited`] as soon as QEMU quits.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let QemuProcess { owner, serial, output_log, .. } = self;
        let what = format!("a line starting with {prefix:?}");
        serial.wait_for(
            &what,
            timeout,
            || check_running(owner, output_log, &what),
            |text| serial::find_line(text, prefix).map(str::to_owned),
        )
    }

    /// Waits until the guest's last `JTCOUNT` exceeds `min` and returns it.
    ///
    /// # Errors
    /// [`QemuError::Timeout`], or [`QemuError::Exited`] as soon as QEMU quits.
    pub fn wait_for_count_above(&mut self, min: u64, timeout: Duration) -> Result<u64> {
        let QemuProcess { owner, serial, output_log, .. } = self;
        let what = format!("JTCOUNT above {min}");
        serial.wait_for(
            &what,
            timeout,
            || check_running(owner, output_log, &what),
            |text| serial::counts(text).last().filter(|&n| n > min),
        )
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Unblocks every signal, in a child between fork and exec (QEMU, and the
/// server's per-VM storage process): a daemon that
/// waits for its stop signals blocks them in all its threads, and a child
/// inherits the mask, so QEMU or qemu-storage-daemon would never see the
/// SIGTERM meant to stop it. Async-signal-safe.
pub fn clear_signal_mask() -> std::io::Result<()> {
    // SAFETY: the set lives on this stack frame; sigemptyset and
    // pthread_sigmask only write it and this thread's mask.
    let result = unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut())
    };
    if result != 0 {
        return Err(std::io::Error::from_raw_os_error(result));
    }
    Ok(())
}

/// Whether process `pid` exists and is not a zombie: whether any of its
/// threads still runs. A process whose main thread has exited shows that
/// thread as a zombie while its other threads finish (one blocked on a
/// FUSE request, say), and until the last one has, its open files (and
/// their locks and mappings) are still held.
pub fn alive(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.filter_map(std::result::Result::ok).any(|task| {
        let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        matches!(state, Some(s) if s != "Z" && s != "X")
    })
}

/// `Ok` while QEMU runs; [`QemuError::Exited`] (or [`QemuError::Gone`] for an
/// adopted QEMU, whose exit status is not ours to read) quoting its output
/// once it has quit.
fn check_running(owner: &mut Owner, output_log: &Path, during: &str) -> Result<()> {
    let status = match owner {
        Owner::Child(child) => child.try_wait().expect("waitpid on our own unreaped child cannot fail"),
        Owner::Adopted(pid) if alive(*pid) => None,
        Owner::Adopted(pid) => {
            return Err(QemuError::Gone {
                pid: *pid,
                during: during.to_owned(),
                log: output_log.to_owned(),
                output: tail(output_log),
            })
        }
        Owner::Released => None,
    };
    match status {
        None => Ok(()),
        Some(status) => Err(QemuError::Exited {
            during: during.to_owned(),
            status,
            log: output_log.to_owned(),
            output: tail(output_log),
        }),
    }
}

/// The end of a log file (the last 4 KiB), or a note saying why it cannot
/// be shown.
pub(crate) fn tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|err| format!("(cannot read {}: {err})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn leader_state(pid: u32) -> String {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("").to_owned()
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_process_is_alive_until_its_last_thread_ends_not_its_first() {
        // Python's main thread leaves by pthread_exit; a second thread
        // lives on until its stdin closes.
        let script = "import ctypes, sys, threading\n\
                      threading.Thread(target=sys.stdin.read).start()\n\
                      ctypes.CDLL(None).pthread_exit(None)\n";
        let mut child = match Command::new("python3").args(["-c", script]).stdin(Stdio::piped()).spawn() {
            Ok(child) => child,
            Err(e) => panic!("python3 runs this test's process (scripts/install-deps installs it): {e}"),
        };
        let pid = child.id();
        wait_until("the main thread has exited", || leader_state(pid) == "Z");
        assert!(alive(pid), "its other thread still runs, and with it its open files");
        drop(child.stdin.take());
        wait_until("the process has ended (a zombie, not yet reaped)", || !alive(pid));
        assert!(child.wait().unwrap().success());
        assert!(!alive(pid), "reaped");
        assert!(alive(std::process::id()), "this test's own process");
    }
}
