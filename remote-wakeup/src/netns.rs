//! Running code inside a named network namespace (`ip netns add NAME`).
//!
//! A thread, not the process, enters the namespace: sockets made there stay
//! in it after the thread leaves, so a test or a daemon can hold sockets in
//! several namespaces at once.

use std::os::fd::AsRawFd;

use crate::error::WakeError;

/// Moves the calling thread into the network namespace `name` for good.
///
/// # Errors
/// [`WakeError::Netns`] when `/run/netns/<name>` cannot be opened or
/// entered.
pub fn enter(name: &str) -> Result<(), WakeError> {
    let err = |source| WakeError::Netns { name: name.to_owned(), source };
    let file = std::fs::File::open(format!("/run/netns/{name}")).map_err(err)?;
    // SAFETY: the descriptor is open for the duration of the call (file
    // lives until the end of this function) and CLONE_NEWNET only changes
    // the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a short-lived thread inside the network namespace `name`
/// (or on a plain thread when `name` is `None`) and returns its result.
///
/// # Errors
/// As [`enter`], or [`WakeError::Thread`] when the thread cannot start.
pub fn run_in<T: Send>(name: Option<&str>, f: impl FnOnce() -> T + Send) -> Result<T, WakeError> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, || {
                if let Some(name) = name {
                    enter(name)?;
                }
                Ok(f())
            })
            .map_err(|source| WakeError::Thread { what: "netns", source })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
