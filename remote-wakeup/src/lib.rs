//! Server side: wakes a sleeping desktop with Wake-on-LAN before memtap or
//! cownetdisk fetch state from it. It will implement
//! `jettison_wire::WakeHook`, the hook both call before every remote fetch
//! (today they are given `jettison_wire::NoWake`).
//!
//! Not written yet: it arrives with the power issue. The crate exists so
//! that the workspace has its final shape.
#![warn(missing_docs)]
