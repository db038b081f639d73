//! `parallamr`: parallel experiment sweeps against LLM providers (and commands).
//!
//! `run`: the inputs become validated `Experiments` and a `Template` (every input error is
//! raised before anything runs) → one pool batch, each experiment within its provider's
//! concurrency limit, retried by the core's policy → rows written by the owner thread as they
//! complete.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the tool's own messages and tables; progress goes through fanout's reporters"
)]

pub mod cli;
mod experiments;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod providers;
mod run;
mod writer;

use std::time::Duration;

use anyhow::{Context, Result};
use fanout::{ExitStatus, MaxWorkers, ProgressMode};

use crate::cli::{Cli, Commands};

const MAX_JOBS: usize = 256;

/// Run parallamr with parsed arguments; returns the exit status. Errors are printed here.
pub fn run(cli: Cli) -> ExitStatus {
    match dispatch(cli) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("parallamr: error: {e:#}");
            ExitStatus::Usage
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitStatus> {
    match cli.command {
        Commands::Run(r) => {
            let args = run::RunArgs {
                max_workers: if r.sequential {
                    MaxWorkers::one()
                } else {
                    MaxWorkers::new(r.jobs, MAX_JOBS).context("-j/--jobs")?
                },
                timeout: Duration::from_secs(r.timeout.max(1)),
                retries: r.retries,
                limits: r.provider_limits,
                backend: r.backend,
                slurm_args: r.slurm_arg,
                progress: if r.quiet {
                    ProgressMode::Quiet
                } else if r.verbose {
                    ProgressMode::Plain
                } else {
                    ProgressMode::Auto
                },
                prompt: r.prompt,
                experiments: r.experiments,
                output: r.output,
                contexts: r.contexts,
                command: r.command,
                validate_only: r.validate_only,
                resume: r.resume,
                report: r.report,
            };
            run::run(&args)
        }
        Commands::Providers => {
            let http = providers::Http::new(Duration::from_secs(10));
            println!("{:<11} {:>5}  SETTINGS", "PROVIDER", "LIMIT");
            for name in providers::KNOWN {
                let settings = match providers::one(name, &http) {
                    Ok(p) => p.settings(),
                    Err(e) => format!("{e:#}"),
                };
                let limit = match *name {
                    "command" => "-j".to_owned(),
                    n => providers::default_limit(n, 0).to_string(),
                };
                println!("{name:<11} {limit:>5}  {settings}");
            }
            println!(
                "\nLimits are requests in flight per provider; --provider-limit NAME=N changes one."
            );
            Ok(ExitStatus::Success)
        }
        Commands::Models { provider } => {
            if !providers::KNOWN.contains(&provider.as_str()) {
                anyhow::bail!(
                    "unknown provider {provider:?}; the known providers: {}",
                    providers::KNOWN.join(", ")
                );
            }
            let http = providers::Http::new(Duration::from_secs(30));
            let p = providers::one(&provider, &http)?;
            let models = p
                .models()
                .map_err(|e| anyhow::anyhow!("listing the models of {provider}: {e}"))?;
            for m in models {
                let w = m
                    .context_window
                    .map_or_else(|| "?".to_owned(), |w| w.to_string());
                println!("{:<40} {w:>8} tokens", m.name);
            }
            Ok(ExitStatus::Success)
        }
        Commands::Init => {
            run::init(std::path::Path::new("."))?;
            Ok(ExitStatus::Success)
        }
    }
}
