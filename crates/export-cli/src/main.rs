//! `export-nb`: see `export-nb --help` and the crate docs of `export_nb`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else: in the guardian process this never returns (see fanout::process).
    fanout::process::init(&["--fanout-guardian"]);
    export_nb::run(export_nb::cli::Cli::parse()).into()
}
