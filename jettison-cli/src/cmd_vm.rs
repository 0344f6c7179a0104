//! The libvirt-like lifecycle of a desktop's VMs: `jettison list`, `start`,
//! `shutdown`, `destroy`, `save-all`, `console` and `view`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;

use daemon_protocol::local::{call, LocalRequest, Report, ViewTarget, VmLocation};
use identifiers::VmName;

use crate::CmdResult;

/// The desktop daemon's socket, for every command here.
#[derive(Debug, clap::Args)]
pub struct Daemon {
    /// The desktop daemon's socket.
    #[arg(long, default_value = "/run/jettison/desktop.sock")]
    socket: PathBuf,
}

/// Arguments of the commands that name one VM.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// The VM.
    vm: VmName,
    #[command(flatten)]
    daemon: Daemon,
}

/// Arguments of `jettison shutdown`.
#[derive(Debug, clap::Args)]
pub struct ShutdownArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Seconds to wait for the guest to power off.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// Arguments of `jettison console`.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// The VM.
    vm: VmName,
    /// The desktop daemon's run directory (where each VM's sockets are).
    #[arg(long, default_value = "/run/jettison")]
    run_dir: PathBuf,
}

/// Arguments of `jettison screenshot`.
#[derive(Debug, clap::Args)]
pub struct ScreenshotArgs {
    /// The VM.
    vm: VmName,
    /// The file to write: PNG if it ends in .png, else PPM.
    file: PathBuf,
    /// The socket of the daemon whose host runs the VM (the desktop's, or the server's while it is consolidated).
    #[arg(long, default_value = "/run/jettison/desktop.sock")]
    socket: PathBuf,
}

/// Arguments of `jettison view`.
#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Print where the screen is (a SPICE URI, or a remote-viewer file with the ticket) instead of opening it.
    #[arg(long)]
    print: bool,
    /// Open it full screen, as the desk shows it.
    #[arg(long)]
    full_screen: bool,
    /// Keep showing it: when the VM moves (to the server or home), or is started again after it stopped, open it
    /// where it runs now. Ends when the viewer is closed while the screen is there.
    #[arg(long)]
    follow: bool,
}

fn where_is(on: VmLocation) -> &'static str {
    match on {
        VmLocation::Desktop => "runs on this desktop",
        VmLocation::Server => "runs on the server",
        VmLocation::Moving => "is moving",
        VmLocation::Off => "is off",
        VmLocation::Saved => "is saved to its checkpoint",
    }
}

fn vm_state(socket: &std::path::Path, request: LocalRequest) -> CmdResult {
    match call(socket, &request, |_| {})? {
        Report::VmState { vm, on } => {
            println!("{vm} {}", where_is(on));
            Ok(())
        }
        other => Err(format!("the desktop daemon answered with a {}", other.kind()).into()),
    }
}

/// `jettison list`: each VM and where it is.
pub fn list(args: Daemon) -> CmdResult {
    let Report::DesktopStatus(status) = call(&args.socket, &LocalRequest::Status, |_| {})? else {
        return Err("the desktop daemon answered a status request with something else".into());
    };
    println!("{:<14} {:<10} LAST FAILURE", "VM", "STATE");
    for vm in &status.vms {
        let state = match vm.on {
            VmLocation::Desktop if vm.running_here => "running",
            VmLocation::Desktop => "stopped",
            VmLocation::Server => "server",
            VmLocation::Moving => "moving",
            VmLocation::Off => "off",
            VmLocation::Saved => "saved",
        };
        // One line a VM: QEMU's output in an error is joined onto it.
        let error =
            vm.error.as_deref().map_or_else(|| "-".to_owned(), |e| e.split_whitespace().collect::<Vec<_>>().join(" "));
        println!("{:<14} {:<10} {error}", vm.vm, state);
    }
    Ok(())
}

/// `jettison start VM`.
pub fn start(args: VmArgs) -> CmdResult {
    vm_state(&args.daemon.socket, LocalRequest::Start { vm: args.vm })
}

/// `jettison shutdown VM`.
pub fn shutdown(args: ShutdownArgs) -> CmdResult {
    vm_state(&args.vm.daemon.socket, LocalRequest::Shutdown { vm: args.vm.vm, timeout_secs: args.timeout })
}

/// `jettison destroy VM`.
pub fn destroy(args: VmArgs) -> CmdResult {
    vm_state(&args.daemon.socket, LocalRequest::Destroy { vm: args.vm })
}

/// `jettison save-all`: what a host shutdown runs before the daemon stops
/// (on a desktop, the VMs saved to their checkpoints; on the server, sent
/// home).
pub fn save_all(args: Daemon) -> CmdResult {
    match call(&args.socket, &LocalRequest::SaveAll, |_| {})? {
        Report::Saved { vms } if vms.is_empty() => println!("no VM was running here"),
        Report::Saved { vms } => {
            let names: Vec<&str> = vms.iter().map(VmName::as_str).collect();
            println!("saved to their checkpoints: {}", names.join(", "));
        }
        Report::SentHome { home, stayed } => {
            if home.is_empty() && stayed.is_empty() {
                println!("no VM was running here");
            }
            if !home.is_empty() {
                println!("sent home: {}", home.join(", "));
            }
            if !stayed.is_empty() {
                println!("did not go home (their desktops resume them from their checkpoints): {}", stayed.join(", "));
            }
        }
        other => return Err(format!("the daemon answered with a {}", other.kind()).into()),
    }
    Ok(())
}

