//! Who this host is and whom it trusts: its own static key and the public
//! keys of its enrolled peers.
//!
//! Every host has its own X25519 key pair, made by `jettison pair`: the
//! private half stays in a file readable by its owner only (64 hex digits
//! and a newline), the public half is given to the other side, which
//! enrolls it under the host's name with `jettison enroll`. A server's peers
//! are its desktops; a desktop's peers are its servers. The handshake
//! ([`crate::secure`]) proves each end holds the private half of a key, and
//! the peers directory says whose key it is: a server therefore knows which
//! desktop is talking, and a desktop's key opens nothing but that desktop's
//! own VMs on the server and is worth nothing at another desktop.
//!
//! The peers directory holds one file per peer, `NAME.pub`, each line one
//! public key in hex (`#` starts a comment). A name may list two keys while
//! its key is being rotated; a key may belong to one name only.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use identifiers::HostName;
use rand::RngCore;

use crate::error::WireError;

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// The extension of an enrolled peer's file in the peers directory.
const PEER_FILE_EXTENSION: &str = "pub";

/// This host's private static key. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey([u8; KEY_LEN]);

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKey(public {})", self.public())
    }
}

impl HostKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        HostKey(bytes)
    }

    /// Parses 64 hex digits (surrounding white space is ignored); `origin`
    /// names where the text came from in the error.
    ///
    /// # Errors
    /// [`WireError::BadKey`] when the text is not a key.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, WireError> {
        parse_key(text, origin).map(HostKey)
    }

    /// The raw private bytes, for the handshake.
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The public half, which peers enroll.
    pub fn public(&self) -> PublicKey {
        PublicKey(curve25519_dalek::montgomery::MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }

    /// Writes the key to a new file readable by its owner only, making its
    /// directory first if needed (mode 0755, as `/etc/jettison` is).
    ///
    /// # Errors
    /// [`WireError::KeyExists`] if the file exists, [`WireError::KeyWrite`]
    /// if it cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), WireError> {
        let fail = |source| WireError::KeyWrite { path: path.to_owned(), source };
        make_parent(path).map_err(fail)?;
        let created = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
        let mut f = match created {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(WireError::KeyExists { path: path.to_owned() })
            }
            other => other.map_err(fail)?,
        };
        writeln!(f, "{}", hex::encode(self.0)).map_err(fail)?;
        f.sync_all().map_err(fail)
    }

    /// Reads a key file written by [`HostKey::save`].
    ///
    /// # Errors
    /// [`WireError::KeyFile`] if it cannot be read, [`WireError::KeyExposed`]
    /// if others may read it, [`WireError::BadKey`] if it holds no key.
    pub fn load(path: &Path) -> Result<Self, WireError> {
        let fail = |source| WireError::KeyFile { path: path.to_owned(), source };
        let meta = std::fs::metadata(path).map_err(fail)?;
        if meta.mode() & 0o077 != 0 {
            return Err(WireError::KeyExposed { path: path.to_owned(), mode: meta.mode() & 0o777 });
        }
        let text = std::fs::read_to_string(path).map_err(fail)?;
        Ok(HostKey(parse_key(&text, &path.display().to_string())?))
    }
}

/// A host's public static key: what a peer enrolls, and what the handshake
/// shows of the other end.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Parses 64 hex digits (surrounding white space is ignored); `origin`
    /// names where the text came from in the error.
    ///
    /// # Errors
    /// [`WireError::BadKey`] when the text is not a key.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, WireError> {
        parse_key(text, origin).map(PublicKey)
    }

    /// The key from the handshake's bytes, if it has the right length.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(PublicKey)
    }
}

/// 64 lowercase hex digits.
impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

fn parse_key(text: &str, origin: &str) -> Result<[u8; KEY_LEN], WireError> {
    let bad = || WireError::BadKey { origin: origin.to_owned() };
    hex::decode(text.trim()).map_err(|_| bad())?.try_into().map_err(|_| bad())
}

fn make_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir),
        None => Ok(()),
    }
}

/// The enrolled peers: whose public key is whose.
#[derive(Debug, Default, Clone)]
pub struct Peers {
    names: HashMap<PublicKey, HostName>,
}

impl Peers {
    /// No peer at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` as `name`'s (one name may hold several keys).
    ///
    /// # Errors
    /// [`WireError::KeyTwice`] when the key already belongs to another name.
    pub fn insert(&mut self, name: HostName, key: PublicKey, origin: &Path) -> Result<(), WireError> {
        match self.names.get(&key) {
            Some(other) if *other != name => Err(WireError::KeyTwice {
                path: origin.to_owned(),
                key: key.to_string(),
                first: other.clone(),
                second: name,
            }),
            _ => {
                self.names.insert(key, name);
                Ok(())
            }
        }
    }

