//! What a server registers in etcd, and the registration kept alive under
//! a lease.
//!
//! Each server daemon of a fleet writes `/jettison/servers/<name>` = a JSON
//! [`ServerRecord`] under a lease of `lease_ttl_secs`, and renews the lease
//! and rewrites the record every third of that. A server that stops, crashes
//! or loses the network stops renewing, and etcd deletes its record when the
//! lease runs out: the registry lists only servers alive within the TTL.
//!
//! The records are a peer's data: a desktop reads them through
//! [`ServerRecord::from_entry`], which checks the name (a [`HostName`], the
//! one in the key), the address and every figure before anything uses them.
//! A record can at worst point a desktop at an address; the desktop then
//! talks only to a server whose key it enrolled under that name.

use std::net::SocketAddr;
use std::time::Duration;

use identifiers::HostName;
use serde::{Deserialize, Serialize};

use crate::etcd::{EtcdClient, LeaseId};
use crate::EtcdError;

/// Where the servers register: one key per server under it.
pub const SERVERS_PREFIX: &str = "/jettison/servers/";

/// A server's room, as it registers it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// Memory for consolidated VMs' working sets (its `capacity_mib`).
    pub memory_mib: f64,
    /// Its CPUs.
    pub cpus: f64,
    /// What its network may carry for fetches from desktops, MiB/s.
    pub network_mib_per_sec: f64,
}

/// A server's use of that room now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// What its VMs' working sets claim (each the larger of its expected
    /// and its held working set), MiB.
    pub memory_mib: f64,
    /// CPUs its VMs keep busy (1.0: one CPU all the time).
    pub cpus: f64,
    /// What its VMs fetch from their desktops, MiB/s.
    pub fetch_mib_per_sec: f64,
    /// VMs it hosts.
    pub vms: u32,
}

/// `/jettison/servers/<name>`: a server, where desktops reach it, its room
/// and its load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// Its name (the one its key is enrolled under at the desktops).
    pub name: HostName,
    /// Where desktops reach its daemon.
    pub address: SocketAddr,
    /// Its room.
    pub capacity: Capacity,
    /// Its load.
    pub load: Load,
    /// It is being drained (`jettison drain`): it takes no VM and sends
    /// its VMs elsewhere. Absent in the records of older servers.
    #[serde(default)]
    pub draining: bool,
}

/// Why a registered record is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry entry {key:?}: {reason}; ignoring it (is every server of the fleet the same release?)")]
pub struct BadRecord {
    /// The key, printable.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ServerRecord {
    /// Its key in etcd.
    pub fn key(&self) -> String {
        format!("{SERVERS_PREFIX}{}", self.name)
    }

    /// The record stored at `key` as `value`, checked.
    ///
    /// # Errors
    /// [`BadRecord`] when the key is not a server's, the value does not
    /// parse, its name differs from the key's, its address cannot be
    /// dialled, or a figure is negative, infinite, or a capacity is zero.
    pub fn from_entry(key: &[u8], value: &[u8]) -> Result<ServerRecord, BadRecord> {
        let printable = String::from_utf8_lossy(key).chars().take(120).collect::<String>();
        let bad = |reason: String| BadRecord { key: printable.clone(), reason };
        let name = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(SERVERS_PREFIX))
            .ok_or_else(|| bad(format!("not under {SERVERS_PREFIX}")))?;
        let name: HostName = name.parse().map_err(|e| bad(format!("not a server name: {e}")))?;
        let record: ServerRecord = serde_json::from_slice(value).map_err(|e| bad(format!("unreadable: {e}")))?;
        if record.name != name {
            return Err(bad(format!("names server {:?}, not the key's", record.name.as_str())));
        }
        if record.address.ip().is_unspecified() || record.address.ip().is_multicast() || record.address.port() == 0 {
            return Err(bad(format!("address {} cannot be dialled", record.address)));
        }
        let Capacity { memory_mib, cpus, network_mib_per_sec } = record.capacity;
        for (what, figure) in [
            ("capacity.memory_mib", memory_mib),
            ("capacity.cpus", cpus),
            ("capacity.network_mib_per_sec", network_mib_per_sec),
        ] {
            if !(figure.is_finite() && figure > 0.0) {
                return Err(bad(format!("{what} = {figure}: must be a positive number")));
            }
        }
        let Load { memory_mib, cpus, fetch_mib_per_sec, vms: _ } = record.load;
        for (what, figure) in
            [("load.memory_mib", memory_mib), ("load.cpus", cpus), ("load.fetch_mib_per_sec", fetch_mib_per_sec)]
        {
            if !(figure.is_finite() && figure >= 0.0) {
                return Err(bad(format!("{what} = {figure}: must be a number of at least 0")));
            }
        }
        Ok(record)
    }
}

/// The servers registered now: the usable records, and why each other entry
/// is not used.
///
/// # Errors
/// [`EtcdError`] when no member answers.
pub fn registered_servers(client: &EtcdClient) -> Result<(Vec<ServerRecord>, Vec<BadRecord>), EtcdError> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for kv in client.range_prefix(SERVERS_PREFIX)? {
        match ServerRecord::from_entry(&kv.key, &kv.value) {
            Ok(record) => good.push(record),
            Err(why) => bad.push(why),
        }
    }
    Ok((good, bad))
}

