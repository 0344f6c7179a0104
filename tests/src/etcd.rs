//! A real 3-member etcd cluster for the fleet's tests: Debian's `etcd`
//! (package `etcd-server`), one member per network namespace, each with
//! its data under the test's directory. Started by the test and stopped on
//! drop, whatever the test did.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The client port of every member (each is alone in its namespace).
const CLIENT_PORT: u16 = 2379;
/// The peer port.
const PEER_PORT: u16 = 2380;
/// How long a cluster may take to elect a leader and answer.
const START_LIMIT: Duration = Duration::from_secs(60);

/// `Ok` when `etcd` can be run here, else the reason and the fix.
pub fn available() -> Result<(), String> {
    match Command::new("etcd").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("etcd is not installed (Debian's etcd-server); run scripts/install-deps".into()),
    }
}

/// One member: its namespace, its client address and its process.
#[derive(Debug)]
struct Member {
    ns: String,
    client: SocketAddr,
    process: Option<Child>,
}

/// The running cluster; every member is killed and reaped on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts a member in each of the namespaces `hosts` (namespace, its
    /// address), data and logs under `dir`, and returns once the cluster
    /// answers a read from the first namespace.
    ///
    /// # Panics
    /// If it does not within a minute (the members' logs are named).
    pub fn start(dir: &Path, hosts: &[(&str, IpAddr)]) -> EtcdCluster {
        let token = format!("jt-{}-{}", std::process::id(), dir.file_name().map_or("".into(), |n| n.to_string_lossy()));
        let initial: Vec<String> =
            hosts.iter().enumerate().map(|(i, (_, ip))| format!("m{i}=http://{ip}:{PEER_PORT}")).collect();
        let mut cluster = EtcdCluster { members: Vec::new() };
        for (i, (ns, ip)) in hosts.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("etcd-m{i}.log"))).expect("an etcd log can be created");
            let process = Command::new("ip")
                .args(["netns", "exec", ns, "etcd"])
                .arg(format!("--name=m{i}"))
                .arg(format!("--data-dir={}", dir.join(format!("etcd-m{i}")).display()))
                .arg(format!("--listen-client-urls=http://{ip}:{CLIENT_PORT}"))
                .arg(format!("--advertise-client-urls=http://{ip}:{CLIENT_PORT}"))
                .arg(format!("--listen-peer-urls=http://{ip}:{PEER_PORT}"))
                .arg(format!("--initial-advertise-peer-urls=http://{ip}:{PEER_PORT}"))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg(format!("--initial-cluster-token={token}"))
                .arg("--initial-cluster-state=new")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("ip netns exec etcd runs");
            let client = SocketAddr::new(*ip, CLIENT_PORT);
            cluster.members.push(Member { ns: (*ns).to_owned(), client, process: Some(process) });
        }
        let client = fleet_registry::EtcdClient::new(cluster.addrs(), Duration::from_secs(1));
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let read = remote_wakeup::netns::run_in(Some(&cluster.members[0].ns), || client.range_prefix("/"))
                .expect("a thread can enter the namespace");
            match read {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => panic!(
                    "the etcd cluster did not answer within {START_LIMIT:?} ({e}); see {}/etcd-m*.log",
                    dir.display()
                ),
            }
        }
        cluster
    }

    /// The members' client addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.client).collect()
    }

    /// `etcd = [...]` for a `[fleet]` section.
    pub fn fleet_line(&self) -> String {
        let urls: Vec<String> = self.members.iter().map(|m| format!("\"http://{}\"", m.client)).collect();
        format!("etcd = [{}]", urls.join(", "))
    }

    /// Kills member `i` (SIGKILL, as a crash of its host would).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
