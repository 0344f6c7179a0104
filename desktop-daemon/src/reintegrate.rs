//! Receiving a VM back: the server's descriptor, dirty pages and dirty
//! blocks, applied to the checkpoint only once all of them have arrived.
//!
//! The stream after `Returning` is the descriptor, the memory dirty set and
//! one disk dirty set per disk, in the guest's order. The rule is the
//! dirty-set module's, widened to all the parts: the checkpoint (RAM file,
//! disk images, `checkpoint.state`) is not touched until every part has
//! arrived and verified and is durable beside it. In order:
//!
//! 1. the descriptor into `staging/incoming.state` (CRC checked, fsynced);
//! 2. each set staged and verified by [`ApplyTarget::stage`], memory into
//!    `staging/memory/`, the first disk's into `staging/disk/`, disk `n`'s
//!    (from 1) into `staging/disk.<n>/`;
//! 3. `staging/complete` written and fsynced: from here on the transfer is
//!    to be applied, also after a crash;
//! 4. every set committed into the RAM file and the disk images;
//! 5. `incoming.state` renamed over `checkpoint.state`, `complete` removed.
//!
//! [`finish_pending`] runs before a VM starts: with `complete` present it
//! redoes 4 and 5 (writing units again is harmless); without it, whatever a
//! broken transfer staged is deleted and the checkpoint stands as it was.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use std::time::Instant;

use daemon_protocol::local::{LocalReply, ReintegrateReport};
use daemon_protocol::protocol::MAX_DESCRIPTOR;
use daemon_protocol::{ChunkReader, Control, ReturnHeader};
use migration_formats::dirty_set::{ApplySummary, ApplyTarget, StagedSet};
use wire::Channel;

use crate::consolidate::{ask, Context};
use crate::error::{DesktopError, ReceiveError};
use crate::local_vm::{close_disks, LocalVm, Placement};
use qemu_driver::{Resumed, ViewAccess};

/// Pages and blocks are 4 KiB.
const UNIT: u32 = 4096;

/// Where a VM's checkpoint is and where a transfer is staged.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The RAM file.
    pub ram: PathBuf,
    /// The disk images (or raw views of them), in the guest's order.
    pub disks: Vec<PathBuf>,
    /// The descriptor the VM resumes from.
    pub state: PathBuf,
    /// The staging directory.
    pub staging: PathBuf,
}

impl Checkpoint {
    fn memory(&self) -> ApplyTarget {
        ApplyTarget::new(&self.ram, UNIT, self.staging.join("memory"))
    }

    fn disk(&self, index: usize) -> ApplyTarget {
        let staging = if index == 0 { "disk".to_owned() } else { format!("disk.{index}") };
        ApplyTarget::new(&self.disks[index], UNIT, self.staging.join(staging))
    }

    fn incoming(&self) -> PathBuf {
        self.staging.join("incoming.state")
    }

    fn complete(&self) -> PathBuf {
        self.staging.join("complete")
    }
}

/// What a reintegration applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes of the stream.
    pub bytes: u64,
    /// Pages written into the RAM file (not those discarded on the server,
    /// which are punched as holes).
    pub pages: u64,
    /// Blocks written into the disk images (all its disks together).
    pub blocks: u64,
}

impl Checkpoint {
    /// The checkpoint of `vm`, whose disks are the raw files `disks` (the
    /// images, or views of them: see [`LocalVm::raw_disks`]).
    pub fn of(vm: &LocalVm, disks: &[&Path]) -> Checkpoint {
        Checkpoint {
            ram: vm.ram_file(),
            disks: disks.iter().map(|disk| disk.to_path_buf()).collect(),
            state: vm.checkpoint(),
            staging: vm.dir().join("staging"),
        }
    }
}

/// What a reintegration brings home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnFrom {
    /// The VM running on the server, stopped there for the way back.
    Server,
    /// The server's last checkpoint of a VM it lost (its QEMU died, or it
    /// restarted): what the VM did after that checkpoint is lost.
    ServerCheckpoint,
}

