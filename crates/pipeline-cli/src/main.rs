//! `lorchestra`: Run a pipeline's stages in order, the independent jobs of each stage in parallel.
//!
//! Only `--help` and `--version` exist so far; the features land with their own issues.

use std::process::ExitCode;

use clap::Parser;
use fanout::ExitStatus;

/// Run a pipeline's stages in order, the independent jobs of each stage in parallel.
#[derive(Debug, Parser)]
#[command(name = "lorchestra", version, long_about = "Run a pipeline's stages in order; the independent jobs inside a stage run in parallel through a bounded worker pool, and the run state is saved after every job.", after_help = fanout::exit::EXIT_CODES_HELP)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    let mut stderr = std::io::stderr().lock();
    let _ = std::io::Write::write_all(
        &mut stderr,
        b"lorchestra: this build only answers --help and --version; nothing was run\n",
    );
    ExitStatus::Usage.into()
}
