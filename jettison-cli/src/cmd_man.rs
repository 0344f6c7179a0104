//! `jettison man DIR` (hidden; for packagers): writes the manual pages,
//! made from the same command definitions that parse the command line:
//! `jettison.1` and one page per subcommand, named as git names its own
//! (`jettison-consolidate.1`, `jettison-dirty-set-export.1`), so that
//! `man jettison-consolidate` finds it. The pages are plain roff, not
//! compressed; `scripts/package` gzips them into `/usr/share/man/man1`.
//!
//! Hidden because a user reads the pages rather than makes them; it is
//! documented here and in `scripts/package`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::CmdResult;

/// Arguments of `jettison man`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to write the pages into (created if missing).
    dir: PathBuf,
}

/// Why the manual pages could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManError {
    /// The output directory could not be created.
    #[error("cannot create the directory {}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    /// A page could not be written.
    #[error("cannot write the manual page {}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes every page into `args.dir` and lists the files it wrote.
pub fn run(args: Args) -> CmdResult {
    std::fs::create_dir_all(&args.dir).map_err(|source| ManError::CreateDir { path: args.dir.clone(), source })?;
    let mut root = crate::Cli::command().disable_help_subcommand(true);
    // Building the root names every subcommand for its page:
    // display name `jettison-consolidate`, usage `jettison consolidate`.
    root.build();
    let version = root.get_version().unwrap_or_default().to_owned();
    for path in write_pages(&root, &args.dir, &version)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes the page of `command` and of each of its visible subcommands,
/// depth first; returns the paths written.
fn write_pages(command: &clap::Command, dir: &Path, version: &str) -> Result<Vec<PathBuf>, ManError> {
    let page = clap_mangen::Man::new(command.clone()).source(format!("Jettison {version}")).manual("Jettison manual");
    let path = dir.join(page.get_filename());
    let mut text = Vec::new();
    page.render(&mut text)
        .and_then(|()| std::fs::write(&path, &text))
        .map_err(|source| ManError::Write { path: path.clone(), source })?;
    let mut written = vec![path];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        written.extend(write_pages(sub, dir, version)?);
    }
    Ok(written)
}
