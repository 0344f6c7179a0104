//! `jettison desktop` and `jettison server`: the two daemons, each run
//! until SIGINT or SIGTERM (systemd units in `packaging/systemd/`).

use std::path::PathBuf;
use std::sync::Arc;

use desktop_daemon::{DesktopConfig, DesktopDaemon};
use server_daemon::{ServerConfig, ServerDaemon};

use crate::signals::block_stop_signals;
use crate::CmdResult;

/// Arguments of `jettison desktop`.
#[derive(Debug, clap::Args)]
pub struct DesktopArgs {
    /// The desktop's configuration file.
    #[arg(long, default_value = "/etc/jettison/desktop.toml")]
    config: PathBuf,
}

/// Arguments of `jettison server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The server's configuration file.
    #[arg(long, default_value = "/etc/jettison/server.toml")]
    config: PathBuf,
}

/// Runs the desktop daemon.
pub fn run_desktop(args: DesktopArgs) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    let daemon = DesktopDaemon::new(DesktopConfig::load(&args.config)?)?;
    run_until_signal(Arc::clone(&daemon), DesktopDaemon::run, wait_for_signal)?;
    daemon.shutdown();
    Ok(())
}

/// How long a stopping server waits for its VMs to go home (within the
/// unit's TimeoutStopSec).
const SERVER_DRAIN: std::time::Duration = std::time::Duration::from_secs(90);

/// Runs the server daemon.
pub fn run_server(args: ServerArgs) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    let daemon = ServerDaemon::new(ServerConfig::load(&args.config)?)?;
    run_until_signal(Arc::clone(&daemon), ServerDaemon::run, wait_for_signal)?;
    daemon.shutdown(SERVER_DRAIN);
    Ok(())
}

/// Runs `serve(daemon)` on a thread until a stop signal arrives or it fails.
fn run_until_signal<D: Send + Sync + 'static, E: std::error::Error + Send + Sync + 'static>(
    daemon: Arc<D>,
    serve: fn(Arc<D>) -> Result<(), E>,
    wait_for_signal: impl FnOnce() -> Option<nix::sys::signal::Signal> + Send + 'static,
) -> CmdResult {
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = tx.clone();
    std::thread::spawn(move || {
        if let Err(e) = serve(daemon) {
            let _ = failed.send(Err(e));
        }
    });
    std::thread::spawn(move || {
        let signal = wait_for_signal();
        let _ = tx.send(Ok(signal));
    });
    match rx.recv() {
        Ok(Ok(signal)) => {
            tracing::info!("{}: stopping", signal.map(|s| s.to_string()).unwrap_or_else(|| "signal".into()));
            Ok(())
        }
        Ok(Err(e)) => Err(Box::new(e)),
        Err(_) => Ok(()),
    }
}