/// `jettison console VM`: the guest's serial console, interactive, until Ctrl-].
pub fn console(args: ConsoleArgs) -> CmdResult {
    let path = args.run_dir.join(args.vm.as_str()).join("console.sock");
    let stream = UnixStream::connect(&path).map_err(|e| {
        format!("cannot open {}'s console {} ({e}): is it running on this desktop?", args.vm, path.display())
    })?;
    eprintln!("connected to {}'s serial console; Ctrl-] leaves", args.vm);
    let _raw = RawTerminal::enter();
    let mut from_vm = stream.try_clone()?;
    std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_vm.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    });
    let mut to_vm = stream;
    let mut input = std::io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // Ctrl-] (0x1d) leaves, as in telnet and virsh console.
        let end = buf[..n].iter().position(|&b| b == 0x1d);
        to_vm.write_all(&buf[..end.unwrap_or(n)])?;
        if end.is_some() {
            break;
        }
    }
    Ok(())
}

/// The terminal in raw mode while it lives, when standard input is one.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else { return RawTerminal(None) };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, saved);
        }
    }
}

/// `jettison view VM`: opens the VM's screen with remote-viewer (virt-viewer);
/// with `--follow`, opens it again wherever the VM runs next.
pub fn view(args: ViewArgs) -> CmdResult {
    let vm = args.vm.vm.clone();
    let ask = || -> Result<ViewTarget, Box<dyn std::error::Error>> {
        match call(&args.vm.daemon.socket, &LocalRequest::View { vm: vm.clone() }, |_| {})? {
            Report::View(target) => Ok(target),
            other => Err(format!("the desktop daemon answered a view request with a {}", other.kind()).into()),
        }
    };
    let mut target = ask()?;
    if args.print {
        print!("{}", viewer_text(&vm, &target, args.full_screen).1);
        return Ok(());
    }
    loop {
        let status = open_viewer(&vm, &target, args.full_screen)?;
        if !args.follow {
            return if status.success() { Ok(()) } else { Err(format!("remote-viewer ended with {status}").into()) };
        }
        // The viewer ends when the user closes it, or when the VM's SPICE
        // server goes away: it moved (the daemon answers once the move is
        // done, with the new place), or it stopped here (powered off, shut
        // down, destroyed). Follow it while it is away; only a viewer closed
        // while its screen is still there ends `--follow`.
        let mut waited = false;
        target = loop {
            match ask() {
                Ok(next) if next != target => break next,
                Ok(same) if screen_answers(&same) => {
                    if !waited {
                        return Ok(());
                    }
                    break same;
                }
                Ok(_) | Err(_) => {
                    waited = true;
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        };
    }
}

/// Whether the SPICE server of `target` accepts a connection now.
fn screen_answers(target: &ViewTarget) -> bool {
    match target {
        ViewTarget::Local { uri } => {
            uri.strip_prefix("spice+unix://").is_some_and(|path| UnixStream::connect(path).is_ok())
        }
        ViewTarget::Remote { host, port, .. } => std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))
            .ok()
            .and_then(|mut addrs| addrs.next())
            .is_some_and(|addr| std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()),
    }
}

/// A SPICE URI for `target`, or a remote-viewer connection file (with the
/// ticket); the boolean says which.
fn viewer_text(vm: &VmName, target: &ViewTarget, full_screen: bool) -> (bool, String) {
    match target {
        ViewTarget::Local { uri } => (false, format!("{uri}\n")),
        ViewTarget::Remote { host, port, ticket } => (
            true,
            format!(
                "[virt-viewer]\ntype=spice\nhost={host}\nport={port}\npassword={ticket}\ntitle={vm} (on the server)\n\
                 fullscreen={}\n",
                u8::from(full_screen)
            ),
        ),
    }
}

/// Runs remote-viewer on `target` until it ends.
fn open_viewer(
    vm: &VmName,
    target: &ViewTarget,
    full_screen: bool,
) -> Result<std::process::ExitStatus, Box<dyn std::error::Error>> {
    let mut viewer = Command::new("remote-viewer");
    if full_screen {
        viewer.arg("--full-screen");
    }
    viewer.args(["--title", vm.as_str()]);
    // The ticket goes in a file only we can read, never on a command line.
    let mut _connection_file = None;
    match viewer_text(vm, target, full_screen) {
        (false, uri) => {
            viewer.arg(uri.trim_end());
        }
        (true, text) => {
            let mut vv = tempfile::Builder::new().prefix("jettison-view-").suffix(".vv").tempfile()?;
            vv.write_all(text.as_bytes())?;
            viewer.arg(vv.path());
            _connection_file = Some(vv);
        }
    }
    let status = viewer
        .status()
        .map_err(|e| format!("cannot run remote-viewer ({e}): install virt-viewer to see {vm}'s screen"))?;
    Ok(status)
}

/// `jettison screenshot VM FILE`: what the VM's screen shows, from the host
/// that runs it. The daemon writes its own file; this command, with the
/// user's rights, copies it to FILE.
pub fn screenshot(args: ScreenshotArgs) -> CmdResult {
    let png = args.file.extension().is_some_and(|e| e == "png");
    match call(&args.socket, &LocalRequest::Screenshot { vm: args.vm.clone(), png }, |_| {})? {
        Report::Screenshot { file } => {
            std::fs::copy(&file, &args.file).map_err(|e| {
                format!("cannot copy the screenshot {} to {} ({e})", file.display(), args.file.display())
            })?;
            println!("{}", args.file.display());
        }
        other => return Err(format!("the daemon answered with a {}", other.kind()).into()),
    }
    Ok(())
}
