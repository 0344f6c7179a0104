//! Several hosts on one machine, as DESIGN.md section 4 asks: network
//! namespaces joined by a bridge (the office LAN), made with unique names
//! and deleted on drop, whatever the test did.
//!
//! Each host sees one interface, `eth0`, on a veth port of the bridge,
//! which lives in a namespace of its own so that nothing of the machine's
//! own network is touched.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// `Ok` when this machine can make namespaces, veth pairs and bridges, else
/// the reason.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("network namespaces, veth and AF_PACKET need root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("`ip` (iproute2) is not installed; run scripts/install-deps".into()),
    }
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Namespace(String);

impl Namespace {
    /// Makes the namespace `name` (`ip netns add`).
    pub fn new(name: String) -> Namespace {
        ip(&["netns", "add", &name]);
        Namespace(name)
    }

    /// Its name, for `ip -n` and `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One host on the LAN.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// Its role, part of the namespace's name (`desktop`, `server`).
    pub role: &'a str,
    /// The address of its `eth0` with prefix (`10.77.0.2/24`).
    pub cidr: &'a str,
    /// The MAC of its `eth0`, or the kernel's choice.
    pub mac: Option<&'a str>,
}

/// Hosts on a bridge; every namespace is deleted on drop.
#[derive(Debug)]
pub struct Lan {
    hosts: Vec<Namespace>,
    _bridge: Namespace,
}

