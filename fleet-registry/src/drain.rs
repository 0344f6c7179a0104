//! Draining a server: `jettison drain SERVER` writes
//! `/jettison/draining/<server>` (no lease: it holds until `jettison drain
//! --undo SERVER`, across restarts of the server and of etcd's members).
//!
//! The server daemon reads its own mark at each refresh of its
//! registration. While it is marked it says so in its record (so that no
//! desktop's placement chooses it), refuses new VMs, and asks the desktop of
//! each VM it hosts to move it elsewhere; the desktop takes the VM home
//! (its dirty state first) and places it on another server, or keeps it
//! when none has room.

use identifiers::HostName;
use serde::{Deserialize, Serialize};

use crate::etcd::EtcdClient;
use crate::EtcdError;

/// Where the marks are: one key per server being drained.
pub const DRAINING_PREFIX: &str = "/jettison/draining/";

/// `/jettison/draining/<server>`: who asked, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainMark {
    /// The host the command ran on.
    pub by: String,
    /// When, in seconds since the Unix epoch.
    pub since_unix_secs: u64,
}

fn key(server: &HostName) -> String {
    format!("{DRAINING_PREFIX}{server}")
}

/// Marks `server` as being drained.
///
/// # Errors
/// [`EtcdError`] when no member takes the write.
pub fn mark_draining(client: &EtcdClient, server: &HostName, mark: &DrainMark) -> Result<(), EtcdError> {
    let value = serde_json::to_vec(mark).expect("a mark of a text and a number serialises");
    client.put(&key(server), &value, None)
}

/// Ends the drain of `server` (nothing when it was not drained).
///
/// # Errors
/// [`EtcdError`] when no member takes the delete.
pub fn unmark_draining(client: &EtcdClient, server: &HostName) -> Result<(), EtcdError> {
    client.delete(&key(server))
}

/// Whether `server` is marked as being drained. A mark whose value does not
/// parse still counts: it was written under the server's key, and a drain
/// is the safe reading.
///
/// # Errors
/// [`EtcdError`] when no member answers.
pub fn is_draining(client: &EtcdClient, server: &HostName) -> Result<bool, EtcdError> {
    Ok(client.get(&key(server))?.is_some())
}
