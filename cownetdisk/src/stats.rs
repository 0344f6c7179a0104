//! cownetdisk's counters for one disk, their snapshot ([`DiskStats`]) as the
//! JSON stats file and the one-line summary of `jettison status`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::protocol::Command;

/// Live counters, updated by the connections and the diskserv source.
/// Relaxed atomics: they order nothing.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) dropped_connections: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) trims: AtomicU64,
    pub(crate) write_zeroes: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) unknown: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) bytes_zeroed: AtomicU64,
    pub(crate) error_replies: AtomicU64,
    pub(crate) remote_requests: AtomicU64,
    pub(crate) bytes_fetched: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one request of `command`, or of an unknown command.
    pub(crate) fn count_request(&self, command: Option<Command>) {
        let counter = match command {
            Some(Command::Read) => &self.reads,
            Some(Command::Write) => &self.writes,
            Some(Command::Flush) => &self.flushes,
            Some(Command::Trim) => &self.trims,
            Some(Command::WriteZeroes) => &self.write_zeroes,
            Some(Command::Disc) => &self.disconnects,
            None => &self.unknown,
        };
        Self::add(counter, 1);
    }

    /// The request counts now.
    pub(crate) fn requests(&self) -> RequestCounts {
        RequestCounts {
            read: get(&self.reads),
            write: get(&self.writes),
            flush: get(&self.flushes),
            trim: get(&self.trims),
            write_zeroes: get(&self.write_zeroes),
            disc: get(&self.disconnects),
            unknown: get(&self.unknown),
        }
    }
}

/// Reads a counter.
pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// NBD requests received, per command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// `NBD_CMD_READ`.
    pub read: u64,
    /// `NBD_CMD_WRITE`.
    pub write: u64,
    /// `NBD_CMD_FLUSH`.
    pub flush: u64,
    /// `NBD_CMD_TRIM`.
    pub trim: u64,
    /// `NBD_CMD_WRITE_ZEROES`.
    pub write_zeroes: u64,
    /// `NBD_CMD_DISC`.
    pub disc: u64,
    /// Commands this server does not implement (answered `NBD_EINVAL`).
    pub unknown: u64,
}

/// A point-in-time copy of a disk's counters, as `<vm>.stats` holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    /// The VM's name.
    pub vm: String,
    /// Size of the disk in bytes.
    pub disk_bytes: u64,
    /// The block size: the slices' unit.
    pub block_size: u32,
    /// NBD connections accepted since the start.
    pub connections: u64,
    /// Connections closed because the client broke the protocol (a bad
    /// magic, an oversized write, an unknown export, …).
    pub dropped_connections: u64,
    /// Requests received, per command.
    pub requests: RequestCounts,
    /// Bytes returned by successful reads.
    pub bytes_read: u64,
    /// Bytes stored by successful writes.
    pub bytes_written: u64,
    /// Bytes zeroed by successful `WRITE_ZEROES`.
    pub bytes_zeroed: u64,
    /// Requests answered with an error.
    pub error_replies: u64,
    /// Calls that fetched absent blocks (one per NBD request that needed any).
    pub fetch_calls: u64,
    /// Requests sent to diskserv (a fetch call larger than a wire request
    /// takes several).
    pub remote_requests: u64,
    /// Blocks fetched from diskserv.
    pub blocks_fetched: u64,
    /// Bytes of block data received from diskserv; zero runs travel as
    /// markers and are not counted.
    pub bytes_fetched: u64,
    /// Whole blocks written straight to the dirty slice, with no fetch (a
    /// block written whole twice counts twice).
    pub whole_block_writes: u64,
    /// Blocks fetched because a partial write touched a block not yet here.
    pub partial_write_fetches: u64,
    /// Blocks in the fetched slice now.
    pub fetched_blocks: u64,
    /// Blocks in the dirty slice now: what reintegration sends back.
    pub dirty_blocks: u64,
}

impl DiskStats {
    /// One line for `jettison status`.
    pub fn summary(&self) -> String {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        format!(
            "{}: {} MiB disk in {}-byte blocks, {} reads ({:.1} MiB), {} writes ({:.1} MiB), {} write-zeroes, \
             {} trims, {} flushes, \
             {} blocks ({:.1} MiB) fetched in {} fetches, {} whole-block writes without fetch, \
             {} partial-write fetches, {} dirty blocks, {} error replies",
            self.vm,
            self.disk_bytes >> 20,
            self.block_size,
            self.requests.read,
            mib(self.bytes_read),
            self.requests.write,
            mib(self.bytes_written),
            self.requests.write_zeroes,
            self.requests.trim,
            self.requests.flush,
            self.blocks_fetched,
            mib(self.bytes_fetched),
            self.fetch_calls,
            self.whole_block_writes,
            self.partial_write_fetches,
            self.dirty_blocks,
            self.error_replies,
        )
    }

    /// Writes the stats as JSON to `path`, atomically and durably: readers
    /// see the old file or the new one, never half of one.
    ///
    /// # Errors
    /// The I/O error of writing the temporary file or renaming it.
    pub fn write_atomically(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        durable_file::replace_file(path, &[&json, b"\n"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_counters_that_matter() {
        let s = DiskStats {
            vm: "vm1".into(),
            disk_bytes: 32 << 20,
            block_size: 4096,
            requests: RequestCounts { read: 3, write: 2, flush: 1, ..RequestCounts::default() },
            blocks_fetched: 5,
            fetch_calls: 2,
            whole_block_writes: 4,
            partial_write_fetches: 1,
            dirty_blocks: 5,
            ..DiskStats::default()
        };
        let line = s.summary();
        assert!(line.starts_with("vm1: 32 MiB disk in 4096-byte blocks, 3 reads"), "{line}");
        assert!(line.contains("5 blocks (0.0 MiB) fetched in 2 fetches"), "{line}");
        assert!(line.contains("4 whole-block writes without fetch, 1 partial-write fetches"), "{line}");
        assert!(line.ends_with("5 dirty blocks, 0 error replies"), "{line}");
    }

    #[test]
    fn the_stats_file_is_replaced_whole_and_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm1.stats");
        let mut s = DiskStats { vm: "vm1".into(), dirty_blocks: 1, ..DiskStats::default() };
        s.write_atomically(&path).unwrap();
        s.dirty_blocks = 2;
        s.write_atomically(&path).unwrap();
        let back: DiskStats = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, s);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["vm1.stats"], "no temporary file is left behind");
    }
}
