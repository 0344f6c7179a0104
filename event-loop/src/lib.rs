//! Shared by every daemon with a mio event loop (memserv and diskserv's
//! serving loop, cownetdisk's accept loop): the stop request.
//!
//! A daemon shuts down cleanly when asked from another thread (a signal
//! handler thread, a test, the daemon that owns it). The request is a flag
//! the loop checks after every wake-up, plus a mio [`Waker`] registered
//! beside the loop's other event sources, so a loop blocked in `poll`
//! wakes at once instead of at its next event.
#![warn(missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::{Registry, Token, Waker};

/// Asks an event loop to stop; cheap to clone and send to other threads.
#[derive(Debug, Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// A handle whose [`StopHandle::stop`] wakes the loop polling
    /// `registry` with an event for `token`.
    ///
    /// # Errors
    /// The error of creating the waker (an eventfd).
    pub fn new(registry: &Registry, token: Token) -> std::io::Result<Self> {
        Ok(StopHandle { flag: Arc::new(AtomicBool::new(false)), waker: Arc::new(Waker::new(registry, token)?) })
    }

    /// Asks the loop to end: sets the flag, then wakes the loop.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            tracing::error!("cannot wake the event loop to stop it: {e}");
        }
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The flag alone, for worker threads that check it between requests.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;

    #[test]
    fn stop_wakes_a_blocked_poll_and_sets_the_flag() {
        let mut poll = Poll::new().unwrap();
        let stop = StopHandle::new(poll.registry(), Token(7)).unwrap();
        assert!(!stop.is_stopped());
        let remote = stop.clone();
        let t = std::thread::spawn(move || remote.stop());
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(30))).unwrap();
        t.join().unwrap();
        assert!(events.iter().any(|e| e.token() == Token(7)));
        assert!(stop.is_stopped() && stop.flag().load(Ordering::SeqCst));
    }
}
