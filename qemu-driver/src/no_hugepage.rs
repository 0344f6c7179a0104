//! Keeping QEMU from marking guest RAM `MADV_HUGEPAGE`.
//!
//! QEMU advises `MADV_HUGEPAGE` on every RAM block. On a *file* mapping the
//! kernel then reads two whole PMD folios (4 MiB) on each page fault,
//! "even if readahead is disabled" for the file system. For a RAM file on
//! memtap's FUSE filesystem that turns every guest fault into 1024 pages
//! pulled from the sleeping desktop, defeating the point of fetching on
//! demand (memtap's pivot window is the prefetcher). Disabling THP for the
//! process (`PR_SET_THP_DISABLE`) does not help: the advice still sets the
//! mapping's `VM_HUGEPAGE` flag, which is all that readahead path checks.
//!
//! So QEMU runs under a two-line seccomp filter: `madvise(.., MADV_HUGEPAGE)`
//! fails with `EINVAL` (QEMU ignores a failed advice), every other system
//! call is allowed. Guest RAM in a shared file gains nothing from THP.

use std::io;

/// Offsets into `struct seccomp_data` (linux/seccomp.h).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// Low 32 bits of `args[2]` (args start at 16, eight bytes each; little-endian).
const DATA_ARG2_LOW: u32 = 16 + 2 * 8;
/// `AUDIT_ARCH_X86_64` (linux/audit.h): EM_X86_64 | 64-bit | little-endian.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `MADV_HUGEPAGE` (asm-generic/mman-common.h).
const MADV_HUGEPAGE: u32 = 14;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

/// The filter: on x86-64, `madvise` with advice `MADV_HUGEPAGE` returns
/// `EINVAL`; everything else is allowed.
fn program() -> [libc::sock_filter; 8] {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let allow = stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW);
    let refuse = stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32);
    [
        stmt(BPF_LD | BPF_W | BPF_ABS, DATA_ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 4),
        stmt(BPF_LD | BPF_W | BPF_ABS, DATA_NR),
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_madvise as u32, 0, 2),
        stmt(BPF_LD | BPF_W | BPF_ABS, DATA_ARG2_LOW),
        jump(BPF_JMP | BPF_JEQ | BPF_K, MADV_HUGEPAGE, 1, 0),
        allow,
        refuse,
    ]
}

/// Installs the filter in the calling process. Meant for the child between
/// fork and exec: it allocates nothing and makes only two system calls.
///
/// # Errors
/// The error of `prctl` when the kernel refuses the filter.
pub fn install() -> io::Result<()> {
    let filter = program();
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers. PR_SET_SECCOMP reads
    // `prog` and the array it points to, both alive on this stack frame for
    // the duration of the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugepage_advice_fails_and_other_advice_works_under_the_filter() {
        // Run in a child so the filter does not stay on the test process.
        // SAFETY: the child only calls async-signal-safe functions (mmap,
        // madvise, prctl) and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: in the single-threaded child; mmap'd memory is only
            // passed to madvise, never dereferenced.
            let code = unsafe {
                let len = 4 << 20;
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED || install().is_err() {
                    3
                } else if libc::madvise(p, len, libc::MADV_HUGEPAGE) == 0 {
                    1
                } else if libc::madvise(p, len, libc::MADV_DONTNEED) != 0 {
                    2
                } else {
                    0
                }
            };
            // SAFETY: _exit ends the child without running the parent's
            // destructors or the test harness twice.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "1: MADV_HUGEPAGE allowed, 2: other advice refused, 3: setup");
    }
}
