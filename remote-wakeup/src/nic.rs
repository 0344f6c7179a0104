//! Whether a desktop's NIC will wake the machine on a magic packet.
//!
//! A desktop that suspends with a NIC that does not wake it never comes
//! back: its VM freezes on the server at the next page it needs. Two
//! settings must both hold, and neither is visible from the network:
//!
//! - the kernel lets the device wake the system: `power/wakeup` of the
//!   NIC's device in sysfs reads `enabled`;
//! - the NIC itself is armed for magic packets: the ethtool Wake-on setting
//!   (`SIOCETHTOOL` with `ETHTOOL_GWOL`) includes `g`, and the NIC supports it.
//!
//! [`check_wakes_on_magic_packet`] reads both and says which is missing and
//! the command that fixes it.

use std::path::{Path, PathBuf};

/// `ETHTOOL_GWOL`: get the Wake-on-LAN settings.
const ETHTOOL_GWOL: u32 = 0x0000_0005;
/// Wake on a magic packet (ethtool's `g`).
const WAKE_MAGIC: u32 = 1 << 5;

/// Why a NIC will not wake the desktop on a magic packet.
#[derive(Debug, thiserror::Error)]
pub enum NicWakeError {
    /// No such interface.
    #[error("there is no network interface {0:?} (see `ip link`)")]
    NoInterface(String),
    /// The interface has no device that could wake the machine.
    #[error(
        "{interface} has no power/wakeup setting in sysfs ({}): it is not a physical NIC that can wake this machine; \
         name the wired NIC the desktop is reached through",
        path.display()
    )]
    NotWakeCapable {
        /// The interface.
        interface: String,
        /// The file that is missing.
        path: PathBuf,
    },
    /// The kernel will not let the device wake the machine.
    #[error(
        "{interface} may not wake this machine ({} reads {state:?}): run `echo enabled > {}` (and make it \
         persistent with a udev rule)",
        path.display(),
        path.display()
    )]
    WakeupDisabled {
        /// The interface.
        interface: String,
        /// The sysfs file.
        path: PathBuf,
        /// What it reads.
        state: String,
    },
    /// The NIC cannot wake on a magic packet at all.
    #[error(
        "{interface} does not support waking on a magic packet (its Wake-on-LAN modes: {supported}): use another NIC"
    )]
    MagicUnsupported {
        /// The interface.
        interface: String,
        /// What it supports, in ethtool's letters.
        supported: String,
    },
    /// The NIC is not armed for magic packets.
    #[error(
        "{interface} is not set to wake on a magic packet (Wake-on: {enabled}): run `ethtool -s {interface} wol g` \
         (persistent: WakeOnLan=magic in a systemd .link file)"
    )]
    MagicDisabled {
        /// The interface.
        interface: String,
        /// What is enabled, in ethtool's letters.
        enabled: String,
    },
    /// The ethtool query failed.
    #[error("cannot read {interface}'s Wake-on-LAN setting (SIOCETHTOOL)")]
    Ethtool {
        /// The interface.
        interface: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `interface` will wake this machine on a magic packet.
///
/// # Errors
/// [`NicWakeError`] naming what is missing and how to set it.
pub fn check_wakes_on_magic_packet(interface: &str) -> Result<(), NicWakeError> {
    check_in(Path::new("/sys/class/net"), interface)?;
    let (supported, enabled) = wake_on_lan_modes(interface)?;
    if supported & WAKE_MAGIC == 0 {
        return Err(NicWakeError::MagicUnsupported { interface: interface.to_owned(), supported: letters(supported) });
    }
    if enabled & WAKE_MAGIC == 0 {
        return Err(NicWakeError::MagicDisabled { interface: interface.to_owned(), enabled: letters(enabled) });
    }
    Ok(())
}

/// The sysfs half of the check, under `class_net` (`/sys/class/net`).
fn check_in(class_net: &Path, interface: &str) -> Result<(), NicWakeError> {
    let valid = !interface.is_empty() && !interface.contains('/') && interface != "." && interface != "..";
    if !valid || !class_net.join(interface).exists() {
        return Err(NicWakeError::NoInterface(interface.to_owned()));
    }
    let path = class_net.join(interface).join("device/power/wakeup");
    let state = match std::fs::read_to_string(&path) {
        Ok(state) => state.trim().to_owned(),
        Err(_) => return Err(NicWakeError::NotWakeCapable { interface: interface.to_owned(), path }),
    };
    if state != "enabled" {
        return Err(NicWakeError::WakeupDisabled { interface: interface.to_owned(), path, state });
    }
    Ok(())
}

/// The Wake-on-LAN modes `interface` supports and has enabled (ethtool's
/// `struct ethtool_wolinfo`).
fn wake_on_lan_modes(interface: &str) -> Result<(u32, u32), NicWakeError> {
    #[repr(C)]
    struct WolInfo {
        cmd: u32,
        supported: u32,
        wolopts: u32,
        sopass: [u8; 6],
    }
    let failed = |source| NicWakeError::Ethtool { interface: interface.to_owned(), source };
    let mut info = WolInfo { cmd: ETHTOOL_GWOL, supported: 0, wolopts: 0, sopass: [0; 6] };
    // SAFETY: an ifreq is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.as_bytes();
    if name.len() >= request.ifr_name.len() {
        return Err(NicWakeError::NoInterface(interface.to_owned()));
    }
    for (to, from) in request.ifr_name.iter_mut().zip(name) {
        *to = *from as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut info as *mut WolInfo).cast();
    // SAFETY: a datagram socket for the ioctl, closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    // SAFETY: SIOCETHTOOL reads the ifreq and writes `info`, which outlives the call.
    let result = unsafe { libc::ioctl(socket, libc::SIOCETHTOOL, &mut request) };
    let error = std::io::Error::last_os_error();
    // SAFETY: our own descriptor.
    unsafe { libc::close(socket) };
    if result < 0 {
        return Err(failed(error));
    }
    Ok((info.supported, info.wolopts))
}

/// Wake-on-LAN modes in ethtool's letters (`d` for none).
fn letters(modes: u32) -> String {
    let text: String =
        "pumbagsf".chars().enumerate().filter(|(bit, _)| modes & (1 << bit) != 0).map(|(_, letter)| letter).collect();
    if text.is_empty() {
        "d".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_wakeup_must_be_enabled_and_present() {
        let dir = tempfile::tempdir().unwrap();
        let power = dir.path().join("eth0/device/power");
        std::fs::create_dir_all(&power).unwrap();
        std::fs::create_dir_all(dir.path().join("veth0")).unwrap();
        std::fs::write(power.join("wakeup"), "disabled\n").unwrap();
        let e = check_in(dir.path(), "eth0").unwrap_err();
        assert!(matches!(e, NicWakeError::WakeupDisabled { .. }), "{e}");
        assert!(e.to_string().contains("echo enabled >"), "{e}");
        std::fs::write(power.join("wakeup"), "enabled\n").unwrap();
        check_in(dir.path(), "eth0").unwrap();
        let e = check_in(dir.path(), "veth0").unwrap_err();
        assert!(matches!(e, NicWakeError::NotWakeCapable { .. }), "{e}");
        assert!(matches!(check_in(dir.path(), "../etc").unwrap_err(), NicWakeError::NoInterface(_)));
        assert!(matches!(check_in(dir.path(), "wlan9").unwrap_err(), NicWakeError::NoInterface(_)));
    }

    #[test]
    fn modes_print_as_ethtool_letters() {
        assert_eq!(letters(0), "d");
        assert_eq!(letters(WAKE_MAGIC), "g");
        assert_eq!(letters(WAKE_MAGIC | 1 | (1 << 1)), "pug");
    }

    #[test]
    fn loopback_is_refused_as_no_physical_nic() {
        let e = check_wakes_on_magic_packet("lo").unwrap_err();
        assert!(matches!(e, NicWakeError::NotWakeCapable { .. }), "{e}");
    }
}
