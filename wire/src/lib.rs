//! The wire between a desktop and the consolidation server.
//!
//! Everything a desktop daemon (memserv, diskserv) and a server component
//! (memtap, cownetdisk) exchange goes through here: the byte-range protocol
//! ([`protocol`], whose module doc is the specification), each host's key
//! and the peers it has enrolled ([`key`]), the Noise layer that proves both
//! ends' keys and encrypts everything after the handshake ([`secure`]), a sans-I/O server session for event
//! loops ([`session`]) and a blocking client with reconnection and wake-up
//! ([`client`]).
//!
//! Why Noise (the `snow` crate) and not TLS: both ends are ours, and each
//! host's key is enrolled at its peers by `jettison enroll`, much as SSH or
//! WireGuard keys are; `IX` proves both static keys in one round trip, needs
//! no certificates, authority or clock, and gives forward secrecy through
//! ephemeral keys. `snow` is the maintained Rust implementation of the
//! Noise spec.
#![warn(missing_docs)]

pub mod cancel;
pub mod channel;
pub mod client;
pub mod error;
pub mod key;
pub mod protocol;
pub mod secure;
pub mod session;
pub mod units;

pub use cancel::Cancel;
pub use channel::Channel;
pub use client::{Client, NoWake, RemoteConfig, RemoteImage, WakeHook};
pub use error::{chain, DecodeError, WireError};
pub use key::{Credentials, HostKey, Peers, PublicKey};
pub use protocol::{ByteRange, Chunk, ErrorKind, Hello, HelloReply, Request, Response, Service, Welcome};
pub use session::{Event, ServerSession};
pub use units::FetchedUnits;
