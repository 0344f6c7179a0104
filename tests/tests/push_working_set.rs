//! The server pushes a VM's working set at its second consolidation
//! (`push_working_set`, on as packaged): the pages its first stay fetched for
//! faults, pivot windows included, come from the desktop while it is
//! awake for the move, and no fault for one of them reaches the desktop
//! once the push is done. With `push_whole_memory`, every page the zero map
//! does not cover comes at the first consolidation, and the guest then reads
//! memory it had left alone without a fault reaching the desktop. Through
//! the real daemons, in the office of network namespaces (root only;
//! skipped with a reason elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::time::Duration;

use fetch_trace::{Cause, Device, Trace};
use tests::office::{wait_for_count_above, Office, OfficeSpec, VM};

/// Bound on a VM's counter moving on after a move.
const COUNT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long each stay lasts once the guest counts on the server.
const STAY: Duration = Duration::from_secs(15);

/// One stay: consolidated (`--force`: the idleness check is not what is
/// tested), `on_server` run once the guest counts there, [`STAY`] more on
/// the server, then brought home.
fn stay(office: &Office, on_server: impl FnOnce()) {
    let socket = office.desktop_socket();
    office.jettison_json(&["consolidate", VM, "--force", "--socket", socket.to_str().unwrap()]);
    wait_for_count_above(&office.server_serial(), 0, COUNT_TIMEOUT);
    on_server();
    std::thread::sleep(STAY);
    let back = office.jettison_json(&["reintegrate", VM, "--socket", socket.to_str().unwrap()]);
    eprintln!("reintegrated: {back}");
}

/// The kept traces, oldest first.
fn kept_traces(office: &Office) -> Vec<Trace> {
    let mut traces: Vec<Trace> = std::fs::read_dir(office.server_vm_history())
        .unwrap()
        .map(|e| fetch_trace::read(&e.unwrap().path()).unwrap())
        .collect();
    traces.sort_by_key(|t| t.started_boottime_ns);
    traces
}

/// The server's first log line that says `what`, printed.
fn logged(office: &Office, what: &str) -> String {
    let line = office
        .log("server")
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("the server never logged {what:?}\n{}", office.logs()))
        .to_owned();
    eprintln!("{line}");
    line
}

/// The value of `key=N` in a log line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn the_second_stay_starts_with_the_first_stays_working_set_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = OfficeSpec::default();
    assert!(spec.push_working_set, "the office's server pushes, as packaged");
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    let client = office.connect_client(Duration::from_secs(1));
    client.wait_for(3, Duration::from_secs(60));

    const PUSHED: &str = "working set of earlier stays pushed";
    stay(&office, || ());
    assert!(!office.log("server").contains(PUSHED), "a first stay has nothing to push");
    // The storage process logs the push once every page is stored: a
    // fault asked after that cannot be for a pushed page.
    let mut pushed_by = 0;
    stay(&office, || {
        office.wait_for_log("server", PUSHED, Duration::from_secs(60));
        pushed_by = fetch_trace::boottime_ns();
        let dirtied = client.command("dirty 8", Duration::from_secs(60));
        assert!(dirtied.starts_with("dirtied "), "{dirtied}");
    });
    let line = logged(&office, PUSHED);
    let (pushed, known) = (field(&line, "pushed"), field(&line, "known"));

    let traces = kept_traces(&office);
    assert_eq!(traces.len(), 2, "two stays, two traces");
    let (first, second) = (&traces[0], &traces[1]);
    // What it pushed is the first stay's faults with memtap's pivot window.
    let spans = first.fault_spans(memtap::prefetch::DEFAULT_PIVOT_WINDOW);
    let span_pages: u64 = spans.iter().map(|(start, end)| end - start).sum();
    assert!(span_pages > 0, "the first stay fetched nothing for a fault");
    assert_eq!(known, span_pages, "the push's working set is not the first stay's fault windows");
    // The push's batches are the second trace's prefetch lines, and they
    // brought what the log says.
    let batches: Vec<_> = second.answered(Device::Memory).filter(|f| f.cause == Cause::Prefetch).copied().collect();
    assert_eq!(batches.iter().map(|f| f.units).sum::<u64>(), pushed, "{batches:?}");
    assert!(pushed > 0, "the push brought no page: the guest had faulted on all of them first? {line}");
    // Once the push is done, no fault for a page of the working set
    // reaches the desktop: those pages are on the server.
    let in_set = |page: u64| spans.iter().any(|&(start, end)| (start..end).contains(&page));
    let faults_after: Vec<_> =
        second.answered(Device::Memory).filter(|f| f.cause == Cause::Fault && f.asked_ns > pushed_by).collect();
    let on_pushed: Vec<_> = faults_after.iter().filter(|f| in_set(f.unit)).collect();
    assert!(on_pushed.is_empty(), "faults on pushed pages after the push reached the desktop: {on_pushed:?}");
    let faults = |t: &Trace| t.answered(Device::Memory).filter(|f| f.cause == Cause::Fault).count();
    eprintln!(
        "first stay: {} faults to the desktop; second: {pushed} pages pushed of {known}, {} faults, {} of them \
         after the push",
        faults(first),
        faults(second),
        faults_after.len()
    );
    let (_, broken) = client.finish();
    assert!(broken.is_none(), "the client's connection broke: {broken:?}");
}

