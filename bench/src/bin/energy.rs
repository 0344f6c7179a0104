//! Energy benchmark (issue 5): a request-arrival trace replayed through the
//! microsleep policy and the energy ledger on a simulated desktop, for
//! several wait times and the adaptive policy, with the paper's power
//! profile and with a faster-sleeping one, printed beside the paper's
//! figures.
//!
//! What each part is, and why it is there:
//!
//! - **The traces**: [`power::trace::generate`] with the paper-like
//!   model (a working-set burst after consolidation, a 60 s background timer
//!   touching 50-150 pages, larger bursts every 10 minutes on average;
//!   about 99.2% of gaps under 1 s, as the paper measured), over the paper's
//!   two idle periods, 67 and 308 minutes, from one seed.
//! - **The profiles**: Table 1 (suspend 8.38 s, resume 8.58 s; break-even
//!   32.22 s) and the same powers with a 2 s suspend and 2 s resume
//!   (break-even 7.59 s): what a machine that sleeps fast would change.
//! - **The policies**: fixed waits of 0, 2, 6 (the paper's), 10 and 30 s,
//!   and the adaptive policy (Eq. 4 minimised over the gaps seen so far).
//! - **The columns**: wakes (resumes, the one for the user's return
//!   included), requests that arrived during a suspend (they wait for the
//!   suspend and a whole resume), the energy used and the idle baseline (the
//!   same wall time at idle power), the saving against it, and the request
//!   delay summed and at worst, and the wait the policy ended with.
//! - **The paper's row**: 78% saved over 67-minute idle periods and 91% over
//!   308, measured on its deployment, not on these traces: a reference.
//!
//! Nothing is timed: the figures are arithmetic on the trace, so a run is
//! exactly repeatable from its seed. `--svg-dir` also writes the power over
//! time of the 67-minute trace (Table 1, 6 s and adaptive), like the
//! paper's Figure 8.
//!
//! `cargo run --release -p bench --bin energy [-- --seed 1 --svg-dir DIR]`

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use power::simulate::{simulate, SimConfig, SimReport};
use power::svg::{power_chart, ChartLabels};
use power::trace::{generate, RequestTrace, TraceConfig};
use power::{AdaptiveConfig, EnergyLedger, MicrosleepPolicy, PowerProfile};

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// The paper's idle periods and the saving it measured over each, percent.
const PAPER: [(f64, f64); 2] = [(67.0, 78.0), (308.0, 91.0)];
/// The fixed wait times compared, seconds.
const WAITS: [f64; 5] = [0.0, 2.0, 6.0, 10.0, 30.0];

/// Energy saved against staying idle, per wait-time policy and power profile.
#[derive(Debug, Parser)]
struct Args {
    /// Seed of the request traces.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Time the desktop takes to serve one request, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    serve_ms: f64,
    /// Write power-over-time charts (SVG) of the 67-minute trace here.
    #[arg(long)]
    svg_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("energy failed: {}", wire::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> BenchResult<()> {
    let sim = SimConfig { serve_secs: args.serve_ms / 1000.0 };
    let fast = PowerProfile::TABLE_1.with_transition_secs(2.0, 2.0);
    let profiles = [("Table 1", PowerProfile::TABLE_1), ("2 s/2 s", fast)];
    for (name, profile) in &profiles {
        profile.validate(name)?;
        println!(
            "profile {name}: suspend {} s, resume {} s, break-even t_b {:.2} s, E_mu {:.0} J",
            profile.suspend_secs,
            profile.resume_secs,
            profile.break_even_secs(),
            profile.wasted_microsleep_joules()
        );
    }

    let traces: Vec<(f64, RequestTrace)> = PAPER
        .iter()
        .map(|&(minutes, _)| (minutes, generate(&TraceConfig::paper_like(args.seed, minutes * 60.0))))
        .collect();
    for (minutes, trace) in &traces {
        println!(
            "trace {minutes} min (seed {}): {} requests, {:.2}% of gaps under 1 s, {} gaps of 1 s or more",
            args.seed,
            trace.arrivals.len(),
            100.0 * trace.fraction_of_gaps_below(1.0),
            trace.gaps().filter(|&gap| gap >= 1.0).count()
        );
    }
    println!();
    println!("| idle period | profile | policy | wakes | during suspend | energy kJ | idle kJ | saved vs idle | total delay s | max delay s | t_w at end s |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");

    for ((minutes, trace), (_, paper_saved)) in traces.iter().zip(PAPER) {
        for (name, profile) in &profiles {
            for mut policy in policies(*profile)? {
                let (report, ledger) = simulate(trace, &mut policy, sim)?;
                print_row(*minutes, name, &report);
                if let Some(dir) = &args.svg_dir {
                    let six = report.policy == "fixed 6 s" || report.policy == "adaptive";
                    if *minutes == PAPER[0].0 && *name == "Table 1" && six {
                        write_chart(dir, *minutes, &report, &ledger)?;
                    }
                }
            }
        }
        println!(
            "| {minutes} min | paper's Table 1 desktop | paper (fixed 6 s, its deployment) | - | - | - | - | {paper_saved:.0}% | - | - | 6 |"
        );
    }
    Ok(())
}

/// The fixed waits, then the adaptive policy.
fn policies(profile: PowerProfile) -> BenchResult<Vec<MicrosleepPolicy>> {
    let mut all = WAITS.iter().map(|&wait| MicrosleepPolicy::fixed(profile, wait)).collect::<Result<Vec<_>, _>>()?;
    all.push(MicrosleepPolicy::adaptive(profile, AdaptiveConfig::default())?);
    Ok(all)
}

fn print_row(minutes: f64, profile: &str, report: &SimReport) {
    let energy = &report.energy;
    println!(
        "| {minutes} min | {profile} | {} | {} | {} | {:.1} | {:.1} | {:.1}% | {:.1} | {:.2} | {} |",
        report.policy,
        report.wakes,
        report.delayed_by_suspend,
        energy.joules / 1000.0,
        energy.idle_baseline_joules / 1000.0,
        energy.saved_percent,
        report.total_delay_secs,
        report.max_delay_secs,
        report.final_wait_secs
    );
}

fn write_chart(dir: &std::path::Path, minutes: f64, report: &SimReport, ledger: &EnergyLedger) -> BenchResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let labels = ChartLabels {
        title: format!("desktop power, {minutes}-minute idle period, Table 1, {}", report.policy),
        idle_watts: ledger.profile().idle_watts,
        saved_percent: report.energy.saved_percent,
    };
    let path = dir.join(format!("energy-{minutes}min-{}.svg", report.policy.replace(' ', "-")));
    std::fs::write(&path, power_chart(&ledger.power_trace(), &labels))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("(wrote {})", path.display());
    Ok(())
}
