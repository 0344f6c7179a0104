//! Saving and loading the VM descriptor: device and vCPU state, no RAM.
//!
//! Guest RAM is a named file mapped `share=on` (see `vm`). With the
//! migration capability `x-ignore-shared`, QEMU skips such RAM blocks, so a
//! migration to a file holds only device and vCPU state plus the small
//! private RAM blocks (firmware, option ROMs): a few hundred KB for any
//! guest size. The RAM file itself is the memory checkpoint; whoever loads
//! the descriptor must map the same contents (the same file on the desktop,
//! memtap's FUSE file on the server).
//!
//! Both ends must set the capability: the source to leave the RAM out, the
//! destination to expect it missing. The destination is a QEMU started with
//! `-incoming defer`. The file is opened here and lent to QEMU over QMP
//! (an fd set), so QEMU opens no path of ours: it may by then run as an
//! unprivileged user that could not (see `user`). The stream is addressed
//! with a `channels` argument rather than a `file:` URI.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{QemuError, Result};
use crate::poll::poll_until;
use crate::process::QemuProcess;
use crate::qmp::Qmp;
use crate::vm::VmSpec;

/// How long a save or load may take. Without guest RAM in the stream it is
/// well under a second; the margin is for a busy machine.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Stops the VM if it is running and saves its device state to `path`,
/// leaving shared-file guest RAM out. Returns the size of the file.
///
/// The VM stays stopped (QEMU reports it as `postmigrate`); the RAM file is
/// consistent with the saved state from then on.
///
/// # Errors
/// [`QemuError::Command`] if QEMU rejects a step, [`QemuError::MigrationFailed`]
/// with QEMU's reason, [`QemuError::Timeout`], or [`QemuError::File`] if the
/// file cannot be created or examined.
pub fn save_device_state(qmp: &mut Qmp, path: &Path) -> Result<u64> {
    let status = qmp.execute("query-status", None)?;
    if status["running"].as_bool() == Some(true) {
        qmp.execute("stop", None)?;
    }
    ignore_shared_ram(qmp)?;
    let file =
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(|source| {
            QemuError::File { action: "create the device state file", path: path.to_owned(), source }
        })?;
    qmp.with_file_lent(&file, |qmp, name| {
        qmp.execute("migrate", Some(json!({ "channels": file_channel(name) })))?;
        wait_for_migration(qmp, "save", path)
    })?;
    let metadata = file.metadata().map_err(|source| QemuError::File {
        action: "examine the saved device state",
        path: path.to_owned(),
        source,
    })?;
    Ok(metadata.len())
}

/// Loads the device state in `path` into a QEMU started with `-incoming
/// defer` whose guest RAM already holds the matching contents.
///
/// On success the VM is paused (when it was saved stopped, as
/// [`save_device_state`] does); the caller resumes it with `cont`.
///
/// # Errors
/// [`QemuError::File`] if `path` cannot be opened, [`QemuError::Command`] if
/// QEMU rejects a step (e.g. it was not started with `-incoming defer`),
/// [`QemuError::MigrationFailed`] with QEMU's reason if the stream does not
/// fit this VM, [`QemuError::Timeout`].
pub fn load_device_state(qmp: &mut Qmp, path: &Path) -> Result<()> {
    ignore_shared_ram(qmp)?;
    let file = File::open(path).map_err(|source| QemuError::File {
        action: "open the saved device state",
        path: path.to_owned(),
        source,
    })?;
    qmp.with_file_lent(&file, |qmp, name| {
        // exit-on-error=false: on a bad stream QEMU would otherwise exit and
        // take its error-desc with it.
        let arguments = json!({ "channels": file_channel(name), "exit-on-error": false });
        qmp.execute("migrate-incoming", Some(arguments))?;
        wait_for_migration(qmp, "load", path)
    })
}

fn ignore_shared_ram(qmp: &mut Qmp) -> Result<()> {
    let capabilities = json!([{ "capability": "x-ignore-shared", "state": true }]);
    qmp.execute("migrate-set-capabilities", Some(json!({ "capabilities": capabilities })))?;
    Ok(())
}

/// The `channels` argument that sends a migration stream to, or reads it
/// from, the start of the file QEMU knows as `filename` (a file lent to it,
/// see `Qmp::with_file_lent`).
fn file_channel(filename: &str) -> Value {
    json!([{
        "channel-type": "main",
        "addr": { "transport": "file", "filename": filename, "offset": 0 }
    }])
}

/// Polls `query-migrate` until the migration completes or fails. On the
/// destination it turns `completed` only after the run state is set, so the
/// VM is ready for `cont` once this returns.
fn wait_for_migration(qmp: &mut Qmp, direction: &'static str, path: &Path) -> Result<()> {
    let what = format!("the device state {direction} ({}) to finish", path.display());
    poll_until(&what, MIGRATION_TIMEOUT, || {
        let info = qmp.execute("query-migrate", None)?;
        match info["status"].as_str() {
            Some("completed") => Ok(Some(())),
            Some("failed" | "cancelled") => Err(QemuError::MigrationFailed {
                direction,
                path: path.to_owned(),
                desc: info["error-desc"].as_str().unwrap_or("QEMU gave no reason").to_owned(),
            }),
            // No status yet, or setup/active/device: still going.
            _ => Ok(None),
        }
    })
}

/// Starts the VM of `spec` from a saved device state instead of booting it:
/// QEMU with `-incoming defer`, the state loaded, then `cont`. The guest
/// runs on whatever RAM file `spec` names (the desktop's checkpoint, or
/// memtap's file on the server). A guest that had powered off stays so
/// (runstate `shutdown`, for its owner to see), without `cont`.
///
/// # Errors
/// As [`VmSpec::spawn`], [`load_device_state`] and the `cont` command.
pub fn resume(spec: VmSpec, descriptor: &Path) -> Result<(QemuProcess, Qmp)> {
    let mut qemu = spec.incoming_defer().spawn()?;
    let mut qmp = qemu.connect_qmp()?;
    load_device_state(&mut qmp, descriptor)?;
    if qmp.run_state()? != "shutdown" {
        qmp.execute("cont", None)?;
    }
    Ok((qemu, qmp))
}
