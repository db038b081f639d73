//! `parallamr`: Run a prompt template against many provider/model/variable rows of a CSV, in parallel.
//!
//! Only `--help` and `--version` exist so far; the features land with their own issues.

use std::process::ExitCode;

use clap::Parser;
use fanout::ExitStatus;

/// Run a prompt template against many provider/model/variable rows of a CSV, in parallel.
#[derive(Debug, Parser)]
#[command(name = "parallamr", version, long_about = "Run experiment sweeps: a prompt template against many provider/model/variable rows of a CSV, in parallel, with results streamed to CSV as they complete.", after_help = fanout::exit::EXIT_CODES_HELP)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    let mut stderr = std::io::stderr().lock();
    let _ = std::io::Write::write_all(
        &mut stderr,
        b"parallamr: this build only answers --help and --version; nothing was run\n",
    );
    ExitStatus::Usage.into()
}
