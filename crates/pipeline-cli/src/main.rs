//! `lorchestra`: see `lorchestra --help` and the crate docs of `lorchestra`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    lorchestra::run(lorchestra::cli::Cli::parse()).into()
}
