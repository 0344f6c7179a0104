//! What a daemon shows Prometheus: counters, gauges and histograms in the
//! text exposition format (version 0.0.4), served on `GET /metrics` from a
//! local address (`metrics_listen` in `desktop.toml` and `server.toml`).
//!
//! Why a responder of our own rather than an HTTP crate: a scrape is one
//! `GET` of one path, and the daemons must not grow a web stack (and its
//! attack surface) for it. The responder runs on a thread of its own, reads
//! at most [`http::MAX_REQUEST_BYTES`] within [`http::REQUEST_TIME`] from a
//! client, and answers anything else than `GET /metrics` with an error
//! status, so a slow or hostile client delays only other scrapes, never the
//! daemon's work.
//!
//! The figures are drawn when a scrape comes (the daemon's `render`
//! closure reads its own counters); nothing is sampled in between.
#![warn(missing_docs)]

mod histogram;
pub mod http;
mod text;

pub use histogram::{Histogram, HistogramSnapshot, MOVE_SECONDS_BOUNDS};
pub use http::{spawn, MetricsError};
pub use text::{Exposition, Kind};
