//! The fetch traces of a VM's past stays, kept when it goes home.
//!
//! A stay's trace (`fetch-trace.csv` in the VM's state directory, written
//! by its storage process) would go with the state directory, which is
//! deleted once the VM runs at home. It is moved first into the VM's
//! history, named for when the stay began (the trace's own header):
//!
//! ```text
//! <state_dir>/history/<desktop>/<vm>/<started-unix-secs>.csv
//! ```
//!
//! Only the last [`KEPT_STAYS`] are kept per VM, oldest dropped first:
//! each trace is capped ([`fetch_trace::DEFAULT_MAX_BYTES`], a few hundred
//! KiB for an idle stay), so a VM's history stays bounded however often it
//! moves. The energy model replays them (`energy --trace`), and the pages
//! they faulted on are the working set pushed at the VM's next
//! consolidation ([`working_set`]).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::key::VmKey;
use crate::storage::FETCH_TRACE;

/// Stays whose traces are kept per VM: about a month of working days.
pub const KEPT_STAYS: usize = 20;

/// The directory of `key`'s kept traces.
pub fn history_dir(state_dir: &Path, key: &VmKey) -> PathBuf {
    state_dir.join("history").join(key.desktop.as_str()).join(key.vm.as_str())
}

/// Moves the trace of the stay whose state directory is `vm_state` (if it
/// has one) into `key`'s history under `state_dir`, then drops the oldest
/// beyond [`KEPT_STAYS`]. Returns where it now is. Failures are logged:
/// a lost trace never keeps a VM from going home.
pub fn keep(state_dir: &Path, key: &VmKey, vm_state: &Path) -> Option<PathBuf> {
    let trace = vm_state.join(FETCH_TRACE);
    if !trace.exists() {
        return None;
    }
    let dir = history_dir(state_dir, key);
    let kept = fs::create_dir_all(&dir).and_then(|()| {
        let started = started_unix(&trace).unwrap_or_else(|| {
            fs::metadata(&trace)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        });
        let mut to = dir.join(format!("{started}.csv"));
        let mut n = 1;
        while to.exists() {
            to = dir.join(format!("{started}-{n}.csv"));
            n += 1;
        }
        fs::rename(&trace, &to)?;
        durable_file::sync_dir(&dir)?;
        Ok(to)
    });
    match kept {
        Ok(to) => {
            prune(&dir, KEPT_STAYS);
            tracing::info!(desktop = %key.desktop, vm = %key.vm, trace = %to.display(), "fetch trace kept");
            Some(to)
        }
        Err(e) => {
            tracing::warn!(desktop = %key.desktop, vm = %key.vm, "cannot keep the fetch trace {} in {}: {e}", trace.display(), dir.display());
            None
        }
    }
}

/// The working set of the VM whose kept traces are in `dir`: every page
/// its earlier stays fetched for a fault, each fault's `window`-page pivot
/// window included ([`fetch_trace::Trace::fault_spans`]), sorted. This is
/// what the storage process pushes at consolidation (`push_working_set`):
/// on the desktop guest, 97% of what a second stay fetched the first had
/// fetched too, while the first's faulting pages alone covered 59% of the
/// second's faults (`bench/RESULTS.md`). Only pages below `ram_pages` (a
/// damaged trace cannot make it larger than the RAM); at most
/// [`KEPT_STAYS`] traces, each capped, so it stays small. A trace that
/// cannot be read is left out with a warning.
pub fn working_set(dir: &Path, window: u64, ram_pages: u64) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut runs = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_none_or(|ext| ext != "csv") {
            continue;
        }
        match fetch_trace::read(&path) {
            Ok(trace) => runs.extend(trace.fault_spans(window)),
            Err(e) => tracing::warn!("the kept fetch trace {} is left out of the working set: {e}", path.display()),
        }
    }
    fetch_trace::merge_runs(runs)
        .into_iter()
        .flat_map(|(start, end)| start.min(ram_pages)..end.min(ram_pages))
        .collect()
}

