//! The simulator and the real desktop agree on a short synthetic schedule:
//! the same requests, sleeps, wakes by a request and requests that waited
//! for a wake, when every gap is clearly shorter than t_w or clearly
//! longer than t_w and a suspend (so no timing can tip either way).
//!
//! Real: `jettison power` with the emulated S3 beside the real memserv and
//! diskserv in a desktop namespace, the requests sent from a server
//! namespace through `RemoteImage` and the server's `DesktopWaker`
//! ([`bench::power_replay::replay_real`]). Root only (namespaces,
//! AF_PACKET); skipped with a reason elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use bench::power_replay::{replay_real, Desktop, Request, Schedule, BLOCK_BYTES};
use desktop_daemon::microsleep::WaitPolicy;
use fetch_trace::Device;
use power::PowerProfile;
use wire::ByteRange;

/// t_w, and the emulated suspend and resume, seconds.
const WAIT: f64 = 2.0;
const TRANSITION: f64 = 1.0;

fn request(at_secs: f64, device: Device, unit: u64) -> Request {
    let bytes = match device {
        Device::Memory => bench::trace_shape::PAGE_BYTES,
        Device::Disk => BLOCK_BYTES,
    };
    Request { at_secs, device, range: ByteRange::new(unit * bytes, 4 * bytes as u32) }
}

#[test]
fn the_real_desktop_sleeps_and_wakes_as_the_simulator_says() {
    if let Err(why) = tests::netns::available() {
        return tests::skip(why);
    }
    // Awake for the first three (gaps of 0.5 s); asleep long before 10 s,
    // which wakes it, and 10.2 s comes during that wake; asleep again long
    // before 30 s; asleep when the user returns at 45 s.
    let schedule = Schedule {
        requests: vec![
            request(0.5, Device::Memory, 10),
            request(1.0, Device::Memory, 200),
            request(1.5, Device::Disk, 3),
            request(10.0, Device::Memory, 40),
            request(10.2, Device::Disk, 9),
            request(30.0, Device::Memory, 7),
        ],
        duration_secs: 45.0,
    };
    let desktop = Desktop {
        profile: PowerProfile::TABLE_1.with_transition_secs(TRANSITION, TRANSITION),
        policy: WaitPolicy::Fixed,
        wait_secs: WAIT,
        serve_secs: 0.01,
    };
    let simulated = desktop.simulate(&schedule).unwrap();
    assert_eq!(
        (simulated.wakes, simulated.woken_by_requests, simulated.waited_for_wake),
        (3, 2, 3),
        "the schedule is not the one this test means: {simulated:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let real = replay_real(&schedule, &desktop, dir.path()).unwrap();
    eprintln!("simulated: {simulated:?}\nreal: {real:?}");
    assert_eq!(real.requests, simulated.requests);
    assert_eq!(real.energy.wakes, simulated.wakes, "sleeps (each ends in a wake), the user's return's included");
    assert_eq!(real.woken_by_requests, simulated.woken_by_requests, "wakes the server sent magic packets for");
    assert_eq!(real.waited_for_wake, simulated.waited_for_wake, "requests that waited for a wake");
    assert!(real.energy.secs.asleep > 0.0, "{real:?}");
}
