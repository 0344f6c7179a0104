//! The VM's NIC and disk, which differ by host only in their back-end.
//!
//! A VM keeps one MAC for its whole life: on the desktop and on the server
//! its virtio-net NIC sits on a tap device that is a port of that host's
//! bridge, so a move changes which port of the office LAN the MAC is behind
//! and nothing else. QEMU's `announce-self` (see [`announce`]) tells the LAN.
//! Each disk is a virtio-blk device on both hosts: the image file on the
//! desktop, cownetdisk's NBD export on the server. A VM's disks are given
//! to QEMU in the same order on both, so the guest sees the same devices
//! at the same addresses, and the descriptor saved on one host loads on
//! the other.
//!
//! Taps are made with iproute2's `ip`, in the network namespace of the
//! calling thread (a daemon runs in its host's namespace).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use identifiers::Mac;

use crate::disk_view::DiskFormat;
use crate::error::{QemuError, Result};
use crate::qmp::Qmp;

/// Where the VM's disk comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskBackend {
    /// An image file (the desktop's), raw or qcow2.
    Image {
        /// The image.
        path: PathBuf,
        /// Its format.
        format: DiskFormat,
    },
    /// An NBD export on a Unix socket (cownetdisk on the server).
    NbdUnix {
        /// The socket cownetdisk listens on.
        socket: PathBuf,
        /// The export's name (the VM's name).
        export: String,
    },
}

impl DiskBackend {
    /// QEMU arguments for a virtio-blk disk on this back-end. No host cache
    /// (`cache=none`): the image or the NBD server is the only copy, so a
    /// stopped VM's disk is complete without a flush of QEMU's own. An
    /// image is opened read-write at once (`auto-read-only=off`): by
    /// default a QEMU started `-incoming` opens it read-only and opens it
    /// again by its path at `cont`, which a QEMU that has dropped to an
    /// unprivileged user (see `user`) may not.
    pub fn qemu_args(&self) -> Vec<OsString> {
        let mut format = DiskFormat::Raw;
        let mut drive = match self {
            DiskBackend::Image { path, format: image_format } => {
                format = *image_format;
                let mut d = OsString::from("file.filename=");
                d.push(escape_commas(path));
                d.push(",auto-read-only=off");
                d
            }
            DiskBackend::NbdUnix { socket, export } => {
                let mut d = OsString::from("file.driver=nbd,file.export=");
                d.push(export);
                d.push(",file.server.type=unix,file.server.path=");
                d.push(escape_commas(socket));
                d
            }
        };
        drive.push(format!(",format={format},if=virtio,cache=none"));
        vec!["-drive".into(), drive]
    }
}

/// QEMU arguments for the VM's virtio-net NIC with MAC `mac` on the tap
/// named `tap` (already on the bridge: no helper scripts).
pub fn nic_args(tap: &str, mac: Mac) -> Vec<OsString> {
    vec![
        "-netdev".into(),
        format!("tap,id=n0,ifname={tap},script=no,downscript=no").into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={mac}").into(),
    ]
}

/// Makes the NIC's MAC known on the LAN from where the VM now runs: QEMU
/// sends RARP frames from it a few times (50 ms, then every 100 ms more).
///
/// # Errors
/// [`QemuError::Command`] if QEMU refuses.
pub fn announce(qmp: &mut Qmp) -> Result<()> {
    qmp.execute("announce-self", Some(json!({ "initial": 50, "max": 550, "rounds": 5, "step": 100 })))?;
    Ok(())
}

/// The sizes of the virtio disks the running guest sees, in the order they
/// were given to QEMU (`-drive if=virtio` names them `virtio0`,
/// `virtio1`, ...; firmware flash and other block devices are left out), as
/// QEMU reports them: for a qcow2 image, not the file's size. Asks QEMU
/// because it holds the images' locks while it runs.
///
/// # Errors
/// [`QemuError::Command`] if QEMU refuses; [`QemuError::QmpProtocol`] if a
/// virtio disk has no size.
pub fn disk_virtual_sizes(qmp: &mut Qmp) -> Result<Vec<u64>> {
    let devices = qmp.execute("query-block", None)?;
    let mut disks = Vec::new();
    for device in devices.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(index) = device["device"].as_str().and_then(|name| name.strip_prefix("virtio")) else { continue };
        let Ok(index) = index.parse::<u32>() else { continue };
        let size = device["inserted"]["image"]["virtual-size"].as_u64().ok_or_else(|| QemuError::QmpProtocol {
            socket: qmp.socket().to_owned(),
            detail: format!("query-block reports virtio disk {index} without a size: {device}"),
        })?;
        disks.push((index, size));
    }
    disks.sort_unstable();
    Ok(disks.into_iter().map(|(_, size)| size).collect())
}

