//! `jettison activity`: the activity monitor on its own, for debugging an
//! idle source or trying thresholds in a session. The desktop daemon runs
//! the same monitor itself with `[activity]` in `desktop.toml` (its
//! warning, its own consolidation and reintegration); this command only
//! runs the commands it is given.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use activity_monitor::{
    open_source, CommandActions, IdleSourceKind, MachineConfig, Monitor, Notifier, SourceOptions, DEFAULT_INPUT_DIR,
};

use crate::signals::block_stop_signals;
use crate::CmdResult;

/// Arguments of `jettison activity`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM to consolidate when the user is idle (given to the commands as $JETTISON_VM).
    #[arg(long)]
    vm: String,
    /// Where idleness is read: auto (X11, else logind, else evdev), evdev, x11 or logind.
    #[arg(long, default_value_t = IdleSourceKind::Auto)]
    idle_source: IdleSourceKind,
    /// Seconds without keyboard or pointer input before the warning.
    #[arg(long, default_value_t = 15)]
    idle_secs: u64,
    /// Seconds the warning lasts before consolidation; any input cancels it.
    #[arg(long, default_value_t = 5)]
    warn_secs: u64,
    /// Shell command that consolidates the VM (run with `sh -c`).
    #[arg(long)]
    on_consolidate: Option<String>,
    /// Shell command that reintegrates the VM (run with `sh -c`).
    #[arg(long)]
    on_reintegrate: Option<String>,
    /// X display for the x11 source (default: $DISPLAY).
    #[arg(long)]
    display: Option<String>,
    /// Xauthority file with the display's cookie (default: $XAUTHORITY, else ~/.Xauthority).
    #[arg(long)]
    xauthority: Option<PathBuf>,
    /// logind session for the logind source (default: $XDG_SESSION_ID, else the caller's).
    #[arg(long)]
    session: Option<String>,
    /// Input device directory for the evdev source.
    #[arg(long, default_value = DEFAULT_INPUT_DIR)]
    input_dir: PathBuf,
}

/// Watches the user's input until SIGINT or SIGTERM.
pub fn run(args: Args) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    let options = SourceOptions {
        display: args.display,
        xauthority: args.xauthority,
        session: args.session,
        input_dir: args.input_dir,
    };
    let source = open_source(args.idle_source, &options)?;
    let config = MachineConfig { idle: Duration::from_secs(args.idle_secs), warn: Duration::from_secs(args.warn_secs) };
    println!(
        "activity-monitor: watching {} for {}: warning after {} s idle, consolidation {} s later",
        activity_monitor::IdleSource::name(&source),
        args.vm,
        args.idle_secs,
        args.warn_secs
    );
    let actions = CommandActions::new(&args.vm, args.on_consolidate, args.on_reintegrate, Notifier::session());
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_signal = Arc::clone(&stop);
    std::thread::spawn(move || {
        if let Some(signal) = wait_for_signal() {
            tracing::info!("{signal}: stopping");
        }
        stop_on_signal.store(true, Ordering::Relaxed);
    });
    Monitor::new(source, actions, config).run(&stop)?;
    println!("activity-monitor: stopped");
    Ok(())
}
