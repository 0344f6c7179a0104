//! Fleet simulator (issue 14, point 5): 10 to 500 desktops over a
//! weekday, their VMs moved to consolidation servers by full or partial
//! migration over one shared GigE link, the idle timeout swept from 1 to
//! 60 minutes, with this project's measured sizes and times. It prints
//! the tables behind the paper's Figures 10 and 11 beside the paper's
//! figures, and draws them as SVG.
//!
//! The model is in the `bench::fleet` module's docs: the users' days
//! (`fleet::day`), the fair-shared link (`fleet::shared_link`), the
//! desktop's saving over a stay from the power crate's simulated desktop
//! (`fleet::stay`), and the day's events (`fleet::sim`). Every figure the
//! simulator takes is printed first with its source (`fleet::measured`).
//!
//! - **Figure 10**: `--desktops` desktops (100), each idle timeout of
//!   `--timeouts`: energy saved against network traffic and against
//!   reintegration latency, full and partial.
//! - **Figure 11**: each desktop count of `--counts` at the `--timeout`
//!   (5 min): latency, network and energy against the number of desktops,
//!   servers needed and USD per desktop per year at the paper's
//!   electricity price.
//!
//! Nothing is timed: the same seed gives the same output.
//!
//! `cargo run --release -p bench --bin fleet [-- --seed 1 --out target/fleet]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bench::fleet::day::{DayModel, UserDay, DAY_END_SECS, DAY_START_SECS};
use bench::fleet::measured::{MeasuredFigures, GIB, PAPER};
use bench::fleet::{Fleet, FleetError, FleetReport, RunConfig, Scheme};
use clap::Parser;
use power::svg::{span_rows_chart, xy_chart, SpanRows, XyChart, XySeries};

/// The colours of the two schemes in the charts.
const FULL_COLOUR: &str = "#c0392b";
const PARTIAL_COLOUR: &str = "#2c6fbb";

