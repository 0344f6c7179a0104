//! What a user's own desktop VM costs a move (issue 10): the same office
//! (`tests::office`: a desktop and a server in network namespaces, the
//! real daemons and command, TCG) run four times in one run, with the VM
//! as the tests have had it so far and as an office has it:
//!
//! - **headless, kernel**: the test guest booted with the host's kernel and
//!   initramfs, no display (the profile of the earlier figures);
//! - **kernel + screen**: the same with the display devices (VGA, USB
//!   keyboard and tablet, and the HD Audio sound card that comes with a
//!   screen) and the screen left as the text console;
//! - **BIOS + screen, qcow2**: booted by SeaBIOS from its own qcow2 disk
//!   (syslinux), with the same devices, and the guest painting its screen;
//! - **UEFI + screen, raw**: the same booted by OVMF, whose 4 MiB flash is a
//!   device's memory and so travels in the descriptor.
//!
//! Each row: the descriptor (device state without guest RAM), the bytes out
//! (descriptor plus what the server fetched until the VM was asked back),
//! the downtime and whole time of the consolidation, and the bytes and time
//! of the reintegration. The guest fills 64 MiB of its 256 MiB, waits
//! `--stay` seconds on the server, and is brought back.
//!
//! `cargo run --release -p bench --bin desktop_vm [-- --stay 20]` (root: namespaces, taps, FUSE)

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tests::office::{wait_for_count_above, BootDisk, Office, OfficeSpec, VM};
use tests::{skip, BOOT_TIMEOUT};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds the VM stays on the server before it is brought back.
    #[arg(long, default_value_t = 20)]
    stay: u64,
}

/// One profile's figures.
struct Row {
    name: &'static str,
    descriptor: u64,
    out_bytes: u64,
    downtime: f64,
    consolidate: f64,
    back_bytes: u64,
    reintegrate: f64,
}

fn measure(name: &'static str, boot_disk: Option<BootDisk>, display: bool, stay: Duration) -> Result<Row, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = OfficeSpec { boot_disk, display, ..OfficeSpec::default() };
    let mut office = Office::build(dir.path(), &spec)?;
    office.start_server();
    office.start_desktop();
    wait_for_count_above(&office.desktop_serial(), 0, BOOT_TIMEOUT);
    let out = office.consolidate_when_idle(Duration::from_secs(300));
    std::thread::sleep(stay);
    let desktop = office.desktop_socket();
    let desktop = desktop.to_str().ok_or("a non-UTF-8 path")?;
    let status = office.jettison_json(&["status", "--daemon", desktop]);
    let server = &status["vms"][0]["on_server"];
    let fetched = (server["memory"]["pages_fetched"].as_u64().unwrap_or(0)
        + server["disk"]["blocks_fetched"].as_u64().unwrap_or(0))
        * 4096;
    let back = office.jettison_json(&["reintegrate", VM, "--socket", desktop]);
    let number = |v: &serde_json::Value, key: &str| v[key].as_f64().ok_or(format!("no {key} in {v}"));
    let descriptor = number(&out, "descriptor_bytes")? as u64;
    Ok(Row {
        name,
        descriptor,
        out_bytes: descriptor + fetched,
        downtime: number(&out, "downtime_secs")?,
        consolidate: number(&out, "total_secs")?,
        back_bytes: number(&back, "bytes")? as u64,
        reintegrate: number(&back, "total_secs")?,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stay = Duration::from_secs(args.stay);
    let profiles: [(&str, Option<BootDisk>, bool); 4] = [
        ("headless, kernel", None, false),
        ("kernel + screen (text)", None, true),
        ("BIOS + screen, qcow2", Some(BootDisk { firmware: "bios", format: "qcow2" }), true),
        ("UEFI + screen, raw", Some(BootDisk { firmware: "uefi", format: "raw" }), true),
    ];
    let mut rows = Vec::new();
    for (name, boot_disk, display) in profiles {
        match measure(name, boot_disk, display, stay) {
            Ok(row) => rows.push(row),
            Err(why) => {
                skip(format!("desktop_vm: {name}: {why}"));
                return ExitCode::SUCCESS;
            }
        }
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("desktop_vm: 256 MiB guest, 64 MiB filled, TCG, {} s on the server; MiB = 2^20 B\n", args.stay);
    println!("| VM | descriptor KiB | out MiB | downtime s | consolidation s | back MiB | reintegration s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.1} | {:.2} |",
            r.name,
            r.descriptor as f64 / 1024.0,
            mib(r.out_bytes),
            r.downtime,
            r.consolidate,
            mib(r.back_bytes),
            r.reintegrate
        );
    }
    let base = rows[0].descriptor as f64;
    for r in &rows[1..] {
        println!("{}: descriptor {:+.0} KiB against the headless VM", r.name, (r.descriptor as f64 - base) / 1024.0);
    }
    ExitCode::SUCCESS
}
