//! The Wake-on-LAN magic packet: building it and recognising it in a frame.
//!
//! A magic packet is 6 bytes of `0xff` followed by the target's MAC address
//! 16 times (102 bytes). A NIC in WoL mode scans every frame it hears for
//! that pattern; senders put it either in a UDP datagram (port 9, "discard",
//! or 7, "echo") or directly in an Ethernet frame with EtherType `0x0842`.
//! [`recognise`] accepts exactly those two carriers, so the emulated
//! desktop is no more lenient than a NIC configured with `wol g`.

pub use identifiers::Mac;
use std::fmt;

/// Bytes in a magic packet: 6 sync bytes and 16 copies of the MAC.
pub const MAGIC_LEN: usize = 6 + 16 * 6;
/// EtherType of a raw Wake-on-LAN frame.
pub const ETHERTYPE_WOL: u16 = 0x0842;
/// EtherType of IPv4.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// UDP ports a magic packet is sent to.
pub const WOL_UDP_PORTS: [u16; 2] = [9, 7];
/// Length of an Ethernet II header.
const ETH_HEADER: usize = 14;
/// Length of a UDP header.
const UDP_HEADER: usize = 8;
/// The IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// The magic packet for `mac`.
pub fn payload(mac: Mac) -> [u8; MAGIC_LEN] {
    let mut out = [0xff; MAGIC_LEN];
    for copy in out[6..].chunks_exact_mut(6) {
        copy.copy_from_slice(&mac.0);
    }
    out
}

/// Whether `bytes` starts with the magic packet for `mac` (a carrier may
/// pad it).
pub fn starts_with_magic(bytes: &[u8], mac: Mac) -> bool {
    bytes.len() >= MAGIC_LEN && bytes[..MAGIC_LEN] == payload(mac)
}

/// A broadcast Ethernet frame from `source` with EtherType `0x0842`
/// carrying the magic packet for `target`.
pub fn ethernet_frame(source: Mac, target: Mac) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HEADER + MAGIC_LEN);
    frame.extend_from_slice(&Mac::BROADCAST.0);
    frame.extend_from_slice(&source.0);
    frame.extend_from_slice(&ETHERTYPE_WOL.to_be_bytes());
    frame.extend_from_slice(&payload(target));
    frame
}

/// How a recognised magic packet travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MagicKind {
    /// In an Ethernet frame with EtherType `0x0842`.
    Ethernet,
    /// In a UDP datagram over IPv4 to this port.
    Udp(u16),
}

impl fmt::Display for MagicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MagicKind::Ethernet => write!(f, "ethertype 0x0842"),
            MagicKind::Udp(port) => write!(f, "udp port {port}"),
        }
    }
}

/// Whether the Ethernet frame `frame` carries a valid magic packet for
/// `mac`, and how. Anything else (another MAC, a truncated or short
/// pattern, another protocol, an IP fragment) is `None`.
pub fn recognise(frame: &[u8], mac: Mac) -> Option<MagicKind> {
    let ethertype = u16::from_be_bytes(frame.get(12..ETH_HEADER)?.try_into().ok()?);
    let body = &frame[ETH_HEADER..];
    match ethertype {
        ETHERTYPE_WOL => starts_with_magic(body, mac).then_some(MagicKind::Ethernet),
        ETHERTYPE_IPV4 => {
            let port = udp_in_ipv4(body, mac)?;
            Some(MagicKind::Udp(port))
        }
        _ => None,
    }
}

