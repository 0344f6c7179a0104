//! `jettison status`: where each VM runs and what it has moved. With no
//! flags it asks the local daemon (the desktop's socket, else the
//! server's); `--daemon` names a socket; `--memtap` and `--disks` read
//! standalone memtap and cownetdisk state (`<vm>.stats` files) instead,
//! which is also where it looks when no daemon runs here. `--power` adds
//! the energy a desktop's power daemon (`jettison power`) saved. `--json`
//! prints one versioned document whatever answered (see
//! [`crate::status_document`] and `docs/status.schema.json`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use daemon_protocol::local::{
    call, DesktopActivity, DesktopActivityState, DesktopPower, DesktopPowerState, LocalRequest, Report, ServerEnergy,
};
use power::{LedgerFiles, CHART_FILE, LEDGER_FILE};

use crate::failure::NoDaemon;
use crate::status_document::{Location, OnServer, Source, StatusDocument};
use crate::CmdResult;

/// Where the daemons' sockets are, tried in this order with no flags.
const LOCAL_SOCKETS: [&str; 2] = ["/run/jettison/desktop.sock", "/run/jettison/server.sock"];
/// memtap's and cownetdisk's default state, read when no daemon runs.
const DEFAULT_MEMTAP: &str = "/run/jettison/memtap";
const DEFAULT_DISKS: &str = "/var/lib/jettison/disks";

/// Arguments of `jettison status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ask this daemon socket (default: /run/jettison/desktop.sock, else /run/jettison/server.sock).
    #[arg(long, conflicts_with_all = ["memtap", "disks"])]
    daemon: Option<PathBuf>,
    /// Read a standalone memtap's mount instead of asking a daemon (default when no daemon runs: /run/jettison/memtap).
    #[arg(long)]
    memtap: Option<PathBuf>,
    /// Read a standalone cownetdisk's state directory (default when no daemon runs: /var/lib/jettison/disks).
    #[arg(long)]
    disks: Option<PathBuf>,
    /// Add the energy ledger of a desktop's power daemon (`jettison power --state-dir`).
    #[arg(long)]
    power: Option<PathBuf>,
    /// Print the status document as JSON (docs/status.schema.json), errors as {"error": {...}}.
    #[arg(long)]
    json: bool,
}

/// Reads every `*.stats` file directly in `dir`, sorted by file name;
/// `None` when the directory does not exist.
fn read_stats<T: DeserializeOwned>(dir: &Path) -> std::io::Result<Option<Vec<T>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "stats") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut all = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path)?;
        let stats = serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        all.push(stats);
    }
    Ok(Some(all))
}

/// Prints the status document, for people or as JSON.
pub fn run(args: Args) -> CmdResult {
    let power = match &args.power {
        Some(dir) => LedgerFiles::read(dir)?,
        None => None,
    };
    let document = gather(&args, power.is_some())?.with_power(power.as_ref());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print_document(&document);
    }
    Ok(())
}

/// The document from whichever source the flags, or what runs here, name;
/// with `have_power`, standalone state may be missing altogether.
fn gather(args: &Args, have_power: bool) -> Result<StatusDocument, Box<dyn std::error::Error>> {
    if let Some(socket) = &args.daemon {
        return ask(socket);
    }
    if args.memtap.is_none() && args.disks.is_none() {
        if let Some(socket) = LOCAL_SOCKETS.iter().map(Path::new).find(|s| s.exists()) {
            return ask(socket);
        }
    }
    let memtap = args.memtap.clone().unwrap_or_else(|| DEFAULT_MEMTAP.into());
    let disks = args.disks.clone().unwrap_or_else(|| DEFAULT_DISKS.into());
    let memory: Option<Vec<memtap::RamStats>> =
        read_stats(&memtap).map_err(|e| format!("cannot read memtap's mount {}: {e}", memtap.display()))?;
    let disk: Option<Vec<cownetdisk::DiskStats>> =
        read_stats(&disks).map_err(|e| format!("cannot read cownetdisk's state directory {}: {e}", disks.display()))?;
    if memory.is_none() && disk.is_none() && !have_power {
        if args.memtap.is_some() || args.disks.is_some() {
            let power_dir = args.power.as_ref().map(|dir| format!(" nor {}", dir.display())).unwrap_or_default();
            return Err(format!(
                "neither {} nor {}{power_dir} exists: is memtap or cownetdisk running here? (--memtap, --disks, --power)",
                memtap.display(),
                disks.display()
            )
            .into());
        }
        return Err(NoDaemon { tried: LOCAL_SOCKETS.join(" and ") }.into());
    }
    Ok(StatusDocument::standalone(&memory.unwrap_or_default(), &disk.unwrap_or_default()))
}

