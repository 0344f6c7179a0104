//! The on-screen warning: a desktop notification over the session bus.
//!
//! Sent with `gdbus call` to `org.freedesktop.Notifications` (any
//! notification daemon: GNOME Shell, KDE, dunst, mako). It carries a
//! "Cancel" action, but the monitor does not listen for it: clicking it is
//! pointer input, and any input cancels the warning. Optional: without a
//! session bus or gdbus the warning is the log line alone.

use std::process::{Command, Stdio};
use std::time::Duration;

const DEST: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

/// Sends and withdraws desktop notifications.
#[derive(Debug, Clone)]
pub struct Notifier {
    program: String,
}

impl Notifier {
    /// A notifier for the session bus, if there is one (`$DBUS_SESSION_BUS_ADDRESS`
    /// set) and `gdbus` is installed.
    pub fn session() -> Option<Notifier> {
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").filter(|a| !a.is_empty())?;
        let on_path =
            std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join("gdbus").is_file()));
        on_path.then(|| Notifier { program: "gdbus".into() })
    }

    /// Shows a notification with a "Cancel" action for `timeout`; its id,
    /// or `None` (logged) if no notification daemon answered.
    pub fn notify(&self, summary: &str, body: &str, timeout: Duration) -> Option<u32> {
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128).to_string();
        let out = self
            .call("Notify")
            .args(["jettison", "0", "", summary, body, "['cancel', 'Cancel']", "{'urgency': <byte 2>}", &timeout_ms])
            .output();
        match out {
            Ok(out) if out.status.success() => parse_id(&String::from_utf8_lossy(&out.stdout)),
            Ok(out) => {
                tracing::debug!("no desktop notification: {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(e) => {
                tracing::debug!("no desktop notification: cannot run {}: {e}", self.program);
                None
            }
        }
    }

    /// Withdraws notification `id`.
    pub fn close(&self, id: u32) {
        let result = self.call("CloseNotification").arg(id.to_string()).stdout(Stdio::null()).status();
        if let Err(e) = result {
            tracing::debug!("closing notification {id}: {e}");
        }
    }

    fn call(&self, method: &str) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(["call", "--session", "--timeout", "2", "--dest", DEST, "--object-path", PATH, "--method"])
            .arg(format!("{DEST}.{method}"))
            .stdin(Stdio::null());
        cmd
    }
}

/// The id in gdbus's answer to Notify: `(uint32 7,)`.
fn parse_id(out: &str) -> Option<u32> {
    out.trim().trim_start_matches("(uint32").trim_end_matches(",)").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gdbus_notify_reply() {
        assert_eq!(parse_id("(uint32 7,)\n"), Some(7));
        assert_eq!(parse_id("garbage"), None);
    }
}
