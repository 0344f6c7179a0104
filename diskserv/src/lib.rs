//! Desktop side: serves blocks of a VM's disk image to cownetdisk.
#![warn(missing_docs)]
