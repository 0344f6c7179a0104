//! `jettison power`: the desktop's power daemon while its VM is consolidated,
//! for a desktop whose memserv and diskserv run on their own (the desktop
//! daemon runs the same session itself when its configuration has
//! `[power]`).
//!
//! It follows memserv's and diskserv's event sockets, suspends the desktop
//! once no request has come for `t_w`, and keeps the energy ledger
//! (`ledger.json`, `power.svg`) in its state directory. The session is
//! [`desktop_daemon::power_session`]'s; this file only reads the arguments
//! and waits for SIGINT or SIGTERM.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use desktop_daemon::microsleep::{check_nic, EmulatedSettings, WaitPolicy};
use desktop_daemon::power_session::{PowerSession, SessionSettings, SleepWith, DEFAULT_SERVE_SECS};
use power::{PowerProfile, DEFAULT_WAIT_SECS};
use remote_wakeup::Mac;

use crate::signals::block_stop_signals;
use crate::CmdResult;

/// How the wait time is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    /// Always `--wait-secs`.
    Fixed,
    /// Learned from the gaps between requests (Eq. 4), `--wait-secs` until then.
    Adaptive,
}

/// How the desktop sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SleepKind {
    /// This machine's S3: logind's Suspend, else /sys/power/state.
    System,
    /// An emulated S3 for tests: stop the daemons, drop the address, wake on a magic packet.
    EmulatedS3,
}

/// Arguments of `jettison power`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An event socket (memserv's or diskserv's `--events`); repeat for each. Followed from
    /// whenever it exists.
    #[arg(long = "events", required = true)]
    events: Vec<PathBuf>,
    /// The desktop's power profile (JSON); default: the paper's Table 1.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// How the wait time t_w is chosen.
    #[arg(long, value_enum, default_value_t = PolicyKind::Fixed)]
    policy: PolicyKind,
    /// t_w: seconds without a request before the desktop sleeps (the adaptive policy's start).
    #[arg(long, default_value_t = DEFAULT_WAIT_SECS)]
    wait_secs: f64,
    /// Seconds of serving power each request counts for in the ledger.
    #[arg(long, default_value_t = DEFAULT_SERVE_SECS)]
    serve_secs: f64,
    /// How the desktop sleeps.
    #[arg(long, value_enum, default_value_t = SleepKind::System)]
    sleep: SleepKind,
    /// The desktop's LAN interface. system: the NIC that must wake the machine on a magic packet,
    /// checked before anything else (default: the default route's); emulated-s3: listens there
    /// for magic packets.
    #[arg(long)]
    interface: Option<String>,
    /// emulated-s3: the interface's address with prefix (e.g. 10.77.0.2/24), removed while asleep.
    #[arg(long)]
    address: Option<String>,
    /// emulated-s3: the MAC the "NIC" wakes for.
    #[arg(long)]
    mac: Option<String>,
    /// emulated-s3: a daemon (memserv, diskserv) to stop while asleep; repeat for each.
    #[arg(long = "stop-pid")]
    stop_pids: Vec<i32>,
    /// emulated-s3: seconds to go to sleep (default: the profile's).
    #[arg(long)]
    suspend_secs: Option<f64>,
    /// emulated-s3: seconds to wake up (default: the profile's).
    #[arg(long)]
    resume_secs: Option<f64>,
    /// Where ledger.json and power.svg are written.
    #[arg(long)]
    state_dir: PathBuf,
}

/// Runs the session until SIGINT or SIGTERM, then writes the ledger.
pub fn run(args: Args) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    let profile = match &args.profile {
        Some(path) => PowerProfile::load(path)?,
        None => PowerProfile::TABLE_1,
    };
    let policy = match args.policy {
        PolicyKind::Fixed => WaitPolicy::Fixed,
        PolicyKind::Adaptive => WaitPolicy::Adaptive,
    }
    .build(profile, args.wait_secs)?;
    // Refused before anything else: a desktop whose NIC does not wake it
    // never comes back.
    let nic = match args.sleep {
        SleepKind::System => Some(check_nic(args.interface.as_deref())?),
        SleepKind::EmulatedS3 => None,
    };
    for path in &args.events {
        // The reader follows a socket whose daemon restarts, but a path that
        // names nothing at start is a mistake to say at once.
        UnixStream::connect(path).map_err(|e| {
            format!(
                "cannot connect to event socket {}: {e} (is memserv or diskserv running with --events?)",
                path.display()
            )
        })?;
    }
    let sleep = match nic {
        Some(nic) => SleepWith::System(nic),
        None => SleepWith::Emulated(emulated(&args, &profile)?),
    };
    let policy_name = policy.name();
    let session = PowerSession::start(SessionSettings {
        policy,
        serve_secs: args.serve_secs,
        sleep,
        ledger_dir: args.state_dir.clone(),
        events: args.events.clone(),
        learned: Vec::new(),
    })?;
    println!(
        "power: {policy_name} on {} event socket(s), sleeping with {}, ledger in {}",
        args.events.len(),
        session.backend(),
        args.state_dir.display()
    );
    if let Some(signal) = wait_for_signal() {
        tracing::info!("{signal}: stopping");
    }
    let (progress, report) = session.stop();
    let report = report?;
    println!(
        "power: stopped after {:.1} min, {} sleeps, {} wakes, {:.1}% saved",
        report.wall_secs / 60.0,
        progress.sleeps,
        report.wakes,
        report.saved_percent
    );
    Ok(())
}

/// The emulated S3's settings from the arguments.
fn emulated(args: &Args, profile: &PowerProfile) -> Result<EmulatedSettings, String> {
    let need =
        |value: &Option<String>, flag: &str| value.clone().ok_or_else(|| format!("--sleep emulated-s3 needs {flag}"));
    let mac: Mac = need(&args.mac, "--mac")?.parse().map_err(|e| format!("--mac: {e}"))?;
    Ok(EmulatedSettings {
        interface: need(&args.interface, "--interface")?,
        address: need(&args.address, "--address")?,
        mac,
        pids: args.stop_pids.clone(),
        suspend_secs: args.suspend_secs.unwrap_or(profile.suspend_secs),
        resume_secs: args.resume_secs.unwrap_or(profile.resume_secs),
    })
}
