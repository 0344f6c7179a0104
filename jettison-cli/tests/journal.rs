//! Under systemd the daemons log to the journal with structured fields:
//! `jettison server` started as a unit starts it (`JOURNAL_STREAM` naming
//! its stderr) sends its events over the journal's native protocol, each
//! field a journal field, and nothing to stderr.
//!
//! Root only, and only where no journald runs (the test stands in for it
//! on its socket, `/run/systemd/journal/socket`, and removes it after).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is the test failing

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const JOURNAL_DIR: &str = "/run/systemd/journal";
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The stand-in journal socket, removed on drop (with its directories if
/// the test made them).
struct FakeJournal {
    socket: UnixDatagram,
    made: Vec<&'static str>,
}

impl FakeJournal {
    fn bind() -> FakeJournal {
        let made = ["/run/systemd", JOURNAL_DIR].into_iter().filter(|d| !Path::new(d).exists()).collect::<Vec<_>>();
        std::fs::create_dir_all(JOURNAL_DIR).unwrap();
        let socket = UnixDatagram::bind(JOURNAL_SOCKET).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        FakeJournal { socket, made }
    }

    /// The first entry received whose `MESSAGE` is `message`, as its
    /// fields, or `None` after `limit`.
    fn entry_with(&self, message: &str, limit: Duration) -> Option<Vec<(String, String)>> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 64 * 1024];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let entry = fields(&buf[..n]);
                if entry.iter().any(|(name, value)| name == "MESSAGE" && value == message) {
                    return Some(entry);
                }
            }
        }
        None
    }
}

/// The fields of one datagram of the journal's native protocol: each
/// `NAME=value\n`, or `NAME\n`, a little-endian u64 length, the value and `\n`.
fn fields(mut datagram: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while let Some(end) = datagram.iter().position(|&b| b == b'\n' || b == b'=') {
        let name = String::from_utf8_lossy(&datagram[..end]).into_owned();
        let (value, rest) = if datagram[end] == b'=' {
            let line = &datagram[end + 1..];
            let stop = line.iter().position(|&b| b == b'\n').expect("a field ends with a newline");
            (&line[..stop], &line[stop + 1..])
        } else {
            let len = u64::from_le_bytes(datagram[end + 1..end + 9].try_into().unwrap()) as usize;
            let value = &datagram[end + 9..end + 9 + len];
            (value, &datagram[end + 10 + len..])
        };
        fields.push((name, String::from_utf8_lossy(value).into_owned()));
        datagram = rest;
    }
    fields
}

impl Drop for FakeJournal {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(JOURNAL_SOCKET);
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn under_systemd_the_server_logs_structured_fields_to_the_journal() {
    if !nix::unistd::geteuid().is_root() {
        return tests::skip("needs root: it stands in for journald on its socket");
    }
    if Path::new(JOURNAL_SOCKET).exists() {
        return tests::skip_absent_here("a journald runs here; the test stands in for one only where none does");
    }
    let journal = FakeJournal::bind();
    let dir = tempfile::tempdir().unwrap();
    let jettison = env!("CARGO_BIN_EXE_jettison");
    let config = tests::standalone_server_config(dir.path(), 1234, "socket_group = \"\"\n");
    // stderr is a file whose device and inode JOURNAL_STREAM names, as
    // systemd names the stream it connects.
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let _daemon = Daemon(
        Command::new(jettison)
            .args(["server", "--config"])
            .arg(&config)
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let entry = journal.entry_with("server daemon ready", Duration::from_secs(30)).unwrap_or_else(|| {
        panic!("no journal entry says the daemon is ready; stderr: {}", std::fs::read_to_string(&stderr_path).unwrap())
    });
    // INFO is the journal's "notice" (5); each field of the event is a field of the entry.
    for (name, value) in [("CAPACITY_MIB", "1234"), ("LISTEN", "127.0.0.1:0"), ("PRIORITY", "5")] {
        assert!(entry.contains(&(name.to_owned(), value.to_owned())), "no {name}={value} in {entry:?}");
    }
    assert!(entry.contains(&("SYSLOG_IDENTIFIER".to_owned(), "jettison".to_owned())), "{entry:?}");
    assert_eq!(std::fs::read_to_string(&stderr_path).unwrap(), "", "the journal got the logs, not stderr");
}
