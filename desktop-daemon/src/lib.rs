//! The desktop daemon (`jettison desktop`): runs the user's VMs under QEMU
//! and moves them.
//!
//! A VM runs on the desktop ([`local_vm`]) until it is consolidated
//! ([`consolidate`]): checked idle, stopped with its descriptor saved, its
//! RAM file and disk image left as the checkpoint and served by memserv and
//! diskserv, and handed to the server. It comes back by reintegration
//! ([`reintegrate`]): the server's descriptor and dirty pages and blocks,
//! staged and applied only once all have arrived. If the server loses it,
//! the desktop resumes it from the checkpoint ([`daemon`]'s heartbeat).
//! While none of its VMs runs here, the desktop sleeps between the server's
//! requests ([`power_session`], set up by `[power]`, [`power_config`]).
//! With `[activity]` ([`activity_config`]) it watches the user itself and
//! does both moves on its own: idle, a warning, consolidation; input,
//! reintegration.
#![warn(missing_docs)]

mod activity;
pub mod activity_config;
pub mod config;
pub mod consolidate;
pub mod daemon;
mod error;
pub mod local_vm;
mod metrics;
pub mod microsleep;
pub mod power_config;
pub mod power_session;
mod power_slot;
pub mod reintegrate;

pub use config::DesktopConfig;
pub use daemon::DesktopDaemon;
pub use error::{DesktopError, ReceiveError};