/// Full against partial migration for an office of desktops over a day.
#[derive(Debug, Parser)]
struct Args {
    /// Seed of the users' days, the sizes drawn and the desktop's requests
    /// after the recorded trace.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Desktops of the Figure 10 sweep.
    #[arg(long, default_value_t = 100)]
    desktops: usize,
    /// Idle timeouts of the Figure 10 sweep, minutes.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,5,7,10,15,20,30,45,60")]
    timeouts: Vec<f64>,
    /// Desktop counts of the Figure 11 sweep.
    #[arg(long, value_delimiter = ',', default_value = "10,25,50,100,200,300,400,500")]
    counts: Vec<usize>,
    /// Idle timeout of the Figure 11 sweep, minutes.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// The desktop's recorded stay (a fetch trace, `.gz` or plain).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Where the SVG charts go.
    #[arg(long, default_value = "target/fleet")]
    out: PathBuf,
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
enum FleetBenchError {
    /// An idle timeout that is not a positive number of minutes.
    #[error("an idle timeout must be positive minutes, not {0}")]
    BadTimeout(f64),
    /// A fleet of no desktops.
    #[error("a fleet needs at least one desktop")]
    NoDesktops,
    /// The fleet could not be set up.
    #[error("setting up the fleet")]
    Setup(#[from] FleetError),
    /// A chart could not be written.
    #[error("writing {}", path.display())]
    WriteChart {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet failed: {}", wire::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), FleetBenchError> {
    if let Some(&bad) = args.timeouts.iter().chain([&args.timeout]).find(|m| !(m.is_finite() && **m > 0.0)) {
        return Err(FleetBenchError::BadTimeout(bad));
    }
    if args.desktops == 0 || args.counts.contains(&0) {
        return Err(FleetBenchError::NoDesktops);
    }
    let mut measured = MeasuredFigures::ours();
    if let Some(trace) = &args.trace {
        measured.desktop_trace = trace.clone();
    }
    let fleet = Fleet::build(measured, args.seed)?;
    print_inputs(&fleet);
    let days = print_days(args.seed, args.timeout);

    let both = |desktops: usize, minutes: f64| {
        let config = RunConfig { desktops, idle_timeout_secs: minutes * 60.0, seed: args.seed };
        [fleet.run(Scheme::Full, config), fleet.run(Scheme::Partial, config)]
    };

    println!();
    println!("Figure 10: {} desktops, idle timeout swept (weekday, seed {}):", args.desktops, args.seed);
    println!();
    println!("| timeout min | scheme | saved kWh/day | network GiB/day | network % | reintegration s mean | max | consolidation s mean | consolidations | aborted | on server % | servers |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let sweep: Vec<(f64, [FleetReport; 2])> =
        args.timeouts.iter().map(|&minutes| (minutes, both(args.desktops, minutes))).collect();
    for (minutes, reports) in &sweep {
        for report in reports {
            println!(
                "| {minutes} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {} | {} | {:.1} | {} |",
                report.scheme,
                report.desktop_saved_kwh,
                report.network_bytes / GIB,
                report.network_percent,
                report.mean_reintegration_secs,
                report.max_reintegration_secs,
                report.mean_consolidation_secs,
                report.consolidations,
                report.aborted,
                report.on_server_percent,
                report.servers
            );
        }
    }
    print_sweet_spot(&sweep);

    println!();
    println!("Figure 11: idle timeout {} min, desktops swept (weekday, seed {}):", args.timeout, args.seed);
    println!();
    println!("| desktops | scheme | reintegration s mean | max | network GiB/day | network % | desktops' saved kWh/day | servers | servers' kWh/day | net kWh/day | USD/desktop/yr | net of servers |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let counts: Vec<(usize, [FleetReport; 2])> = args.counts.iter().map(|&n| (n, both(n, args.timeout))).collect();
    for (desktops, reports) in &counts {
        for report in reports {
            let (gross, net) = report.usd_per_desktop_year(PAPER.usd_per_kwh);
            println!(
                "| {desktops} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {gross:.2} | {net:.2} |",
                report.scheme,
                report.mean_reintegration_secs,
                report.max_reintegration_secs,
                report.network_bytes / GIB,
                report.network_percent,
                report.desktop_saved_kwh,
                report.servers,
                report.server_kwh,
                report.desktop_saved_kwh - report.server_kwh,
            );
        }
    }
    print_against_paper(&fleet, &counts);

    write_charts(&args.out, args.desktops, args.timeout, &sweep, &counts)?;
    write_days_chart(&args.out, args.seed, &days)
}

/// The figures taken, the desktop's saving over a stay, and the users'
/// days, each beside the paper's.
fn print_inputs(fleet: &Fleet) {
    println!("Fleet simulator: full against partial migration over one shared link, a weekday.");
    println!("Figures taken (ours are this project's measurements, RESULTS.md; the paper's where we have none):");
    println!();
    println!("| figure | value | source |");
    println!("|---|---|---|");
    for [name, value, source] in fleet.measured.rows() {
        println!("| {name} | {value} | {source} |");
    }
    println!();
    println!("The desktop's saving over a stay of its VM on the server (power::simulate, Table 1):");
    println!();
    println!("| stay | full: asleep throughout | partial: our trace, then the first-touch model, fixed 6 s | paper's deployment (partial) |");
    println!("|---:|---:|---:|---:|");
    for (minutes, paper) in [(10.0, "7-16% (under 10 min)"), (67.0, "78%"), (308.0, "91%")] {
        println!(
            "| {minutes} min | {:.1}% | {:.1}% | {paper} |",
            fleet.full_stay.saved_percent(minutes * 60.0),
            fleet.partial_stay.saved_percent(minutes * 60.0)
        );
    }
}

/// Desktops whose days [`print_days`] describes (the most any run has).
const DESCRIBED_DAYS: usize = 500;
/// Desktops whose days the Figure 1 chart draws.
const DRAWN_DAYS: usize = 100;

/// The shape of the users' days the runs draw, beside the paper's Figure 1
/// and its published idle share; returns the days.
fn print_days(seed: u64, timeout_minutes: f64) -> Vec<UserDay> {
    const DESKTOPS: usize = DESCRIBED_DAYS;
    let model = DayModel { seed };
    let days: Vec<UserDay> = (0..DESKTOPS).map(|desktop| model.day(desktop)).collect();
    let timeout = timeout_minutes * 60.0;
    let hours = |secs: f64| secs / 3600.0;
    let clock = |secs: f64| format!("{:02}:{:02}", (secs / 3600.0) as u32 % 24, (secs / 60.0) as u32 % 60);
    let mut arrivals: Vec<f64> = days.iter().map(|day| day.idle[0].end_secs).collect();
    arrivals.sort_by(f64::total_cmp);
    let daytime = |day: &UserDay| day.idle.len().saturating_sub(2);
    let long_breaks: usize =
        days.iter().map(|day| day.idle[1..day.idle.len() - 1].iter().filter(|p| p.secs() > timeout).count()).sum();
    let idle_past: f64 = days.iter().map(|day| day.idle_past(timeout)).sum::<f64>() / DESKTOPS as f64;
    let share_at = |secs: f64| 100.0 * days.iter().filter(|day| !day.active_at(secs)).count() as f64 / DESKTOPS as f64;
    println!();
    println!(
        "Users' days ({DESKTOPS} desktops, seed {seed}; the shape of the paper's Figure 1, parameters ours): 90% arrive {}-{}; \
         {:.1} breaks a day, {:.1} of them over {timeout_minutes} min (lunch included); idle past {timeout_minutes} min {:.1} h a day \
         ({:.0}%; paper {:.0}% of a weekday on the server at 5 min); away at 10:30 {:.0}%, 12:30 {:.0}%, 15:30 {:.0}%",
        clock(arrivals[DESKTOPS / 20]),
        clock(arrivals[DESKTOPS - DESKTOPS / 20]),
        days.iter().map(daytime).sum::<usize>() as f64 / DESKTOPS as f64,
        long_breaks as f64 / DESKTOPS as f64,
        hours(idle_past),
        100.0 * idle_past / (24.0 * 3600.0),
        PAPER.on_server_percent,
        share_at(10.5 * 3600.0),
        share_at(12.5 * 3600.0),
        share_at(15.5 * 3600.0),
    );
    days
}

/// The timeout that saves the most energy, and the smallest one within
/// 5% of that: where the paper finds its sweet spot (5-10 min).
fn print_sweet_spot(sweep: &[(f64, [FleetReport; 2])]) {
    println!();
    for (k, scheme) in [Scheme::Full, Scheme::Partial].into_iter().enumerate() {
        let best = sweep.iter().map(|(_, r)| r[k].desktop_saved_kwh).fold(f64::NEG_INFINITY, f64::max);
        let Some((at_best, _)) = sweep.iter().find(|(_, r)| r[k].desktop_saved_kwh == best) else { continue };
        let longest_close = sweep.iter().rev().find(|(_, r)| r[k].desktop_saved_kwh >= 0.95 * best);
        println!(
            "{scheme}: most saved at a {at_best} min timeout ({best:.1} kWh/day); the longest timeout within 5% of that: {} min (paper: a sweet spot at 5-10 min for both)",
            longest_close.map_or(*at_best, |(m, _)| *m)
        );
    }
}

/// Partial against full at each count, and the paper's figures beside.
fn print_against_paper(fleet: &Fleet, counts: &[(usize, [FleetReport; 2])]) {
    println!();
    println!("Partial against full, and the paper's figures:");
    println!();
    println!("| desktops | partial's energy saved, % of full's | partial's network, % of full's | full's latency / partial's |");
    println!("|---:|---:|---:|---:|");
    for (desktops, [full, partial]) in counts {
        println!(
            "| {desktops} | {:.0}% | {:.1}% | {:.0}x |",
            100.0 * partial.desktop_saved_kwh / full.desktop_saved_kwh,
            100.0 * partial.network_bytes / full.network_bytes,
            full.mean_reintegration_secs / partial.mean_reintegration_secs
        );
    }
    println!(
        "| paper | {:.0}% at 10 to {:.0}% at 500 | under 10% | over 100x at 100, about 1000x at 500 |",
        PAPER.partial_over_full_energy_percent.0, PAPER.partial_over_full_energy_percent.1
    );
    println!();
    if let Some((_, [full, partial])) = counts.iter().find(|(n, _)| *n == 100) {
        println!(
            "at 100 desktops: full migration's reintegration takes {:.0} s on average (paper {:.0} s), its traffic is {:.0}% of the link (paper {:.0}%); VMs are on the server {:.0}% (full) and {:.0}% (partial) of the day (paper {:.0}%)",
            full.mean_reintegration_secs,
            PAPER.full_latency_secs_at_100,
            full.network_percent,
            PAPER.full_network_percent_at_100,
            full.on_server_percent,
            partial.on_server_percent,
            PAPER.on_server_percent
        );
    }
    if let Some((n, [full, partial])) = counts.iter().max_by_key(|(n, _)| *n) {
        let (full_gross, full_net) = full.usd_per_desktop_year(PAPER.usd_per_kwh);
        let (partial_gross, partial_net) = partial.usd_per_desktop_year(PAPER.usd_per_kwh);
        println!(
            "at {n} desktops, USD {} per kWh, every day a weekday: partial saves USD {partial_gross:.2} per desktop per year ({partial_net:.2} net of its {} servers), full USD {full_gross:.2} ({full_net:.2} net of its {}); paper USD {:.2} and {:.2}, servers not subtracted",
            PAPER.usd_per_kwh,
            partial.servers,
            full.servers,
            PAPER.usd_per_desktop_year.0,
            PAPER.usd_per_desktop_year.1
        );
    }
    println!(
        "VMs per 16 GiB server: {} partial (our median working set), {} full; paper {} and {}",
        fleet.measured.partial_vms_per_server(),
        fleet.measured.full_vms_per_server(),
        PAPER.partial_vms_per_server,
        PAPER.full_vms_per_server
    );
}

/// The two schemes as chart series of `point` over `rows`, labelled by
/// `label`.
fn series<K: Copy>(
    rows: &[(K, [FleetReport; 2])],
    point: impl Fn(&FleetReport) -> (f64, f64),
    label: impl Fn(K) -> String,
    joined: bool,
) -> Vec<XySeries> {
    [(0, "full migration", FULL_COLOUR), (1, "partial migration (Jettison)", PARTIAL_COLOUR)]
        .into_iter()
        .map(|(k, name, colour)| XySeries {
            name: name.to_owned(),
            colour: colour.to_owned(),
            points: rows.iter().map(|(_, r)| point(&r[k])).collect(),
            labels: rows.iter().map(|&(key, _)| label(key)).collect(),
            joined,
        })
        .collect()
}

fn write_charts(
    dir: &Path,
    desktops: usize,
    timeout: f64,
    sweep: &[(f64, [FleetReport; 2])],
    counts: &[(usize, [FleetReport; 2])],
) -> Result<(), FleetBenchError> {
    std::fs::create_dir_all(dir).map_err(|source| FleetBenchError::WriteChart { path: dir.to_owned(), source })?;
    let minutes = |m: f64| format!("{m} min");
    let note =
        "ours: this project's measured sizes and times; the paper's Figures 10 and 11 have the same axes".to_owned();
    let charts = [
        (
            "fig10-energy-network.svg",
            XyChart {
                title: format!("Energy saved against network traffic, {desktops} desktops, idle timeout 1-60 min"),
                x_label: "network traffic (GiB/day, log)".into(),
                y_label: "desktops' energy saved (kWh/day)".into(),
                x_log: true,
                y_log: false,
                series: series(sweep, |r| (r.network_bytes / GIB, r.desktop_saved_kwh), minutes, true),
                notes: vec![note.clone()],
            },
        ),
        (
            "fig10-energy-latency.svg",
            XyChart {
                title: format!(
                    "Energy saved against reintegration latency, {desktops} desktops, idle timeout 1-60 min"
                ),
                x_label: "mean reintegration latency (s, log)".into(),
                y_label: "desktops' energy saved (kWh/day)".into(),
                x_log: true,
                y_log: false,
                series: series(sweep, |r| (r.mean_reintegration_secs, r.desktop_saved_kwh), minutes, true),
                notes: vec![note.clone()],
            },
        ),
        (
            "fig11-latency.svg",
            XyChart {
                title: format!("Reintegration latency against desktops, idle timeout {timeout} min"),
                x_label: "desktops".into(),
                y_label: "mean reintegration latency (s, log)".into(),
                x_log: false,
                y_log: true,
                series: series(
                    counts,
                    |r| (r.config.desktops as f64, r.mean_reintegration_secs),
                    |_| String::new(),
                    true,
                ),
                notes: vec![note.clone()],
            },
        ),
        (
            "fig11-network.svg",
            XyChart {
                title: format!("Network traffic against desktops, idle timeout {timeout} min"),
                x_label: "desktops".into(),
                y_label: "network traffic (% of the link's day, log)".into(),
                x_log: false,
                y_log: true,
                series: series(counts, |r| (r.config.desktops as f64, r.network_percent), |_| String::new(), true),
                notes: vec![note.clone()],
            },
        ),
        (
            "fig11-energy.svg",
            XyChart {
                title: format!("Energy saved against desktops, idle timeout {timeout} min"),
                x_label: "desktops".into(),
                y_label: "desktops' energy saved (kWh/day)".into(),
                x_log: false,
                y_log: false,
                series: series(counts, |r| (r.config.desktops as f64, r.desktop_saved_kwh), |_| String::new(), true),
                notes: vec![note],
            },
        ),
    ];
    for (name, chart) in charts {
        write_chart(&dir.join(name), &xy_chart(&chart))?;
    }
    Ok(())
}

/// The first desktops' days as the paper's Figure 1 draws its users': a
/// row per desktop, filled while the user is at it.
fn write_days_chart(dir: &Path, seed: u64, days: &[UserDay]) -> Result<(), FleetBenchError> {
    let rows = days
        .iter()
        .take(DRAWN_DAYS)
        .map(|day| day.idle.windows(2).map(|pair| (pair[0].end_secs, pair[1].start_secs)).collect())
        .collect();
    let ticks = (0..=6).map(|k| (DAY_START_SECS + f64::from(k) * 4.0 * 3600.0, format!("{:02}:00", (4 + 4 * k) % 24)));
    let chart = SpanRows {
        title: format!("Users at their desktops, {DRAWN_DAYS} weekdays (seed {seed}), like the paper's Figure 1"),
        x_label: "time of day (filled: the user is active)".into(),
        x_range: (DAY_START_SECS, DAY_END_SECS),
        ticks: ticks.collect(),
        rows,
        colour: "#34618f".into(),
        notes: vec!["our model of an office (bench::fleet::day), not the paper's traces".into()],
    };
    write_chart(&dir.join("fig1-days.svg"), &span_rows_chart(&chart))
}

/// Writes one chart and says so.
fn write_chart(path: &Path, svg: &str) -> Result<(), FleetBenchError> {
    std::fs::write(path, svg).map_err(|source| FleetBenchError::WriteChart { path: path.to_owned(), source })?;
    println!("(wrote {})", path.display());
    Ok(())
}
