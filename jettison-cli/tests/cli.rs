//! The `jettison` binary as a user runs it: pairing, status output, and
//! error messages that name the thing and what to do.
#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::process::{Command, Output};

fn jettison(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jettison")).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn pair_writes_a_private_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("jettison.key");
    let out = jettison(&["pair", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
    let again = jettison(&["pair", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(text(&again).contains("jettison.key"), "{}", text(&again));
}

#[test]
fn status_prints_a_line_per_vm_and_json_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let stats = memtap::Stats {
        vm: "vm1".into(),
        ram_bytes: 256 << 20,
        faults: 1086,
        read_requests: 1086,
        remote_fetches: 258,
        pages_fetched: 4030,
        bytes_fetched: 4030 * 4096,
        prefetch_hits: 815,
        prefetch_misses: 258,
        dirty_pages: 7,
        ..memtap::Stats::default()
    };
    std::fs::write(dir.path().join("vm1.stats"), serde_json::to_vec(&stats).unwrap()).unwrap();
    std::fs::write(dir.path().join("vm1.ram"), b"").unwrap();
    let out = jettison(&["status", "--memtap", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("vm1: 256 MiB RAM, 1086 faults"), "{line}");
    assert!(line.contains("prefetch 815 hits / 258 misses") && line.contains("7 dirty pages"), "{line}");
    let out = jettison(&["status", "--memtap", dir.path().to_str().unwrap(), "--json"]);
    let parsed: Vec<memtap::Stats> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed, vec![stats]);
}

#[test]
fn errors_name_the_thing_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = jettison(&["status", "--memtap", dir.path().join("nowhere").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is memtap running there?"), "{}", text(&out));

    let missing_key = dir.path().join("none.key");
    let out = jettison(&[
        "memserv",
        "--vm",
        "vm1",
        "--ram",
        "/nonexistent",
        "--listen",
        "127.0.0.1:0",
        "--key",
        missing_key.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("jettison pair --out"), "{}", text(&out));

    let key = dir.path().join("k");
    assert!(jettison(&["pair", "--out", key.to_str().unwrap()]).status.success());
    let out = jettison(&[
        "memserv",
        "--vm",
        "vm1",
        "--ram",
        "/nonexistent/vm1.ram",
        "--listen",
        "127.0.0.1:0",
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("/nonexistent/vm1.ram") && t.contains("is the VM stopped"), "{t}");

    let out = jettison(&["memtap", "--vm", "vm1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("NAME=VALUE"), "{}", text(&out));
}
