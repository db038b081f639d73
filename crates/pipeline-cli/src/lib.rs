//! `lorchestra`: run a pipeline's stages in order, the independent jobs of each stage in
//! parallel, with a crash-safe run record.
//!
//! The flow of `lorchestra pipeline`: `config` turns the files into a validated `Pipeline`
//! (every input error is raised there) → `run` runs the stages through the core's pool, sending
//! every job transition to the `store`'s single writer → the exit status.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the tool's own messages and tables; progress goes through fanout's reporters"
)]

pub mod cli;
mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod report;
mod run;
mod store;

use anyhow::{Context, Result, bail};
use fanout::{ExitStatus, MaxWorkers, ProgressMode};

use crate::cli::{Cli, Commands};
use crate::config::Project;
use crate::store::JobStatus;

/// The most jobs a stage may run at once.
const MAX_WORKERS_CAP: usize = 64;
/// Environment variable for the worker count when `--max-workers` is not given.
const MAX_WORKERS_ENV: &str = "LORCHESTRA_MAX_WORKERS";

/// Run lorchestra with parsed arguments; returns the exit status. Errors are printed here.
pub fn run(cli: Cli) -> ExitStatus {
    match dispatch(cli) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("lorchestra: error: {e:#}");
            ExitStatus::Usage
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitStatus> {
    let project = Project::new(cli.dir);
    match cli.command {
        Commands::Pipeline {
            pipeline,
            max_workers,
            dry_run,
            resume,
            halt,
            backend,
            slurm_arg,
            quiet,
            no_progress,
        } => {
            let pipeline = project.load(&pipeline)?;
            let opts = run::RunOptions {
                max_workers: max_workers_from(max_workers)?,
                halt,
                resume,
                backend,
                slurm_args: slurm_arg,
                progress: if quiet {
                    ProgressMode::Quiet
                } else if no_progress {
                    ProgressMode::Plain
                } else {
                    ProgressMode::Auto
                },
            };
            if dry_run {
                run::print_plan(&pipeline, &opts);
                return Ok(ExitStatus::Success);
            }
            run::run(&project, &pipeline, &opts)
        }
        Commands::Validate { pipeline } => {
            let p = project.load(&pipeline)?;
            let jobs: usize = p.stages.iter().map(|s| s.jobs.len()).sum();
            println!(
                "{} is valid: {} stage{}, {jobs} job{}",
                p.file.display(),
                p.stages.len(),
                if p.stages.len() == 1 { "" } else { "s" },
                if jobs == 1 { "" } else { "s" }
            );
            Ok(ExitStatus::Success)
        }
        Commands::Jobs => {
            let jobs = project.all_jobs()?;
            if jobs.is_empty() {
                println!(
                    "no jobs defined in {} (jobs/<ID>.toml, or [jobs.<ID>] in a pipeline)",
                    project.dir.display()
                );
            }
            let width = jobs.iter().map(|j| j.id.len()).max().unwrap_or(0);
            for job in jobs {
                let defined = job
                    .defined_in
                    .strip_prefix(&project.dir)
                    .unwrap_or(&job.defined_in)
                    .display()
                    .to_string();
                println!("{:<width$}  {defined:<28}  {}", job.id, job.run.display());
            }
            Ok(ExitStatus::Success)
        }
        Commands::Runs { limit } => {
            print_runs(&project, limit);
            Ok(ExitStatus::Success)
        }
        Commands::Status { run_id } => {
            let r = store::load(&project.at(""), &run_id)?;
            print_status(&project, &r);
            Ok(ExitStatus::Success)
        }
        Commands::Report { run_id, output } => {
            let r = store::load(&project.at(""), &run_id)?;
            report::write(&r, &output)?;
            println!("wrote {}", output.display());
            Ok(ExitStatus::Success)
        }
    }
}

fn max_workers_from(flag: Option<usize>) -> Result<MaxWorkers> {
    if let Some(n) = flag {
        return MaxWorkers::new(n, MAX_WORKERS_CAP).context("--max-workers");
    }
    match std::env::var(MAX_WORKERS_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            let n: usize = v.trim().parse().with_context(|| {
                format!("{MAX_WORKERS_ENV}={v:?} is not a whole number of workers")
            })?;
            MaxWorkers::new(n, MAX_WORKERS_CAP).with_context(|| format!("{MAX_WORKERS_ENV}={n}"))
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(MaxWorkers::one()),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{MAX_WORKERS_ENV} is not valid text"),
    }
}

fn print_runs(project: &Project, limit: usize) {
    let runs = store::list(&project.at(""));
    if runs.is_empty() {
        println!("no runs yet in {}", project.at(store::RUNS_DIR).display());
    } else {
        println!(
            "{:<27}  {:<16}  {:<9}  {:<24}  {:>9}  jobs ok",
            "RUN_ID", "PIPELINE", "STATUS", "STARTED", "DURATION"
        );
    }
    for r in runs.iter().take(limit) {
        let total: usize = r.stages.iter().map(|s| s.jobs.len()).sum();
        println!(
            "{:<27}  {:<16}  {:<9}  {:<24}  {:>9}  {}/{total}",
            r.run_id,
            r.pipeline,
            r.status.as_str(),
            r.started_at,
            r.duration_seconds
                .map_or_else(|| "-".to_owned(), fanout::fmt_seconds),
            run::count(r, JobStatus::Succeeded),
        );
    }
}

fn print_status(project: &Project, r: &store::RunRecord) {
    print!("{}", status_text(&project.at(""), r));
}

/// What `lorchestra status` prints for the run record `r` of the project in `project`.
fn status_text(project: &std::path::Path, r: &store::RunRecord) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    writeln!(out, "run       {}", r.run_id).expect("writing to a String");
    writeln!(out, "pipeline  {} ({})", r.pipeline, r.pipeline_file).expect("writing to a String");
    writeln!(out, "status    {}", r.status.as_str()).expect("writing to a String");
    writeln!(
        out,
        "started   {}{}",
        r.started_at,
        r.duration_seconds
            .map(|d| format!(", took {}", fanout::fmt_seconds(d)))
            .unwrap_or_default()
    )
    .expect("writing to a String");
    writeln!(out, "workers   {}", r.max_workers).expect("writing to a String");
    let width = r
        .stages
        .iter()
        .flat_map(|s| &s.jobs)
        .map(|j| j.job_id.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let run_dir = store::run_dir(project, &r.run_id);
    for stage in &r.stages {
        writeln!(out, "\nstage {}", stage.name).expect("writing to a String");
        writeln!(
            out,
            "  {:<width$}  {:<9}  {:>8}  {:>4}  {:>9}  LOG",
            "JOB", "STATUS", "ATTEMPTS", "EXIT", "DURATION"
        )
        .expect("writing to a String");
        for j in &stage.jobs {
            writeln!(
                out,
                "  {:<width$}  {:<9}  {:>8}  {:>4}  {:>9}  {}{}",
                j.job_id,
                j.status.as_str(),
                j.attempts,
                j.exit_code
                    .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                j.duration_seconds
                    .map_or_else(|| "-".to_owned(), fanout::fmt_seconds),
                run_dir.join(&j.log).display(),
                j.error
                    .as_ref()
                    .filter(|_| j.status != JobStatus::Succeeded)
                    .map(|e| format!("\n  {:<width$}  {e}", ""))
                    .unwrap_or_default(),
            )
            .expect("writing to a String");
        }
    }
    out
}
