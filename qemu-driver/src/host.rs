//! What this host's QEMU can run: the accelerator and the CPU models.

use std::process::Command;

use serde::Deserialize;

use crate::error::{QemuError, Result};
use crate::vm::Accel;

/// The accelerator a configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM where `/dev/kvm` can be opened, TCG elsewhere.
    #[default]
    Auto,
    /// KVM, or an error if `/dev/kvm` cannot be opened.
    Kvm,
    /// TCG (binary translation), everywhere.
    Tcg,
}

impl AccelChoice {
    /// The accelerator to use on this host.
    ///
    /// # Errors
    /// A text for the configuration's reader when KVM was asked for and
    /// `/dev/kvm` cannot be opened.
    pub fn resolve(self) -> std::result::Result<Accel, String> {
        match self {
            AccelChoice::Auto if kvm_usable() => Ok(Accel::Kvm),
            AccelChoice::Auto | AccelChoice::Tcg => Ok(Accel::Tcg),
            AccelChoice::Kvm if kvm_usable() => Ok(Accel::Kvm),
            AccelChoice::Kvm => Err("accel = \"kvm\" but /dev/kvm cannot be opened for reading and writing \
                 (no hardware virtualisation, or the kvm module is not loaded): write accel = \"auto\" or \"tcg\""
                .to_owned()),
        }
    }
}

/// Whether `/dev/kvm` can be opened for reading and writing.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// The CPU models this host's QEMU knows, as `-cpu help` lists them.
///
/// # Errors
/// [`QemuError::Spawn`] when QEMU cannot run.
pub fn cpu_models() -> Result<Vec<String>> {
    let binary = crate::process::QEMU_BINARY;
    let output = Command::new(binary)
        .args(["-cpu", "help"])
        .output()
        .map_err(|source| QemuError::Spawn { binary: binary.into(), source })?;
    Ok(parse_cpu_help(&String::from_utf8_lossy(&output.stdout)))
}

/// The model names of `-cpu help`: the first word of each indented line of
/// the "Available CPUs:" section.
fn parse_cpu_help(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|line| !line.starts_with("Available CPUs"))
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_help_lists_model_names_only() {
        let text = "Available CPUs:\n  486                   (alias configured by machine type)\n  \
                    Skylake-Client-v4     Intel Core Processor (Skylake, IBRS, no TSX)\n  max                   \
                    Enables all features supported by the accelerator in the current host\n\n\
                    Recognized CPUID flags:\n  3dnow\n";
        assert_eq!(parse_cpu_help(text), ["486", "Skylake-Client-v4", "max"]);
    }

    #[test]
    fn tcg_is_always_there_and_auto_never_fails() {
        assert_eq!(AccelChoice::Tcg.resolve(), Ok(Accel::Tcg));
        assert!(AccelChoice::Auto.resolve().is_ok());
        assert_eq!(AccelChoice::Kvm.resolve().is_ok(), kvm_usable());
    }
}
