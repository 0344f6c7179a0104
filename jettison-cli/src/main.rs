//! The `jettison` command: pairs a desktop with a server, runs the desktop's
//! memserv and diskserv and the server's memtap and cownetdisk, and shows
//! what they are doing.

mod cmd_activity;
mod cmd_completions;
mod cmd_cownetdisk;
mod cmd_daemon;
mod cmd_dirty_set;
mod cmd_diskserv;
mod cmd_drain;
mod cmd_man;
mod cmd_memserv;
mod cmd_memtap;
mod cmd_move;
mod cmd_pair;
mod cmd_power;
mod cmd_status;
mod cmd_vm;
mod cmd_wake;
mod cmd_zero_map;
mod failure;
mod logging;
mod signals;
mod status_document;
mod wake_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::failure::Failure;

/// Partial VM migration for idle desktops.
#[derive(Debug, Parser)]
#[command(name = "jettison", version, about, after_help = failure::EXIT_STATUS_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Desktop: the daemon that runs the VMs and moves them (config: /etc/jettison/desktop.toml).
    Desktop(cmd_daemon::DesktopArgs),
    /// Server: the daemon that hosts consolidated VMs (config: /etc/jettison/server.toml).
    Server(cmd_daemon::ServerArgs),
    /// Move a VM from this desktop to the server (it must be idle, the server must have room).
    #[command(after_help = failure::EXIT_STATUS_HELP)]
    Consolidate(cmd_move::ConsolidateArgs),
    /// Bring a VM back from the server with what it changed there.
    #[command(after_help = failure::EXIT_STATUS_HELP)]
    Reintegrate(cmd_move::ReintegrateArgs),
    /// Desktop: each VM and where it is.
    List(cmd_vm::Daemon),
    /// Desktop: boot a VM that is off.
    Start(cmd_vm::VmArgs),
    /// Desktop: press a VM's power button and wait for its guest to power off.
    Shutdown(cmd_vm::ShutdownArgs),
    /// Desktop: end a VM at once, as pulling the plug.
    Destroy(cmd_vm::VmArgs),
    /// Host shutdown: on a desktop, save every running VM to its checkpoint (resumed at the next start); with the server's --socket, send every hosted VM home.
    SaveAll(cmd_vm::Daemon),
    /// Desktop: the VM's serial console, interactive (Ctrl-] leaves).
    Console(cmd_vm::ConsoleArgs),
    /// Write what a VM's screen shows to a file (on the desktop, or with the server's --socket while consolidated).
    Screenshot(cmd_vm::ScreenshotArgs),
    /// Desktop: open the VM's screen (here, or on the server while consolidated) with remote-viewer.
    View(cmd_vm::ViewArgs),
    /// Make this host's own key (if it has none) and print its public key, for its peers to enroll.
    Pair(cmd_pair::Args),
    /// Trust a peer: enroll its public key under its name (a desktop on the server, the server on a desktop).
    Enroll(cmd_pair::EnrollArgs),
    /// Desktop: serve a stopped VM's RAM file to memtap.
    Memserv(cmd_memserv::Args),
    /// Desktop: list the zero pages of a stopped VM's RAM file.
    ZeroMap(cmd_zero_map::Args),
    /// Server: mount the FUSE filesystem holding consolidated VMs' RAM.
    Memtap(cmd_memtap::Args),
    /// Desktop: serve a stopped VM's disk image to cownetdisk.
    Diskserv(cmd_diskserv::Args),
    /// Server: serve a consolidated VM's disk over NBD, copy-on-write over diskserv.
    Cownetdisk(cmd_cownetdisk::Args),
    /// Hand a VM's writes back: export its dirty units, apply them to the desktop's image.
    DirtySet(cmd_dirty_set::Args),
    /// Where each VM runs and what it has moved: from the local daemon, or memtap's and cownetdisk's state.
    #[command(after_help = failure::EXIT_STATUS_HELP)]
    Status(cmd_status::Args),
    /// Fleet: move a server's VMs to the other servers (home when none has room) and keep it empty until --undo.
    Drain(cmd_drain::Args),
    /// Wake a sleeping desktop with Wake-on-LAN and report how long it took.
    Wake(cmd_wake::Args),
    /// Desktop, for debugging: watch for user idleness and run commands; the daemon does it itself with [activity].
    Activity(cmd_activity::Args),
    /// Desktop: sleep between remote requests while consolidated, and keep the energy ledger.
    Power(cmd_power::Args),
    /// Print the shell completion script for bash, zsh, fish, elvish or PowerShell.
    Completions(cmd_completions::Args),
    /// Write the manual pages (jettison.1, jettison-consolidate.1, ...) into a directory.
    #[command(hide = true)]
    Man(cmd_man::Args),
    /// Server: one hosted VM's memtap and cownetdisk, run by the server daemon (not by hand).
    #[command(name = "vm-storage", hide = true)]
    VmStorage(VmStorageArgs),
}

