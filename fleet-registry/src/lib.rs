//! The fleet: several servers, registered in etcd, and the choice of one
//! for each VM that leaves its desktop.
//!
//! A fleet is optional. A server daemon with a `[fleet]` section keeps its
//! [`ServerRecord`] (room, load, address) in etcd under a lease
//! ([`Registration`]); a desktop daemon with one reads the records
//! ([`registered_servers`]) and picks a server with the [`placement`]
//! policy. Without `[fleet]` nothing here runs and no etcd is needed.
//!
//! etcd is reached through its v3 JSON gateway over plain HTTP/1.1
//! ([`EtcdClient`]), the one interface an etcd 3.4 cluster serves without
//! a gRPC stack; the daemons are synchronous threads and so is this.
#![warn(missing_docs)]

pub mod claim;
pub mod drain;
mod error;
pub mod etcd;
pub mod http;
pub mod placement;
pub mod record;

pub use claim::{claim_vm, holder, reclaim_vm, release_vm, vm_key, Claimed, VmClaim, VMS_PREFIX};
pub use drain::{is_draining, mark_draining, unmark_draining, DrainMark, DRAINING_PREFIX};
pub use error::{EndpointFailure, EtcdError};
pub use etcd::{EtcdClient, EtcdEndpoints, LeaseId};
pub use placement::{Demand, NoServer, Policy};
pub use record::{registered_servers, Capacity, Load, Registration, ServerRecord, SERVERS_PREFIX};
