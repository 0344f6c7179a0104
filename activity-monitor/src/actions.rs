//! What the monitor does at each step, pluggable: consolidation and
//! reintegration belong to other parts of Jettison, and until they have a
//! library entry point the command line runs the administrator's commands.

use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::notify::Notifier;

/// The monitor's effects.
pub trait Actions {
    /// The user has been idle for `idle`; consolidation in `remaining`
    /// unless there is input.
    fn warn(&mut self, idle: Duration, remaining: Duration);
    /// There was input during the warning: withdraw it.
    fn cancel_warning(&mut self);
    /// Move the VM to the server. Returns when done.
    ///
    /// # Errors
    /// The consolidation failed; the VM is still on the desktop.
    fn consolidate(&mut self) -> Result<(), ActionError>;
    /// Bring the VM back. Returns when done.
    ///
    /// # Errors
    /// The reintegration failed; the VM is still on the server.
    fn reintegrate(&mut self) -> Result<(), ActionError>;
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The command could not be started.
    #[error("cannot run `sh -c {command:?}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed.
    #[error("`sh -c {command:?}` failed: {status}")]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// Another implementation's error.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// The command line's actions: a log line (and a desktop notification where
/// there is a session bus) for the warning, and shell commands for
/// consolidation and reintegration, run with `JETTISON_VM` set to the VM's
/// name. Without a command the step is logged only.
#[derive(Debug)]
pub struct CommandActions {
    vm: String,
    on_consolidate: Option<String>,
    on_reintegrate: Option<String>,
    notifier: Option<Notifier>,
    notification: Option<u32>,
}

impl CommandActions {
    /// Actions for `vm`; `notifier` is usually [`Notifier::session`].
    pub fn new(
        vm: &str,
        on_consolidate: Option<String>,
        on_reintegrate: Option<String>,
        notifier: Option<Notifier>,
    ) -> CommandActions {
        CommandActions { vm: vm.to_owned(), on_consolidate, on_reintegrate, notifier, notification: None }
    }

    fn run(&self, what: &str, command: Option<&String>) -> Result<(), ActionError> {
        let Some(command) = command else {
            tracing::info!("activity-monitor: no --on-{what} command; would {what} {} now", self.vm);
            return Ok(());
        };
        tracing::info!("activity-monitor: {what} {}: running `{command}`", self.vm);
        let status = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("JETTISON_VM", &self.vm)
            .stdin(Stdio::null())
            .status()
            .map_err(|source| ActionError::Spawn { command: command.clone(), source })?;
        if status.success() {
            Ok(())
        } else {
            Err(ActionError::Failed { command: command.clone(), status })
        }
    }
}

impl Actions for CommandActions {
    fn warn(&mut self, idle: Duration, remaining: Duration) {
        let message = format!(
            "idle for {} s; consolidating {} in {} s unless there is input",
            idle.as_secs(),
            self.vm,
            remaining.as_secs()
        );
        // The log line is the warning where there is no notification daemon.
        println!("activity-monitor: {message}");
        if let Some(notifier) = &self.notifier {
            self.notification = notifier.notify("Jettison: moving your desktop to the server", &message, remaining);
        }
    }

    fn cancel_warning(&mut self) {
        println!("activity-monitor: input: {} stays here", self.vm);
        if let (Some(notifier), Some(id)) = (&self.notifier, self.notification.take()) {
            notifier.close(id);
        }
    }

    fn consolidate(&mut self) -> Result<(), ActionError> {
        self.notification = None;
        self.run("consolidate", self.on_consolidate.as_ref())
    }

    fn reintegrate(&mut self) -> Result<(), ActionError> {
        self.run("reintegrate", self.on_reintegrate.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_with_the_vm_name() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let cmd = format!("echo \"$JETTISON_VM\" > '{}'", marker.display());
        let mut actions = CommandActions::new("vm1", Some(cmd), None, None);
        actions.consolidate().unwrap();
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "vm1\n");
        actions.reintegrate().unwrap(); // no command: logged only
    }

    #[test]
    fn a_failing_command_is_an_error_naming_it() {
        let mut actions = CommandActions::new("vm1", None, Some("exit 3".into()), None);
        let err = actions.reintegrate().unwrap_err();
        assert!(err.to_string().contains("exit 3"), "{err}");
    }
}
