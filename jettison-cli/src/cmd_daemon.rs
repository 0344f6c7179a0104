//! `jettison desktop` and `jettison server`: the two daemons, each run
//! until SIGINT or SIGTERM (systemd units in `packaging/systemd/`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use desktop_daemon::{DesktopConfig, DesktopDaemon};
use server_daemon::{ServerConfig, ServerDaemon};

use crate::signals::block_stop_signals_reloading;
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
    let path = args.config.clone();
    let credentials = Arc::new(OnceLock::new());
    let reload = Arc::clone(&credentials);
    let wait_for_signal = block_stop_signals_reloading(move || {
        report_reload(&path, DesktopConfig::load(&path).map(drop).map_err(|e| wire::chain(&e)), reload.get())
    })?;
    let daemon = DesktopDaemon::new(DesktopConfig::load(&args.config)?)?;
    let _ = credentials.set(daemon.credentials());
    run_until_signal(Arc::clone(&daemon), |d| d.run(|| notify_service_manager("READY=1")), wait_for_signal)?;
    notify_service_manager("STOPPING=1");
    daemon.shutdown();
    Ok(())
}

/// Runs the server daemon.
pub fn run_server(args: ServerArgs) -> CmdResult {
    let path = args.config.clone();
    let running = Arc::new(OnceLock::<Arc<ServerDaemon>>::new());
    let reload = Arc::clone(&running);
    let wait_for_signal = block_stop_signals_reloading(move || {
        let daemon = reload.get();
        let checked = ServerConfig::load(&path).map(drop).map_err(|e| wire::chain(&e));
        report_reload(&path, checked, daemon.map(|d| d.credentials()).as_ref());
        if let Some(daemon) = daemon {
            daemon.reload_storage_peers();
        }
    })?;
    let daemon = ServerDaemon::new(ServerConfig::load(&args.config)?)?;
    let _ = running.set(Arc::clone(&daemon));
    run_until_signal(Arc::clone(&daemon), |d| d.run(|| notify_service_manager("READY=1")), wait_for_signal)?;
    notify_service_manager("STOPPING=1");
    daemon.shutdown();
    Ok(())
}

/// A SIGHUP (`systemctl reload`): the enrolled peers are read again (a
/// key enrolled or removed applies to the next connection), and the
/// configuration file is checked, with the log saying that a restart
/// applies it. No other setting changes in the running daemon: they shape
/// VMs that are running, and a restart costs them nothing (QEMU, and on the
/// server each VM's storage process, outlive the daemon).
fn report_reload(path: &std::path::Path, checked: Result<(), String>, credentials: Option<&Arc<wire::Credentials>>) {
    match credentials.map(|c| c.reload_peers()) {
        Some(Ok(count)) => tracing::info!(
            "SIGHUP: the enrolled peers were read again: {count} {}",
            if count == 1 { "key" } else { "keys" }
        ),
        Some(Err(e)) => {
            tracing::error!(
                "SIGHUP: the enrolled peers would not load ({}); the old set stays in force",
                wire::chain(&e)
            )
        }
        None => {}
    }
    match checked {
        Ok(()) => tracing::info!(
            config = %path.display(),
            "SIGHUP: the configuration is valid; other than the peers, nothing is changed while running: \
             restart the daemon to apply it (running VMs are kept)"
        ),
        Err(e) => tracing::error!(
            config = %path.display(),
            "SIGHUP: the configuration would not load ({e}); the daemon goes on with the one it started with"
        ),
    }
}

/// Tells the service manager (systemd, `Type=notify`) the daemon's state,
/// as `READY=1` or `STOPPING=1`, on the datagram socket `$NOTIFY_SOCKET`
/// names (a path, or `@name` in the abstract namespace). Without that
/// variable, nobody asked, and nothing is sent.
fn notify_service_manager(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = UnixDatagram::unbound().and_then(|socket| match target.as_bytes().strip_prefix(b"@") {
        Some(name) => socket.send_to_addr(state.as_bytes(), &SocketAddr::from_abstract_name(name)?),
        None => socket.send_to(state.as_bytes(), std::path::Path::new(&target)),
    });
    if let Err(e) = sent {
        tracing::warn!("cannot tell the service manager {state} through {}: {e}", target.to_string_lossy());
    }
}

/// Runs `serve(daemon)` on a thread until a stop signal arrives or it fails.
fn run_until_signal<D: Send + Sync + 'static, E: std::error::Error + Send + Sync + 'static>(
    daemon: Arc<D>,
    serve: impl FnOnce(Arc<D>) -> Result<(), E> + Send + 'static,
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
