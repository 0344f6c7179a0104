//! The wire between a desktop and the consolidation server.
//!
//! Everything a desktop daemon (memserv, diskserv) and a server component
//! (memtap, cownetdisk) exchange goes through here: the byte-range protocol
//! ([`protocol`], whose module doc is the specification), the Noise layer
//! that authenticates both ends with a shared key and encrypts everything
//! after the handshake ([`secure`]), a sans-I/O server session for event
//! loops ([`session`]) and a blocking client with reconnection and wake-up
//! ([`client`]).
//!
//! Why Noise (the `snow` crate) and not TLS: both ends are ours and share a
//! key made by `jettison pair`; `NNpsk0` authenticates both ends with that
//! key in one round trip, needs no certificates or clock, and gives forward
//! secrecy through ephemeral keys. `snow` is the maintained Rust
//! implementation of the Noise spec.
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
pub use key::SharedKey;
pub use protocol::{ByteRange, Chunk, ErrorKind, Hello, HelloReply, Request, Response, Service, Welcome};
pub use session::{Event, ServerSession};
pub use units::FetchedUnits;
