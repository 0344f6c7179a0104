//! What a process and its files cost a host, read the way an operator
//! would: `/proc/<pid>/smaps_rollup` and `smaps` for memory (PSS, so that
//! pages shared between processes are split between them), `/proc/<pid>/stat`
//! for CPU time, and `fincore` for a file's pages in the page cache (which
//! no process's PSS shows unless it maps them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// One process's memory, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rollup {
    /// Proportional set size: its private pages and its share of shared ones.
    pub pss_kib: u64,
    /// Anonymous memory (heap, stacks, anonymous mappings).
    pub anon_kib: u64,
}

/// `pid`'s [`Rollup`] from its `smaps_rollup`.
///
/// # Errors
/// The process is gone, or the file lacks the fields.
pub fn rollup(pid: u32) -> Result<Rollup, String> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let field = |name: &str| tests::proc_kib(&text, name).ok_or_else(|| format!("no {name} in {path}"));
    Ok(Rollup { pss_kib: field("Pss")?, anon_kib: field("Anonymous")? })
}

/// One mapping of a process, from its `smaps`.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// Its permissions (`rw-s`, `rwxp`).
    pub perms: String,
    /// Its file, or `[heap]` and the like, or empty for anonymous memory.
    pub path: String,
    /// Its size, KiB.
    pub size_kib: u64,
    /// Its resident pages, KiB.
    pub rss_kib: u64,
    /// Its PSS, KiB.
    pub pss_kib: u64,
}

/// Every mapping of `pid`, from `/proc/<pid>/smaps`.
///
/// # Errors
/// The process is gone.
pub fn mappings(pid: u32) -> Result<Vec<Mapping>, String> {
    let path = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut all: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // `start-end perms offset dev inode [path]`
            let perms = words.next().unwrap_or_default().to_owned();
            let path = words.nth(3).unwrap_or_default().to_owned();
            all.push(Mapping { perms, path, ..Mapping::default() });
            continue;
        }
        let kib = || words.clone().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        if let Some(mapping) = all.last_mut() {
            match first {
                "Size:" => mapping.size_kib = kib(),
                "Rss:" => mapping.rss_kib = kib(),
                "Pss:" => mapping.pss_kib = kib(),
                _ => {}
            }
        }
    }
    Ok(all)
}

/// CPU time `pid` has used, user and system, in clock ticks
/// ([`ticks_per_second`]).
///
/// # Errors
/// The process is gone.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name, in parentheses, may hold spaces: count after it.
    let after = text.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| format!("{path} has no command name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of stat(5); `after` starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).zip(field(15)).map(|(user, system)| user + system).ok_or_else(|| format!("{path} has no CPU times"))
}

/// Clock ticks a second, the unit of [`cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
}

/// Bytes of `files` in the page cache, from `fincore` (util-linux).
///
/// # Errors
/// `fincore` does not run or cannot read a file.
pub fn page_cache_bytes(files: &[PathBuf]) -> Result<u64, String> {
    if files.is_empty() {
        return Ok(0);
    }
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .args(files)
        .output()
        .map_err(|e| format!("fincore does not run ({e}): apt-get install util-linux"))?;
    if !out.status.success() {
        return Err(format!("fincore {files:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse::<u64>().map_err(|e| format!("fincore printed {l:?}: {e}")))
        .sum()
}

/// Every regular file under `dir`, at any depth (none if it is missing).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(entry.path()),
                Ok(t) if t.is_file() => found.push(entry.path()),
                _ => {}
            }
        }
    }
    found
}
