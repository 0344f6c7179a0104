//! Who may run a VM: in a fleet, the server hosting a VM holds
//! `/jettison/vms/<desktop>/<vm>` under its registration's lease, and the
//! revision of that write is the stay's fencing token.
//!
//! etcd's own documentation warns that a lease alone gives no mutual
//! exclusion: a holder may go on acting after its lease ran out. Here the
//! two hosts that could run the VM each check before they do:
//!
//! - the server freezes the VM's QEMU when it has not renewed the lease
//!   for half its TTL, so before the lease can expire, and keeps it frozen
//!   when the lease did expire ([`claim_vm`] is then never called again
//!   for that stay: only [`reclaim_vm`], which needs the claim still there);
//! - the desktop resumes the VM from its checkpoint only when [`holder`]
//!   says nobody holds it, and never when etcd cannot be read.
//!
//! The token travels to the desktop with the reservation; its memserv and
//! diskserv serve only a server presenting it.

use identifiers::{HostName, VmName};
use serde::{Deserialize, Serialize};

use crate::etcd::{EtcdClient, LeaseId};
use crate::EtcdError;

/// Where the claims are: one key per hosted VM.
pub const VMS_PREFIX: &str = "/jettison/vms/";

/// `/jettison/vms/<desktop>/<vm>`: the server that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmClaim {
    /// The server.
    pub server: HostName,
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Held by this server now; the fencing token.
    Token(u64),
    /// Another server holds it (its name, or the unreadable value's start).
    HeldBy(String),
    /// Nobody holds it ([`reclaim_vm`] only: the claim expired).
    Gone,
}

/// The claim's key of `vm` of `desktop`.
pub fn vm_key(desktop: &HostName, vm: &VmName) -> String {
    format!("{VMS_PREFIX}{desktop}/{vm}")
}

fn value(server: &HostName) -> Vec<u8> {
    serde_json::to_vec(&VmClaim { server: server.clone() }).expect("a claim of a name serialises")
}

/// Who holds a claim whose value is `held`.
fn held_by(held: &[u8]) -> String {
    match serde_json::from_slice::<VmClaim>(held) {
        Ok(claim) => claim.server.to_string(),
        Err(_) => String::from_utf8_lossy(&held[..held.len().min(64)]).into_owned(),
    }
}

fn token(revision: i64) -> u64 {
    u64::try_from(revision).expect("etcd revisions are positive")
}

/// Claims `vm` of `desktop` for `server` under `lease`, for a new stay:
/// it must not be claimed (by anyone, this server included: a claim of
/// its own left from an earlier stay is taken over under `lease`).
///
/// # Errors
/// [`EtcdError`] when no member answers.
pub fn claim_vm(
    client: &EtcdClient,
    desktop: &HostName,
    vm: &VmName,
    server: &HostName,
    lease: LeaseId,
) -> Result<Claimed, EtcdError> {
    let key = vm_key(desktop, vm);
    match client.put_if_absent(&key, &value(server), lease)? {
        Ok(revision) => Ok(Claimed::Token(token(revision))),
        Err(held) if held == value(server) => reclaim_vm(client, desktop, vm, server, lease),
        Err(held) => Ok(Claimed::HeldBy(held_by(&held))),
    }
}

/// Moves this server's existing claim of `vm` under `lease` (a restarted
/// daemon taking its VMs over): never creates one, since a claim that
/// expired may have let the desktop resume the VM.
///
/// # Errors
/// [`EtcdError`] when no member answers.
pub fn reclaim_vm(
    client: &EtcdClient,
    desktop: &HostName,
    vm: &VmName,
    server: &HostName,
    lease: LeaseId,
) -> Result<Claimed, EtcdError> {
    let ours = value(server);
    match client.put_if_value(&vm_key(desktop, vm), &ours, &ours, lease)? {
        Ok(revision) => Ok(Claimed::Token(token(revision))),
        Err(held) if held.is_empty() => Ok(Claimed::Gone),
        Err(held) => Ok(Claimed::HeldBy(held_by(&held))),
    }
}

/// The server holding `vm` of `desktop`, if any (its name, or the start of
/// an unreadable value: held all the same).
///
/// # Errors
/// [`EtcdError`] when no member answers: then nobody can say it is free.
pub fn holder(client: &EtcdClient, desktop: &HostName, vm: &VmName) -> Result<Option<String>, EtcdError> {
    Ok(client.get(&vm_key(desktop, vm))?.map(|held| held_by(&held)))
}

/// Gives up the claim of `vm` of `desktop` made with `token` (the VM went
/// home); a claim written since by anyone stays.
///
/// # Errors
/// [`EtcdError`] when no member answers; the claim then ends with the lease.
pub fn release_vm(client: &EtcdClient, desktop: &HostName, vm: &VmName, token: u64) -> Result<(), EtcdError> {
    let revision = i64::try_from(token).unwrap_or(i64::MAX);
    client.delete_if_revision(&vm_key(desktop, vm), revision).map(drop)
}
