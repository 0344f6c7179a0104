//! A link shared fairly by the transfers on it: `n` transfers in flight
//! each move at `1/n` of its rate (TCP flows of equal round-trip time on
//! one bottleneck do about that). It is what makes a boot storm slow:
//! fifty reintegrations at 9:00 each take fifty times as long as one.
//!
//! The link keeps no clock of its own beyond the time it was last
//! advanced to: the caller advances it to each event's time, asks it when
//! its next transfer completes, and starts or cancels transfers.

/// A transfer on a [`SharedLink`], as [`SharedLink::start`] named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(u64);

#[derive(Debug, Clone, Copy)]
struct Transfer {
    id: TransferId,
    remaining_bytes: f64,
}

/// One direction of a link, fair-shared by its transfers.
#[derive(Debug, Clone)]
pub struct SharedLink {
    bytes_per_sec: f64,
    now_secs: f64,
    next_id: u64,
    in_flight: Vec<Transfer>,
    bytes_moved: f64,
}

/// Transfers with less than this left are complete: the subtraction of
/// floating rates leaves crumbs, and a crumb so small that its time is
/// below the clock's resolution would never finish.
const DONE_BYTES: f64 = 1.0;

impl SharedLink {
    /// A link that moves `bits_per_sec` in all, idle at time 0.
    pub fn new(bits_per_sec: f64) -> SharedLink {
        SharedLink {
            bytes_per_sec: bits_per_sec / 8.0,
            now_secs: 0.0,
            next_id: 0,
            in_flight: Vec::new(),
            bytes_moved: 0.0,
        }
    }

    /// Moves every transfer in flight on to `secs` at its fair share.
    /// Times before the last one are taken as the last one.
    pub fn advance(&mut self, secs: f64) {
        let elapsed = secs - self.now_secs;
        if elapsed <= 0.0 {
            return;
        }
        self.now_secs = secs;
        if self.in_flight.is_empty() {
            return;
        }
        let share = self.bytes_per_sec * elapsed / self.in_flight.len() as f64;
        for transfer in &mut self.in_flight {
            let moved = share.min(transfer.remaining_bytes);
            transfer.remaining_bytes -= moved;
            self.bytes_moved += moved;
        }
    }

    /// Starts a transfer of `bytes` at `secs` (advancing the link there).
    pub fn start(&mut self, secs: f64, bytes: f64) -> TransferId {
        self.advance(secs);
        let id = TransferId(self.next_id);
        self.next_id += 1;
        self.in_flight.push(Transfer { id, remaining_bytes: bytes.max(0.0) });
        id
    }

    /// Stops transfer `id` at `secs` (advancing the link there) whatever
    /// it has left; an unknown or finished one is no-op.
    pub fn cancel(&mut self, secs: f64, id: TransferId) {
        self.advance(secs);
        self.in_flight.retain(|transfer| transfer.id != id);
    }

    /// When the next transfer completes if nothing starts or stops before,
    /// and which one; `None` with nothing in flight.
    pub fn next_completion(&self) -> Option<(f64, TransferId)> {
        let n = self.in_flight.len() as f64;
        self.in_flight
            .iter()
            .min_by(|a, b| a.remaining_bytes.total_cmp(&b.remaining_bytes).then(a.id.cmp(&b.id)))
            .map(|t| (self.now_secs + t.remaining_bytes * n / self.bytes_per_sec, t.id))
    }

    /// Removes and returns the transfers complete at the link's time.
    pub fn take_completed(&mut self) -> Vec<TransferId> {
        let done: Vec<TransferId> =
            self.in_flight.iter().filter(|t| t.remaining_bytes <= DONE_BYTES).map(|t| t.id).collect();
        self.in_flight.retain(|t| t.remaining_bytes > DONE_BYTES);
        done
    }

    /// Transfers in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes the link has moved so far, cancelled transfers' part included.
    pub fn bytes_moved(&self) -> f64 {
        self.bytes_moved
    }

    /// The link's rate, bytes/s.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes_per_sec
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Runs the link until every transfer completes; the completion time
    /// of each, in start order.
    fn run(link: &mut SharedLink, ids: &[TransferId]) -> Vec<f64> {
        let mut done = vec![f64::NAN; ids.len()];
        while let Some((at, _)) = link.next_completion() {
            link.advance(at);
            for id in link.take_completed() {
                done[ids.iter().position(|&i| i == id).unwrap()] = at;
            }
        }
        done
    }

    #[test]
    fn one_transfer_moves_at_the_whole_rate() {
        let mut link = SharedLink::new(8e6); // 1 MB/s
        let id = link.start(10.0, 5e6);
        assert_eq!(run(&mut link, &[id]), vec![15.0]);
        assert!((link.bytes_moved() - 5e6).abs() < 1e-3);
    }

    #[test]
    fn two_equal_transfers_started_together_take_twice_as_long() {
        let mut link = SharedLink::new(8e6);
        let a = link.start(0.0, 5e6);
        let b = link.start(0.0, 5e6);
        let done = run(&mut link, &[a, b]);
        assert!((done[0] - 10.0).abs() < 1e-9 && (done[1] - 10.0).abs() < 1e-9, "{done:?}");
    }

    #[test]
    fn a_short_transfer_leaves_the_whole_rate_to_the_long_one() {
        // 1 MB/s; 1 MB and 3 MB together: the first ends at 2 s (half rate),
        // the second has 2 MB left and ends 2 s later at the whole rate.
        let mut link = SharedLink::new(8e6);
        let short = link.start(0.0, 1e6);
        let long = link.start(0.0, 3e6);
        let done = run(&mut link, &[short, long]);
        assert!((done[0] - 2.0).abs() < 1e-9 && (done[1] - 4.0).abs() < 1e-9, "{done:?}");
    }

    #[test]
    fn a_cancelled_transfer_counts_what_it_moved_and_frees_its_share() {
        let mut link = SharedLink::new(8e6);
        let a = link.start(0.0, 4e6);
        let b = link.start(0.0, 4e6);
        link.cancel(2.0, b); // each moved 1 MB
        assert_eq!(link.in_flight(), 1);
        assert_eq!(run(&mut link, &[a]), vec![5.0]);
        assert!((link.bytes_moved() - 5e6).abs() < 1e-3);
    }
}
