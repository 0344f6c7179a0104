//! Who may use a daemon's local socket, as a user meets it: the real
//! `jettison server` gives its socket to root and its `socket_group`; a
//! user in that group gets `jettison status`, one outside is kept out with
//! a message that names the group; where the group may only look
//! (`group_may_move = false`), a move is refused with the reason.
//!
//! Root only: it makes a throwaway group (removed again even when the test
//! fails) and runs the command as other users.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is the test failing

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use daemon_protocol::local::{serve, LocalRequest, Report, ServerStatus};
use daemon_protocol::local_access::SocketAccess;

/// Users no account of the machine has.
const MEMBER_UID: u32 = 61_000;
const OUTSIDER_UID: u32 = 61_001;

/// A group made for this test, deleted on drop.
struct ThrowawayGroup {
    name: String,
    gid: u32,
}

impl ThrowawayGroup {
    /// A group named for this process and `tag` (tests run at once).
    fn new(tag: &str) -> ThrowawayGroup {
        let name = format!("jt-{tag}-{}", std::process::id());
        let out = Command::new("groupadd").args(["--system", &name]).output().expect("groupadd runs (package passwd)");
        assert!(out.status.success(), "groupadd {name}: {}", String::from_utf8_lossy(&out.stderr));
        let gid = nix::unistd::Group::from_name(&name).unwrap().expect("the group just made").gid.as_raw();
        ThrowawayGroup { name, gid }
    }
}

impl Drop for ThrowawayGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

/// A `jettison server` child, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A copy of the jettison binary in `dir` (an [`open_dir`]), which any
/// user can run: the build's own may sit under a directory only root can
/// enter (a clone in `mktemp -d`).
fn binary_in(dir: &Path) -> PathBuf {
    let copy = dir.join("jettison");
    if !copy.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_jettison"), &copy).expect("a copy of the jettison binary");
    }
    copy
}

/// `jettison ARGS` as `uid` with primary group `gid` and `groups` beside
/// it, from its copy in `dir`.
fn jettison_as(dir: &Path, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Output {
    let groups: Vec<nix::unistd::Gid> = groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    let (uid, gid) = (nix::unistd::Uid::from_raw(uid), nix::unistd::Gid::from_raw(gid));
    let mut command = Command::new(binary_in(dir));
    command.args(args);
    // Groups first, while still root (std's own uid() and gid() drop root
    // before pre_exec closures run, and then setgroups is refused).
    // SAFETY: setgroups, setgid and setuid are single system calls, safe
    // between fork and exec; `groups` was made before the fork.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setgroups(&groups)
                .and_then(|()| nix::unistd::setgid(gid))
                .and_then(|()| nix::unistd::setuid(uid))
                .map_err(std::io::Error::from)
        });
    }
    command.output().expect("the jettison binary runs")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

/// A directory anyone may traverse (the sockets are what is guarded).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn wait_for_socket(socket: &Path, daemon: &mut Daemon, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            panic!("jettison server ended ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "no socket at {}", socket.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_member_of_the_socket_group_gets_status_and_an_outsider_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        return tests::skip("needs root: it makes a group and runs jettison as other users");
    }
    let group = ThrowawayGroup::new("status");
    let dir = open_dir();
    let config = tests::standalone_server_config(dir.path(), 1024, &format!("socket_group = \"{}\"\n", group.name));
    let log = dir.path().join("server.log");
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_jettison"))
            .args(["server", "--config"])
            .arg(&config)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let socket = dir.path().join("run/server.sock");
    wait_for_socket(&socket, &mut daemon, &log);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (0, group.gid, 0o660), "the socket's owner and mode");
    let socket = socket.to_str().unwrap();

    // In the group (as a supplementary group, as `adduser` makes it): status.
    let out = jettison_as(dir.path(), MEMBER_UID, MEMBER_UID, &[group.gid], &["status", "--daemon", socket, "--json"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let status = json(&out);
    assert_eq!((status["source"].as_str(), status["host"].as_str()), (Some("server"), Some("server")), "{status}");

    // Outside it: kept out by the socket's mode, told which group to join.
    let out = jettison_as(dir.path(), OUTSIDER_UID, OUTSIDER_UID, &[], &["status", "--daemon", socket]);
    assert_eq!(out.status.code(), Some(7), "denied has its own exit status");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("members of the group {}", group.name)) && said.contains("adduser"), "{said}");
    let out = jettison_as(dir.path(), OUTSIDER_UID, OUTSIDER_UID, &[], &["status", "--daemon", socket, "--json"]);
    let refused = json(&out);
    tests::check_status_schema(&refused, Some("error"));
    assert_eq!(refused["error"]["kind"], "denied", "{refused}");
}

#[test]
fn where_the_group_may_only_look_a_member_cannot_move_a_vm() {
    if !nix::unistd::geteuid().is_root() {
        return tests::skip("needs root: it makes a group and runs jettison as other users");
    }
    let group = ThrowawayGroup::new("look");
    let dir = open_dir();
    let socket: PathBuf = dir.path().join("desktop.sock");
    let (access, warning) = SocketAccess::from_setting(Some(&group.name), false).unwrap();
    assert_eq!(warning, None);
    let listener = daemon_protocol::local::bind(&socket, &access).unwrap();
    std::thread::spawn(move || {
        serve(listener, access, |request, _| match request {
            LocalRequest::Status => Ok(Report::ServerStatus(ServerStatus {
                server: "desk".parse().unwrap(),
                vms: Vec::new(),
                energy: None,
            })),
            other => Err(format!("{} reached the daemon", other.name()).into()),
        })
    });
    let socket = socket.to_str().unwrap();
    let member = |args: &[&str]| jettison_as(dir.path(), MEMBER_UID, group.gid, &[], args);
    assert!(member(&["status", "--daemon", socket]).status.success(), "the group may look");
    let out = member(&["consolidate", "vm1", "--socket", socket, "--json"]);
    assert_eq!(out.status.code(), Some(7));
    let refused = json(&out);
    let said = refused["error"]["message"].as_str().unwrap();
    assert!(said.contains("consolidate needs root") && said.contains("group_may_move = false"), "{refused}");
    // Root may.
    let out = Command::new(env!("CARGO_BIN_EXE_jettison")).args(["consolidate", "vm1", "--socket", socket]).output();
    let said = String::from_utf8_lossy(&out.unwrap().stderr).into_owned();
    assert!(said.contains("consolidate reached the daemon"), "{said}");
}
