//! `parallamr`: see `parallamr --help` and the crate docs of `parallamr`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else: in a Slurm worker step or the guardian process these never return
    // (see fanout::process).
    fanout::process::serve_worker_if_asked();
    fanout::process::init(&["--fanout-guardian"]);
    parallamr::run(parallamr::cli::Cli::parse()).into()
}
