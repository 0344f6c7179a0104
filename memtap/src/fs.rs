//! The FUSE front end: a flat directory with `<vm>.ram` (the VM's memory,
//! which QEMU maps `share=on`) and `<vm>.stats` (its counters as JSON) for
//! each consolidated VM.
//!
//! Reads run on worker threads, not on the FUSE session thread, so that a
//! page waiting for a sleeping desktop does not hold up faults on pages
//! that are already local, nor other VMs.
//!
//! Ordering: the kernel's page cache sits between the guest and us. A page
//! the guest dirtied reaches us as a write (writeback) some time later, and
//! may be evicted and read again after that; a read may also race with the
//! writeback of a *different* page of the same prefetch window. The read
//! path therefore always asks the dirty slice first, and the prefetch
//! cache last, so a stale prefetched copy can never shadow a page the guest
//! wrote. A read and a write of the same page cannot overlap: the kernel
//! holds the page locked for both.
//!
//! Discards: QEMU punches a hole (`fallocate` `PUNCH_HOLE | KEEP_SIZE`) where
//! the guest reported free memory (virtio-balloon free page reporting). The
//! kernel writes back the range's dirty pages first, holds the file's lock
//! while we answer, and drops the range from its page cache afterwards, so a
//! discard is ordered after the writes before it and before the reads after
//! it; a read of the same page already on a worker may still return its old
//! content, which the guest no longer cares about.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;
use fuser::consts::{FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, TimeOrNow, FUSE_ROOT_ID,
};

use crate::vm::VmMemory;

/// How long the kernel may cache names and attributes: they never change
/// while mounted.
const TTL: Duration = Duration::from_secs(3600);

/// A job for the read workers.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Which file of a VM an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Ram(usize),
    Stats(usize),
}

/// Inode layout: 1 is the root; VM `i` has `2 + 2i` (ram) and `3 + 2i` (stats).
fn node_of(ino: u64) -> Option<Node> {
    if ino < 2 {
        return None;
    }
    let index = ((ino - 2) / 2) as usize;
    Some(if ino % 2 == 0 { Node::Ram(index) } else { Node::Stats(index) })
}

fn ino_of(node: Node) -> u64 {
    match node {
        Node::Ram(i) => 2 + 2 * i as u64,
        Node::Stats(i) => 3 + 2 * i as u64,
    }
}

/// The filesystem: the VMs it exposes and the pool that serves reads.
pub(crate) struct MemtapFs {
    vms: Vec<Arc<VmMemory>>,
    by_name: HashMap<String, Node>,
    workers: Sender<Job>,
    started: SystemTime,
    /// Each open `<vm>.stats` handle's snapshot, taken at open, so that a
    /// reader needing several reads gets one consistent JSON document.
    stats_snapshots: HashMap<u64, Vec<u8>>,
    next_fh: u64,
}

impl MemtapFs {
    pub(crate) fn new(vms: Vec<Arc<VmMemory>>, workers: Sender<Job>) -> Self {
        let mut by_name = HashMap::new();
        for (i, vm) in vms.iter().enumerate() {
            by_name.insert(format!("{}.ram", vm.name()), Node::Ram(i));
            by_name.insert(format!("{}.stats", vm.name()), Node::Stats(i));
        }
        MemtapFs { vms, by_name, workers, started: SystemTime::now(), stats_snapshots: HashMap::new(), next_fh: 1 }
    }

    /// Runs `job` on a worker, or inline once the pool is gone (only
    /// during shutdown).
    fn run(&self, job: Job) {
        if let Err(e) = self.workers.send(job) {
            (e.into_inner())();
        }
    }

