//! Appending to a trace: shared by every thread of a storage process that
//! sends requests to the desktop.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::format::{boottime_ns, header, Fetch, Totals, COLUMNS};

/// The default cap of a trace file: 64 MiB, about a million requests
/// (a 4 GiB VM fetched whole with memtap's 20-page window takes about
/// 50 000).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// A trace file being written.
///
/// Each line goes to the kernel in one `write` on a file opened for
/// appending, with no buffer of our own: a line is in the file as soon as
/// [`TraceWriter::record`] returns, so a crash of the process loses
/// nothing but a line being written. [`TraceWriter::close`] adds the totals
/// and fsyncs (a power cut before it may lose what the page cache held).
/// Recording never fails the fetch it describes: a write error is logged
/// once and the trace stops.
#[derive(Debug)]
pub struct TraceWriter {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: Option<File>,
    bytes: u64,
    max_bytes: u64,
    dropped: u64,
}

impl TraceWriter {
    /// Opens `path` for appending with the [default cap](DEFAULT_MAX_BYTES),
    /// writing the header if the file is new or empty. An existing trace is
    /// continued (a storage process of the same stay started again).
    ///
    /// # Errors
    /// Opening or writing the file.
    pub fn open(path: &Path) -> io::Result<TraceWriter> {
        TraceWriter::with_cap(path, DEFAULT_MAX_BYTES)
    }

    /// As [`TraceWriter::open`], with a cap of `max_bytes`: request lines
    /// past it are counted as dropped, not written.
    ///
    /// # Errors
    /// Opening or writing the file.
    pub fn with_cap(path: &Path, max_bytes: u64) -> io::Result<TraceWriter> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        let mut bytes = file.metadata()?.len();
        if bytes == 0 {
            let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let head = format!("{}{COLUMNS}\n", header(started_unix, boottime_ns()));
            file.write_all(head.as_bytes())?;
            bytes = head.len() as u64;
        }
        Ok(TraceWriter {
            path: path.to_owned(),
            state: Mutex::new(State { file: Some(file), bytes, max_bytes, dropped: 0 }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one request.
    pub fn record(&self, fetch: &Fetch) {
        let line = fetch.line();
        let mut state = self.lock();
        let State { file, bytes, max_bytes, dropped } = &mut *state;
        let Some(f) = file else { return };
        if *bytes + line.len() as u64 > *max_bytes {
            if *dropped == 0 {
                tracing::warn!(path = %self.path.display(), max_bytes = *max_bytes, "the fetch trace is full; later requests are counted, not written");
            }
            *dropped += 1;
            return;
        }
        match f.write_all(line.as_bytes()) {
            Ok(()) => *bytes += line.len() as u64,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot write the fetch trace, which stops here: {e}");
                *file = None;
            }
        }
    }

    /// Ends the trace: writes `totals` (with the dropped lines counted
    /// here and the time of closing) and fsyncs. Later records are ignored.
    ///
    /// # Errors
    /// Writing or syncing the file.
    pub fn close(&self, totals: Totals) -> io::Result<()> {
        let mut state = self.lock();
        let dropped = state.dropped;
        let Some(mut file) = state.file.take() else { return Ok(()) };
        file.write_all(Totals { dropped, closed_boottime_ns: boottime_ns(), ..totals }.line().as_bytes())?;
        file.sync_all()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A thread that panicked mid-record left whole lines or none.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
