//! Jettison's way back: reintegration as DESIGN.md section 3 has it, for
//! memory only (the small guest has no disk here; the desktop guest's disk
//! is shared storage in this benchmark).
//!
//! 1. Server: stop the VM and save its descriptor with `x-ignore-shared`;
//!    end QEMU. Its exit unmaps guest RAM, and FUSE writes the dirty pages
//!    of a shared mapping back at unmap, into memtap's dirty slice; an
//!    fsync of memtap's file then makes the slice durable, and unmounting
//!    flushes it once more.
//! 2. Server to desktop, over one TCP connection across the capped link:
//!    the descriptor's length (u64, little-endian), the descriptor, then
//!    the dirty set exported from memtap's slice store
//!    (`migration_formats::dirty_set`, which frames and checks itself).
//! 3. Desktop: stage the set beside its RAM file (verified, durable), and
//!    only then commit it into the RAM file; load the descriptor into a QEMU
//!    waiting `-incoming defer` on that file, and `cont`.
//!
//! The desktop's QEMU is started before the clock, as the destination QEMU
//! of QEMU's own migrations is: a desktop expecting its VM back can start
//! it while the set arrives. It maps the RAM file but reads nothing of it
//! until the descriptor is loaded, after the commit.
//!
//! The channel here is plain TCP, as QEMU's own migrations in this
//! benchmark are; the project's wire would add authentication and
//! encryption to both.

