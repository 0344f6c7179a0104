//! Runs the demo (the example `./scripts/demo` runs) as a user would, with
//! this build's `jettison`, and checks its report: the desktop daemon warned
//! the idle user and moved the guest itself, the desktop slept and the
//! server woke it, the guest came back at the user's return keeping its
//! state, the client's connection survived, less than half the guest's RAM
//! moved each way, and the power timeline is an image (SVG, and PNG where
//! `rsvg-convert` is installed). No timing is asserted.
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
fn the_demo_runs_the_whole_loop_and_reports_what_moved_the_sleeps_and_the_energy() {
    let ready = guest().and_then(|_| fuse_available()).and_then(|()| tests::netns::available());
    if let Err(why) = ready.and_then(|()| tests::xvfb::Xvfb::start().map(drop)) {
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
    assert!(text.contains("the daemon's warning window appeared"), "{text}");
    let line = |start: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(start))
            .unwrap_or_else(|| panic!("no '{start}' in the report:\n{text}"))
    };
    let first_number = |words: &str| -> f64 {
        let word = words.split_whitespace().next().unwrap_or_else(|| panic!("no figure in {words:?}"));
        word.parse().unwrap_or_else(|_| panic!("{word:?} is not a figure, in {words:?}"))
    };
    // "desktop sleeps  N (emulated S3), M wakes by ..., S s asleep of T s ..."
    let sleeps_line = line("desktop sleeps");
    let sleeps = first_number(sleeps_line);
    let wakes = first_number(sleeps_line.split("), ").nth(1).unwrap_or_default());
    let asleep = first_number(sleeps_line.split(", ").last().unwrap_or_default());
    assert!(sleeps >= 2.0 && wakes >= 1.0 && asleep > 0.0, "slept, was woken and slept again: {sleeps_line}");
    // "energy saved  X kJ = P% of ..."
    let energy = line("energy saved");
    let percent = first_number(energy.split(" = ").nth(1).and_then(|p| p.split('%').next()).unwrap_or_default());
    assert!(first_number(energy).is_finite() && percent.is_finite(), "{energy}");
    // "power timeline  PATH.svg[ and PATH.png] (...)"
    let chart = line("power timeline").trim_start();
    let svg = chart.split_whitespace().next().unwrap();
    let svg_text = std::fs::read_to_string(svg).unwrap_or_else(|e| panic!("the timeline {svg}: {e}"));
    assert!(svg_text.starts_with("<svg ") && svg_text.trim_end().ends_with("</svg>"), "{svg} is no SVG");
    assert!(svg_text.contains("desktop") && svg_text.contains("server") && svg_text.contains("<path "), "{svg}");
    if let Some(png) = chart.split(" and ").nth(1).and_then(|rest| rest.split_whitespace().next()) {
        let bytes = std::fs::read(png).unwrap_or_else(|e| panic!("the timeline {png}: {e}"));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png} is no PNG");
    }
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
