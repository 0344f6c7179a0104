//! Runs the memory-path demo (the example `./scripts/demo` runs) as a user
//! would, with this build's `jettison`, and checks its report: the guest kept
//! running on the server and fetched less than half its RAM.
#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::path::PathBuf;
use std::process::Command;

use jettison_tests::{fuse_available, guest, repo_root, skip};

/// The demo example, built by `cargo test` beside this test binary.
fn demo_example() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> -> target/<profile>/examples/demo_memory_path
    let example = exe.parent()?.parent()?.join("examples").join("demo_memory_path");
    example.exists().then_some(example)
}

#[test]
fn the_demo_resumes_a_guest_on_memtap_and_reports_what_moved() {
    if let Err(why) = guest().and_then(|_| fuse_available()) {
        return skip(why);
    }
    let Some(example) = demo_example() else {
        return skip("the demo example was not built beside the tests (run cargo test without --lib/--test filters)");
    };
    let out = Command::new(example).arg(env!("CARGO_BIN_EXE_jettison")).arg(repo_root()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the demo failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("guest kept running        yes"), "{text}");
    let share: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("page data fetched").and_then(|r| r.split('=').nth(1)))
        .and_then(|r| r.trim().split('%').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no 'page data fetched' line in the report:\n{text}"));
    assert!(share < 50.0, "the demo fetched {share}% of the guest's RAM");
}
