//! Who may use a daemon's local socket.
//!
//! The socket belongs to root and to one group (`socket_group`, by default
//! `jettison`, which the package creates), mode 0660: the kernel lets no
//! one else connect. Each connection's credentials (`SO_PEERCRED`: uid,
//! gid, pid, and the pid's supplementary groups) are checked again per
//! request: root may ask anything; members of the group may ask what only
//! reads ([`Access::Read`]: status, where to view a screen, a screenshot)
//! and, unless the daemon is configured otherwise (`group_may_move =
//! false`), what moves or stops a VM ([`Access::Move`]). The desk's user
//! is meant to be in the group: their session's viewer and idle watcher
//! talk to the desktop daemon.
//!
//! When `socket_group` is not set and the default group does not exist
//! (a build installed without the package), the socket is root's alone
//! (0600) and the daemon says so at start; a group the file names must
//! exist, or the configuration is refused.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Group, Uid};

use crate::local::LocalRequest;

/// The group of the sockets when the configuration names none.
pub const DEFAULT_SOCKET_GROUP: &str = "jettison";

/// What a request does, for the access check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only looks (status, the viewer's address, a screenshot).
    Read,
    /// Moves, starts or stops a VM.
    Move,
}

impl LocalRequest {
    /// What the request does.
    pub fn access(&self) -> Access {
        match self {
            LocalRequest::Status | LocalRequest::View { .. } | LocalRequest::Screenshot { .. } => Access::Read,
            LocalRequest::Consolidate { .. }
            | LocalRequest::Reintegrate { .. }
            | LocalRequest::Start { .. }
            | LocalRequest::Shutdown { .. }
            | LocalRequest::Destroy { .. }
            | LocalRequest::SaveAll => Access::Move,
        }
    }

    /// Its name, as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            LocalRequest::Status => "status",
            LocalRequest::Consolidate { .. } => "consolidate",
            LocalRequest::Reintegrate { .. } => "reintegrate",
            LocalRequest::Start { .. } => "start",
            LocalRequest::Shutdown { .. } => "shutdown",
            LocalRequest::Destroy { .. } => "destroy",
            LocalRequest::SaveAll => "save-all",
            LocalRequest::View { .. } => "view",
            LocalRequest::Screenshot { .. } => "screenshot",
        }
    }
}

/// Why a `socket_group` setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The named group does not exist.
    #[error(
        "socket_group = {group:?} is not a group of this host: create it (addgroup --system {group}) or name another"
    )]
    NoSuchGroup {
        /// The group.
        group: String,
    },
    /// The group database cannot be read.
    #[error("cannot look up the group {group:?}")]
    Lookup {
        /// The group.
        group: String,
        /// Cause.
        #[source]
        source: nix::Error,
    },
}

/// Who may use a local socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAccess {
    /// The group and its id; none: root only.
    group: Option<(String, Gid)>,
    /// Whether the group may also move VMs.
    group_may_move: bool,
}

/// A connected peer's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its user.
    pub uid: Uid,
    /// Its primary group.
    pub gid: Gid,
    /// Its supplementary groups.
    pub groups: Vec<Gid>,
}

impl SocketAccess {
    /// Root only.
    pub fn root_only() -> Self {
        SocketAccess { group: None, group_may_move: false }
    }

    /// The access a configuration asks for: `socket_group` (none: the
    /// default group, if it exists; empty: root only) and `group_may_move`.
    /// Also returns a warning when the default group does not exist.
    ///
    /// # Errors
    /// A group the file names that does not exist, or cannot be looked up.
    pub fn from_setting(
        socket_group: Option<&str>,
        group_may_move: bool,
    ) -> Result<(SocketAccess, Option<String>), AccessError> {
        let name = socket_group.unwrap_or(DEFAULT_SOCKET_GROUP);
        if name.is_empty() {
            return Ok((SocketAccess::root_only(), None));
        }
        let found = Group::from_name(name).map_err(|source| AccessError::Lookup { group: name.to_owned(), source })?;
        match (found, socket_group) {
            (Some(group), _) => Ok((SocketAccess { group: Some((name.to_owned(), group.gid)), group_may_move }, None)),
            (None, Some(_)) => Err(AccessError::NoSuchGroup { group: name.to_owned() }),
            (None, None) => Ok((
                SocketAccess::root_only(),
                Some(format!(
                    "the group {DEFAULT_SOCKET_GROUP} does not exist: the local socket is root's alone; create it \
                     (addgroup --system {DEFAULT_SOCKET_GROUP}, as the package does) and restart to let its members \
                     use it, or set socket_group"
                )),
            )),
        }
    }

