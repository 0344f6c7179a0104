//! The VM's virtual hardware, as both hosts must run it.
//!
//! A descriptor only loads into a QEMU with the same devices, CPU model and
//! RAM size as the one that saved it, so the desktop sends its VM's
//! [`MachineProfile`] with the reservation, and the server starts exactly
//! that machine, or refuses before the VM is stopped (a CPU model its QEMU
//! does not know, a kernel that differs from the desktop's).

use std::str::FromStr;

use bincode::{Decode, Encode};
use identifiers::InvalidIdentifier;

use crate::kernel_args::KernelArgs;

/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u32 = 256;

/// A CPU model name as QEMU's `-cpu` takes it (`Skylake-Client-v4`, `max`):
/// 1 to 64 letters, digits, `.`, `_` and `-`. Whether this QEMU knows it is
/// checked where the VM runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuModel(String);

impl CpuModel {
    /// Whether the model is the host's own CPU or all the accelerator can
    /// offer (`host`, `max`): the features then differ from host to host,
    /// so under KVM a VM with it cannot safely move between different CPUs.
    pub fn is_host_dependent(&self) -> bool {
        matches!(self.0.as_str(), "host" | "max")
    }
}

impl FromStr for CpuModel {
    type Err = InvalidIdentifier;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if text.is_empty() || text.len() > 64 || !text.bytes().all(ok) {
            return Err(InvalidIdentifier::new(
                "CPU model",
                text,
                "write a model from `qemu-system-x86_64 -cpu help`, e.g. \"Skylake-Client-v4\"",
            ));
        }
        Ok(CpuModel(text.to_owned()))
    }
}

identifiers::checked_string!(CpuModel);

/// How the VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Firmware {
    /// SeaBIOS, from the disk's own bootloader.
    Bios,
    /// UEFI (OVMF), with the VM's own variable store.
    Uefi,
    /// A kernel and initramfs the hosts supply. Their SHA-256 sums travel
    /// so that the server refuses a VM whose files it does not have: a
    /// reboot there would boot a different kernel.
    Kernel {
        /// SHA-256 of the kernel file.
        kernel_sha256: [u8; 32],
        /// SHA-256 of the initramfs file.
        initrd_sha256: [u8; 32],
        /// Kernel arguments after the console settings.
        args: KernelArgs,
    },
}

/// Everything about a VM's virtual hardware that must match on both hosts.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MachineProfile {
    /// RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs, 1 to [`MAX_VCPUS`].
    pub vcpus: u32,
    /// The CPU model, the same on every host.
    pub cpu_model: CpuModel,
    /// How it boots.
    pub firmware: Firmware,
    /// Whether it has a screen, USB input and sound (a VGA, a keyboard, a tablet, an HD Audio card).
    pub display: bool,
}

/// The SHA-256 of the file at `path`, read in 1 MiB pieces.
///
/// # Errors
/// The file cannot be read.
pub fn file_sha256(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

impl MachineProfile {
    /// RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}
