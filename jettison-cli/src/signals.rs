//! Turning SIGINT and SIGTERM into a clean stop.

use nix::sys::signal::{SigSet, Signal};

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread it
/// starts afterwards) and returns a function that waits for one of them.
/// Call it first thing, before any thread exists.
///
/// # Errors
/// The error of `pthread_sigmask`.
pub fn block_stop_signals() -> nix::Result<impl FnOnce() -> Option<Signal> + Send + 'static> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()?;
    Ok(move || set.wait().ok())
}

/// Runs a desktop serving loop (memserv, diskserv) until `wait_for_signal`
/// returns, then stops it cleanly.
///
/// # Errors
/// The loop's error.
pub fn serve_until_signal(
    server: image_server::Server,
    wait_for_signal: impl FnOnce() -> Option<Signal> + Send + 'static,
) -> crate::CmdResult {
    let stop = server.stop_handle();
    std::thread::spawn(move || {
        if let Some(signal) = wait_for_signal() {
            tracing::info!("{signal}: stopping");
        }
        stop.stop();
    });
    server.run()?;
    Ok(())
}