/// Asks the daemon at `socket`.
fn ask(socket: &Path) -> Result<StatusDocument, Box<dyn std::error::Error>> {
    match call(socket, &LocalRequest::Status, |_| {})? {
        Report::DesktopStatus(status) => Ok(StatusDocument::desktop(&status)),
        Report::ServerStatus(status) => Ok(StatusDocument::server(&status)),
        other => Err(format!("the daemon answered a status request with a {}", other.kind()).into()),
    }
}

/// The document for people: a line per VM, MiB and seconds.
fn print_document(document: &StatusDocument) {
    if let Some(server) = document.server.as_ref().filter(|s| !s.reachable) {
        println!("server {}: unreachable ({})", server.address, server.error.as_deref().unwrap_or("no answer"));
    }
    if document.vms.is_empty() {
        match document.source {
            Source::Desktop => println!("no VM is configured on this desktop"),
            Source::Server | Source::Standalone => println!("no VM is consolidated on this server"),
        }
    }
    for vm in &document.vms {
        let name = match (&vm.desktop, document.source) {
            (Some(desktop), Source::Server) => format!("{} (from {desktop})", vm.vm),
            _ => vm.vm.clone(),
        };
        match (vm.location, &vm.on_server) {
            (Location::Desktop, _) if vm.running => println!("{name}: runs on this desktop"),
            (Location::Desktop, _) => println!("{name}: on this desktop, not running"),
            (Location::Server, Some(figures)) => println!("{name}: on the server: {}", hosted_line(figures)),
            (Location::Server, None) => println!("{name}: on the server (no figures: the server did not answer)"),
            (Location::Moving, _) => println!("{name}: moving"),
            (Location::Off, _) => println!("{name}: off (jettison start {})", vm.vm),
            (Location::Saved, _) => println!("{name}: saved to its checkpoint (resumed at the next daemon start)"),
        }
        if let Some(error) = &vm.error {
            println!("{name}: last failure: {error}");
        }
    }
    if let Some(activity) = &document.activity {
        println!("{}", activity_line(activity));
    }
    if let Some(sleep) = &document.sleep {
        println!("{}", desktop_power_line(sleep));
    }
    if let Some(energy) = &document.server_energy {
        for line in server_energy_lines(energy) {
            println!("{line}");
        }
    }
    if let Some(power) = &document.power {
        println!(
            "power: {:.0} s consolidated over {} consolidations, {} wakes, {:.1} kJ used against {:.1} kJ idle: \
             {:.1}% saved ({LEDGER_FILE}, chart {CHART_FILE})",
            power.consolidated_secs,
            power.consolidations,
            power.wakes,
            power.used_kj,
            power.idle_kj,
            power.saved_percent
        );
    }
}

