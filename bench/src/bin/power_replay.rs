//! Validates the simulator against the real thing (issue 12, point 3): a
//! recorded fetch trace's requests, at the trace's times, sent as real
//! authenticated reads to a real desktop that sleeps between them
//! (`jettison power` with the emulated S3, beside the real memserv and
//! diskserv, woken by the server's Wake-on-LAN; see
//! [`bench::power_replay`]), and the same request times through
//! [`power::simulate`] with the same profile and wait policy. Prints side
//! by side the simulator on the trace's times, the simulator on the times
//! the real replay sent the requests (a request held up by a wake holds
//! up the next), the real desktop's figures (its own `ledger.json`, and the
//! server's waker for the wakes it sent magic packets for), and the
//! difference between the real one and the simulator on the trace's times.
//!
//! Root only (network namespaces, AF_PACKET). A run takes the trace's
//! length (or `--first-secs`) plus a few seconds.
//!
//! `cargo run -p bench --bin power_replay -- [--trace FILE] [--first-secs N] [--fast] [--policy fixed|adaptive]`

use std::path::PathBuf;
use std::process::ExitCode;

use bench::power_replay::{replay_real, Desktop, RealRun, Schedule};
use bench::recorded::read_trace;
use clap::Parser;
use desktop_daemon::microsleep::WaitPolicy;
use power::simulate::SimReport;
use power::{PowerProfile, DEFAULT_WAIT_SECS};

/// The simulator against `jettison power` with emulated S3, on a recorded trace.
#[derive(Debug, Parser)]
struct Args {
    /// The recorded fetch trace (`.gz` read through `gzip -dc`).
    #[arg(long, default_value = "bench/traces/small-guest-10min.csv.gz")]
    trace: PathBuf,
    /// Replay only the first N seconds of the stay (the user returns then).
    #[arg(long)]
    first_secs: Option<f64>,
    /// Suspend and resume in 2 s each instead of Table 1's 8.38 s and 8.58 s
    /// (the same powers).
    #[arg(long)]
    fast: bool,
    /// How the wait time t_w is chosen, in both.
    #[arg(long, value_enum, default_value_t = Policy::Fixed)]
    policy: Policy,
    /// t_w, or the adaptive policy's start, seconds.
    #[arg(long, default_value_t = DEFAULT_WAIT_SECS)]
    wait_secs: f64,
    /// Seconds of serving power each request counts for, in both.
    #[arg(long, default_value_t = 0.01)]
    serve_secs: f64,
    /// Keep the run's files (logs, ledger) in this new directory instead of
    /// a temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// `--policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Policy {
    /// Always `--wait-secs`.
    Fixed,
    /// Eq. 4 over the gaps seen so far, `--wait-secs` until then.
    Adaptive,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("power_replay failed: {}", wire::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let trace = read_trace(&args.trace)?;
    let schedule = Schedule::from_trace(&trace, args.first_secs);
    let profile = if args.fast { PowerProfile::TABLE_1.with_transition_secs(2.0, 2.0) } else { PowerProfile::TABLE_1 };
    let policy = match args.policy {
        Policy::Fixed => WaitPolicy::Fixed,
        Policy::Adaptive => WaitPolicy::Adaptive,
    };
    let desktop = Desktop { profile, policy, wait_secs: args.wait_secs, serve_secs: args.serve_secs };
    println!(
        "trace {}: {} requests in the first {:.1} s; profile: suspend {} s, resume {} s (break-even {:.2} s); \
         {:?} wait {} s; serve {} s",
        args.trace.display(),
        schedule.requests.len(),
        schedule.duration_secs,
        profile.suspend_secs,
        profile.resume_secs,
        profile.break_even_secs(),
        args.policy,
        args.wait_secs,
        args.serve_secs
    );
    let simulated = desktop.simulate(&schedule)?;
    let temporary = tempfile::tempdir()?;
    let dir = match &args.keep {
        Some(dir) => {
            std::fs::create_dir(dir).map_err(|e| {
                format!("creating --keep {}: {e} (name a directory that does not exist yet)", dir.display())
            })?;
            dir.clone()
        }
        None => temporary.path().to_owned(),
    };
    println!("replaying against jettison power with emulated S3 ({:.0} s) ...", schedule.duration_secs);
    let real = replay_real(&schedule, &desktop, &dir)?;
    let shifted = desktop.simulate(&schedule.as_sent(&real))?;
    print_table(&simulated, &shifted, &real);
    println!();
    println!("command: {}", std::env::args().collect::<Vec<_>>().join(" "));
    Ok(())
}

/// The simulator on the trace's times (`sim`) and on the times the real
/// replay sent the requests (`shifted`), the real desktop, and the
/// difference between the real one and the simulator on the trace's times.
fn print_table(sim: &SimReport, shifted: &SimReport, real: &RealRun) {
    println!();
    println!("| | simulator, trace's times | simulator, times sent | jettison power, emulated S3 | real - simulator (trace's times) |");
    println!("|---|---:|---:|---:|---:|");
    let count =
        |what: &str, s: u64, t: u64, r: u64| println!("| {what} | {s} | {t} | {r} | {:+} |", r as i64 - s as i64);
    let value = |what: &str, s: f64, t: f64, r: f64, digits: usize| {
        println!("| {what} | {s:.digits$} | {t:.digits$} | {r:.digits$} | {:+.digits$} |", r - s);
    };
    count("requests", sim.requests, shifted.requests, real.requests);
    count("sleeps (each ends in a wake)", sim.wakes, shifted.wakes, real.energy.wakes);
    count(
        "wakes by a request (magic packets)",
        sim.woken_by_requests,
        shifted.woken_by_requests,
        real.woken_by_requests,
    );
    count("requests that waited for a wake", sim.waited_for_wake, shifted.waited_for_wake, real.waited_for_wake);
    println!(
        "| requests that arrived during a suspend | {} | {} | served (the emulated S3 answers until asleep) | |",
        sim.delayed_by_suspend, shifted.delayed_by_suspend
    );
    let energy = |report: &SimReport| report.energy;
    let (e, t, r) = (energy(sim), energy(shifted), real.energy);
    value("time asleep, s", e.secs.asleep, t.secs.asleep, r.secs.asleep, 1);
    value("time awake (idle + serving), s", awake(&e), awake(&t), awake(&r), 1);
    value("stay incl. the final resume, s", e.wall_secs, t.wall_secs, r.wall_secs, 1);
    value("energy, kJ", e.joules / 1000.0, t.joules / 1000.0, r.joules / 1000.0, 2);
    let kj = |report: &power::EnergyReport| report.idle_baseline_joules / 1000.0;
    value("idle baseline, kJ", kj(&e), kj(&t), kj(&r), 2);
    value("saved vs idle, %", e.saved_percent, t.saved_percent, r.saved_percent, 1);
    let served = real.served_secs / real.requests.saturating_sub(real.woken_by_requests).max(1) as f64;
    let serve = |report: &SimReport| report.energy.secs.serving / report.requests.max(1) as f64 * 1000.0;
    value("service of a request without a wake, ms", serve(sim), serve(shifted), served * 1000.0, 2);
    // The simulator's wait ends when service starts, the real one at the answer.
    let what = "requests' total wait from due (sim: to service; real: to answer), s";
    value(what, sim.total_delay_secs, shifted.total_delay_secs, real.total_wait_secs, 1);
    value("longest wait, s", sim.max_delay_secs, shifted.max_delay_secs, real.max_wait_secs, 2);
}

/// Seconds awake: idle and serving.
fn awake(report: &power::EnergyReport) -> f64 {
    report.secs.idle + report.secs.serving
}
