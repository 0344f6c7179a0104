//! A raw AF_PACKET socket bound to one interface: sends whole Ethernet
//! frames (the 0x0842 magic frame) and receives every frame the interface
//! hears.
//!
//! Bound with `ETH_P_ALL`, it is a "tap": the kernel hands it each incoming
//! frame before the ingress qdisc, netfilter or IP routing see it, which is
//! why the emulated desktop still hears magic packets while its addresses
//! are gone, as a real NIC in WoL mode does.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::WakeError;
use crate::magic::Mac;

/// `ETH_P_ALL` in network byte order, as `socket` and `sockaddr_ll` want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

/// A raw packet socket on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    interface: String,
}

impl PacketSocket {
    /// Opens a socket that sees and sends every frame of `interface` (in
    /// the calling thread's network namespace).
    ///
    /// # Errors
    /// [`WakeError::PacketSocket`] without root or CAP_NET_RAW, or for an
    /// unknown interface.
    pub fn open(interface: &str) -> Result<Self, WakeError> {
        let err = |source| WakeError::PacketSocket { interface: interface.to_owned(), source };
        let name = CString::new(interface)
            .map_err(|_| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in interface name")))?;
        // SAFETY: name is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: plain socket(2) call; the result is checked below.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(ETH_P_ALL_BE)) };
        if raw < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = link_addr(ifindex, Mac::default());
        // SAFETY: addr is a fully initialised sockaddr_ll and the length
        // passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(PacketSocket { fd, interface: interface.to_owned() })
    }

    /// The interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The interface's own hardware address.
    ///
    /// # Errors
    /// The `SIOCGIFHWADDR` ioctl's error.
    pub fn hardware_address(&self) -> std::io::Result<Mac> {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(self.interface.bytes().take(libc::IFNAMSIZ - 1)) {
            *dst = src as libc::c_char;
        }
        // SAFETY: req is a valid ifreq with a NUL-terminated name (zeroed
        // above, at most IFNAMSIZ-1 bytes copied); the kernel writes only
        // inside it.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a successful SIOCGIFHWADDR fills ifru_hwaddr.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(data.iter()) {
            *dst = *src as u8;
        }
        Ok(Mac(mac))
    }

    /// Sends one whole Ethernet frame (header included) on the interface.
    ///
    /// # Errors
    /// The `send` error.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: frame is a valid buffer of frame.len() bytes for the call.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        match usize::try_from(sent) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(_) => Err(std::io::Error::other("short send of a raw frame")),
            Err(_) => Err(std::io::Error::last_os_error()),
        }
    }

    /// Waits up to `timeout` for a frame arriving at the interface (frames
    /// it sends are skipped) and copies it into `buf`.
    ///
    /// # Errors
    /// The `poll` or `recvfrom` error.
    pub fn recv_incoming(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: pfd is one valid pollfd for the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ready < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if ready == 0 {
                return Ok(None);
            }
            let mut from = link_addr(0, Mac::default());
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf is valid for buf.len() bytes, from is a
            // sockaddr_ll whose size is in from_len.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let e = std::io::Error::last_os_error();
                if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) {
                    continue;
                }
                return Err(e);
            };
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return Ok(Some(n));
            }
        }
    }
}

/// A link-layer address for `ifindex`, protocol `ETH_P_ALL`.
fn link_addr(ifindex: u32, mac: Mac) -> libc::sockaddr_ll {
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&mac.0);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ALL_BE,
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::magic::{self, MagicKind};

    #[test]
    fn a_raw_magic_frame_on_loopback_is_heard_and_recognised() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: a raw packet socket needs root");
            return;
        }
        let target = Mac([0x02, 0x4a, 0x57, 0x7e, 0x57, 0x01]);
        let sender = PacketSocket::open("lo").unwrap();
        let listener = PacketSocket::open("lo").unwrap();
        assert_eq!(sender.hardware_address().unwrap(), Mac::default(), "lo has no hardware address");
        sender.send(&magic::ethernet_frame(Mac::default(), target)).unwrap();
        // Other tests may talk over loopback meanwhile: look for ours.
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut heard = None;
        while heard.is_none() && Instant::now() < deadline {
            if let Some(n) = listener.recv_incoming(&mut buf, Duration::from_millis(100)).unwrap() {
                heard = magic::recognise(&buf[..n], target);
            }
        }
        assert_eq!(heard, Some(MagicKind::Ethernet));
        assert!(PacketSocket::open("no-such-if0").unwrap_err().to_string().contains("no-such-if0"));
    }
}
