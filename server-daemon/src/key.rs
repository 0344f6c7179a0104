//! How the server names a VM: by its desktop and its name there.

use std::fmt;

use identifiers::{HostName, VmName};

/// A VM on the server: its desktop (the name it said hello with) and its
/// name on that desktop. Two desktops may each have a `vm1`; a desktop's
/// requests reach only its own VMs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmKey {
    /// The desktop.
    pub desktop: HostName,
    /// The VM.
    pub vm: VmName,
}

impl fmt::Display for VmKey {
    /// `desk1/vm1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.desktop, self.vm)
    }
}
