//! `parallamr`: parallel experiment sweeps against LLM providers (and commands).
//!
//! The flow of `run`, as in every tool: `cli` (the flags) → `plan` (settings, the experiments,
//! templates, providers and prices read and checked: every input error is raised before anything
//! is sent; the dry run is `dryrun`) → `run` (one pool batch: `call` per experiment, within its
//! provider's limit, retried by the core's policy; `grade` asks the grader) → rows judged
//! (`judge`) and written by the owner thread as they complete (`writer`, `sink`, `row`) → the
//! summary per model (`tally`, `summary`), the results page (`view`) → the exit status.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the tool's own messages and tables; progress goes through fanout's reporters"
)]

mod batch;
mod cache;
mod call;
pub mod cli;
mod cost;
mod dryrun;
mod experiments;
mod flatten;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod grade;
mod init;
mod judge;
mod limit;
mod params;
mod paths;
mod plan;
mod providers;
mod rate;
mod row;
mod run;
mod settings;
mod shell_template;
mod sink;
mod summary;
mod tally;
mod view;
mod writer;

use std::time::Duration;

use anyhow::Result;
use clap::CommandFactory;
use fanout::ExitStatus;
use fanout_cli::UsageResult;

use crate::cli::{Cli, Commands};

/// Run parallamr with parsed arguments; returns the exit status. Errors are printed here:
/// those in what the user asked for exit 2 (nothing ran), those of the run itself 1.
pub fn run(cli: Cli) -> ExitStatus {
    fanout_cli::finish::<cli::Parallamr>(dispatch(cli))
}

fn dispatch(cli: Cli) -> Result<ExitStatus> {
    match cli.command {
        Commands::Run(r) => run::run(&plan::RunArgs::from_cli(*r)?),
        Commands::Providers => list_providers(),
        Commands::Models { provider } => {
            if !providers::KNOWN.contains(&provider.as_str()) {
                return Err(anyhow::anyhow!(
                    "unknown provider {provider:?}; the known providers: {}",
                    providers::KNOWN.join(", ")
                ))
                .usage();
            }
            let http = providers::Http::new(Duration::from_secs(30));
            let settings = settings::Settings::load().usage()?;
            let p = providers::one(&provider, &http, &settings)?;
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
        Commands::Cache(c) => cache_command(&c),
        Commands::Batch(b) => batch::command(&b.action),
        Commands::View(v) => {
            for f in v.results.iter().chain(&v.compare) {
                if !f.is_file() {
                    return Err(anyhow::anyhow!(
                        "the results file {} does not exist (or is not a file)",
                        f.display()
                    ))
                    .usage();
                }
            }
            let inputs: Vec<std::path::PathBuf> =
                v.results.iter().chain(&v.compare).cloned().collect();
            view::check_page_path(&v.output, &inputs, "-o").usage()?;
            view::write(&v.results, &v.compare, &v.output, v.title.as_deref()).usage()?;
            eprintln!("results page: {}", v.output.display());
            Ok(ExitStatus::Success)
        }
        Commands::Init => {
            init::init(std::path::Path::new(".")).usage()?;
            Ok(ExitStatus::Success)
        }
        Commands::Completions(c) => Ok(fanout_cli::print_completions(Cli::command(), c.shell)),
    }
}

/// `parallamr providers`: each provider's limit and settings, and where the settings came from.
fn list_providers() -> Result<ExitStatus> {
    let http = providers::Http::new(Duration::from_secs(10));
    let settings = settings::Settings::load().usage()?;
    println!("{:<11} {:>5}  SETTINGS", "PROVIDER", "LIMIT");
    for name in providers::KNOWN {
        let line = match providers::one(name, &http, &settings) {
            Ok(p) => p.settings(),
            Err(e) => format!("{e:#}"),
        };
        let limit = match *name {
            "command" => "-j".to_owned(),
            n => providers::default_limit(n, 0).to_string(),
        };
        println!("{name:<11} {limit:>5}  {line}");
    }
    println!("\nLimits are requests in flight per provider; --provider-limit NAME=N changes one.");
    match settings.file() {
        Some(f) => println!(
            "Settings: the environment, then {} (the environment wins).",
            f.display()
        ),
        None => println!("Settings: the environment (no .env file here or in a folder above)."),
    }
    Ok(ExitStatus::Success)
}

/// `parallamr cache info|clear`.
fn cache_command(c: &cli::CacheCli) -> Result<ExitStatus> {
    let cache = cache::Cache::locate(c.cache_dir.as_deref()).usage()?;
    let dir = cache.dir().display();
    match &c.action {
        cli::CacheAction::Info => {
            let u = cache.usage();
            println!("cache: {dir}");
            println!("answers: {} ({})", u.entries, cache::fmt_bytes(u.bytes));
        }
        cli::CacheAction::Prune(limits) => {
            let u = cache.prune(cache::Limits {
                max_bytes: limits.max_size,
                max_age: limits.max_age,
            })?;
            let left = cache.usage();
            println!(
                "removed {} answers ({}) from {dir}; {} answers ({}) kept",
                u.entries,
                cache::fmt_bytes(u.bytes),
                left.entries,
                cache::fmt_bytes(left.bytes)
            );
        }
        cli::CacheAction::Clear => {
            let u = cache.clear()?;
            println!(
                "removed {} answers ({}) from {dir}",
                u.entries,
                cache::fmt_bytes(u.bytes)
            );
        }
    }
    Ok(ExitStatus::Success)
}