    /// Gives `socket` to root and the group, mode 0660 (0600 when root only).
    ///
    /// # Errors
    /// The error of `chown` or `chmod`.
    pub fn apply(&self, socket: &Path) -> io::Result<()> {
        let mode = match &self.group {
            Some((_, gid)) => {
                nix::unistd::chown(socket, None, Some(*gid))?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
    }

    /// Whether `peer` may make `request`; why not, for the peer, if not.
    ///
    /// # Errors
    /// The refusal's text: who may, and how to become one.
    pub fn check(&self, peer: &Peer, request: &LocalRequest) -> Result<(), String> {
        if peer.uid.is_root() {
            return Ok(());
        }
        let Some((name, gid)) = &self.group else {
            return Err(format!(
                "only root may use this daemon's socket (uid {} asked for {})",
                peer.uid,
                request.name()
            ));
        };
        if peer.gid != *gid && !peer.groups.contains(gid) {
            return Err(format!(
                "uid {} is not in the group {name}: only root and its members may use this daemon (adduser USER \
                 {name}, then log in again)",
                peer.uid
            ));
        }
        match request.access() {
            Access::Read => Ok(()),
            Access::Move if self.group_may_move => Ok(()),
            Access::Move => Err(format!(
                "{} needs root here: members of {name} may only look (group_may_move = false in the daemon's \
                 configuration)",
                request.name()
            )),
        }
    }
}

impl Peer {
    /// The credentials of the process at the other end of `stream`, as
    /// the kernel recorded them when it connected; its supplementary groups
    /// from `/proc/<pid>/status`.
    ///
    /// # Errors
    /// The error of `getsockopt(SO_PEERCRED)`, or of reading the groups (a
    /// peer that already exited).
    pub fn of(stream: &UnixStream) -> io::Result<Peer> {
        let cred = getsockopt(stream, PeerCredentials)?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", cred.pid()))?;
        let groups = status
            .lines()
            .find_map(|line| line.strip_prefix("Groups:"))
            .map(|list| list.split_whitespace().filter_map(|g| g.parse().ok()).map(Gid::from_raw).collect())
            .unwrap_or_default();
        Ok(Peer { uid: Uid::from_raw(cred.uid()), gid: Gid::from_raw(cred.gid()), groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
            groups: groups.iter().map(|g| Gid::from_raw(*g)).collect(),
        }
    }

    #[test]
    fn root_may_all_members_look_and_move_as_configured() {
        let vm = "vm1".parse().unwrap();
        let status = LocalRequest::Status;
        let consolidate = LocalRequest::Consolidate { vm, force: false };
        let group = SocketAccess { group: Some(("desk".into(), Gid::from_raw(500))), group_may_move: true };
        let looks = SocketAccess { group_may_move: false, ..group.clone() };
        for access in [&group, &looks, &SocketAccess::root_only()] {
            assert_eq!(access.check(&peer(0, 0, &[]), &consolidate), Ok(()));
        }
        assert_eq!(group.check(&peer(1000, 1000, &[27, 500]), &consolidate), Ok(()));
        assert_eq!(group.check(&peer(1000, 500, &[]), &status), Ok(()));
        assert_eq!(looks.check(&peer(1000, 1000, &[500]), &status), Ok(()));
        let moving = looks.check(&peer(1000, 1000, &[500]), &consolidate).unwrap_err();
        assert!(moving.contains("consolidate needs root") && moving.contains("group_may_move"), "{moving}");
        let outside = group.check(&peer(1001, 1001, &[27]), &status).unwrap_err();
        assert!(outside.contains("not in the group desk") && outside.contains("adduser"), "{outside}");
        let root_only = SocketAccess::root_only().check(&peer(1000, 1000, &[500]), &status).unwrap_err();
        assert!(root_only.contains("only root"), "{root_only}");
    }

    #[test]
    fn a_named_group_must_exist_and_the_default_may_be_missing() {
        assert_eq!(SocketAccess::from_setting(Some(""), true).unwrap(), (SocketAccess::root_only(), None));
        let root = SocketAccess::from_setting(Some("root"), false).unwrap().0;
        assert_eq!(root.group, Some(("root".to_owned(), Gid::from_raw(0))));
        let err = SocketAccess::from_setting(Some("no-such-group-here"), true).unwrap_err().to_string();
        assert!(err.contains("socket_group = \"no-such-group-here\" is not a group"), "{err}");
        let (access, warning) = SocketAccess::from_setting(None, true).unwrap();
        match Group::from_name(DEFAULT_SOCKET_GROUP).unwrap() {
            Some(_) => assert!(access.group.is_some() && warning.is_none()),
            None => assert!(access == SocketAccess::root_only() && warning.unwrap().contains("root's alone")),
        }
    }

    #[test]
    fn a_peer_is_who_connected() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = Peer::of(&a).unwrap();
        assert_eq!((me.uid, me.gid), (nix::unistd::geteuid(), nix::unistd::getegid()));
        assert_eq!(me.groups, nix::unistd::getgroups().unwrap());
    }
}