use std::fs::{self, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bench::measure::timed;
use memtap::{Mount, PAGE_SIZE};
use migration_formats::dirty_set::{ApplySummary, ApplyTarget, ExportSummary};
use qemu_driver::{announce, load_device_state, save_device_state, QemuProcess, Qmp};
use remote_wakeup::netns::run_in;
use slice_store::export_dirty_set;
use slice_store::SliceStore;
use tests::DesktopServer;

use crate::office::{CappedOffice, Side};
use crate::{wait_until_runs, BenchResult, Checkpoint, Move, MIB, VM};

/// Where the desktop receives the descriptor and the dirty set.
const REINTEGRATION_PORT: u16 = 4446;
/// The largest descriptor the desktop accepts (a device state without RAM
/// is a few hundred KiB).
const MAX_DESCRIPTOR: u64 = 64 << 20;
/// Read buffer of the desktop's receiving end.
const RECEIVE_BUFFER: usize = 256 << 10;

/// A VM consolidated on the server by Jettison: what the way back starts
/// from.
pub struct Consolidated {
    /// The VM's QEMU on the server, running on memtap's file.
    pub qemu: QemuProcess,
    /// Its QMP.
    pub qmp: Qmp,
    /// memtap on the server.
    pub mount: Mount,
    /// memtap's slice directory for the VM.
    pub slices: PathBuf,
    /// memserv on the desktop, serving the checkpoint.
    pub memserv: DesktopServer,
    /// The desktop's RAM file: the checkpoint the VM left.
    pub desktop_ram: PathBuf,
}

/// What the desktop's receiving end reports.
struct Received {
    staged_at: Instant,
    applied: ApplySummary,
    commit_secs: f64,
}

/// Brings the consolidated VM back to the desktop and resumes it there.
/// Returns the measured move and the desktop's QEMU, running.
pub fn reintegrate(office: &CappedOffice, cp: &Checkpoint, vm: Consolidated) -> BenchResult<(Move, QemuProcess, Qmp)> {
    let dir = cp.dir.path();
    let Consolidated { qemu, mut qmp, mount, slices, memserv, desktop_ram } = vm;
    // Before the clock: the desktop listens, and its QEMU waits for a
    // descriptor on the RAM file.
    let listener =
        run_in(Some(office.desktop()), || TcpListener::bind((CappedOffice::ip(Side::Desktop), REINTEGRATION_PORT)))??;
    let spec = cp.spec(office, Side::Desktop, &desktop_ram, "jettison", "back").incoming_defer();
    let (back, mut back_qmp) = run_in(Some(office.desktop()), || -> Result<_, qemu_driver::QemuError> {
        let mut qemu = spec.spawn()?;
        let qmp = qemu.connect_qmp()?;
        Ok((qemu, qmp))
    })??;
    let received_state = dir.join("jettison-back-desktop.state");
    let target = ApplyTarget::new(&desktop_ram, PAGE_SIZE as u32, dir.join("staging"));
    let descriptor_path = received_state.clone();

    let before = office.link_bytes()?;
    let start = Instant::now();
    let receiver = std::thread::spawn(move || receive(listener, &descriptor_path, &target));

    // Server, step 1: stop, save, end QEMU, make the dirty slice durable.
    let descriptor = dir.join("jettison-back-server.state");
    let (descriptor_bytes, save_time) = timed(|| save_device_state(&mut qmp, &descriptor));
    let descriptor_bytes = descriptor_bytes?;
    let last_count = cp.guest.last_count(&qemu)?;
    let (_, quit_time) = timed(|| drop((qmp, qemu)));
    let ram_file = mount.mountpoint().join(format!("{VM}.ram"));
    let (synced, sync_time) = timed(|| OpenOptions::new().read(true).write(true).open(&ram_file)?.sync_all());
    synced.map_err(|e| format!("fsync of {}: {e}", ram_file.display()))?;
    let stats = mount.vms()[0].stats();
    let (unmounted, unmount_time) = timed(|| mount.unmount());
    unmounted?;
    // Nothing reads the checkpoint any more: memserv can stop before the
    // set is committed into it.
    let (_, memserv_time) = timed(|| drop(memserv));
    let server_done = start.elapsed();

    // Step 2: descriptor and dirty set on one connection.
    let store = SliceStore::open(&slices, PAGE_SIZE as u32, cp.ram_mib * MIB)?;
    let sent = run_in(Some(office.server()), || -> BenchResult<ExportSummary> {
        let mut stream = TcpStream::connect((CappedOffice::ip(Side::Desktop), REINTEGRATION_PORT))?;
        stream.write_all(&descriptor_bytes.to_le_bytes())?;
        stream.write_all(&fs::read(&descriptor)?)?;
        let summary = export_dirty_set(&store, &mut stream)?;
        stream.shutdown(Shutdown::Write)?;
        Ok(summary)
    })??;
    let received = receiver.join().map_err(|_| "the desktop's receiving end panicked")??;
    let to_release = received.staged_at - start;
    let bytes_at_release = office.link_bytes()? - before;

    // Step 3: the VM resumes on the desktop's updated RAM file.
    load_device_state(&mut back_qmp, &received_state)?;
    back_qmp.execute("cont", None)?;
    let arrival = cp.guest.watch(last_count, &back);
    let (to_run, at_run) = wait_until_runs(office, arrival, &back, start, "Jettison back")?;
    let bytes_to_run = at_run - before;
    announce(&mut back_qmp)?;
    let bytes_total = bytes_to_run.max(bytes_at_release);

    fs::remove_dir_all(&slices)?;
    let note = format!(
        "while consolidated memtap answered {} faults, {} from its prefetch cache, and fetched {} pages ({:.2} MiB \
         of page data) in {} remote fetches; the guest discarded {} pages (free page reporting); server: saved a {:.1} KiB descriptor in {:.2} s, QEMU ended in {:.2} s (dirty pages written back), \
         fsync {:.2} s, unmount {:.2} s, memserv stopped in {:.2} s, memtap held {} dirty pages ({} written in \
         all), server side done at {:.2} s; sent a dirty set of {} pages ({:.2} MiB data, {:.2} MiB stream), \
         staged at {:.2} s, committed {} pages in {:.2} s; link {:.2} MiB",
        stats.faults,
        stats.prefetch_hits,
        stats.pages_fetched,
        stats.bytes_fetched as f64 / MIB as f64,
        stats.remote_fetches,
        stats.pages_discarded,
        descriptor_bytes as f64 / 1024.0,
        save_time.as_secs_f64(),
        quit_time.as_secs_f64(),
        sync_time.as_secs_f64(),
        unmount_time.as_secs_f64(),
        memserv_time.as_secs_f64(),
        stats.dirty_pages,
        stats.pages_written,
        server_done.as_secs_f64(),
        sent.units,
        sent.data_bytes as f64 / MIB as f64,
        sent.stream_bytes as f64 / MIB as f64,
        to_release.as_secs_f64(),
        received.applied.units,
        received.commit_secs,
        bytes_total as f64 / MIB as f64,
    );
    if received.applied.units != sent.units {
        return Err(format!("the desktop committed {} pages of the {} sent", received.applied.units, sent.units).into());
    }
    Ok((Move { bytes_to_run, bytes_total, to_run, to_release: Some(to_release), note }, back, back_qmp))
}

/// The desktop's end: the descriptor into `descriptor`, the dirty set
/// staged and verified, then committed into the RAM file.
fn receive(listener: TcpListener, descriptor: &Path, target: &ApplyTarget) -> BenchResult<Received> {
    let (stream, _) = listener.accept()?;
    let mut input = BufReader::with_capacity(RECEIVE_BUFFER, stream);
    let mut len = [0u8; 8];
    input.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_DESCRIPTOR {
        return Err(format!("the descriptor announces {len} bytes, above the {MAX_DESCRIPTOR} accepted").into());
    }
    let mut bytes = vec![0u8; len as usize];
    input.read_exact(&mut bytes)?;
    fs::write(descriptor, &bytes)?;
    let staged = target.stage(&mut input)?;
    let staged_at = Instant::now();
    let (applied, commit_time) = timed(|| staged.commit());
    Ok(Received { staged_at, applied: applied?, commit_secs: commit_time.as_secs_f64() })
}