#[test]
fn with_the_whole_memory_pushed_the_guest_reads_what_it_left_alone_without_its_desktop() {
    let dir = tempfile::tempdir().unwrap();
    let spec = OfficeSpec { push_whole_memory: true, ..OfficeSpec::default() };
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    let client = office.connect_client(Duration::from_secs(1));
    client.wait_for(3, Duration::from_secs(60));

    const PUSHED: &str = "whole memory pushed";
    let mut pushed_by = 0;
    let mut on_server = serde_json::Value::Null;
    stay(&office, || {
        office.wait_for_log("server", PUSHED, Duration::from_secs(120));
        pushed_by = fetch_trace::boottime_ns();
        // The fill data (jt.fill=, 64 MiB) was written at boot and never
        // read since: only the push can have brought it.
        let read = client.command("readall", Duration::from_secs(120));
        assert!(read.starts_with("readall "), "{read}");
        let dirtied = client.command("dirty 8", Duration::from_secs(60));
        assert!(dirtied.starts_with("dirtied "), "{dirtied}");
        let server = office.server_socket();
        on_server =
            office.jettison_json(&["status", "--daemon", server.to_str().unwrap()])["vms"][0]["on_server"].clone();
    });
    let pushed = field(&logged(&office, PUSHED), "pushed");

    let traces = kept_traces(&office);
    assert_eq!(traces.len(), 1, "one stay, one trace");
    let trace = &traces[0];
    // A first stay has no history: every push batch is the whole memory's.
    let batches: u64 = trace.answered(Device::Memory).filter(|f| f.cause == Cause::Prefetch).map(|f| f.units).sum();
    assert_eq!(batches, pushed, "the trace's push batches do not sum to what the server logged");
    // Every page is on the server now: zero (never fetched), fetched, or
    // discarded by the guest's free page reporting before it came.
    let memory = &on_server["memory"];
    let count = |key: &str| memory[key].as_u64().unwrap_or_else(|| panic!("no {key} in {on_server}"));
    let ram_pages = spec.memory_mib * 256;
    let accounted = count("pages_fetched") + count("zero_pages") + count("discarded_pages");
    assert!(accounted >= ram_pages, "{accounted} of {ram_pages} pages fetched, zero or discarded: {on_server}");
    // So nothing the guest touched after the push, the fill data it had
    // left alone included, was asked of the desktop.
    let faults_after: Vec<_> =
        trace.answered(Device::Memory).filter(|f| f.cause == Cause::Fault && f.asked_ns > pushed_by).collect();
    assert!(faults_after.is_empty(), "memory faults reached the desktop after the whole push: {faults_after:?}");
    eprintln!(
        "{pushed} pages pushed; {} faults before the push ended, none after",
        trace.answered(Device::Memory).filter(|f| f.cause == Cause::Fault).count()
    );
    let (_, broken) = client.finish();
    assert!(broken.is_none(), "the client's connection broke: {broken:?}");
}
