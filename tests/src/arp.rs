//! Who answers for an address on the office LAN: a thread in one
//! namespace sends an ARP request for the address every round and counts
//! the replies to each request. Two hosts running the same VM (one MAC,
//! one address) both reply: a request with two replies is the VM running
//! twice.
//!
//! ARP has no request id, and a guest stalled for a while (a fetch from
//! an absent desktop) answers requests late, so each round asks from
//! another sender address of the LAN ([`SENDERS`]), and a reply counts for
//! the round whose address it answers, whenever it comes.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use remote_wakeup::PacketSocket;

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
/// The last octets of the sender addresses the rounds take in turn (on
/// the /24 of the watching host, unused by the office): a reply is told
/// apart from one to a request up to that many rounds older.
const SENDERS: std::ops::Range<u8> = 60..250;

/// What the watch saw.
#[derive(Debug, Clone, Default)]
pub struct ArpLog {
    /// Requests sent.
    pub rounds: u64,
    /// Rounds with at least one reply.
    pub answered: u64,
    /// The most replies one round got.
    pub most: usize,
    /// When (since the start) each request that got more than one reply
    /// was sent.
    pub doubled_at: Vec<Duration>,
}

/// A running watch ([`ArpWatch::start`]).
#[derive(Debug)]
pub struct ArpWatch {
    stop: Arc<AtomicBool>,
    log: Arc<std::sync::Mutex<ArpLog>>,
    thread: Option<JoinHandle<()>>,
}

fn request(own_mac: [u8; 6], own_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&own_mac);
    frame.extend_from_slice(&ETHERTYPE_ARP);
    // Ethernet, IPv4, 6-byte and 4-byte addresses, a request.
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&own_mac);
    frame.extend_from_slice(&own_ip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// The address an ARP reply from `target` in `frame` answers, if it is one.
fn reply_to(frame: &[u8], target: Ipv4Addr) -> Option<Ipv4Addr> {
    let is_reply = frame.len() >= 42
        && frame[12..14] == ETHERTYPE_ARP
        && frame[20..22] == [0, 2]
        && frame[28..32] == target.octets();
    is_reply.then(|| Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]))
}

impl ArpWatch {
    /// Starts asking, from `interface` in namespace `ns` (whose address
    /// `own_ip` gives the /24 the senders are taken from), who has
    /// `target`, every `every`.
    ///
    /// # Panics
    /// When the raw socket cannot be opened there.
    pub fn start(ns: &str, interface: &str, own_ip: Ipv4Addr, target: Ipv4Addr, every: Duration) -> ArpWatch {
        let interface = interface.to_owned();
        let socket = remote_wakeup::netns::run_in(Some(ns), move || PacketSocket::open(&interface))
            .expect("enter the namespace")
            .expect("a raw socket on the client's interface");
        let own_mac = socket.hardware_address().expect("the interface's MAC").0;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(std::sync::Mutex::new(ArpLog::default()));
        let (stop_flag, shared) = (Arc::clone(&stop), Arc::clone(&log));
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            let [a, b, c, _] = own_ip.octets();
            let senders: Vec<Ipv4Addr> = SENDERS.map(|d| Ipv4Addr::new(a, b, c, d)).collect();
            // Per sender address: when its last request went, and replies to it.
            let mut rounds: Vec<Option<(Duration, usize)>> = vec![None; senders.len()];
            let mut buf = vec![0u8; 2048];
            let mut round = 0usize;
            while !stop_flag.load(Ordering::SeqCst) {
                let slot = round % senders.len();
                socket.send(&request(own_mac, senders[slot], target)).expect("send an ARP request");
                rounds[slot] = Some((started.elapsed(), 0));
                let sent = Instant::now();
                while let Some(left) = every.checked_sub(sent.elapsed()) {
                    match socket.recv_incoming(&mut buf, left) {
                        Ok(Some(n)) => {
                            let answered =
                                reply_to(&buf[..n], target).and_then(|to| senders.iter().position(|s| *s == to));
                            let mut log = shared.lock().expect("the ARP log");
                            if let Some((at, replies)) = answered.and_then(|i| rounds[i].as_mut()) {
                                *replies += 1;
                                log.answered += u64::from(*replies == 1);
                                log.most = log.most.max(*replies);
                                if *replies == 2 {
                                    log.doubled_at.push(*at);
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => panic!("ARP watch: {e}"),
                    }
                }
                shared.lock().expect("the ARP log").rounds += 1;
                round += 1;
            }
        });
        ArpWatch { stop, log, thread: Some(thread) }
    }

    /// What it saw so far.
    pub fn log(&self) -> ArpLog {
        self.log.lock().expect("the ARP log").clone()
    }

    /// Stops it; what it saw.
    pub fn finish(mut self) -> ArpLog {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the ARP watch does not panic");
        }
        self.log()
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
