//! Turning SIGINT and SIGTERM into a clean stop, and SIGHUP into a reload
//! (or a logged no-op) instead of the end of the process.

use nix::sys::signal::{SigSet, Signal};

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every
/// thread it starts afterwards) and returns a function that waits for
/// SIGINT or SIGTERM. A SIGHUP meanwhile is logged and the wait goes on:
/// these commands have nothing to reload, and a hangup must not end them.
/// Call it first thing, before any thread exists.
///
/// # Errors
/// The error of `pthread_sigmask`.
pub fn block_stop_signals() -> nix::Result<impl FnOnce() -> Option<Signal> + Send + 'static> {
    block_stop_signals_reloading(|| tracing::info!("SIGHUP: this command has nothing to reload; it goes on"))
}

/// Like [`block_stop_signals`], calling `on_hangup` at each SIGHUP (a
/// daemon's reload).
///
/// # Errors
/// The error of `pthread_sigmask`.
pub fn block_stop_signals_reloading(
    mut on_hangup: impl FnMut() + Send + 'static,
) -> nix::Result<impl FnOnce() -> Option<Signal> + Send + 'static> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.thread_block()?;
    Ok(move || loop {
        match set.wait() {
            Ok(Signal::SIGHUP) => on_hangup(),
            Ok(signal) => return Some(signal),
            Err(_) => return None,
        }
    })
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
