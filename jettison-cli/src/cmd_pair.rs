//! `jettison pair` and `jettison enroll`: this host's own key, and the
//! public keys of the peers it trusts. The key and peers settings of the
//! low-level commands ([`KeyFiles`]) are here too.

use std::path::PathBuf;
use std::sync::Arc;

use daemon_protocol::config_file::{refuse_office_key, DEFAULT_HOST_KEY, DEFAULT_PEERS};
use identifiers::HostName;
use wire::{Credentials, HostKey, Peers, PublicKey, WireError};

use crate::CmdResult;

/// Arguments of `jettison pair`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// This host's private key: made (mode 0600) if it is not there yet,
    /// else only read. Its public key is printed on stdout.
    #[arg(long, default_value = DEFAULT_HOST_KEY)]
    key: PathBuf,
}

/// Makes this host's key if it has none, and prints its public key (alone
/// on stdout, for scripts) with what to do with it (on stderr).
pub fn run(args: Args) -> CmdResult {
    let (key, new) = match HostKey::load(&args.key) {
        Ok(key) => (key, false),
        Err(WireError::KeyFile { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let key = HostKey::generate();
            key.save(&args.key)?;
            (key, true)
        }
        Err(e) => return Err(e.into()),
    };
    let public = key.public();
    println!("{public}");
    eprintln!(
        "{} {}; its public key is above. Enroll it on each peer (the server, for a desktop; each desktop, \
         for a server) under this host's name, the `name` in its desktop.toml or server.toml:\n  \
         jettison enroll THIS-HOST-NAME {public}",
        if new { "made this host's key" } else { "this host already has its key" },
        args.key.display()
    );
    Ok(())
}

/// Arguments of `jettison enroll`.
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The peer's name: a desktop's or server's `name` in its own configuration.
    name: HostName,
    /// The peer's public key, as `jettison pair` printed it there.
    key: String,
    /// The directory of enrolled peers.
    #[arg(long, default_value = DEFAULT_PEERS)]
    peers: PathBuf,
}

/// Adds the key to `NAME.pub` in the peers directory.
pub fn enroll(args: EnrollArgs) -> CmdResult {
    let key = PublicKey::from_hex(&args.key, "the KEY argument")?;
    let file = Peers::enroll(&args.peers, &args.name, key)?;
    println!(
        "enrolled {} as {} in {}; a running daemon takes it at `systemctl reload jettison-desktop` \
         (or jettison-server)",
        key,
        args.name,
        file.display()
    );
    Ok(())
}

/// This host's key and peers, for the commands that talk to a peer
/// themselves (`memserv`, `diskserv`, `memtap`, `cownetdisk`).
#[derive(Debug, clap::Args)]
pub struct KeyFiles {
    /// This host's private key, made by `jettison pair`.
    #[arg(long, default_value = DEFAULT_HOST_KEY)]
    host_key: PathBuf,
    /// The directory of enrolled peers (NAME.pub files, written by `jettison enroll`).
    #[arg(long, default_value = DEFAULT_PEERS)]
    peers: PathBuf,
    /// The office key of earlier releases: refused, with how to upgrade.
    #[arg(long, hide = true)]
    key: Option<PathBuf>,
}

impl KeyFiles {
    /// Loads the key and the peers.
    ///
    /// # Errors
    /// The file at fault; the upgrade steps for `--key`.
    pub fn load(&self) -> Result<Arc<Credentials>, Box<dyn std::error::Error>> {
        refuse_office_key(self.key.as_deref()).map_err(|steps| format!("--key: {steps}"))?;
        Ok(Arc::new(Credentials::load(&self.host_key, &self.peers)?))
    }
}
