//! Desktop side, shared by memserv and diskserv: serves byte ranges of a
//! read-only image (a stopped VM's RAM file, its disk image) to an
//! authenticated server over the Jettison wire protocol.
//!
//! The two desktop daemons differ only in what they serve, so the event
//! loop lives here once: memserv and diskserv each supply an [`Image`].
//! The loop is a single mio thread: reads from an image are memory copies
//! or page-cache reads, far cheaper than the network round trip, so one
//! thread keeps the link busy without locks. Every request is also reported
//! on a local Unix socket ([`events`]), because the desktop's power policy
//! must know when the desktop is needed.
#![warn(missing_docs)]

pub mod error;
pub mod events;
pub mod image;
pub mod respond;
pub mod server;

pub use error::ServeError;
pub use event_loop::StopHandle;
pub use events::RequestEvent;
pub use image::Image;
pub use server::{ServeConfig, Server};
