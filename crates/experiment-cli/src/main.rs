//! `parallamr`: see `parallamr --help` and the crate docs of `parallamr`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else: in the guardian process this never returns (see fanout::process).
    fanout::process::init(&["--fanout-guardian"]);
    parallamr::run(parallamr::cli::Cli::parse()).into()
}
