//! Every systemd unit the package ships is confined: systemd's own
//! measure, `systemd-analyze security --offline=true UNIT-FILE`, rates its
//! exposure below 5.0 (systemd's "OK" and better), and the figure its
//! comment states is the one measured. The analysis reads the unit file
//! only: it needs no systemd running, and says nothing of whether the
//! service works so confined (the end-to-end tests run the daemons outside
//! systemd).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is the test failing

use std::path::{Path, PathBuf};
use std::process::Command;

/// The exposure a shipped unit must stay below.
const LIMIT: f64 = 5.0;

/// The shipped units, `packaging/systemd/*.service`, sorted.
fn units() -> Vec<PathBuf> {
    let dir = tests::repo_root().join("packaging/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    units
}

/// The overall exposure `systemd-analyze security` gives `unit`, from its
/// `Overall exposure level for NAME: 3.4 OK` line.
fn exposure(unit: &Path) -> f64 {
    let out = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("Overall exposure level for")).unwrap_or_else(|| {
        panic!("no overall exposure for {}: {}", unit.display(), String::from_utf8_lossy(&out.stderr))
    });
    let figure = line.rsplit_once(": ").and_then(|(_, rest)| rest.split_whitespace().next());
    figure.and_then(|f| f.parse().ok()).unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"))
}

/// The exposure `unit`'s comment states, from its `N before, M with these` line.
fn stated(unit: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(unit).unwrap();
    let line = text.lines().find(|l| l.contains(" with these"))?;
    let (before, _) = line.split_once(" with these")?;
    before.rsplit(' ').next()?.parse().ok()
}

#[test]
fn every_shipped_unit_is_rated_below_5_by_systemd_analyze_security() {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return tests::skip("no systemd-analyze (Debian's systemd package; scripts/install-deps installs it)"),
    }
    let units = units();
    assert!(units.len() >= 7, "packaging/systemd/ holds the units: {units:?}");
    let mut too_exposed = Vec::new();
    for unit in &units {
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        let measured = exposure(unit);
        eprintln!("{name}: {measured:.1}");
        if measured >= LIMIT {
            too_exposed.push(format!("{name}: {measured:.1}"));
        }
        assert_eq!(stated(unit), Some(measured), "{name}'s comment states another exposure than the measured one");
    }
    assert!(too_exposed.is_empty(), "units rated {LIMIT} or more: {too_exposed:?}");
}
