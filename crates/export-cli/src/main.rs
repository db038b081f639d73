//! `export-nb`: see `export-nb --help` and the crate docs of `export_nb`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    export_nb::run(export_nb::cli::Cli::parse()).into()
}