/// The server's energy ledger for people: its figures and break-even
/// count, then a line per VM.
fn server_energy_lines(energy: &ServerEnergy) -> Vec<String> {
    let refuse = if energy.refuse_unprofitable { "; refuses a VM that would cost more than it saves" } else { "" };
    let mut lines = vec![format!(
        "energy ({}: {:.1} W idle, {:.1} W busy): with {:.1} W idle, a VM pays off once about {} share the server \
         (each desktop saves at most {:.2} W asleep){refuse}",
        energy.source,
        energy.idle_watts,
        energy.busy_watts,
        energy.idle_watts,
        energy.break_even_vms,
        energy.desktop_saving_watts
    )];
    for vm in &energy.vms {
        let saved = if vm.desktop_sleeps {
            format!("desktop saved {:.1} kJ (estimated)", vm.desktop_saved_joules / 1000.0)
        } else {
            "desktop never sleeps (no wake address), saved nothing".to_owned()
        };
        lines.push(format!(
            "{} (from {}): server share {:.1} kJ over {:.0} s (active {:.2} kJ for {:.1} CPU s, idle {:.1} kJ, \
             network {:.3} kJ for {}), {saved}, net {:+.1} kJ",
            vm.vm,
            vm.desktop,
            vm.server_joules / 1000.0,
            vm.seconds,
            vm.active_joules / 1000.0,
            vm.cpu_secs,
            vm.idle_joules / 1000.0,
            vm.network_joules / 1000.0,
            mib_text(vm.network_bytes as f64 / (1024.0 * 1024.0)),
            vm.net_joules / 1000.0
        ));
    }
    lines
}

/// One hosted VM's figures for people.
fn hosted_line(s: &OnServer) -> String {
    let m = &s.memory;
    let zero = match (m.zero_pages, m.zero_mib) {
        (Some(pages), Some(mib)) => format!("{} never fetched ({pages} zero pages at consolidation), ", mib_text(mib)),
        _ => String::new(),
    };
    let mut line = format!(
        "{} of {} RAM fetched ({} pages), {zero}{} zero pages served without a fetch, {} dirty ({} pages)",
        mib_text(m.fetched_mib),
        mib_text(s.ram_mib),
        m.pages_fetched,
        m.zero_pages_served,
        mib_text(m.dirty_mib),
        m.dirty_pages
    );
    if m.discarded_pages > 0 {
        line.push_str(&format!(", {} pages freed by the guest (discarded)", m.discarded_pages));
    }
    if let Some(d) = &s.disk {
        line.push_str(&format!(
            "; disk {} fetched ({} blocks), {} dirty ({} blocks)",
            mib_text(d.fetched_mib),
            d.blocks_fetched,
            mib_text(d.dirty_mib),
            d.dirty_blocks
        ));
    }
    if let Some(expected) = s.expected_mib {
        line.push_str(&format!("; expected {}", mib_text(expected)));
    }
    line.push_str(&format!("; {}", s.state));
    if let Some(secs) = s.seconds {
        line.push_str(&format!(" for {secs} s"));
    }
    if let Some(power) = &s.desktop_power {
        line.push_str(&format!("; desktop {power}"));
    }
    line
}

/// MiB with the precision a person reads.
fn mib_text(mib: f64) -> String {
    format!("{mib:.1} MiB")
}

/// The desktop's activity monitor in one line (`[activity]` in its configuration).
fn activity_line(activity: &DesktopActivity) -> String {
    let moved = activity.moved.iter().map(|vm| vm.as_str()).collect::<Vec<_>>().join(", ");
    let state = match activity.state {
        DesktopActivityState::NoSource => {
            format!("no idle source yet ({})", activity.source_error.as_deref().unwrap_or("none answers"))
        }
        DesktopActivityState::Watching => "watching the user".to_owned(),
        DesktopActivityState::Warned => "the user is idle: warned, the VMs move unless there is input".to_owned(),
        DesktopActivityState::Away => format!("the user is away; moved {moved} and brings it back at the return"),
        DesktopActivityState::Returning => format!("the user is back; bringing {moved} home"),
    };
    let mut line = format!("activity: {state}");
    if let Some(source) = &activity.source {
        line.push_str(&format!("; source {source}"));
    }
    if let Some(idle) = activity.idle_secs {
        line.push_str(&format!("; idle {idle:.0} s"));
    }
    line.push_str(&format!(
        "; warning after {} s idle, for {} s ({})",
        activity.idle_limit_secs,
        activity.warn_secs,
        if activity.warning_window { "a window on the user's display" } else { "in the log: no display answers" }
    ));
    if !activity.held.is_empty() {
        let held = activity.held.iter().map(|vm| vm.as_str()).collect::<Vec<_>>().join(", ");
        line.push_str(&format!("; {held} brought back by hand, kept here until the user has been at the desk"));
    }
    line
}

