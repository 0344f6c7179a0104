//! QEMU's own precopy live migration, the full migration that partial
//! migration is measured against: every non-zero page of guest RAM crosses
//! the link while the guest runs, then the pages it dirtied meanwhile, then
//! the device state during a short stop.
//!
//! The destination is a QEMU started with `-incoming defer`
//! ([`qemu_driver::VmSpec::incoming_defer`]) on a RAM file of its own and
//! told where to listen ([`listen`]); the source is told to migrate there
//! ([`migrate`]) and polled until QEMU says it completed.

use std::thread::sleep;
use std::time::{Duration, Instant};

use qemu_driver::Qmp;
use serde_json::json;

/// How often a running migration is polled.
const POLL: Duration = Duration::from_millis(50);

/// One precopy migration, as the source's QEMU reports it.
#[derive(Debug, Clone, Copy)]
pub struct Precopied {
    /// From `migrate` until `query-migrate` said `completed`.
    pub secs: f64,
    /// Bytes QEMU sent (`ram.transferred`).
    pub transferred: u64,
    /// The guest's stop at the end, as QEMU measured it, ms.
    pub downtime_ms: u64,
}

/// Tells the destination QEMU behind `qmp` (started `-incoming defer`) to
/// listen for a migration stream at `uri` (`tcp:ADDR:PORT`).
///
/// # Errors
/// QEMU's refusal, with the URI.
pub fn listen(qmp: &mut Qmp, uri: &str) -> Result<(), String> {
    qmp.execute("migrate-incoming", Some(json!({ "uri": uri })))
        .map(drop)
        .map_err(|e| format!("the destination QEMU cannot listen at {uri}: {e}"))
}

/// Migrates the source QEMU behind `qmp` to the destination listening at
/// `uri`, every page through the stream (`x-ignore-shared` off) and without
/// QEMU's own bandwidth cap (128 MiB/s by default; the link is the limit),
/// and waits up to `timeout` for it to complete.
///
/// # Errors
/// QEMU's refusal, a failed or cancelled migration, or one still running
/// after `timeout`, each with the URI.
pub fn migrate(qmp: &mut Qmp, uri: &str, timeout: Duration) -> Result<Precopied, String> {
    let failed = |e: qemu_driver::QemuError| format!("precopy to {uri}: {e}");
    let capabilities = json!([{ "capability": "x-ignore-shared", "state": false }]);
    qmp.execute("migrate-set-capabilities", Some(json!({ "capabilities": capabilities }))).map_err(failed)?;
    qmp.execute("migrate-set-parameters", Some(json!({ "max-bandwidth": 100u64 << 30 }))).map_err(failed)?;
    let start = Instant::now();
    qmp.execute("migrate", Some(json!({ "uri": uri }))).map_err(failed)?;
    loop {
        let info = qmp.execute("query-migrate", None).map_err(failed)?;
        match info["status"].as_str() {
            Some("completed") => {
                return Ok(Precopied {
                    secs: start.elapsed().as_secs_f64(),
                    transferred: info["ram"]["transferred"].as_u64().unwrap_or(0),
                    downtime_ms: info["downtime"].as_u64().unwrap_or(0),
                })
            }
            Some("failed" | "cancelled") => {
                return Err(format!("precopy to {uri} failed: {}", info["error-desc"].as_str().unwrap_or("?")))
            }
            _ if start.elapsed() > timeout => {
                return Err(format!("precopy to {uri} still running after {timeout:?}: {info}"))
            }
            _ => sleep(POLL),
        }
    }
}