/// The destination port of the UDP datagram in the IPv4 packet `ip` when
/// its data starts with the magic packet for `mac` and the port is a WoL
/// port.
fn udp_in_ipv4(ip: &[u8], mac: Mac) -> Option<u16> {
    let first = *ip.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 || *ip.get(9)? != IPPROTO_UDP {
        return None;
    }
    // A fragment other than the first, or one with more to come, does not
    // carry a whole datagram.
    let fragment = u16::from_be_bytes(ip.get(6..8)?.try_into().ok()?);
    if fragment & 0x3fff != 0 {
        return None;
    }
    let udp = ip.get(header_len..)?;
    let port = u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?);
    let data = udp.get(UDP_HEADER..)?;
    (WOL_UDP_PORTS.contains(&port) && starts_with_magic(data, mac)).then_some(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Mac = Mac([0x02, 0x4a, 0x57, 0x00, 0x00, 0x02]);
    const OTHER: Mac = Mac([0x02, 0x4a, 0x57, 0x00, 0x00, 0x03]);
    const SENDER: Mac = Mac([0x02, 0x4a, 0x57, 0x00, 0x00, 0x01]);

    /// An Ethernet frame with an IPv4/UDP datagram to `port` carrying `data`.
    fn udp_frame(port: u16, data: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&Mac::BROADCAST.0);
        frame.extend_from_slice(&SENDER.0);
        frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = (20 + UDP_HEADER + data.len()) as u16;
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&total.to_be_bytes());
        frame.extend_from_slice(&[0, 1, 0x40, 0, 64, IPPROTO_UDP, 0, 0]); // id, DF, ttl, proto, csum
        frame.extend_from_slice(&[10, 77, 0, 1, 10, 77, 0, 255]);
        frame.extend_from_slice(&40000u16.to_be_bytes());
        frame.extend_from_slice(&port.to_be_bytes());
        frame.extend_from_slice(&((UDP_HEADER + data.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(data);
        frame
    }

    #[test]
    fn payload_is_sync_then_sixteen_macs() {
        let p = payload(TARGET);
        assert_eq!(p[..6], [0xff; 6]);
        assert!(p[6..].chunks(6).all(|c| c == TARGET.0));
        assert_eq!(p[6..].chunks(6).count(), 16);
    }

    #[test]
    fn recognises_valid_frames() {
        assert_eq!(recognise(&ethernet_frame(SENDER, TARGET), TARGET), Some(MagicKind::Ethernet));
        assert_eq!(recognise(&udp_frame(9, &payload(TARGET)), TARGET), Some(MagicKind::Udp(9)));
        assert_eq!(recognise(&udp_frame(7, &payload(TARGET)), TARGET), Some(MagicKind::Udp(7)));
        // Ethernet padding or trailing bytes after the pattern are fine.
        let mut padded = ethernet_frame(SENDER, TARGET);
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(recognise(&padded, TARGET), Some(MagicKind::Ethernet));
    }

    #[test]
    fn rejects_another_mac() {
        assert_eq!(recognise(&ethernet_frame(SENDER, OTHER), TARGET), None);
        assert_eq!(recognise(&udp_frame(9, &payload(OTHER)), TARGET), None);
    }

    #[test]
    fn rejects_truncated_and_fifteen_repetitions() {
        let frame = ethernet_frame(SENDER, TARGET);
        assert_eq!(recognise(&frame[..frame.len() - 1], TARGET), None);
        assert_eq!(recognise(&frame[..10], TARGET), None);
        assert_eq!(recognise(&[], TARGET), None);
        let fifteen = &payload(TARGET)[..MAGIC_LEN - 6];
        assert_eq!(recognise(&udp_frame(9, fifteen), TARGET), None);
        let udp = udp_frame(9, &payload(TARGET));
        assert_eq!(recognise(&udp[..udp.len() - 3], TARGET), None);
        assert_eq!(recognise(&udp[..30], TARGET), None);
    }

    #[test]
    fn rejects_garbage_other_ports_and_fragments() {
        assert_eq!(recognise(&[0xa5; 200], TARGET), None);
        let mut noise: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        noise[12..14].copy_from_slice(&ETHERTYPE_WOL.to_be_bytes());
        assert_eq!(recognise(&noise, TARGET), None);
        assert_eq!(recognise(&udp_frame(10, &payload(TARGET)), TARGET), None);
        let mut fragment = udp_frame(9, &payload(TARGET));
        fragment[ETH_HEADER + 6] = 0x20; // more fragments
        assert_eq!(recognise(&fragment, TARGET), None);
        let mut sync_broken = ethernet_frame(SENDER, TARGET);
        sync_broken[ETH_HEADER + 2] = 0xfe;
        assert_eq!(recognise(&sync_broken, TARGET), None);
    }

    #[test]
    fn mac_parses_and_prints() {
        let mac: Mac = "02:4A:57:00:00:02".parse().unwrap();
        assert_eq!(mac, TARGET);
        assert_eq!(mac.to_string(), "02:4a:57:00:00:02");
        assert!("02:4a:57:00:00".parse::<Mac>().is_err());
        assert!("not a mac".parse::<Mac>().is_err());
    }
}
