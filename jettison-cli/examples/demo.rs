//! The whole job on one machine, as `./scripts/demo` runs it: an office of
//! three network namespaces (desktop, server, client on one LAN), the real
//! `jettison desktop` and `jettison server` daemons, and a TCG guest that
//! boots from its own qcow2 disk through SeaBIOS, paints its screen, fills
//! part of its RAM (a used desktop), counts, writes its disk and serves a
//! client a line a second. The demo consolidates it, takes a screenshot of
//! it on the server, lets it work there, reintegrates it, and prints what
//! moved and whether the client noticed. The screenshot is kept in
//! `target/release/demo/` (beside the build).
//!
//! Usage: `demo` (root; uses this build's `jettison`).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a demo: a failed step ends it with the reason

use daemon_protocol::local::{ConsolidateReport, ReintegrateReport};
use std::process::ExitCode;
use std::time::Duration;

use tests::office::{assert_continuous, last_count, wait_for_count_above, BootDisk, Office, OfficeSpec, VM};
use tests::screen::Screenshot;
use tests::{BOOT_TIMEOUT, COUNT_TIMEOUT};

const PACE: Duration = Duration::from_secs(1);
const REPLY: Duration = Duration::from_secs(120);
/// How long a freshly booted guest may take to become idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the guest works on the server.
const ON_SERVER: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let boot_disk = Some(BootDisk { firmware: "bios", format: "qcow2" });
    let spec = OfficeSpec { boot_disk, ..OfficeSpec::default() };
    // Beside the build: target/<profile>/demo/.
    let exe = std::env::current_exe().expect("the demo's own path");
    let shots =
        exe.parent().and_then(|examples| examples.parent()).expect("target/<profile>/examples/demo").join("demo");
    std::fs::create_dir_all(&shots).expect("target/demo can be made");
    let mut office = match Office::build(dir.path(), &spec) {
        Ok(office) => office,
        Err(why) => {
            eprintln!("demo: cannot run here: {why}");
            return ExitCode::FAILURE;
        }
    };
    let socket = office.desktop_socket();
    let socket = socket.to_str().expect("a UTF-8 path");
    println!("demo: starting jettison server and jettison desktop in their namespaces; the desktop boots {VM} from its qcow2 disk");
    office.start_server();
    office.start_desktop();
    wait_for_count_above(&office.desktop_serial(), 0, BOOT_TIMEOUT);
    let client = office.connect_client(PACE);
    client.wait_for(3, REPLY);
    println!("demo: {VM} runs on the desktop and answers the client; consolidating it once the idleness check says it is idle");
    let out: ConsolidateReport = typed(office.consolidate_when_idle(IDLE_TIMEOUT));
    let at_consolidation = last_count(&office.desktop_serial()).unwrap_or(0);
    println!("demo: consolidated; the guest works on the server for {} s and saves a file", ON_SERVER.as_secs());
    wait_for_count_above(&office.server_serial(), at_consolidation, COUNT_TIMEOUT);
    let server_socket = office.server_socket();
    let server_socket = server_socket.to_str().expect("a UTF-8 path");
    let png = shots.join("screen-on-server.png");
    let ppm = shots.join("screen-on-server.ppm");
    for file in [&png, &ppm] {
        let out = office.jettison(&["screenshot", VM, file.to_str().expect("a UTF-8 path"), "--socket", server_socket]);
        assert!(out.status.success(), "demo: screenshot on the server: {}", String::from_utf8_lossy(&out.stderr));
    }
    let screen = Screenshot::read_ppm(&ppm).expect("QEMU wrote a PPM");
    std::fs::remove_file(&ppm).expect("the PPM can be removed");
    std::thread::sleep(ON_SERVER);
    let saved = client.command("save written-on-server", REPLY);
    // The status document of docs/status.schema.json.
    let status = office.jettison_json(&["status", "--daemon", socket]);
    let server = &status["vms"][0]["on_server"];
    assert!(server.is_object(), "demo: the server does not report the VM it hosts: {status}");
    let figure = |path: &[&str]| path.iter().fold(server, |v, key| &v[*key]).as_u64().unwrap_or(0);
    let last_on_server = last_count(&office.server_serial()).unwrap_or(0);

    println!("demo: reintegrating");
    let back: ReintegrateReport = typed(office.jettison_json(&["reintegrate", VM, "--socket", socket]));
    let counting = wait_for_count_above(&office.desktop_serial(), 0, COUNT_TIMEOUT);
    let cat = client.command("cat written-on-server", REPLY);
    client.wait_for(client.count() + 2, REPLY);
    let (log, broken) = client.finish();

    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let ram = spec.memory_mib << 20;
    let share = |bytes: u64| 100.0 * bytes as f64 / ram as f64;
    let (pages, blocks) = (figure(&["memory", "pages_fetched"]), figure(&["disk", "blocks_fetched"]));
    let out_bytes = (pages + blocks) * 4096 + out.descriptor_bytes;
    let back_bytes = back.bytes;
    let survived = broken.is_none() && std::panic::catch_unwind(|| assert_continuous(&log)).is_ok();
    let file_back = saved.split(' ').nth(1).is_some_and(|n| cat.ends_with(&format!(" {n}")));
    let state_kept = counting + 10 >= last_on_server && file_back;
    println!();
    println!("Jettison demo report");
    println!("guest RAM                {} MiB ({} MiB of it filled with data)", spec.memory_mib, spec.fill_mib);
    println!(
        "consolidation            {:.2} s ({:.2} s with the VM stopped), descriptor {} bytes",
        out.total_secs, out.downtime_secs, out.descriptor_bytes
    );
    println!(
        "pages fetched            {pages} ({:.1} MiB = {:.1}% of RAM) in {} s on the server; {} zero pages never fetched",
        mib(pages * 4096),
        share(pages * 4096),
        figure(&["seconds"]),
        out.zero_pages
    );
    println!("bytes to the server      {:.1} MiB = {:.1}% of RAM", mib(out_bytes), share(out_bytes));
    println!(
        "reintegration            {:.2} s, {:.1} MiB back = {:.1}% of RAM ({} dirty pages, {} dirty blocks)",
        back.total_secs,
        mib(back_bytes),
        share(back_bytes),
        back.dirty_pages,
        back.dirty_blocks
    );
    let kept = if state_kept { "yes (its counter, and the file it wrote on the server)" } else { "NO" };
    println!("guest state kept         {kept}");
    let connection = match (survived, broken) {
        (true, _) => format!("survived ({} exchanges on one connection, none lost)", log.len()),
        (false, Some(why)) => format!("BROKE: {why}"),
        (false, None) => "BROKE: a reply was lost or repeated".to_owned(),
    };
    println!("client connection        {connection}");
    let pattern = screen.shows_test_pattern();
    println!(
        "screen on the server     {} ({}x{}, {})",
        png.display(),
        screen.width,
        screen.height,
        if pattern { "the guest's test pattern, as on the desk" } else { "NOT the guest's pattern" }
    );
    if survived && state_kept && pattern {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A report the command printed, as its type: a renamed or missing field
/// fails here, loudly.
fn typed<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> T {
    serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("demo: the command printed {json}, not a report: {e}"))
}