/// Brings `vm` home from the server: asks for it, receives and applies the
/// stream (reporting progress), resumes it here and tells the server it
/// may forget it. Returns the report.
///
/// # Errors
/// A text saying what failed and what to do; the checkpoint is intact.
pub fn reintegrate(
    ctx: Context<'_>,
    vm: &mut LocalVm,
    from: ReturnFrom,
    report: &mut dyn FnMut(LocalReply),
) -> Result<ReintegrateReport, DesktopError> {
    let name = vm.name().clone();
    if !matches!(vm.placement(), Placement::Server { .. }) {
        return Err(match from {
            ReturnFrom::Server => DesktopError::AlreadyHome { vm: name },
            ReturnFrom::ServerCheckpoint => DesktopError::RecoverAfterFailover { vm: name },
        });
    }
    let (request, resumed, state) = match from {
        ReturnFrom::Server => (Control::Reintegrate(name.clone()), Resumed::WhereItStopped, "stopped on the server"),
        // Its connections' peers moved on after the checkpoint.
        ReturnFrom::ServerCheckpoint => {
            (Control::Recover(name.clone()), Resumed::FromOlderState, "coming from the server's last checkpoint")
        }
    };
    let started = Instant::now();
    let server = vm.placement().fleet_server().cloned();
    let mut channel = ctx.connect(server.as_ref())?;
    let header = match ask(&mut channel, &request)? {
        Control::Returning(header) => header,
        Control::Failed(why) => return Err(DesktopError::Refused(why)),
        other => return Err(DesktopError::UnexpectedAnswer { request: request.kind(), got: other.kind() }),
    };
    // In a fleet, only the stay this desktop made comes home.
    if let Some(ours) = vm.placement().fence() {
        if header.fence != ours {
            return Err(DesktopError::WrongFence { vm: name, theirs: header.fence, ours });
        }
    }
    let stopped = started.elapsed();
    report(LocalReply::Log {
        line: format!(
            "{name} {state}; receiving {} dirty pages and {} dirty blocks ({} bytes)",
            header.dirty_pages,
            header.dirty_blocks,
            header.total_bytes()
        ),
    });
    vm.stop_serving();
    let disks = vm.raw_disks(ViewAccess::ReadWrite)?;
    let checkpoint = Checkpoint::of(vm, &disks.iter().map(|disk| disk.path()).collect::<Vec<_>>());
    let total = header.total_bytes();
    let what = name.to_string();
    let received = receive(&mut channel, &header, &checkpoint, |done| {
        report(LocalReply::Progress { what: what.clone(), done, total })
    })
    .map_err(|source| DesktopError::Receive { vm: name.clone(), source: Box::new(source) })?;
    close_disks(&name, disks)?;
    let transferred = started.elapsed();
    vm.resume_from(&checkpoint.state, resumed)?;
    vm.set_placement(Placement::Desktop)?;
    let running = started.elapsed();
    if let Err(e) = ask(&mut channel, &Control::Reintegrated(name.clone())) {
        tracing::warn!(vm = %name, "could not tell the server it may forget the VM: {}", wire::chain(&e));
    }
    Ok(ReintegrateReport {
        vm: name,
        bytes: received.bytes,
        dirty_pages: received.pages,
        dirty_blocks: received.blocks,
        server_stop_secs: stopped.as_secs_f64(),
        transfer_secs: (transferred - stopped).as_secs_f64(),
        total_secs: running.as_secs_f64(),
    })
}

/// Receives the stream announced by `header` from `channel` and applies it
/// to `checkpoint` as the module doc says. `progress` sees the bytes
/// received so far.
///
/// # Errors
/// A text saying which part broke off or failed to verify; the checkpoint
/// is then as it was, and what was staged is gone.
pub fn receive(
    channel: &mut Channel,
    header: &ReturnHeader,
    checkpoint: &Checkpoint,
    progress: impl FnMut(u64),
) -> Result<Received, ReceiveError> {
    let reader = ChunkReader::new(channel, progress);
    let staged = stage(reader, header, checkpoint);
    let (memory, disks) = match staged {
        Ok(sets) => sets,
        Err(e) => {
            discard_staging(checkpoint);
            return Err(e);
        }
    };
    let blocks = disks.iter().map(|disk| disk.header().unit_count).sum();
    let memory = commit(checkpoint, Some((memory, disks)))?;
    let pages = memory.map_or(0, |applied| applied.units - applied.discarded);
    Ok(Received { bytes: header.total_bytes(), pages, blocks })
}

