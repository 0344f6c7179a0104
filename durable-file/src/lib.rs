//! Putting files on disk so that they survive a power cut.
//!
//! Every state file that decides what happens after a crash (a VM's
//! placement, the server's working-set history, the energy ledger, the
//! slice store's bitmaps and zero maps) is written through
//! [`replace_file`]: a temporary file beside the target, fsync, rename over
//! the target, fsync of the directory. A reader then finds the old content
//! or the new, never a mix, and a rename that was reported done is not
//! undone by a power cut.
#![warn(missing_docs)]

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `path` with `suffix` appended to its file name (`dirty.bitmap` -> `dirty.bitmap.flushed`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes the directory entry changes (create, rename) under `dir` durable.
///
/// # Errors
/// Opening or syncing `dir`.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory that holds `path`.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `parts`, all or nothing, even across a power cut:
/// write a temporary file, fsync it, rename it over `path`, fsync the directory.
///
/// # Errors
/// The first I/O error; `path` then still holds its old content (a
/// temporary file may be left beside it, and is replaced next time).
pub fn replace_file(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let temp = with_suffix(path, ".tmp");
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&temp)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    sync_dir(parent_dir(path))
}

/// Appends `line` and a newline to the log at `path` (made if missing) in
/// one write, and fsyncs it, and its directory when the log is new: a
/// power cut loses at most the line being written, whose torn end the
/// log's reader skips.
///
/// # Errors
/// The first I/O error.
pub fn append_line(path: &Path, line: &[u8]) -> io::Result<()> {
    let new = !path.exists();
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut whole = Vec::with_capacity(line.len() + 1);
    whole.extend_from_slice(line);
    whole.push(b'\n');
    file.write_all(&whole)?;
    file.sync_all()?;
    if new {
        sync_dir(parent_dir(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_line_adds_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stays.jsonl");
        append_line(&log, b"one").unwrap();
        append_line(&log, b"two").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn replace_file_writes_all_parts_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bitmap");
        std::fs::write(&path, b"old").unwrap();
        replace_file(&path, &[b"ab", b"", b"cd"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcd");
        assert!(!with_suffix(&path, ".tmp").exists());
    }

    #[test]
    fn parent_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent_dir(Path::new("x")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/a/x")), Path::new("/a"));
    }
}
