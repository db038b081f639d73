//! `lorchestra`: see `lorchestra --help` and the crate docs of `lorchestra`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else: in the guardian process this never returns (see fanout::process).
    fanout::process::init(&["--fanout-guardian"]);
    lorchestra::run(lorchestra::cli::Cli::parse()).into()
}