/// Steps 1 to 3: everything received, verified and durable beside the
/// checkpoint, nothing applied.
///
/// # Errors
/// The part that broke off or failed to verify.
pub fn stage(
    mut reader: impl Read,
    header: &ReturnHeader,
    checkpoint: &Checkpoint,
) -> Result<(StagedSet, Vec<StagedSet>), ReceiveError> {
    finish_pending(checkpoint)?;
    if header.disk_count as usize != checkpoint.disks.len() {
        return Err(ReceiveError::DiskCount { sent: header.disk_count, have: checkpoint.disks.len() });
    }
    fs::create_dir_all(&checkpoint.staging).map_err(|source| ReceiveError::File {
        action: "create",
        path: checkpoint.staging.clone(),
        source,
    })?;
    if header.descriptor_bytes > MAX_DESCRIPTOR {
        return Err(ReceiveError::DescriptorTooLarge { len: header.descriptor_bytes });
    }
    let len = header.descriptor_bytes as usize;
    let mut descriptor = vec![0u8; len];
    reader.read_exact(&mut descriptor).map_err(ReceiveError::DescriptorBrokeOff)?;
    if crc32fast::hash(&descriptor) != header.descriptor_crc {
        return Err(ReceiveError::DescriptorDamaged);
    }
    write_durably(&checkpoint.incoming(), &descriptor)?;
    let memory = checkpoint
        .memory()
        .stage(&mut reader)
        .map_err(|source| ReceiveError::Stage { what: "memory".to_owned(), source: Box::new(source) })?;
    let mut disks = Vec::with_capacity(checkpoint.disks.len());
    for index in 0..checkpoint.disks.len() {
        let disk = checkpoint.disk(index).stage(&mut reader).map_err(|source| {
            for staged in std::iter::once(&memory).chain(&disks) {
                let _ = fs::remove_file(staged.path());
            }
            ReceiveError::Stage { what: disk_name(index), source: Box::new(source) }
        })?;
        disks.push(disk);
    }
    // Nothing may follow the last disk set but the end of the stream.
    let mut extra = [0u8; 1];
    match reader.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return Err(ReceiveError::TrailingData),
        Err(e) => return Err(ReceiveError::StreamEnd(e)),
    }
    write_durably(&checkpoint.complete(), b"all parts staged and verified\n")?;
    Ok((memory, disks))
}

/// How errors name disk `index`'s dirty set: "disk" for the first (as
/// with one disk), "disk 2" and on for the others.
fn disk_name(index: usize) -> String {
    if index == 0 {
        "disk".to_owned()
    } else {
        format!("disk {}", index + 1)
    }
}

/// Steps 4 and 5, for sets just staged or (with `None`) for whatever a
/// crash left after step 3; says what the memory set applied, if one was.
fn commit(
    checkpoint: &Checkpoint,
    staged: Option<(StagedSet, Vec<StagedSet>)>,
) -> Result<Option<ApplySummary>, ReceiveError> {
    let apply_error = |what: String, source| ReceiveError::Apply {
        what,
        staging: checkpoint.staging.clone(),
        source: Box::new(source),
    };
    let memory = match staged {
        Some((memory, disks)) => {
            let applied = memory.commit().map_err(|e| apply_error("memory".to_owned(), e))?;
            for (index, disk) in disks.into_iter().enumerate() {
                disk.commit().map_err(|e| apply_error(disk_name(index), e))?;
            }
            Some(applied)
        }
        None => {
            let applied = checkpoint.memory().resume_pending().map_err(|e| apply_error("memory".to_owned(), e))?;
            for index in 0..checkpoint.disks.len() {
                checkpoint.disk(index).resume_pending().map_err(|e| apply_error(disk_name(index), e))?;
            }
            applied
        }
    };
    fs::rename(checkpoint.incoming(), &checkpoint.state)
        .and_then(|()| durable_file::sync_dir(durable_file::parent_dir(&checkpoint.state)))
        .map_err(|source| ReceiveError::File {
            action: "put the new descriptor in place at",
            path: checkpoint.state.clone(),
            source,
        })?;
    fs::remove_file(checkpoint.complete()).map_err(|source| ReceiveError::File {
        action: "clear",
        path: checkpoint.complete(),
        source,
    })?;
    Ok(memory)
}

