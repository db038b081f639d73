//! `export-nb`: see `export-nb --help` and the crate docs of `export_nb`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else: in a Slurm worker step or the guardian process these never return
    // (see fanout::process).
    fanout::process::serve_worker_if_asked();
    fanout::process::init(&["--fanout-guardian"]);
    export_nb::run(export_nb::cli::Cli::parse()).into()
}