/// A server's registration: its record kept in etcd under a lease.
#[derive(Debug)]
pub struct Registration {
    client: EtcdClient,
    ttl: Duration,
    lease: Option<LeaseId>,
    /// When the last refresh that worked was sent: the lease lives at
    /// least a TTL from then.
    renewed: Option<std::time::Instant>,
}

impl Registration {
    /// A registration through `client` under leases of `ttl` (nothing is
    /// written until [`Registration::refresh`]).
    pub fn new(client: EtcdClient, ttl: Duration) -> Registration {
        Registration { client, ttl, lease: None, renewed: None }
    }

    /// How often to call [`Registration::refresh`]: a third of the TTL, so
    /// that two refreshes can fail before the record expires.
    pub fn refresh_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_secs(1))
    }

    /// Renews the lease (or takes a new one when it expired or there is
    /// none yet) and writes `record` under it.
    ///
    /// # Errors
    /// [`EtcdError`]; the next refresh tries again.
    pub fn refresh(&mut self, record: &ServerRecord) -> Result<(), EtcdError> {
        let value = serde_json::to_vec(record).expect("a record of numbers and names serialises");
        let sent = std::time::Instant::now();
        if let Some(lease) = self.lease {
            match self.client.keep_alive(lease) {
                Ok(_) => {
                    self.renewed = Some(sent);
                    return self.client.put(&record.key(), &value, Some(lease));
                }
                Err(EtcdError::LeaseGone { .. }) => {
                    tracing::warn!(%lease, "the fleet registration's lease expired; taking a new one");
                    self.lease = None;
                }
                Err(e) => return Err(e),
            }
        }
        let lease = self.client.grant(self.ttl)?;
        self.lease = Some(lease);
        self.renewed = Some(sent);
        self.client.put(&record.key(), &value, Some(lease))
    }

    /// The lease, and when its last renewal (or grant) that worked was
    /// sent; none before the first.
    pub fn lease(&self) -> Option<(LeaseId, std::time::Instant)> {
        self.lease.zip(self.renewed)
    }

    /// Revokes the lease, so that the record goes at once rather than
    /// when the TTL runs out.
    ///
    /// # Errors
    /// [`EtcdError`]; the record then goes within the TTL anyway.
    pub fn withdraw(&mut self) -> Result<(), EtcdError> {
        self.renewed = None;
        match self.lease.take() {
            Some(lease) => self.client.revoke(lease),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ServerRecord {
        ServerRecord {
            name: "server1".parse().unwrap(),
            address: "10.0.0.1:7400".parse().unwrap(),
            capacity: Capacity { memory_mib: 8192.0, cpus: 8.0, network_mib_per_sec: 110.0 },
            load: Load { memory_mib: 300.0, cpus: 0.4, fetch_mib_per_sec: 0.1, vms: 2 },
            draining: false,
        }
    }

    #[test]
    fn a_record_round_trips_through_its_key() {
        let r = record();
        assert_eq!(r.key(), "/jettison/servers/server1");
        let value = serde_json::to_vec(&r).unwrap();
        assert_eq!(ServerRecord::from_entry(r.key().as_bytes(), &value), Ok(r));
    }

    #[test]
    fn a_record_of_a_server_without_drains_reads_as_not_draining() {
        let r = record();
        let mut value: serde_json::Value = serde_json::to_value(&r).unwrap();
        value.as_object_mut().unwrap().remove("draining");
        let read = ServerRecord::from_entry(r.key().as_bytes(), value.to_string().as_bytes()).unwrap();
        assert!(!read.draining);
    }

    #[test]
    fn hostile_records_are_refused_with_the_reason() {
        let r = record();
        let value = serde_json::to_vec(&r).unwrap();
        let refuse = |key: &str, value: &[u8]| ServerRecord::from_entry(key.as_bytes(), value).unwrap_err().to_string();
        assert!(refuse("/jettison/servers/../etc", &value).contains("not a server name"));
        assert!(refuse("/jettison/servers/other", &value).contains("not the key's"));
        assert!(refuse("/elsewhere/server1", &value).contains("not under"));
        assert!(refuse(&r.key(), b"{").contains("unreadable"));
        let with = |edit: &dyn Fn(&mut ServerRecord)| {
            let mut r = record();
            edit(&mut r);
            serde_json::to_vec(&r).unwrap()
        };
        assert!(refuse(&r.key(), &with(&|r| r.address = "0.0.0.0:7400".parse().unwrap())).contains("cannot be dialled"));
        assert!(refuse(&r.key(), &with(&|r| r.capacity.cpus = 0.0)).contains("capacity.cpus"));
        assert!(refuse(&r.key(), &with(&|r| r.load.memory_mib = -1.0)).contains("load.memory_mib"));
        let huge = String::from_utf8(value).unwrap().replace("300.0", "1e400");
        assert!(refuse(&r.key(), huge.as_bytes()).contains("unreadable"), "out of f64 range");
    }
}
