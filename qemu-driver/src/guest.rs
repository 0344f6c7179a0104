//! The test guest: a Debian kernel and a busybox initramfs.
//!
//! `scripts/guest-image` builds it (and is fast when it is already built), so
//! tests and the demo call the script instead of assuming a prepared machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{QemuError, Result};

/// A kernel and initramfs to boot with `-kernel`/`-initrd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel (`bzImage`).
    pub kernel: PathBuf,
    /// The initramfs (gzip-compressed newc cpio).
    pub initrd: PathBuf,
}

impl GuestImage {
    /// Runs `scripts/guest-image` of the repository at `repo_root` and
    /// returns the image it built under `.cache/guest/`.
    ///
    /// # Errors
    /// [`QemuError::Spawn`] if the script cannot run; [`QemuError::GuestImage`] with
    /// its output (which names what is missing) if it fails.
    pub fn build(repo_root: &Path) -> Result<GuestImage> {
        let script = repo_root.join("scripts/guest-image");
        let output =
            Command::new(&script).output().map_err(|source| QemuError::Spawn { binary: script.clone(), source })?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            return Err(QemuError::GuestImage { script, status: output.status, output: text });
        }
        let dir = repo_root.join(".cache/guest");
        Ok(GuestImage { kernel: dir.join("vmlinuz"), initrd: dir.join("initramfs.img") })
    }
}