/// Writes what the VM's screen shows now to `file` (mode 0600; the caller
/// grants more): PNG when its name ends in `.png`, else PPM (binary, `P6`).
/// The file is opened here and lent to QEMU, which may run unprivileged.
///
/// # Errors
/// [`QemuError::File`] if `file` cannot be created; [`QemuError::Command`]
/// if QEMU refuses (no display device).
pub fn screendump(qmp: &mut Qmp, file: &Path) -> Result<()> {
    let format = if file.extension().is_some_and(|e| e == "png") { "png" } else { "ppm" };
    let out =
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(file).map_err(|source| {
            QemuError::File { action: "create the screenshot file", path: file.to_owned(), source }
        })?;
    qmp.with_file_lent(&out, |qmp, filename| {
        qmp.execute("screendump", Some(json!({ "filename": filename, "format": format })))
    })?;
    Ok(())
}

/// A tap device on a bridge of this namespace, deleted on drop.
#[derive(Debug)]
pub struct Tap {
    name: String,
}

impl Tap {
    /// Makes tap `name`, a port of `bridge`, up. A tap of that name left by
    /// a process that died is replaced.
    ///
    /// # Errors
    /// [`QemuError::Network`] with `ip`'s message when a step fails (no such
    /// bridge, no permission).
    pub fn create(name: &str, bridge: &str) -> Result<Tap> {
        // A leftover from a crash: ignore "does not exist".
        let _ = Command::new("ip").args(["link", "del", name]).output();
        ip(&["tuntap", "add", "dev", name, "mode", "tap"], name)?;
        let tap = Tap { name: name.to_owned() };
        ip(&["link", "set", name, "master", bridge], name)?;
        ip(&["link", "set", name, "up"], name)?;
        Ok(tap)
    }

    /// The tap `name` a QEMU left running by an earlier owner still holds
    /// (see `QemuProcess::attach`), taken over as it is.
    pub fn adopt(name: &str) -> Tap {
        Tap { name: name.to_owned() }
    }

    /// Leaves the device in place for a QEMU that runs on after us.
    pub fn keep(self) {
        std::mem::forget(self);
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.name]).output();
    }
}

fn ip(args: &[&str], tap: &str) -> Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|source| QemuError::Network {
        tap: tap.to_owned(),
        detail: format!("cannot run ip (iproute2): {source}"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(QemuError::Network {
        tap: tap.to_owned(),
        detail: format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()),
    })
}

fn escape_commas(path: &Path) -> OsString {
    crate::vm::option_with_path("", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: Vec<OsString>) -> String {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn disks_are_virtio_on_both_backends() {
        let file = line(DiskBackend::Image { path: "/vm/a,b.img".into(), format: DiskFormat::Raw }.qemu_args());
        assert_eq!(file, "-drive file.filename=/vm/a,,b.img,auto-read-only=off,format=raw,if=virtio,cache=none");
        let qcow2 = line(DiskBackend::Image { path: "/vm/d.qcow2".into(), format: DiskFormat::Qcow2 }.qemu_args());
        assert_eq!(qcow2, "-drive file.filename=/vm/d.qcow2,auto-read-only=off,format=qcow2,if=virtio,cache=none");
        let nbd = line(DiskBackend::NbdUnix { socket: "/run/vm1.nbd".into(), export: "vm1".into() }.qemu_args());
        assert_eq!(
            nbd,
            "-drive file.driver=nbd,file.export=vm1,file.server.type=unix,file.server.path=/run/vm1.nbd,\
             format=raw,if=virtio,cache=none"
        );
    }

    #[test]
    fn the_nic_keeps_its_mac() {
        let nic = line(nic_args("jt-vm1", "02:4a:54:00:00:50".parse().expect("a MAC")));
        assert_eq!(
            nic,
            "-netdev tap,id=n0,ifname=jt-vm1,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=02:4a:54:00:00:50"
        );
    }
}