impl Checkpoint {
    /// Whether a crash interrupted a complete transfer (see [`finish_pending`]).
    pub fn has_pending(&self) -> bool {
        self.complete().exists()
    }
}

/// Finishes a transfer a crash interrupted after it was complete, or
/// deletes what an incomplete one staged. Run before the VM starts.
///
/// # Errors
/// [`ReceiveError::Apply`] when the staged sets cannot be applied.
pub fn finish_pending(checkpoint: &Checkpoint) -> Result<(), ReceiveError> {
    if checkpoint.complete().exists() {
        tracing::warn!(staging = %checkpoint.staging.display(), "finishing a reintegration a crash interrupted");
        return commit(checkpoint, None).map(drop);
    }
    discard_staging(checkpoint);
    Ok(())
}

/// Removes whatever an incomplete transfer left.
fn discard_staging(checkpoint: &Checkpoint) {
    if checkpoint.staging.exists() {
        if let Err(e) = fs::remove_dir_all(&checkpoint.staging) {
            tracing::warn!("cannot clear {}: {e}", checkpoint.staging.display());
        }
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), ReceiveError> {
    durable_file::replace_file(path, &[bytes]).map_err(|source| ReceiveError::File {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use slice_store::export_dirty_set;
    use slice_store::SliceStore;

    /// A checkpoint of 16 pages of 1s, a first disk of 8 blocks of 2s and a
    /// second of 4 blocks of 3s, and a server-side stream dirtying pages 3
    /// and 9, block 5 of the first disk and block 2 of the second.
    fn setup(dir: &Path) -> (Checkpoint, ReturnHeader, Vec<u8>) {
        let checkpoint = Checkpoint {
            ram: dir.join("ram"),
            disks: vec![dir.join("disk.img"), dir.join("disk2.qcow2-view")],
            state: dir.join("checkpoint.state"),
            staging: dir.join("staging"),
        };
        fs::write(&checkpoint.ram, vec![1u8; 16 * 4096]).unwrap();
        fs::write(&checkpoint.disks[0], vec![2u8; 8 * 4096]).unwrap();
        fs::write(&checkpoint.disks[1], vec![3u8; 4 * 4096]).unwrap();
        fs::write(&checkpoint.state, b"old descriptor").unwrap();
        let memory = SliceStore::open(dir.join("server-memory"), UNIT, 16 * 4096).unwrap();
        memory.write_dirty(3, &[7u8; 4096]).unwrap();
        memory.write_dirty(9, &[8u8; 4096]).unwrap();
        let disk = SliceStore::open(dir.join("server-disk"), UNIT, 8 * 4096).unwrap();
        disk.write_dirty(5, &[9u8; 4096]).unwrap();
        let disk2 = SliceStore::open(dir.join("server-disk2"), UNIT, 4 * 4096).unwrap();
        disk2.write_dirty(2, &[6u8; 4096]).unwrap();
        let descriptor = b"new descriptor".to_vec();
        let mut stream = descriptor.clone();
        let m = export_dirty_set(&memory, &mut stream).unwrap();
        let d = export_dirty_set(&disk, &mut stream).unwrap();
        let d2 = export_dirty_set(&disk2, &mut stream).unwrap();
        let header = ReturnHeader {
            descriptor_bytes: descriptor.len() as u64,
            descriptor_crc: crc32fast::hash(&descriptor),
            memory_set_bytes: m.stream_bytes,
            disk_set_bytes: d.stream_bytes + d2.stream_bytes,
            dirty_pages: 2,
            dirty_blocks: 2,
            disk_count: 2,
            fence: 0,
        };
        (checkpoint, header, stream)
    }

    fn untouched(checkpoint: &Checkpoint) {
        assert_eq!(fs::read(&checkpoint.ram).unwrap(), vec![1u8; 16 * 4096]);
        assert_eq!(fs::read(&checkpoint.disks[0]).unwrap(), vec![2u8; 8 * 4096]);
        assert_eq!(fs::read(&checkpoint.disks[1]).unwrap(), vec![3u8; 4 * 4096]);
        assert_eq!(fs::read(&checkpoint.state).unwrap(), b"old descriptor");
    }

    fn applied(checkpoint: &Checkpoint) {
        assert_eq!(fs::read(&checkpoint.ram).unwrap()[3 * 4096], 7);
        let disk = fs::read(&checkpoint.disks[0]).unwrap();
        assert_eq!((disk[5 * 4096], disk[4 * 4096]), (9, 2));
        let disk2 = fs::read(&checkpoint.disks[1]).unwrap();
        assert_eq!((disk2[2 * 4096], disk2[3 * 4096]), (6, 3), "the second disk's block went to the second disk");
        assert_eq!(fs::read(&checkpoint.state).unwrap(), b"new descriptor");
    }

    #[test]
    fn a_whole_stream_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (checkpoint, header, stream) = setup(dir.path());
        let (memory, disks) = stage(&stream[..], &header, &checkpoint).unwrap();
        untouched(&checkpoint);
        commit(&checkpoint, Some((memory, disks))).unwrap();
        let ram = fs::read(&checkpoint.ram).unwrap();
        assert_eq!(&ram[3 * 4096..4 * 4096], &[7u8; 4096][..]);
        assert_eq!(&ram[9 * 4096..10 * 4096], &[8u8; 4096][..]);
        assert_eq!(ram[0], 1);
        applied(&checkpoint);
        assert!(!checkpoint.complete().exists());
    }

    #[test]
    fn a_stream_for_another_number_of_disks_is_refused_before_anything_is_staged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut checkpoint, header, stream) = setup(dir.path());
        checkpoint.disks.pop();
        let error = wire::chain(&stage(&stream[..], &header, &checkpoint).map(|_| ()).unwrap_err());
        assert!(error.contains("sends 2 disk dirty sets, but the VM has 1 disks here"), "{error}");
        assert!(!checkpoint.complete().exists());
        assert_eq!(fs::read(&checkpoint.state).unwrap(), b"old descriptor");
    }

    #[test]
    fn a_stream_cut_anywhere_leaves_the_checkpoint_usable() {
        let dir = tempfile::tempdir().unwrap();
        let (checkpoint, header, stream) = setup(dir.path());
        // Every cut point in the descriptor and the headers, then every
        // 997th byte, and every 13th in the last disk's set (the last 4300 bytes).
        let last = stream.len() - 4300;
        let cuts = (0..200).chain((200..stream.len()).step_by(997)).chain((last..stream.len()).step_by(13));
        for cut in cuts {
            let err = stage(&stream[..cut], &header, &checkpoint).map(|_| ()).unwrap_err();
            assert!(!wire::chain(&err).is_empty());
            discard_staging(&checkpoint);
            finish_pending(&checkpoint).unwrap();
            untouched(&checkpoint);
        }
        // A damaged byte anywhere is refused too.
        for at in [3, 20, stream.len() / 2, stream.len() - 3] {
            let mut bad = stream.clone();
            bad[at] ^= 0x40;
            assert!(stage(&bad[..], &header, &checkpoint).is_err(), "damage at {at} went unnoticed");
            discard_staging(&checkpoint);
            untouched(&checkpoint);
        }
        // And the whole stream still applies afterwards.
        let staged = stage(&stream[..], &header, &checkpoint).unwrap();
        commit(&checkpoint, Some(staged)).unwrap();
        assert_eq!(fs::read(&checkpoint.state).unwrap(), b"new descriptor");
    }

    #[test]
    fn a_crash_after_staging_finishes_before_the_vm_starts() {
        let dir = tempfile::tempdir().unwrap();
        let (checkpoint, header, stream) = setup(dir.path());
        let staged = stage(&stream[..], &header, &checkpoint).unwrap();
        drop(staged); // the daemon dies before committing
        untouched(&checkpoint);
        finish_pending(&checkpoint).unwrap();
        applied(&checkpoint);
    }
}
