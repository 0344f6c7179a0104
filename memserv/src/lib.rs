//! Desktop side: serves pages of a stopped VM's RAM file to memtap.
#![warn(missing_docs)]
