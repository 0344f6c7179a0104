//! Server side: the copy-on-write networked disk. An NBD server in front of
//! the slice store (`jettison-slice-store`), fetching blocks a VM has not yet
//! touched from the desktop's diskserv.
//!
//! Not written yet: it arrives with the copy-on-write networked disk issue.
//! The crate exists so that the workspace has its final shape.
#![warn(missing_docs)]
