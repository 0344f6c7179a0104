//! How `jettison` ends when something fails: an exit status a script can
//! tell apart, and with `--json` the error as JSON on stdout.
//!
//! | status | kind | when |
//! |---|---|---|
//! | 0 | | it worked |
//! | 1 | `failed` | anything else; the message says what |
//! | 2 | `usage` | the command line is wrong (clap's own status for it) |
//! | 3 | `config` | a configuration file cannot be read or is wrong |
//! | 4 | `unreachable` | the local daemon, or the desktop daemon's server, does not answer |
//! | 5 | `not_idle` | the VM is not idle enough to consolidate (`--force` skips the check) |
//! | 6 | `no_room` | the server has no room for the VM |
//! | 7 | `denied` | the caller may not use the daemon's socket, or not for this request |

use std::error::Error;

use daemon_protocol::config_file::ConfigFileError;
use daemon_protocol::local::{FailureKind, LocalSocketError};
use serde::Serialize;

/// A failure's kind: its exit status and its name in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Anything not below.
    Failed,
    /// The command line is wrong.
    Usage,
    /// A configuration file cannot be used.
    Config,
    /// A daemon does not answer.
    Unreachable,
    /// The VM is not idle.
    NotIdle,
    /// The server has no room.
    NoRoom,
    /// The caller may not ask this.
    Denied,
}

/// The exit statuses, for the manual page (`jettison --help`).
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 done; 1 failed (the message says why); 2 bad usage; \
3 bad configuration file; 4 a daemon unreachable (the local one, or the desktop's server); 5 the VM is not \
idle (consolidate; --force skips the check); 6 no room on the server; 7 denied (only root and the daemon's \
socket_group may use its socket, and only root may move VMs where group_may_move = false). With --json (status, \
consolidate, reintegrate) a failure is printed on stdout as {\"error\": {\"kind\": KIND, \"message\": TEXT, \
\"exit_status\": N}}, KIND one of failed, usage, config, unreachable, not_idle, no_room, denied.";

impl Failure {
    /// The process's exit status.
    pub fn exit_status(self) -> u8 {
        match self {
            Failure::Failed => 1,
            Failure::Usage => 2,
            Failure::Config => 3,
            Failure::Unreachable => 4,
            Failure::NotIdle => 5,
            Failure::NoRoom => 6,
            Failure::Denied => 7,
        }
    }

    /// The kind of `error`: the first cause in its chain that says one.
    pub fn of(error: &(dyn Error + 'static)) -> Failure {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if e.downcast_ref::<ConfigFileError>().is_some() {
                return Failure::Config;
            }
            match e.downcast_ref::<LocalSocketError>() {
                Some(LocalSocketError::Connect { .. }) => return Failure::Unreachable,
                Some(LocalSocketError::NotAllowed { .. }) => return Failure::Denied,
                Some(LocalSocketError::Failed { kind, .. }) => {
                    return match kind {
                        FailureKind::NotIdle => Failure::NotIdle,
                        FailureKind::NoRoom => Failure::NoRoom,
                        FailureKind::Unreachable => Failure::Unreachable,
                        FailureKind::Denied => Failure::Denied,
                        FailureKind::Other => Failure::Failed,
                    }
                }
                _ => {}
            }
            if e.downcast_ref::<NoDaemon>().is_some() {
                return Failure::Unreachable;
            }
            cause = e.source();
        }
        Failure::Failed
    }

    /// The JSON form of a failure with `message`.
    pub fn json(self, message: &str) -> serde_json::Value {
        serde_json::json!({ "error": { "kind": self, "message": message, "exit_status": self.exit_status() } })
    }
}

/// No daemon answers where the command looked for one.
#[derive(Debug, thiserror::Error)]
#[error("no daemon answers at {tried} and there is no standalone memtap or cownetdisk state: is `jettison desktop` or `jettison server` running? (--daemon names another socket)")]
pub struct NoDaemon {
    /// The sockets tried, for the message.
    pub tried: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_cause_chain() {
        let failed =
            |kind| Box::new(LocalSocketError::Failed { kind, message: "x".into() }) as Box<dyn Error + 'static>;
        assert_eq!(Failure::of(failed(FailureKind::NotIdle).as_ref()), Failure::NotIdle);
        assert_eq!(Failure::of(failed(FailureKind::NoRoom).as_ref()), Failure::NoRoom);
        assert_eq!(Failure::of(failed(FailureKind::Unreachable).as_ref()), Failure::Unreachable);
        assert_eq!(Failure::of(failed(FailureKind::Other).as_ref()), Failure::Failed);
        assert_eq!(Failure::of(failed(FailureKind::Denied).as_ref()), Failure::Denied);
        let kept_out = LocalSocketError::NotAllowed { path: "/x".into(), group: "jettison".into() };
        assert_eq!(Failure::of(&kept_out), Failure::Denied);
        let gone = LocalSocketError::Connect { path: "/x".into(), source: std::io::ErrorKind::NotFound.into() };
        assert_eq!(Failure::of(&gone), Failure::Unreachable);
        let dir = tempfile::tempdir().unwrap();
        let config = desktop_daemon::DesktopConfig::load(&dir.path().join("none.toml")).unwrap_err();
        assert_eq!(Failure::of(&config), Failure::Config);
        assert_eq!(Failure::of(&NoDaemon { tried: "/a".into() }), Failure::Unreachable);
        assert_eq!(Failure::of(&std::io::Error::other("x")), Failure::Failed);
        let json = Failure::NoRoom.json("full");
        assert_eq!(json["error"]["kind"], "no_room");
        assert_eq!(json["error"]["exit_status"], 6);
    }
}
