//! `jettison consolidate VM` and `jettison reintegrate VM`: ask the desktop
//! daemon to move a VM, show its progress, and print what moved.

use std::path::PathBuf;

use daemon_protocol::local::{call, LocalReply, LocalRequest, Report};
use identifiers::VmName;
use indicatif::{ProgressBar, ProgressStyle};

use crate::CmdResult;

/// Arguments of `jettison consolidate`.
#[derive(Debug, clap::Args)]
pub struct ConsolidateArgs {
    /// The VM.
    vm: VmName,
    /// Consolidate even if the VM does not look idle.
    #[arg(long)]
    force: bool,
    /// The desktop daemon's socket.
    #[arg(long, default_value = "/run/jettison/desktop.sock")]
    socket: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `jettison reintegrate`.
#[derive(Debug, clap::Args)]
pub struct ReintegrateArgs {
    /// The VM.
    vm: VmName,
    /// Bring it back from the server's last checkpoint of it, when the server lost the VM (its QEMU died,
    /// or the server restarted); what the VM did after that checkpoint is lost.
    #[arg(long)]
    recover: bool,
    /// The desktop daemon's socket.
    #[arg(long, default_value = "/run/jettison/desktop.sock")]
    socket: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Consolidates a VM.
pub fn consolidate(args: ConsolidateArgs) -> CmdResult {
    let request = LocalRequest::Consolidate { vm: args.vm.clone(), force: args.force };
    let report = call(&args.socket, &request, |reply| {
        if let LocalReply::Log { line } = reply {
            eprintln!("{line}");
        }
    })?;
    let Report::Consolidated(report) = report else {
        return Err(format!("the desktop daemon answered a consolidation with a {}", report.kind()).into());
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} consolidated: down for {:.2} s, descriptor {} bytes, {} zero pages the server will never fetch",
            report.vm, report.downtime_secs, report.descriptor_bytes, report.zero_pages,
        );
    }
    Ok(())
}

/// Reintegrates a VM, with a progress bar for the transfer.
pub fn reintegrate(args: ReintegrateArgs) -> CmdResult {
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let request = LocalRequest::Reintegrate { vm: args.vm.clone(), recover: args.recover };
    let result = call(&args.socket, &request, |reply| match reply {
        LocalReply::Log { line } => bar.println(line),
        LocalReply::Progress { what, done, total } => {
            if bar.is_hidden() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_message(what.clone());
            }
            bar.set_length(*total);
            bar.set_position(*done);
        }
        _ => {}
    });
    bar.finish_and_clear();
    let Report::Reintegrated(report) = result? else {
        return Err("the desktop daemon answered a reintegration with another report".into());
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} is back: {} bytes ({} dirty pages, {} dirty blocks) in {:.2} s",
            report.vm, report.bytes, report.dirty_pages, report.dirty_blocks, report.total_secs,
        );
    }
    Ok(())
}
