//! Server side: copy-on-write networked disk served over NBD.
#![warn(missing_docs)]