/// Arguments of `jettison vm-storage`.
#[derive(Debug, clap::Args)]
struct VmStorageArgs {
    /// The spec the server daemon wrote.
    #[arg(long)]
    spec: std::path::PathBuf,
}

fn main() -> ExitCode {
    logging::init();
    // Errors go out as JSON on stdout where JSON was asked for, usage
    // errors included.
    let json = std::env::args_os().skip(1).any(|arg| arg == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if json && e.use_stderr() => {
            println!("{}", Failure::Usage.json(e.render().to_string().trim()));
            return ExitCode::from(Failure::Usage.exit_status());
        }
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Desktop(args) => cmd_daemon::run_desktop(args),
        Command::Server(args) => cmd_daemon::run_server(args),
        Command::Consolidate(args) => cmd_move::consolidate(args),
        Command::Reintegrate(args) => cmd_move::reintegrate(args),
        Command::List(args) => cmd_vm::list(args),
        Command::Start(args) => cmd_vm::start(args),
        Command::Shutdown(args) => cmd_vm::shutdown(args),
        Command::Destroy(args) => cmd_vm::destroy(args),
        Command::SaveAll(args) => cmd_vm::save_all(args),
        Command::Console(args) => cmd_vm::console(args),
        Command::View(args) => cmd_vm::view(args),
        Command::Screenshot(args) => cmd_vm::screenshot(args),
        Command::Pair(args) => cmd_pair::run(args),
        Command::Enroll(args) => cmd_pair::enroll(args),
        Command::Memserv(args) => cmd_memserv::run(args),
        Command::ZeroMap(args) => cmd_zero_map::run(args),
        Command::Memtap(args) => cmd_memtap::run(args),
        Command::Diskserv(args) => cmd_diskserv::run(args),
        Command::Cownetdisk(args) => cmd_cownetdisk::run(args),
        Command::DirtySet(args) => cmd_dirty_set::run(args),
        Command::Status(args) => cmd_status::run(args),
        Command::Drain(args) => cmd_drain::run(args),
        Command::Wake(args) => cmd_wake::run(args),
        Command::Activity(args) => cmd_activity::run(args),
        Command::Power(args) => cmd_power::run(args),
        Command::Completions(args) => cmd_completions::run(args),
        Command::Man(args) => cmd_man::run(args),
        Command::VmStorage(args) => {
            server_daemon::storage::run(&args.spec).map_err(|e| -> Box<dyn std::error::Error> { e })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let failure = Failure::of(e.as_ref());
            let message = wire::chain(e.as_ref());
            if json {
                println!("{}", failure.json(&message));
            } else {
                eprintln!("jettison: {message}");
            }
            ExitCode::from(failure.exit_status())
        }
    }
}

/// What every subcommand returns: any error, printed with its causes.
type CmdResult = Result<(), Box<dyn std::error::Error>>;
