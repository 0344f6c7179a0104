//! A running QEMU: its process, QMP socket and logs.
//!
//! QEMU is a child process that must never outlive its owner by accident:
//! tests fail half-way, daemons restart. So the owner holds a
//! [`QemuProcess`], and dropping it kills and reaps QEMU. Every wait on
//! QEMU also watches the process, so a QEMU that quits (bad argument, guest
//! panic with `-no-reboot`) fails the wait at once, quoting QEMU's output,
//! instead of running into a timeout.

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
const QEMU_BINARY: &str = "qemu-system-x86_64";

/// How long QEMU may take to create its QMP socket after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to an existing QMP socket may take.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of QEMU's output an [`QemuError::Exited`] quotes.
const OUTPUT_TAIL_BYTES: u64 = 4096;

/// A running QEMU. Dropping it kills QEMU (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct QemuProcess {
    child: Child,
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
        let output_log = spec.output_log();
        let log_error =
            |source| QemuError::File { action: "create QEMU's output log", path: output_log.clone(), source };
        let stdout = File::create(&output_log).map_err(log_error)?;
        let stderr = stdout.try_clone().map_err(log_error)?;
        tracing::debug!(args = ?spec.args(), "starting {QEMU_BINARY}");
        let mut command = Command::new(QEMU_BINARY);
        // SAFETY: `install` only builds a filter on the stack and calls
        // prctl twice, both async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            command.pre_exec(crate::no_hugepage::install);
        }
        let child = command
            .args(spec.args())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| QemuError::Spawn { binary: QEMU_BINARY.into(), source })?;
        let mut process =
            QemuProcess { child, qmp_socket: socket, serial: SerialLog::new(spec.serial_log()), output_log };
        let QemuProcess { child, qmp_socket, output_log, .. } = &mut process;
        poll_until("QEMU to create its QMP socket", START_TIMEOUT, || {
            check_running(child, output_log, "starting")?;
            Ok(qmp_socket.exists().then_some(()))
        })?;
        Ok(process)
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Ok` while QEMU runs; [`QemuError::Exited`] with its status and output
    /// once it has quit (a crash, a kill, a guest panic).
    ///
    /// # Errors
    /// [`QemuError::Exited`] as said.
    pub fn check_running(&mut self) -> Result<()> {
        check_running(&mut self.child, &self.output_log, "running the VM")
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
            match check_running(&mut self.child, &self.output_log, "connecting to QMP") {
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
        let QemuProcess { child, serial, output_log, .. } = self;
        let what = format!("a line starting with {prefix:?}");
        serial.wait_for(
            &what,
            timeout,
            || check_running(child, output_log, &what),
            |text| serial::find_line(text, prefix).map(str::to_owned),
        )
    }

    /// Waits until the guest's last `JTCOUNT` exceeds `min` and returns it.
    ///
    /// # Errors
    /// [`QemuError::Timeout`], or [`QemuError::Exited`] as soon as QEMU quits.
    pub fn wait_for_count_above(&mut self, min: u64, timeout: Duration) -> Result<u64> {
        let QemuProcess { child, serial, output_log, .. } = self;
        let what = format!("JTCOUNT above {min}");
        serial.wait_for(
            &what,
            timeout,
            || check_running(child, output_log, &what),
            |text| serial::counts(text).last().filter(|&n| n > min),
        )
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        // Both fail only if QEMU is already gone and reaped; nothing to do then.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Ok` while `child` runs; [`QemuError::Exited`] quoting its output once it has quit.
fn check_running(child: &mut Child, output_log: &Path, during: &str) -> Result<()> {
    let status = child.try_wait().expect("waitpid on our own unreaped child cannot fail");
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

/// The end of a log file, or a note saying why it cannot be shown.
fn tail(path: &Path) -> String {
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
