//! Desktop side: serves blocks of a consolidated VM's disk image to the
//! server's cownetdisk, read-only, over the same authenticated protocol and
//! serving loop as memserv (`jettison-image-server`).
//!
//! Not written yet: it arrives with the copy-on-write networked disk issue.
//! The crate exists so that the workspace has its final shape.
#![warn(missing_docs)]