    fn vm(&self, node: Node) -> Option<&Arc<VmMemory>> {
        match node {
            Node::Ram(i) | Node::Stats(i) => self.vms.get(i),
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        if ino == FUSE_ROOT_ID {
            return Some(self.make_attr(ino, FileType::Directory, 0, 0o755));
        }
        let node = node_of(ino)?;
        let vm = self.vm(node)?;
        Some(match node {
            Node::Ram(_) => self.make_attr(ino, FileType::RegularFile, vm.size(), 0o600),
            // Its size is unknown until read; direct I/O makes the kernel ask.
            Node::Stats(_) => self.make_attr(ino, FileType::RegularFile, 0, 0o444),
        })
    }

    fn make_attr(&self, ino: u64, kind: FileType, size: u64, perm: u16) -> FileAttr {
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for MemtapFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        // No kernel readahead: memtap's pivot window decides what to fetch
        // ahead, and keeps it out of the VM until touched. fuser refuses 0;
        // one byte rounds down to zero pages in the kernel.
        if let Err(nearest) = config.set_max_readahead(1) {
            tracing::warn!("kernel refused to disable readahead (nearest {nearest})");
        }
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let found = (parent == FUSE_ROOT_ID)
            .then(|| name.to_str().and_then(|n| self.by_name.get(n)).copied())
            .flatten()
            .and_then(|node| self.attr(ino_of(node)));
        match found {
            Some(attr) => reply.entry(&TTL, &attr, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let Some(attr) = self.attr(ino) else { return reply.error(libc::ENOENT) };
        // A VM's RAM has the size it came with; times and modes are ignored.
        match size {
            Some(size) if size != attr.size => reply.error(libc::EPERM),
            _ => reply.attr(&TTL, &attr),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match node_of(ino).filter(|&n| self.vm(n).is_some()) {
            // Keep the page cache across opens: only we change the contents.
            Some(Node::Ram(_)) => reply.opened(0, FOPEN_KEEP_CACHE),
            Some(node @ Node::Stats(_)) => {
                let Some(vm) = self.vm(node) else { return reply.error(libc::ENOENT) };
                let mut json = serde_json::to_vec_pretty(&vm.stats()).unwrap_or_default();
                json.push(b'\n');
                let fh = self.next_fh;
                self.next_fh += 1;
                self.stats_snapshots.insert(fh, json);
                reply.opened(fh, FOPEN_DIRECT_IO);
            }
            None => reply.error(libc::ENOENT),
        }
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.stats_snapshots.remove(&fh);
        reply.ok();
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(node) = node_of(ino) else { return reply.error(libc::ENOENT) };
        let Some(vm) = self.vm(node).cloned() else { return reply.error(libc::ENOENT) };
        let Ok(offset) = u64::try_from(offset) else { return reply.error(libc::EINVAL) };
        match node {
            Node::Stats(_) => {
                let Some(json) = self.stats_snapshots.get(&fh) else { return reply.error(libc::EBADF) };
                let start = (offset as usize).min(json.len());
                let end = (start + size as usize).min(json.len());
                reply.data(&json[start..end]);
            }
            Node::Ram(_) => self.run(Box::new(move || match vm.read(offset, size) {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    tracing::error!(vm = %vm.name(), offset = format_args!("{offset:#x}"), "read failed: {}", wire::chain(&e));
                    reply.error(libc::EIO);
                }
            })),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Some(vm) = node_of(ino).filter(|n| matches!(n, Node::Ram(_))).and_then(|n| self.vm(n)) else {
            return reply.error(libc::EACCES);
        };
        let Ok(offset) = u64::try_from(offset) else { return reply.error(libc::EINVAL) };
        match vm.write(offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                tracing::error!(vm = %vm.name(), offset = format_args!("{offset:#x}"), "write failed: {}", wire::chain(&e));
                reply.error(libc::EIO);
            }
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let Some(vm) = node_of(ino).filter(|n| matches!(n, Node::Ram(_))).and_then(|n| self.vm(n)).cloned() else {
            return reply.error(libc::EACCES);
        };
        // Only a punched hole has a meaning for a VM's RAM, whose size is fixed.
        if mode != libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE {
            return reply.error(libc::EOPNOTSUPP);
        }
        let (Ok(offset), Ok(len @ 1..)) = (u64::try_from(offset), u64::try_from(length)) else {
            return reply.error(libc::EINVAL);
        };
        // On a worker: the partial page at either end may need a fetch.
        self.run(Box::new(move || match vm.discard(offset, len) {
            Ok(()) => reply.ok(),
            Err(e) => {
                tracing::error!(vm = %vm.name(), offset = format_args!("{offset:#x}"), len, "discard failed: {}", wire::chain(&e));
                reply.error(libc::EIO);
            }
        }));
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: ReplyEmpty) {
        // close(2): nothing to do; durability is fsync's job.
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let Some(vm) = node_of(ino).and_then(|n| self.vm(n)) else { return reply.error(libc::ENOENT) };
        match vm.flush() {
            Ok(()) => reply.ok(),
            Err(e) => {
                tracing::error!(vm = %vm.name(), "fsync failed: {}", wire::chain(&e));
                reply.error(libc::EIO);
            }
        }
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        if ino != FUSE_ROOT_ID {
            return reply.error(libc::ENOTDIR);
        }
        let mut entries = vec![(FUSE_ROOT_ID, FileType::Directory, ".".to_owned())];
        entries.push((FUSE_ROOT_ID, FileType::Directory, "..".to_owned()));
        for (i, vm) in self.vms.iter().enumerate() {
            entries.push((ino_of(Node::Ram(i)), FileType::RegularFile, format!("{}.ram", vm.name())));
            entries.push((ino_of(Node::Stats(i)), FileType::RegularFile, format!("{}.stats", vm.name())));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_layout_round_trips() {
        for node in [Node::Ram(0), Node::Stats(0), Node::Ram(5), Node::Stats(7)] {
            assert_eq!(node_of(ino_of(node)), Some(node));
        }
        assert_eq!(node_of(FUSE_ROOT_ID), None);
        assert_eq!(node_of(0), None);
    }
}