/// The start time in a trace's header line.
fn started_unix(trace: &Path) -> Option<u64> {
    let mut first = String::new();
    BufReader::new(fs::File::open(trace).ok()?.take(4096)).read_line(&mut first).ok()?;
    first.split_whitespace().find_map(|w| w.strip_prefix("started_unix=")).and_then(|s| s.parse().ok())
}

/// Deletes the oldest traces in `dir` beyond `keep`, by their start time.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut traces: Vec<((u64, u64), PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|path| {
            let stem = path.file_stem()?.to_str()?.to_owned();
            let (secs, n) = stem.split_once('-').unwrap_or((&stem, "0"));
            Some(((secs.parse().ok()?, n.parse().ok()?), path))
        })
        .collect();
    traces.sort();
    let excess = traces.len().saturating_sub(keep);
    for (_, path) in traces.into_iter().take(excess) {
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!("cannot remove the old fetch trace {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> VmKey {
        VmKey { desktop: "desk1".parse().unwrap(), vm: "vm1".parse().unwrap() }
    }

    #[test]
    fn a_stays_trace_moves_to_the_history_and_only_the_last_stays_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let vm_state = root.path().join("vms/desk1/vm1");
        fs::create_dir_all(&vm_state).unwrap();
        assert_eq!(keep(root.path(), &key(), &vm_state), None, "no trace, nothing kept");
        let mut kept = Vec::new();
        for started in 0..KEPT_STAYS as u64 + 3 {
            let header = format!("jettison-fetch-trace 1 started_unix={}\n", 1000 + started / 2);
            fs::write(vm_state.join(FETCH_TRACE), header).unwrap();
            kept.push(keep(root.path(), &key(), &vm_state).unwrap());
            assert!(!vm_state.join(FETCH_TRACE).exists());
        }
        assert_eq!(kept[0].file_name().unwrap(), "1000.csv");
        assert_eq!(kept[1].file_name().unwrap(), "1000-1.csv", "two stays in one second both kept");
        let left: Vec<_> = fs::read_dir(history_dir(root.path(), &key())).unwrap().collect();
        assert_eq!(left.len(), KEPT_STAYS);
        assert!(!kept[2].exists() && kept[3].exists(), "the three oldest went");
        assert!(kept.last().unwrap().exists());
    }

    #[test]
    fn the_working_set_is_every_page_the_kept_stays_faults_fetched() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        assert!(working_set(&dir.join("none"), 20, 100).is_empty());
        let head = "jettison-fetch-trace 1 started_unix=1 started_boottime_ns=0\n\
                    device,unit,cause,faulting,units,requests,asked_ns,answered_ns\n";
        fs::write(dir.join("1.csv"), format!("{head}memory,9,fault,1,21,1,5,6\nmemory,3,fault,1,21,1,7,failed\n"))
            .unwrap();
        fs::write(
            dir.join("2.csv"),
            format!("{head}memory,4,fault,1,21,1,5,6\ndisk,8,fault,1,1,1,5,6\nmemory,9,fault,1,1,1,8,9\n"),
        )
        .unwrap();
        fs::write(dir.join("3.csv"), "not a trace\n").unwrap();
        fs::write(dir.join("notes.txt"), "memory,77").unwrap();
        // Answered memory faults only: the failed one and the disk block are not.
        assert_eq!(working_set(dir, 0, 100), [4, 9]);
        // With a 4-page window, 2 pages each side: [2, 7) and [7, 12) join.
        assert_eq!(working_set(dir, 4, 100), (2..12).collect::<Vec<u64>>());
        // Nothing past the RAM's end, whatever a trace says.
        assert_eq!(working_set(dir, 4, 10), (2..10).collect::<Vec<u64>>());
        fs::write(dir.join("4.csv"), format!("{head}memory,5,fault,{max},{max},1,5,6\n", max = u64::MAX)).unwrap();
        assert_eq!(working_set(dir, 4, 10), (2..10).collect::<Vec<u64>>(), "a huge fault is clipped");
    }
}
