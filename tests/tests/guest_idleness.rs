//! End to end: the idleness check on real QEMU guests. A guest that only
//! prints a counter is judged idle with the default thresholds; a guest that
//! keeps rewriting 16 MiB of its RAM (`jt.busy=1`) is refused, and its
//! dirty-page rate, measured by QEMU's `calc-dirty-rate` under TCG, is far
//! above the idle guest's.

use std::thread::sleep;
use std::time::Duration;

use qemu_driver::{
    dirty_rate, judge, DirtyRate, DiskBackend, DiskFormat, IdleThresholds, IdleVerdict, QemuProcess, Qmp, VmLoadSample,
    VmLoadWindow, VmSpec,
};
use tests::{guest, skip, BOOT_TIMEOUT, COUNT_TIMEOUT};

/// Samples of CPU and I/O taken this far apart...
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// ...this many times after the first: about 5 s of activity.
const SAMPLES: usize = 5;
/// What QEMU measures the dirty rate over.
const DIRTY_CALC: Duration = Duration::from_secs(1);

/// A running guest and what was measured of it.
struct Watched {
    name: &'static str,
    qemu: QemuProcess,
    qmp: Qmp,
    window: VmLoadWindow,
}

impl Watched {
    fn sample(&mut self) {
        let sample = VmLoadSample::take(self.qemu.pid(), &mut self.qmp).expect("sample QEMU's activity");
        self.window.push(sample);
    }

    fn dirty_rate(&mut self) -> DirtyRate {
        dirty_rate(&mut self.qmp, DIRTY_CALC).expect("QEMU measures the dirty-page rate under TCG")
    }
}

#[test]
fn a_counting_guest_is_idle_and_a_guest_rewriting_its_memory_is_not() {
    let Ok(guest) = guest().map_err(skip) else { return };
    let dir = tempfile::tempdir().expect("create a temp dir");
    let spec = |name: &str, args: &str| {
        VmSpec::new(&guest, dir.path().join(format!("{name}.ram")), dir.path().join(name)).kernel_args(args)
    };
    // Both boot at once: TCG boots are the slow part of this test.
    // The idle guest has a blank disk, so that a disk is in the samples: the
    // kernel reads its partition table at boot.
    let disk = dir.path().join("blank.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("write a blank disk image");
    let idle = spec("idle", "").extra_args(DiskBackend::Image { path: disk, format: DiskFormat::Raw }.qemu_args());
    let mut idle = idle.spawn().expect("start the idle guest's QEMU");
    let mut busy = spec("busy", "jt.busy=1").spawn().expect("start the busy guest's QEMU");
    busy.wait_for_line("JTBUSY", BOOT_TIMEOUT).expect("busy guest starts rewriting its memory");
    busy.wait_for_line("JTREADY", BOOT_TIMEOUT).expect("busy guest boots");
    idle.wait_for_line("JTREADY", BOOT_TIMEOUT).expect("idle guest boots");
    // A few counts in, the idle guest's boot work is over.
    idle.wait_for_count_above(3, COUNT_TIMEOUT).expect("idle guest counts");

    // The defaults but for CPU: under TCG a guest that only counts, with
    // its agent waiting on its channel, costs about 10% of a core, the
    // default limit (set for KVM, where it costs a fraction of that).
    let thresholds = IdleThresholds { max_cpu_percent: 25.0, ..IdleThresholds::default() };
    let watch = |name, mut qemu: QemuProcess| {
        let qmp = qemu.connect_qmp().expect("QMP to the guest's QEMU");
        Watched { name, qemu, qmp, window: VmLoadWindow::new(thresholds.window) }
    };
    let mut guests = [watch("idle-vm", idle), watch("busy-vm", busy)];
    for round in 0..=SAMPLES {
        if round > 0 {
            sleep(SAMPLE_EVERY);
        }
        guests.iter_mut().for_each(Watched::sample);
    }
    let [idle, busy] = guests.each_mut().map(|watched| {
        let dirty = watched.dirty_rate();
        let verdict = judge(watched.name, &watched.window, dirty, &thresholds);
        eprintln!(
            "{}: CPU {:.1}% of a core, disk I/O {:.0} B/s over {:.1} s; dirty pages {} MiB/s over {:?}\n  verdict: {}",
            watched.name,
            watched.window.cpu_percent().expect("six samples a second apart give a CPU rate"),
            watched.window.io_bytes_per_sec().expect("six samples a second apart give an I/O rate"),
            watched.window.span().as_secs_f64(),
            dirty.mib_per_sec,
            dirty.period,
            match &verdict {
                IdleVerdict::Idle(measured) => format!("idle: {measured}"),
                IdleVerdict::Busy(why) => format!("busy: {why}"),
            }
        );
        (dirty, verdict)
    });

    let [idle_disk_bytes, busy_disk_bytes] =
        guests.each_ref().map(|watched| watched.window.samples().last().expect("sampled").disk_bytes);
    eprintln!("disk bytes read and written since boot: idle-vm {idle_disk_bytes}, busy-vm {busy_disk_bytes}");
    assert!(idle_disk_bytes > 0, "query-blockstats shows no I/O on the idle guest's disk, though its kernel probed it");
    assert_eq!(busy_disk_bytes, 0, "the busy guest has no disk");
    let ((idle_dirty, idle_verdict), (busy_dirty, busy_verdict)) = (idle, busy);
    assert!(
        busy_dirty.mib_per_sec >= 4.0 * idle_dirty.mib_per_sec.max(1.0),
        "the busy guest's dirty rate ({} MiB/s) is not well above the idle guest's ({} MiB/s)",
        busy_dirty.mib_per_sec,
        idle_dirty.mib_per_sec
    );
    // Within the limits, but 5 s of samples cannot fill a 60 s window: not
    // idle yet, with the figures and how long to wait.
    match idle_verdict {
        IdleVerdict::Busy(why) => {
            assert!(why.starts_with("idle-vm cannot be judged idle yet: CPU "), "the counting guest: {why}");
            assert!(why.contains("try again in 5"), "the refusal does not say how long to wait: {why}");
        }
        IdleVerdict::Idle(measured) => panic!("5 s of samples cannot fill a 60 s window, yet idle: {measured}"),
    }
    match busy_verdict {
        IdleVerdict::Busy(why) => {
            assert!(why.starts_with("busy-vm is not idle: "), "{why}");
            assert!(why.contains("dirty-page rate"), "the refusal does not name the dirty rate: {why}");
            assert!(why.contains("of the 60 s window measured so far"), "the refusal hides the short window: {why}");
        }
        IdleVerdict::Idle(measured) => panic!("the guest rewriting its memory was judged idle: {measured}"),
    }

    // A measurement an earlier caller started and gave up on (a timeout
    // under load) is still running: the next one waits for it and measures
    // afresh, over its own period.
    let [idle, _] = &mut guests;
    idle.qmp
        .execute("calc-dirty-rate", Some(serde_json::json!({ "calc-time": 3, "mode": "page-sampling" })))
        .expect("QEMU starts a 3 s measurement");
    let dirty = idle.dirty_rate();
    // QEMU reports the milliseconds it measured over (1001 for 1 s, say):
    // its own 1 s, not the 3 s one's.
    assert!(dirty.period < 2 * DIRTY_CALC, "the measurement after a running one is not its own: {dirty:?}");
}
