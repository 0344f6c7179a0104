//! Starting QEMU and driving it over QMP.
#![warn(missing_docs)]
