//! Which machine profiles this server can run, and the QEMU settings for one.

use std::path::{Path, PathBuf};

use daemon_protocol::{Firmware, MachineProfile};
use qemu_driver::{Accel, Boot, GuestImage};

use crate::config::ServerConfig;

/// Why this server cannot run a VM's profile; the text says what to change.
pub fn refusal(
    config: &ServerConfig,
    accel: Accel,
    known_models: &[String],
    profile: &MachineProfile,
) -> Option<String> {
    let model = &profile.cpu_model;
    if accel == Accel::Kvm && model.is_host_dependent() {
        return Some(format!(
            "its CPU model \"{model}\" differs from host to host and this server runs KVM: set cpu_model in the \
             desktop's configuration to a named model both run"
        ));
    }
    if !known_models.iter().any(|m| m == model.as_str()) {
        return Some(format!(
            "this server's QEMU does not know CPU model \"{model}\": install the same QEMU as the desktop's"
        ));
    }
    match &profile.firmware {
        Firmware::Bios => None,
        Firmware::Uefi => [&config.ovmf_code, &config.ovmf_vars]
            .into_iter()
            .find(|path| !path.is_file())
            .map(|path| format!("it boots UEFI and this server has no {} (install Debian's ovmf)", path.display())),
        Firmware::Kernel { kernel_sha256, initrd_sha256, .. } => {
            let same = |path: &Option<PathBuf>, digest: &[u8; 32], key: &str| match path {
                None => {
                    Some(format!("it boots a kernel the hosts supply, and this server's configuration has no {key}"))
                }
                Some(path) => match daemon_protocol::file_sha256(path) {
                    Ok(ours) if &ours == digest => None,
                    Ok(_) => Some(format!(
                        "its {key} differs from this server's {}: a reboot here would boot another one; install the \
                         desktop's file, or boot the VM from its own disk (firmware = \"bios\" or \"uefi\")",
                        path.display()
                    )),
                    Err(e) => Some(format!("this server cannot read its {key} {}: {e}", path.display())),
                },
            };
            same(&config.kernel, kernel_sha256, "kernel").or_else(|| same(&config.initrd, initrd_sha256, "initrd"))
        }
    }
}

/// How QEMU boots `profile` here; `state` is the VM's state directory
/// (a UEFI VM's variable store is made there, from the template, for its
/// descriptor to fill).
pub fn boot(config: &ServerConfig, profile: &MachineProfile, state: &Path) -> std::io::Result<Boot> {
    Ok(match &profile.firmware {
        Firmware::Bios => Boot::Bios,
        Firmware::Uefi => {
            let vars = state.join("efivars.fd");
            std::fs::copy(&config.ovmf_vars, &vars)?;
            Boot::Uefi { code: config.ovmf_code.clone(), vars }
        }
        Firmware::Kernel { args, .. } => Boot::Kernel {
            image: GuestImage {
                kernel: config.kernel.clone().unwrap_or_default(),
                initrd: config.initrd.clone().unwrap_or_default(),
            },
            args: args.to_string(),
        },
    })
}