/// The desktop's own sleep in one line (`[power]` in its configuration).
fn desktop_power_line(power: &DesktopPower) -> String {
    let state = match power.state {
        DesktopPowerState::NotSleeping => "awake (a VM runs here, or none is away)",
        DesktopPowerState::Awake => "awake between requests",
        DesktopPowerState::Suspending => "suspending",
        DesktopPowerState::Asleep => "asleep",
        DesktopPowerState::Resuming => "resuming",
        DesktopPowerState::Refused => "refuses to sleep",
    };
    let refused = power.refused.as_ref().map(|why| format!(": {why}")).unwrap_or_default();
    format!(
        "power: {state}{refused}; {} sleeps, {} wakes, {:.1} min asleep, {:.1} kJ saved ({:.1}%) (ledger in {})",
        power.sleeps,
        power.wakes,
        power.asleep_secs / 60.0,
        power.saved_joules / 1000.0,
        power.saved_percent,
        power.ledger_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_energy_lines_give_the_break_even_count_and_each_vms_net() {
        let vm = daemon_protocol::local::VmEnergy {
            desktop: "desk1".parse().unwrap(),
            vm: "vm1".parse().unwrap(),
            seconds: 600.0,
            cpu_secs: 12.5,
            network_bytes: 200 << 20,
            active_joules: 300.0,
            idle_joules: 30_000.0,
            network_joules: 5.0,
            server_joules: 30_305.0,
            desktop_sleeps: true,
            desktop_saved_joules: 34_000.0,
            net_joules: 3_695.0,
        };
        let energy = ServerEnergy {
            source: "profile".to_owned(),
            idle_watts: 150.7,
            busy_watts: 250.0,
            desktop_saving_watts: 59.45,
            break_even_vms: 3,
            refuse_unprofitable: false,
            vms: vec![vm],
        };
        let lines = server_energy_lines(&energy);
        assert!(lines[0].contains("with 150.7 W idle, a VM pays off once about 3 share the server"), "{}", lines[0]);
        assert!(lines[1].starts_with("vm1 (from desk1): server share 30.3 kJ"), "{}", lines[1]);
        assert!(lines[1].contains("12.5 CPU s") && lines[1].contains("desktop saved 34.0 kJ"), "{}", lines[1]);
        assert!(lines[1].ends_with("net +3.7 kJ"), "{}", lines[1]);
    }

    fn activity(state: DesktopActivityState) -> DesktopActivity {
        DesktopActivity {
            state,
            source: Some("x11 :0".to_owned()),
            source_error: None,
            idle_secs: Some(42.4),
            idle_since: Some(1_000),
            idle_limit_secs: 15,
            warn_secs: 5,
            warning_window: true,
            moved: vec!["vm1".parse().expect("a VM name")],
            held: Vec::new(),
        }
    }

    #[test]
    fn the_activity_line_says_the_state_source_idle_time_and_what_moved() {
        let away = activity_line(&activity(DesktopActivityState::Away));
        assert!(away.starts_with("activity: the user is away; moved vm1"), "{away}");
        assert!(away.contains("source x11 :0") && away.contains("idle 42 s"), "{away}");
        assert!(away.contains("warning after 15 s idle, for 5 s (a window on the user's display)"), "{away}");
        let mut none = activity(DesktopActivityState::NoSource);
        none.source = None;
        none.source_error = Some("x11: cannot connect".to_owned());
        none.warning_window = false;
        none.held = vec!["vm1".parse().expect("a VM name")];
        let line = activity_line(&none);
        assert!(line.contains("no idle source yet (x11: cannot connect)") && line.contains("in the log"), "{line}");
        assert!(line.contains("vm1 brought back by hand"), "{line}");
    }
}
