//! Server side: FUSE file per consolidated VM whose pages arrive on demand.
#![warn(missing_docs)]
