//! End to end: the RAM file plus an `x-ignore-shared` device state is a
//! complete checkpoint. A guest counting on its serial console is saved,
//! its QEMU killed, and a second QEMU on the same RAM file carries on
//! counting where the first stopped.

use std::time::Instant;

use qemu_driver::{load_device_state, resume, save_device_state, GuestImage, QemuError, VmSpec};
use tests::{guest, skip, BOOT_TIMEOUT, COUNT_TIMEOUT};

/// Guest RAM filled with random data before counting, so the RAM file holds
/// real content that must not end up in the device state.
const FILL_MIB: u64 = 32;

fn guest_or_skip() -> Option<GuestImage> {
    guest().map_err(skip).ok()
}

#[test]
fn restored_guest_continues_counting_from_the_checkpoint() {
    let Some(guest) = guest_or_skip() else { return };
    let dir = tempfile::tempdir().expect("create a temp dir");
    let ram_file = dir.path().join("ram");
    let state_file = dir.path().join("device-state");
    let spec = |run: &str| {
        VmSpec::new(&guest, &ram_file, dir.path().join(run)).memory_mib(256).kernel_args(&format!("jt.fill={FILL_MIB}"))
    };

    // First life: boot, fill memory, count a little, save.
    let started = Instant::now();
    let mut first = spec("first").spawn().expect("start the first QEMU");
    first.wait_for_line(&format!("JTFILLED {FILL_MIB}"), BOOT_TIMEOUT).expect("guest fills its RAM");
    first.wait_for_line("JTREADY", BOOT_TIMEOUT).expect("guest boots");
    eprintln!("boot and {FILL_MIB} MiB fill took {:.1} s", started.elapsed().as_secs_f64());
    first.wait_for_count_above(3, COUNT_TIMEOUT).expect("guest counts");
    let mut qmp = first.connect_qmp().expect("QMP to the first QEMU");
    let saved_bytes = save_device_state(&mut qmp, &state_file).expect("save the device state");
    let count_at_stop = first
        .serial()
        .counts()
        .expect("read the first serial log")
        .last()
        .copied()
        .expect("the guest counted before the stop");
    eprintln!("device state: {saved_bytes} bytes for a 256 MiB guest; count at stop: {count_at_stop}");
    assert!(
        saved_bytes < 16 << 20,
        "device state is {saved_bytes} bytes: guest RAM went into the stream (x-ignore-shared not in effect?)"
    );
    drop(qmp);
    drop(first);

    // Second life: same RAM file, device state loaded instead of booting.
    let (mut second, _qmp) = resume(spec("second"), &state_file).expect("resume the guest from its checkpoint");
    let resumed = second.wait_for_count_above(count_at_stop + 2, COUNT_TIMEOUT).expect("restored guest keeps counting");

    let counts = second.serial().counts().expect("read the second serial log");
    assert!(
        counts.first().is_some_and(|&first| first > count_at_stop),
        "restored guest counted {counts:?}, expected to carry on after {count_at_stop}"
    );
    let log = second.serial().read().expect("read the second serial log");
    assert!(!log.contains("JTREADY"), "restored guest booted again:\n{log}");
    eprintln!("counter went on from {count_at_stop} to {resumed} after the restore");
}

#[test]
fn loading_a_corrupt_device_state_reports_qemus_reason() {
    let Some(guest) = guest_or_skip() else { return };
    let dir = tempfile::tempdir().expect("create a temp dir");
    let state_file = dir.path().join("device-state");
    std::fs::write(&state_file, b"not a migration stream").expect("write the corrupt state");
    let spec = VmSpec::new(&guest, dir.path().join("ram"), dir.path().join("run")).incoming_defer();
    let mut qemu = spec.spawn().expect("start QEMU");
    let mut qmp = qemu.connect_qmp().expect("QMP to QEMU");
    match load_device_state(&mut qmp, &state_file) {
        Err(QemuError::MigrationFailed { direction, desc, .. }) => {
            assert_eq!(direction, "load");
            assert!(!desc.is_empty());
            eprintln!("QEMU said: {desc}");
        }
        other => panic!("expected a failed migration, got {other:?}"),
    }
}
