//! Keys for a test's desktop and server: each has its own, and each is
//! enrolled at the other, as `jettison pair` and `jettison enroll` would
//! leave two real hosts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use identifiers::HostName;
use wire::{Credentials, HostKey, Peers};

/// The name the test desktop is enrolled under at the server.
pub const DESKTOP_NAME: &str = "desk1";
/// The name the test server is enrolled under at the desktop.
pub const SERVER_NAME: &str = "server";

/// A desktop's and a server's keys, each trusting the other.
#[derive(Debug, Clone)]
pub struct TestKeys {
    desktop: HostKey,
    server: HostKey,
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl TestKeys {
    /// Two fresh keys.
    pub fn new() -> Self {
        TestKeys { desktop: HostKey::generate(), server: HostKey::generate() }
    }

    /// The desktop's side: its key, the server enrolled.
    pub fn desktop(&self) -> Arc<Credentials> {
        Arc::new(Credentials::new(self.desktop.clone(), trusting(SERVER_NAME, &self.server)))
    }

    /// The server's side: its key, the desktop enrolled.
    pub fn server(&self) -> Arc<Credentials> {
        Arc::new(Credentials::new(self.server.clone(), trusting(DESKTOP_NAME, &self.desktop)))
    }

    /// A server (or desktop) that nobody enrolled, which trusts this
    /// desktop (or server) all the same: what a stranger or thief runs.
    pub fn stranger() -> Arc<Credentials> {
        Arc::new(Credentials::new(HostKey::generate(), Peers::new()))
    }

    /// Writes both hosts' files under `dir` (`desktop/` and `server/`,
    /// each with `host.key` and `peers/`), as pair and enroll would.
    pub fn write(&self, dir: &Path) -> (KeyFiles, KeyFiles) {
        let desktop = KeyFiles::write(&dir.join("desktop"), &self.desktop, SERVER_NAME, &self.server);
        let server = KeyFiles::write(&dir.join("server"), &self.server, DESKTOP_NAME, &self.desktop);
        (desktop, server)
    }
}

fn trusting(name: &str, peer: &HostKey) -> Peers {
    let name: HostName = name.parse().expect("a valid host name");
    let mut peers = Peers::new();
    peers.insert(name, peer.public(), Path::new("TestKeys")).expect("one key in an empty set");
    peers
}

/// One host's key file and peers directory.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// Its private key (mode 0600).
    pub host_key: PathBuf,
    /// Its peers directory.
    pub peers: PathBuf,
}

impl KeyFiles {
    fn write(dir: &Path, key: &HostKey, peer_name: &str, peer: &HostKey) -> KeyFiles {
        let files = KeyFiles { host_key: dir.join("host.key"), peers: dir.join("peers") };
        key.save(&files.host_key).expect("a key file in a fresh directory");
        let name: HostName = peer_name.parse().expect("a valid host name");
        Peers::enroll(&files.peers, &name, peer.public()).expect("enroll in a fresh directory");
        files
    }

    /// The command-line options naming them: `--host-key F --peers D`.
    pub fn args(&self) -> [OsString; 4] {
        ["--host-key".into(), self.host_key.clone().into(), "--peers".into(), self.peers.clone().into()]
    }
}
