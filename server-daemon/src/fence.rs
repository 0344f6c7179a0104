//! The fence of a fleet server: a VM's QEMU runs only while this server
//! holds the VM's claim in etcd under a lease renewed within half its TTL
//! ([`crate::fleet::Fleet::fence`]). Checked every [`FENCE_EVERY`]; a VM
//! that may not run is frozen with `SIGSTOP`, which needs nothing of QEMU
//! (a guest waiting for its absent desktop holds QEMU's main loop, so a
//! QMP `stop` could wait as long), and thawed with `SIGCONT` once the lease
//! is renewed. A VM whose claim is lost stays frozen: its desktop may have
//! resumed it. It is reported stopped, so that its desktop, if it did not,
//! asks for it back; only then is it thawed, to be stopped and sent home.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::fleet::{Fence, Fleet};
use crate::key::VmKey;

/// How often the fence is checked: well within half a lease's TTL (at
/// least 3 s).
pub const FENCE_EVERY: Duration = Duration::from_millis(250);

/// The hosted VMs under the fence: QEMU's pid and what the fence last
/// allowed.
#[derive(Debug, Default)]
pub struct FenceTable {
    vms: Mutex<BTreeMap<VmKey, (u32, Fence)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("the fence lock was poisoned: a thread panicked holding it")
}

fn signal(key: &VmKey, pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Err(e) = kill(Pid::from_raw(raw), signal) {
        tracing::error!(desktop = %key.desktop, vm = %key.vm, pid, "cannot send {signal} to its QEMU: {e}");
    }
}

impl FenceTable {
    /// Puts `key`'s QEMU (`pid`) under the fence, running.
    pub fn track(&self, key: &VmKey, pid: u32) {
        lock(&self.vms).insert(key.clone(), (pid, Fence::Run));
    }

    /// Takes `key` out from under the fence, thawed: it went home, its
    /// desktop asked for it (and it is stopped through QMP next), or it
    /// is gone.
    pub fn untrack(&self, key: &VmKey) {
        if let Some((pid, state)) = lock(&self.vms).remove(key) {
            if state != Fence::Run {
                tracing::info!(desktop = %key.desktop, vm = %key.vm, "thawed: its desktop asked for it");
                signal(key, pid, Signal::SIGCONT);
            }
        }
    }

    /// Freezes every tracked QEMU: the daemon stops and revokes its lease,
    /// which ends every claim at once, and nothing would freeze them until
    /// the next daemon runs.
    pub fn freeze_all(&self) {
        for (key, (pid, state)) in lock(&self.vms).iter_mut() {
            if *state == Fence::Run {
                tracing::warn!(desktop = %key.desktop, vm = %key.vm, "frozen as the daemon stops: its claim ends with this server's lease; its desktop takes it back from the next daemon");
                signal(key, *pid, Signal::SIGSTOP);
            }
            *state = Fence::Lost;
        }
    }

    /// Whether `key`'s QEMU is frozen now.
    pub fn frozen(&self, key: &VmKey) -> bool {
        lock(&self.vms).get(key).is_some_and(|(_, state)| *state != Fence::Run)
    }

    /// Whether `key`'s claim is lost: frozen until its desktop asks for it.
    pub fn lost(&self, key: &VmKey) -> bool {
        lock(&self.vms).get(key).is_some_and(|(_, state)| *state == Fence::Lost)
    }

    /// Applies `fleet`'s fence to every tracked VM, every [`FENCE_EVERY`],
    /// for ever. A lost claim is never thawed here.
    pub fn watch(&self, fleet: &Fleet) {
        loop {
            std::thread::sleep(FENCE_EVERY);
            let tracked: Vec<(VmKey, u32, Fence)> =
                lock(&self.vms).iter().map(|(key, (pid, state))| (key.clone(), *pid, *state)).collect();
            for (key, pid, was) in tracked {
                let now = match (was, fleet.fence(&key)) {
                    (Fence::Lost, _) => continue,
                    (_, now) if now == was => continue,
                    (_, now) => now,
                };
                let mut vms = lock(&self.vms);
                // Untracked meanwhile (it is going home): leave it alone.
                let Some(entry) = vms.get_mut(&key) else { continue };
                match (was, now) {
                    (Fence::Run, Fence::Freeze) => {
                        tracing::warn!(desktop = %key.desktop, vm = %key.vm, "frozen: this server has not renewed its lease in etcd for half its TTL, and another host may run the VM once the lease ends");
                        signal(&key, pid, Signal::SIGSTOP);
                    }
                    (_, Fence::Lost) => {
                        tracing::error!(desktop = %key.desktop, vm = %key.vm, "frozen for good: its claim in etcd is lost (its desktop may have resumed it); it stays here, stopped, until its desktop asks for it back");
                        signal(&key, pid, Signal::SIGSTOP);
                    }
                    (_, Fence::Run) => {
                        tracing::info!(desktop = %key.desktop, vm = %key.vm, "thawed: the lease in etcd is renewed");
                        signal(&key, pid, Signal::SIGCONT);
                    }
                    _ => {}
                }
                entry.1 = now;
            }
        }
    }
}