impl Lan {
    /// Makes a namespace for the bridge and one per host, each host's
    /// `eth0` up with its address (and `lo` up).
    pub fn build(hosts: &[Host<'_>]) -> Lan {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("jt-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let bridge = Namespace::new(format!("{prefix}-lan"));
        let mut lan = Lan { hosts: Vec::new(), _bridge: bridge };
        let br = lan._bridge.name().to_owned();
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (i, host) in hosts.iter().enumerate() {
            let ns = Namespace::new(format!("{prefix}-{}", host.role));
            let name = ns.name().to_owned();
            lan.hosts.push(ns);
            let port = format!("port{i}");
            ip(&["-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &name]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            if let Some(mac) = host.mac {
                ip(&["-n", &name, "link", "set", "eth0", "address", mac]);
            }
            ip(&["-n", &name, "addr", "add", host.cidr, "brd", "+", "dev", "eth0"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
        }
        lan
    }

    /// The namespace of host `i` (in the order given to [`Lan::build`]).
    pub fn host(&self, i: usize) -> &str {
        self.hosts[i].name()
    }

    /// The namespace of the bridge: its port `port<i>` leads to host `i`'s
    /// `eth0` (a qdisc there shapes what reaches the host).
    pub fn bridge(&self) -> &str {
        self._bridge.name()
    }
}

/// How long a daemon may take to stop on SIGTERM: the server daemon's
/// drain (90 s, as its unit allows 120 s) and a margin. Not a speed
/// figure: a bound that turns a daemon hanging on stop into a failure.
pub const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(150);

/// A `jettison` daemon running in a namespace (`ip netns exec` execs it in
/// place, so the child's pid is the daemon's: an emulated S3 can stop and
/// continue it). On drop it is continued (in case it was left stopped),
/// killed and reaped.
#[derive(Debug)]
pub struct Daemon {
    child: std::process::Child,
    /// Where a daemon started by [`Daemon::spawn_notifying`] tells its
    /// state, as systemd's `$NOTIFY_SOCKET`.
    notify: Option<std::os::unix::net::UnixDatagram>,
}

impl Daemon {
    /// Starts `jettison ARGS` in namespace `ns`, its stderr in `log`.
    pub fn spawn(ns: &str, log: &std::path::Path, args: &[&std::ffi::OsStr]) -> Daemon {
        Daemon { child: Daemon::command(ns, log, args).spawn().expect("ip netns exec runs"), notify: None }
    }

    /// Starts `jettison ARGS` as [`Daemon::spawn`] does, with a
    /// `$NOTIFY_SOCKET` beside `log` as systemd gives a `Type=notify`
    /// service, and returns once the daemon says `READY=1` there.
    ///
    /// # Panics
    /// If it does not within a minute (or exits first).
    pub fn spawn_notifying(ns: &str, log: &std::path::Path, args: &[&std::ffi::OsStr]) -> Daemon {
        let path = log.with_extension("notify");
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("the notify socket can be bound");
        socket.set_read_timeout(Some(std::time::Duration::from_millis(200))).expect("a timeout can be set");
        let child = Daemon::command(ns, log, args).env("NOTIFY_SOCKET", &path).spawn().expect("ip netns exec runs");
        let mut daemon = Daemon { child, notify: Some(socket) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !daemon.notified().iter().any(|state| state == "READY=1") {
            let exited = daemon.child.try_wait().expect("the daemon can be waited for");
            assert!(exited.is_none(), "the daemon exited ({exited:?}) before it was ready; see {}", log.display());
            assert!(std::time::Instant::now() < deadline, "the daemon never said READY=1; see {}", log.display());
        }
        daemon
    }

    /// The states the daemon told its notify socket since the last call
    /// (waiting up to 200 ms for the first).
    pub fn notified(&mut self) -> Vec<String> {
        let Some(socket) = &self.notify else { return Vec::new() };
        let mut states = Vec::new();
        let mut buffer = [0u8; 512];
        while let Ok(n) = socket.recv(&mut buffer) {
            states.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            socket.set_nonblocking(true).expect("the notify socket can be made non-blocking");
        }
        let _ = socket.set_nonblocking(false);
        states
    }

    fn command(ns: &str, log: &std::path::Path, args: &[&std::ffi::OsStr]) -> Command {
        let log = std::fs::File::create(log).expect("the daemon's log file can be created");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(crate::jettison_binary())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(log);
        command
    }

    /// The real `jettison memserv` serving `ram` as export vm1 on
    /// [`office::MEMSERV`] in namespace `desktop`, reporting requests on
    /// `events`, its log in `dir`; returns once `events` exists and memserv
    /// answers a TCP handshake from namespace `server`.
    pub fn memserv(
        desktop: &str,
        server: &str,
        dir: &Path,
        ram: &Path,
        keys: &crate::keys::KeyFiles,
        events: &Path,
    ) -> Daemon {
        let ns = (desktop, server);
        Daemon::export(ns, dir, "memserv", office::MEMSERV, ("--ram", ram), keys, events)
    }

    /// The real `jettison diskserv` serving the raw disk `image` as export
    /// vm1 on [`office::DISKSERV`], as [`Daemon::memserv`] serves a RAM file.
    pub fn diskserv(
        desktop: &str,
        server: &str,
        dir: &Path,
        image: &Path,
        keys: &crate::keys::KeyFiles,
        events: &Path,
    ) -> Daemon {
        let ns = (desktop, server);
        Daemon::export(ns, dir, "diskserv", office::DISKSERV, ("--image", image), keys, events)
    }

    /// `jettison SERVICE --vm vm1 --listen LISTEN FILE_FLAG FILE --events
    /// EVENTS` in namespace `ns.0`, once `events` exists and `listen`
    /// answers from namespace `ns.1`.
    fn export(
        ns: (&str, &str),
        dir: &Path,
        service: &str,
        listen: &str,
        (file_flag, file): (&str, &Path),
        keys: &crate::keys::KeyFiles,
        events: &Path,
    ) -> Daemon {
        let keys = keys.args();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            service.as_ref(),
            "--vm".as_ref(),
            "vm1".as_ref(),
            "--listen".as_ref(),
            listen.as_ref(),
            file_flag.as_ref(),
            file.as_os_str(),
            "--events".as_ref(),
            events.as_os_str(),
        ];
        args.extend(keys.iter().map(|a| a.as_os_str()));
        let daemon = Daemon::spawn(ns.0, &dir.join(format!("{service}.log")), &args);
        let probe: std::net::SocketAddr = listen.parse().expect("the office's service addresses are addresses");
        let answers = || {
            remote_wakeup::netns::run_in(Some(ns.1), || {
                std::net::TcpStream::connect_timeout(&probe, std::time::Duration::from_millis(300))
            })
            .is_ok_and(|connected| connected.is_ok())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !(events.exists() && answers()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{service} did not come up; see {}/{service}.log",
                dir.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        daemon
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the daemon to exit; whether it exited
    /// successfully within [`STOP_LIMIT`]. One still running then is a
    /// daemon that hangs on stop: it is killed and this says `false`.
    pub fn terminate(&mut self) -> bool {
        // SAFETY: kill has no memory preconditions; the pid is our child,
        // not yet reaped.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = std::time::Instant::now() + STOP_LIMIT;
        loop {
            match self.child.try_wait().expect("the daemon can be waited for") {
                Some(status) => return status.success(),
                None if std::time::Instant::now() >= deadline => {
                    eprintln!("the daemon (pid {}) was still running {STOP_LIMIT:?} after SIGTERM: killed", self.pid());
                    self.kill();
                    return false;
                }
                None => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as in `terminate`.
            unsafe { libc::kill(self.pid(), libc::SIGCONT) };
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The test office's addressing: the desktop and the server as `eth0` on
/// one bridge, in a /24 no other test uses.
pub mod office {
    /// The desktop's address and prefix.
    pub const DESKTOP_CIDR: &str = "10.77.0.2/24";
    /// The server's address and prefix.
    pub const SERVER_CIDR: &str = "10.77.0.1/24";
    /// The LAN's broadcast address (magic packets go there).
    pub const BROADCAST: &str = "10.77.0.255";
    /// Where the desktop's memserv listens.
    pub const MEMSERV: &str = "10.77.0.2:7410";
    /// Where the desktop's diskserv listens.
    pub const DISKSERV: &str = "10.77.0.2:7411";
    /// The MAC of the desktop's `eth0`, which its emulated S3 wakes for.
    pub const DESKTOP_MAC: &str = "02:4a:57:00:00:12";
}

/// The real `jettison power` with the emulated S3 on the desktop's `eth0`
/// in the office of [`office`]: what a desktop whose memserv and diskserv
/// run on their own runs while its VM is away.
#[derive(Debug, Clone)]
pub struct EmulatedPower<'a> {
    /// The event sockets it follows (`--events`).
    pub events: Vec<&'a Path>,
    /// The daemons it stops while asleep (`--stop-pid`).
    pub stop_pids: Vec<i32>,
    /// Where it writes `ledger.json` (`--state-dir`).
    pub state_dir: &'a Path,
    /// `--policy`: `fixed` or `adaptive`.
    pub policy: &'a str,
    /// t_w, or the adaptive policy's start (`--wait-secs`).
    pub wait_secs: f64,
    /// The power profile's JSON file (`--profile`); its suspend and resume
    /// times are the emulated S3's unless set below. None: Table 1.
    pub profile: Option<&'a Path>,
    /// Serving power per request in the ledger (`--serve-secs`), if set.
    pub serve_secs: Option<f64>,
    /// The emulated suspend and resume times, if not the profile's.
    pub transition_secs: Option<(f64, f64)>,
}

impl EmulatedPower<'_> {
    /// Starts it in namespace `desktop` (the host whose `eth0` has
    /// [`office::DESKTOP_CIDR`] and [`office::DESKTOP_MAC`]), its log in
    /// `log`. It writes `ledger.json` in `state_dir` once its session runs.
    pub fn spawn(&self, desktop: &str, log: &Path) -> Daemon {
        let mut args: Vec<std::ffi::OsString> = vec!["power".into()];
        for events in &self.events {
            args.extend(["--events".into(), events.as_os_str().to_owned()]);
        }
        for pid in &self.stop_pids {
            args.extend(["--stop-pid".into(), pid.to_string().into()]);
        }
        let mut flag = |name: &str, value: String| args.extend([name.into(), value.into()]);
        flag("--policy", self.policy.to_owned());
        flag("--wait-secs", self.wait_secs.to_string());
        flag("--sleep", "emulated-s3".to_owned());
        flag("--interface", "eth0".to_owned());
        flag("--address", office::DESKTOP_CIDR.to_owned());
        flag("--mac", office::DESKTOP_MAC.to_owned());
        if let Some(secs) = self.serve_secs {
            flag("--serve-secs", secs.to_string());
        }
        if let Some((suspend, resume)) = self.transition_secs {
            flag("--suspend-secs", suspend.to_string());
            flag("--resume-secs", resume.to_string());
        }
        if let Some(profile) = self.profile {
            args.extend(["--profile".into(), profile.as_os_str().to_owned()]);
        }
        args.extend(["--state-dir".into(), self.state_dir.as_os_str().to_owned()]);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        Daemon::spawn(desktop, log, &args)
    }
}
