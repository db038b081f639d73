//! `export-nb`: export folders of marimo notebooks to a static site, many at once.
//!
//! The flow, as in every tool: `cli` (the flags) → `plan` (`Settings` from
//! flags and `pyproject.toml`, the notebooks discovered and compared with the output's manifest;
//! every input error and the dry run happen there) → `run` (one pool batch of exports; the
//! up-to-date and the non-notebooks pass through as `skipped`) → `report` (manifest, index page,
//! JSON report) → exit status.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the tool's own messages; progress goes through fanout's reporters"
)]

pub mod cli;
mod config;
mod discover;
mod envs;
mod export;
mod frontend;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod hints;
mod imports;
mod index;
mod manifest;
mod meta;
mod pep723;
mod plan;
mod preview;
mod report;
mod run;
mod search;
mod serve;
mod site;
mod thumbnail;
mod watch;

use anyhow::Result;
use clap::CommandFactory;
use fanout::ExitStatus;
use fanout_cli::UsageResult;

use crate::cli::{Cli, Commands};
use crate::config::Settings;
use crate::plan::Plan;

/// Run export-nb with parsed arguments; returns the exit status. Errors are printed here:
/// those in what the user asked for exit 2 (nothing ran), those of the run itself 1.
pub fn run(cli: Cli) -> ExitStatus {
    match cli.command {
        Some(Commands::Completions(c)) => {
            return fanout_cli::print_completions(Cli::command(), c.shell);
        }
        Some(Commands::Watch(args)) => {
            return fanout_cli::finish::<cli::ExportNb>(watch::watch(*args));
        }
        None => {}
    }
    fanout_cli::finish::<cli::ExportNb>(plan_and_run(cli))
}

fn plan_and_run(cli: Cli) -> Result<ExitStatus> {
    let settings = Settings::from_args(cli.export).usage()?;
    // The manifest is read, compared and written under the lock (a dry run only reads).
    let _lock = if settings.dry_run {
        None
    } else {
        Some(settings.lock_output("export-nb").usage()?)
    };
    let plan = Plan::prepare(settings).usage()?;
    if plan.settings.dry_run {
        plan.print_commands();
        return Ok(ExitStatus::Success);
    }
    plan.execute(&fanout::install_interrupt_handler()?, &mut None)
}
