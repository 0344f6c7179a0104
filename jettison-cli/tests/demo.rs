//! Runs the demo (the example `./scripts/demo` runs) as a user would, with
//! this build's `jettison`, and checks its report: the guest went to the
//! server and back keeping its state, the client's connection survived, and
//! less than half the guest's RAM moved each way.
#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::path::PathBuf;
use std::process::Command;

use tests::{fuse_available, guest, skip};

/// The demo example, built by `cargo test` beside this test binary.
fn demo_example() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> -> target/<profile>/examples/demo
    let example = exe.parent()?.parent()?.join("examples").join("demo");
    example.exists().then_some(example)
}

#[test]
fn the_demo_moves_a_guest_there_and_back_and_reports_what_moved() {
    if let Err(why) = guest().and_then(|_| fuse_available()).and_then(|()| tests::netns::available()) {
        return skip(why);
    }
    let Some(example) = demo_example() else {
        return skip("the demo example was not built beside the tests (run cargo test without --lib/--test filters)");
    };
    let out = Command::new(example).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the demo failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("client connection        survived"), "{text}");
    assert!(text.contains("guest state kept         yes"), "{text}");
    assert!(text.contains("the guest's test pattern, as on the desk"), "{text}");
    for line in ["bytes to the server", "reintegration"] {
        let share: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|r| r.split(" = ").nth(1))
            .and_then(|r| r.split('%').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no '{line}' share in the report:\n{text}"));
        assert!(share < 50.0, "{line}: {share}% of the guest's RAM");
    }
}
