//! Wake-on-LAN options shared by the server daemons (memtap, cownetdisk):
//! with a desktop's MAC, every fetch from it first makes sure it is awake.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use remote_wakeup::{DesktopWaker, Mac, WakeTarget};
use wire::{NoWake, WakeHook};

/// How to reach sleeping desktops.
#[derive(Debug, clap::Args)]
pub struct WakeArgs {
    /// Broadcast address for the magic packets (the office LAN's).
    #[arg(long = "wake-broadcast", default_value = "255.255.255.255")]
    broadcast: IpAddr,
    /// Also send a raw EtherType 0x0842 frame on this interface.
    #[arg(long = "wake-interface")]
    interface: Option<String>,
}

impl WakeArgs {
    /// The wake hook for desktop `name`, whose daemon listens at `addr` (the
    /// probe that tells it is awake): Wake-on-LAN when `mac` is given, else
    /// none (the desktop never sleeps).
    ///
    /// # Errors
    /// A MAC that does not parse, or an address that does not resolve.
    pub fn hook(&self, name: &str, mac: Option<&str>, addr: &str) -> Result<Arc<dyn WakeHook>, String> {
        let Some(mac) = mac else { return Ok(Arc::new(NoWake)) };
        let mac: Mac = mac.parse().map_err(|e| format!("--wake-mac for {name}: {e}"))?;
        let probe: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {addr} for {name}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr} resolves to no address"))?;
        let mut config = WakeTarget::new(name, mac, self.broadcast, probe);
        config.raw_interface = self.interface.clone();
        Ok(Arc::new(DesktopWaker::new(config)))
    }
}
