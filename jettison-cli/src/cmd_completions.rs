//! `jettison completions SHELL`: the shell completion script, made from the
//! same command definitions that parse the command line, so it can never
//! offer a subcommand or an option the binary does not have.
//!
//! The Debian package installs the bash, zsh and fish scripts at build time
//! (`scripts/package`); from a source build, for example:
//! `jettison completions bash > /usr/share/bash-completion/completions/jettison`.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::CmdResult;

/// Arguments of `jettison completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    shell: Shell,
}

/// Prints the completion script for `args.shell` on standard output.
pub fn run(args: Args) -> CmdResult {
    let mut command = crate::Cli::command();
    let name = command.get_name().to_owned();
    // Made in memory first: clap_complete panics when its writer fails,
    // and a reader that stops early (`| head`) is no error of ours.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(Into::into),
    }
}