    /// Reads every `NAME.pub` file of `dir` (other files are ignored).
    ///
    /// # Errors
    /// [`WireError::PeersFile`] if the directory or a file cannot be read or
    /// a file's name is not a host name, [`WireError::BadKey`] naming the
    /// file and line of a line that is not a key, [`WireError::KeyTwice`].
    pub fn load_dir(dir: &Path) -> Result<Self, WireError> {
        let fail = |path: &Path, why: String| WireError::PeersFile { path: path.to_owned(), why };
        let entries = std::fs::read_dir(dir).map_err(|e| fail(dir, e.to_string()))?;
        let mut peers = Peers::new();
        for entry in entries {
            let path = entry.map_err(|e| fail(dir, e.to_string()))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(PEER_FILE_EXTENSION) {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let name: HostName =
                stem.parse().map_err(|e: identifiers::InvalidIdentifier| fail(&path, e.to_string()))?;
            let text = std::fs::read_to_string(&path).map_err(|e| fail(&path, e.to_string()))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if line.is_empty() {
                    continue;
                }
                let origin = format!("{} line {}", path.display(), number + 1);
                peers.insert(name.clone(), PublicKey::from_hex(line, &origin)?, &path)?;
            }
        }
        Ok(peers)
    }

    /// Enrolls `key` as `name` in the peers directory `dir`: appends it to
    /// `dir/NAME.pub` (made, mode 0644, with its directory if needed) unless
    /// it is there already. Returns the file written.
    ///
    /// # Errors
    /// [`WireError::KeyTwice`] when another name holds the key,
    /// [`WireError::PeersFile`] when the directory cannot be read or written.
    pub fn enroll(dir: &Path, name: &HostName, key: PublicKey) -> Result<PathBuf, WireError> {
        let path = dir.join(format!("{name}.{PEER_FILE_EXTENSION}"));
        let fail = |why: std::io::Error| WireError::PeersFile { path: path.clone(), why: why.to_string() };
        let known = match Peers::load_dir(dir) {
            Ok(peers) => peers,
            Err(WireError::PeersFile { path, .. }) if path == dir && !dir.exists() => Peers::new(),
            Err(e) => return Err(e),
        };
        match known.name_of(&key) {
            Some(holder) if holder == name => return Ok(path),
            Some(holder) => {
                return Err(WireError::KeyTwice {
                    path,
                    key: key.to_string(),
                    first: holder.clone(),
                    second: name.clone(),
                })
            }
            None => {}
        }
        make_parent(&path).map_err(fail)?;
        let mut f = OpenOptions::new().append(true).create(true).mode(0o644).open(&path).map_err(fail)?;
        writeln!(f, "{key}").map_err(fail)?;
        f.sync_all().map_err(fail)?;
        Ok(path)
    }

    /// The name `key` is enrolled under.
    pub fn name_of(&self, key: &PublicKey) -> Option<&HostName> {
        self.names.get(key)
    }

    /// Whether any key is enrolled under `name`.
    pub fn knows(&self, name: &HostName) -> bool {
        self.names.values().any(|n| n == name)
    }

    /// How many keys are enrolled.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no key is enrolled.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What a host proves and checks in every handshake: its own key, and the
/// peers it accepts (which a reload may change while connections run).
#[derive(Debug)]
pub struct Credentials {
    key: HostKey,
    peers: RwLock<Peers>,
    peers_dir: Option<PathBuf>,
}

impl Credentials {
    /// `key` and a fixed set of peers (tests, one-off tools).
    pub fn new(key: HostKey, peers: Peers) -> Self {
        Credentials { key, peers: RwLock::new(peers), peers_dir: None }
    }

    /// Two hosts with fresh keys, each enrolled at the other: `first` is
    /// known to the second as `first_name`, and the second to the first as
    /// `second_name` (tests, benchmarks, both ends on one machine).
    pub fn mutual(first_name: &HostName, second_name: &HostName) -> (Credentials, Credentials) {
        let (first, second) = (HostKey::generate(), HostKey::generate());
        let origin = Path::new("Credentials::mutual");
        let mut first_peers = Peers::new();
        let mut second_peers = Peers::new();
        first_peers.insert(second_name.clone(), second.public(), origin).expect("one key in an empty set");
        second_peers.insert(first_name.clone(), first.public(), origin).expect("one key in an empty set");
        (Credentials::new(first, first_peers), Credentials::new(second, second_peers))
    }

    /// Loads the key file `key_file` and the peers directory `peers_dir`.
    ///
    /// # Errors
    /// Those of [`HostKey::load`] and [`Peers::load_dir`].
    pub fn load(key_file: &Path, peers_dir: &Path) -> Result<Self, WireError> {
        let key = HostKey::load(key_file)?;
        let peers = Peers::load_dir(peers_dir)?;
        Ok(Credentials { key, peers: RwLock::new(peers), peers_dir: Some(peers_dir.to_owned()) })
    }

