//! `jettison wake`: wakes a desktop with Wake-on-LAN and says how long it
//! took, the way the server's remote-wakeup does before a fetch.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use remote_wakeup::{DesktopWaker, Mac, WakeOutcome, WakeTarget};

use crate::CmdResult;

/// Arguments of `jettison wake`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The desktop's MAC address (aa:bb:cc:dd:ee:ff).
    #[arg(long)]
    mac: Mac,
    /// Broadcast address of the desktop's subnet; the magic packet goes to
    /// UDP port 9 there.
    #[arg(long, default_value = "255.255.255.255")]
    broadcast: IpAddr,
    /// Interface for the raw EtherType 0x0842 frame (with --raw).
    #[arg(long, requires = "raw")]
    interface: Option<String>,
    /// Also send the magic packet as a raw Ethernet frame on --interface.
    #[arg(long, requires = "interface")]
    raw: bool,
    /// memserv's or diskserv's HOST:PORT: wait until it accepts a
    /// connection. Without it, one round of packets is sent and nothing is
    /// waited for.
    #[arg(long)]
    probe: Option<String>,
    /// Give up after this many seconds without an answer.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The desktop's name, for messages.
    #[arg(long, default_value = "desktop")]
    name: String,
}

/// Wakes the desktop; with `--probe`, waits until it answers.
pub fn run(args: Args) -> CmdResult {
    let probe = match &args.probe {
        Some(text) => Some(resolve(text)?),
        None => None,
    };
    // Without a probe the address is never connected to.
    let unused: SocketAddr = (IpAddr::from([0, 0, 0, 0]), 0).into();
    let mut config = WakeTarget::new(&args.name, args.mac, args.broadcast, probe.unwrap_or(unused));
    config.raw_interface = args.interface.filter(|_| args.raw);
    config.give_up_after = Duration::from_secs(args.timeout);
    let waker = DesktopWaker::new(config);
    let Some(probe) = probe else {
        let sent = waker.send_magic_packets()?;
        println!("wake: sent {sent} magic packet(s) to {} ({}); no --probe, so not waiting", args.name, args.mac);
        return Ok(());
    };
    match waker.wake_up()? {
        WakeOutcome::Woken { packets, waited } => println!(
            "wake: {} ({}) answered on {probe} after {:.1} s and {packets} magic packet(s)",
            args.name,
            args.mac,
            waited.as_secs_f64()
        ),
        WakeOutcome::AlreadyAwake | WakeOutcome::Joined => {
            println!("wake: {} ({}) is already awake (answers on {probe})", args.name, args.mac)
        }
    }
    Ok(())
}

/// The first address `HOST:PORT` resolves to.
fn resolve(text: &str) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    text.to_socket_addrs()
        .map_err(|e| format!("--probe {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("--probe {text}: resolves to no address").into())
}
