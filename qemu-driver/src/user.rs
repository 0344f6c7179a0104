//! The unprivileged user QEMU runs as.
//!
//! QEMU starts as root, because it opens, as root, everything the VM
//! needs: the RAM file (memtap's FUSE file on the server, which only root
//! may open), the disk image or cownetdisk's NBD socket, the tap (an
//! existing persistent tap needs CAP_NET_ADMIN to attach to), `/dev/kvm`,
//! the UEFI variable store, the SPICE ticket and its sockets, pid file and
//! serial log. Then, before the guest runs a single instruction, it drops
//! to this user with `-run-with user=UID:GID` (see `vm`). From then on a
//! guest that takes QEMU over holds an unprivileged process with no
//! capabilities, behind QEMU's seccomp filter.
//!
//! After the drop QEMU opens no path of ours: the device state it saves or
//! loads and the screenshots it writes are files the daemon opens and lends
//! it over QMP (`Qmp::with_file_lent`). So the user needs no directory, no
//! file and no group of its own: the numeric form `UID:GID` also leaves
//! QEMU without the user's supplementary groups (the `kvm` group, for one,
//! is only needed for the open of `/dev/kvm` done as root).
//!
//! One user for all VMs of a host, as libvirt's `qemu` user: the QEMUs
//! cannot read each other's memory (a change of uid makes a process
//! non-dumpable, so same-uid ptrace is refused) but could signal each
//! other.

use crate::error::{QemuError, Result};

/// A user of this host that QEMU drops to after setting the VM up. Never
/// root: [`QemuUser::lookup`] refuses uid 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl QemuUser {
    /// The user called `name`, with its uid and primary group.
    ///
    /// # Errors
    /// [`QemuError::NoSuchUser`] when the host has no such user,
    /// [`QemuError::RootUser`] when it is root (uid 0), and
    /// [`QemuError::UserLookup`] when the user database cannot be read.
    pub fn lookup(name: &str) -> Result<QemuUser> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|errno| QemuError::UserLookup { name: name.to_owned(), source: errno.into() })?
            .ok_or_else(|| QemuError::NoSuchUser { name: name.to_owned() })?;
        if user.uid.is_root() {
            return Err(QemuError::RootUser { name: name.to_owned() });
        }
        Ok(QemuUser { name: name.to_owned(), uid: user.uid.as_raw(), gid: user.gid.as_raw() })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// QEMU's `-run-with` value that drops to it: numeric, so that QEMU
    /// neither looks the name up nor takes the user's supplementary groups.
    pub(crate) fn run_with(&self) -> String {
        format!("user={}:{}", self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_unknown_users_are_refused_and_nobody_is_taken() {
        assert!(matches!(QemuUser::lookup("root"), Err(QemuError::RootUser { .. })));
        let unknown = QemuUser::lookup("no-such-user-here").unwrap_err();
        assert!(matches!(unknown, QemuError::NoSuchUser { .. }), "{unknown}");
        assert!(unknown.to_string().contains("useradd --system --no-create-home no-such-user-here"), "{unknown}");
        // Debian's unprivileged user.
        let nobody = QemuUser::lookup("nobody").expect("nobody exists on Debian");
        assert_eq!((nobody.name(), nobody.uid()), ("nobody", 65534));
        assert_eq!(nobody.run_with(), "user=65534:65534");
    }
}