    /// Reads the peers directory again; the new set applies to every later
    /// handshake (connections already made are kept). Returns how many
    /// keys are enrolled now; without a directory, nothing changes.
    ///
    /// # Errors
    /// Those of [`Peers::load_dir`]; the old set is then kept.
    pub fn reload_peers(&self) -> Result<usize, WireError> {
        let Some(dir) = &self.peers_dir else { return Ok(self.peer_count()) };
        let peers = Peers::load_dir(dir)?;
        let count = peers.len();
        *self.peers.write().unwrap_or_else(PoisonError::into_inner) = peers;
        Ok(count)
    }

    /// This host's key.
    pub(crate) fn key(&self) -> &HostKey {
        &self.key
    }

    /// This host's public key.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// The name `key` is enrolled under here.
    pub fn peer_name(&self, key: &PublicKey) -> Option<HostName> {
        self.peers.read().unwrap_or_else(PoisonError::into_inner).name_of(key).cloned()
    }

    /// Whether a key is enrolled here under `name`.
    pub fn is_peer(&self, name: &HostName) -> bool {
        self.peers.read().unwrap_or_else(PoisonError::into_inner).knows(name)
    }

    /// How many peer keys are enrolled.
    pub fn peer_count(&self) -> usize {
        self.peers.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> HostName {
        text.parse().unwrap()
    }

    #[test]
    fn save_load_round_trip_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/host.key");
        let key = HostKey::generate();
        key.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777, 0o755);
        assert_eq!(HostKey::load(&path).unwrap(), key);
        assert!(matches!(key.save(&path), Err(WireError::KeyExists { .. })), "overwrote an existing key");
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.public().to_string()) && !shown.contains(&hex::encode(key.0)), "{shown}");
    }

    #[test]
    fn the_public_key_is_x25519_of_the_private_one() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private =
            HostKey(parse_key("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", "rfc").unwrap());
        assert_eq!(private.public().to_string(), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    }

    #[test]
    fn rejects_bad_text_and_exposed_files() {
        assert!(PublicKey::from_hex("abc", "t").is_err());
        assert!(PublicKey::from_hex(&"zz".repeat(32), "t").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, hex::encode([7u8; 32])).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        assert!(matches!(HostKey::load(&path), Err(WireError::KeyExposed { .. })));
        let missing = HostKey::load(&dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("jettison pair"), "{missing}");
    }

    #[test]
    fn enrolled_peers_are_named_by_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let peers_dir = dir.path().join("peers");
        let (a, b, rotated) =
            (HostKey::generate().public(), HostKey::generate().public(), HostKey::generate().public());
        Peers::enroll(&peers_dir, &name("desk1"), a).unwrap();
        Peers::enroll(&peers_dir, &name("desk1"), a).unwrap();
        Peers::enroll(&peers_dir, &name("desk1"), rotated).unwrap();
        Peers::enroll(&peers_dir, &name("desk2"), b).unwrap();
        std::fs::write(peers_dir.join("README"), "not a key").unwrap();
        let text = std::fs::read_to_string(peers_dir.join("desk1.pub")).unwrap();
        assert_eq!(text.lines().count(), 2, "a key enrolled twice is written once: {text}");
        let peers = Peers::load_dir(&peers_dir).unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers.name_of(&a), Some(&name("desk1")));
        assert_eq!(peers.name_of(&rotated), Some(&name("desk1")));
        assert_eq!(peers.name_of(&b), Some(&name("desk2")));
        assert_eq!(peers.name_of(&HostKey::generate().public()), None);
        assert!(peers.knows(&name("desk2")) && !peers.knows(&name("desk3")));
        let twice = Peers::enroll(&peers_dir, &name("desk3"), a).unwrap_err();
        assert!(twice.to_string().contains("desk1"), "{twice}");
    }

    #[test]
    fn a_bad_peer_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("desk1.pub"), format!("# desk1\n{}\nnonsense\n", HostKey::generate().public()))
            .unwrap();
        let err = Peers::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("desk1.pub line 3"), "{err}");
        std::fs::remove_file(dir.path().join("desk1.pub")).unwrap();
        std::fs::write(dir.path().join("..x.pub"), HostKey::generate().public().to_string()).unwrap();
        let err = Peers::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("..x.pub"), "{err}");
    }

    #[test]
    fn a_reload_applies_to_later_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("host.key");
        HostKey::generate().save(&key_file).unwrap();
        let peers_dir = dir.path().join("peers");
        std::fs::create_dir(&peers_dir).unwrap();
        let creds = Credentials::load(&key_file, &peers_dir).unwrap();
        let desk = HostKey::generate().public();
        assert_eq!(creds.peer_name(&desk), None);
        Peers::enroll(&peers_dir, &name("desk1"), desk).unwrap();
        assert_eq!(creds.reload_peers().unwrap(), 1);
        assert_eq!(creds.peer_name(&desk), Some(name("desk1")));
        std::fs::write(peers_dir.join("desk1.pub"), "broken").unwrap();
        assert!(creds.reload_peers().is_err());
        assert_eq!(creds.peer_name(&desk), Some(name("desk1")), "a failed reload kept the old set");
    }
}
