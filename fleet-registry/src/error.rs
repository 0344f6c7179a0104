//! The fleet's errors: what etcd (or one of its members) did not do, and
//! what a registered record got wrong.

use std::net::SocketAddr;

use crate::etcd::LeaseId;
use crate::http::HttpError;

/// Why one member did not answer a request.
#[derive(Debug, thiserror::Error)]
pub enum EndpointFailure {
    /// It could not be reached, or the connection broke or timed out.
    #[error("{endpoint}: {}", wire::chain(cause))]
    Transport {
        /// The member.
        endpoint: SocketAddr,
        /// What failed.
        cause: HttpError,
    },
    /// It answered with a server error (no leader, no quorum).
    #[error("{endpoint}: HTTP {status}: {message}")]
    Status {
        /// The member.
        endpoint: SocketAddr,
        /// The HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
}

/// What an etcd request failed with.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No member answered.
    #[error(
        "no etcd member answered {path} ({}); check that the etcd cluster runs and that [fleet] etcd lists its \
         client URLs",
        failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    NoEndpoint {
        /// The request.
        path: &'static str,
        /// Each member's failure.
        failures: Vec<EndpointFailure>,
    },
    /// A member refused the request itself (HTTP 4xx).
    #[error("etcd at {endpoint} refused {path}: HTTP {status}: {message}")]
    Refused {
        /// The member.
        endpoint: SocketAddr,
        /// The request.
        path: &'static str,
        /// The HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// A member's answer is not what the gateway sends.
    #[error("etcd at {endpoint} answered {path} with something unexpected: {reason}; is it etcd 3.4 or later?")]
    Malformed {
        /// The member.
        endpoint: SocketAddr,
        /// The request.
        path: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The lease expired before it was renewed (etcd was out of reach for
    /// longer than its time to live).
    #[error("etcd no longer has lease {lease}: it expired; registering again under a new one")]
    LeaseGone {
        /// The lease.
        lease: LeaseId,
    },
}
