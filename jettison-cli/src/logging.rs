//! Where `jettison`'s logs go. Under systemd, whose `JOURNAL_STREAM`
//! names the stream stderr is, they go to the journal through its native
//! protocol, each event's fields as journal fields (`VM=vm1`,
//! `DESKTOP=desk1`, `BYTES=...`, beside `MESSAGE`, `PRIORITY` and
//! `SYSLOG_IDENTIFIER=jettison`), so that `journalctl VM=vm1` follows one
//! VM. Elsewhere they go to stderr as text, in colour only at a terminal.

use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The journal's `SYSLOG_IDENTIFIER`.
const IDENTIFIER: &str = "jettison";

/// Installs the logger; `JETTISON_LOG` filters (default `info`).
pub fn init() {
    let filter = || EnvFilter::try_from_env("JETTISON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("JOURNAL_STREAM").is_ok_and(|stream| is_stream(&stream, Path::new("/proc/self/fd/2"))) {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal.with_field_prefix(None).with_syslog_identifier(IDENTIFIER.to_owned());
                tracing_subscriber::registry().with(filter()).with(journal).init();
                return;
            }
            Err(e) => eprintln!("jettison: cannot log to the journal ({e}); logging to stderr as text"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal; plain text for files, where
        // escape codes are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Whether `journal_stream` (`DEVICE:INODE`, as systemd sets it) names
/// the file `fd` is: a child that inherited the variable but not the
/// stream logs to where its stderr really goes.
fn is_stream(journal_stream: &str, fd: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    std::fs::metadata(fd).is_ok_and(|meta| meta.dev() == dev && meta.ino() == ino)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn only_the_stream_systemd_named_is_the_journal() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let meta = file.as_file().metadata().unwrap();
        assert!(is_stream(&format!("{}:{}", meta.dev(), meta.ino()), file.path()));
        assert!(!is_stream(&format!("{}:{}", meta.dev(), meta.ino() + 1), file.path()));
        for bad in ["", "12", "a:b", "1:2:3"] {
            assert!(!is_stream(bad, file.path()), "{bad:?}");
        }
    }
}
