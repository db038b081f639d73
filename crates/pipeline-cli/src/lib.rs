//! `lorchestra`: run a pipeline's stages in order, the independent jobs of each stage in
//! parallel, with a crash-safe run record.
//!
//! The flow of `lorchestra pipeline`, as in every tool: `cli` (the flags) → `plan` (options
//! checked) and `load` (the files made a checked `Pipeline`; every input error is raised there,
//! the dry run is `dryrun`) → `run` (the run's life: segments of stages, each one pool batch,
//! `batch`) → the `store`'s single writer of the run record, the report → the exit status.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the tool's own messages and tables; progress goes through fanout's reporters"
)]

mod admission;
mod batch;
mod cache;
pub mod cli;
mod compare;
mod comparepage;
mod context;
mod dryrun;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod graph;
mod job;
mod jobs;
mod layout;
mod load;
mod looping;
mod metrics;
mod model;
mod output;
mod params;
mod patterns;
mod payload;
mod placeholders;
mod plan;
mod project;
mod raw;
mod report;
mod resources;
mod run;
mod segment;
mod store;
mod uptodate;
mod waits;

use anyhow::Result;
use clap::CommandFactory;
use fanout::ExitStatus;
use fanout_cli::UsageResult;

use crate::cli::{Cli, Commands, PipelineArgs};
use crate::project::Project;
use crate::store::JobStatus;

/// Run lorchestra with parsed arguments; returns the exit status. Errors are printed here:
/// those in what the user asked for exit 2 (nothing ran), those of the run itself 1.
pub fn run(cli: Cli) -> ExitStatus {
    fanout_cli::finish::<cli::Lorchestra>(dispatch(cli))
}

fn dispatch(cli: Cli) -> Result<ExitStatus> {
    let project = Project::new(cli.dir);
    match cli.command {
        Commands::Pipeline(args) => run_pipeline(&project, *args),
        Commands::Graph { pipeline, dot } => {
            let p = project.load(&pipeline).usage()?;
            print!("{}", if dot { graph::dot(&p) } else { graph::text(&p) });
            Ok(ExitStatus::Success)
        }
        Commands::Validate { pipeline } => {
            print_valid(&project.load(&pipeline).usage()?);
            Ok(ExitStatus::Success)
        }
        Commands::Jobs => {
            let jobs = project.all_jobs().usage()?;
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
        Commands::Runs { limit, metrics } if !metrics.is_empty() => {
            Ok(compare::runs_table(&project.at(""), limit, &metrics))
        }
        Commands::Runs { limit, .. } => {
            print_runs(&project, limit);
            Ok(ExitStatus::Success)
        }
        Commands::Status { run_id, json } => {
            let r = store::load(&project.at(""), &run_id).usage()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("records serialize")
                );
            } else {
                print_status(&project, &r);
            }
            Ok(ExitStatus::Success)
        }
        Commands::Params {
            action: cli::ParamsAction::Diff(d),
        } => compare::params_diff(&project.at(""), &d),
        Commands::Metrics { action } => match action {
            cli::MetricsAction::Show { run } => {
                compare::metrics_show(&project.at(""), run.as_deref())
            }
            cli::MetricsAction::Diff(d) => compare::metrics_diff(&project.at(""), &d),
        },
        Commands::Report {
            compare: Some(ids),
            output,
            ..
        } => {
            let runs = compare::compared_runs(&project.at(""), &ids).usage()?;
            comparepage::write(&runs, &output)?;
            println!("wrote {} ({} runs compared)", output.display(), runs.len());
            Ok(ExitStatus::Success)
        }
        Commands::Report {
            run_id: Some(run_id),
            output,
            ..
        } => {
            let r = store::load(&project.at(""), &run_id).usage()?;
            report::write(&r, &output)?;
            println!("wrote {}", output.display());
            Ok(ExitStatus::Success)
        }
        Commands::Report { .. } => unreachable!("clap requires RUN_ID or --compare"),
        Commands::Completions(c) => Ok(fanout_cli::print_completions(Cli::command(), c.shell)),
    }
}

/// `lorchestra pipeline`: the plan (every input error before anything runs), then the dry run
/// or the run.
fn run_pipeline(project: &Project, args: PipelineArgs) -> Result<ExitStatus> {
    let PipelineArgs {
        pipeline,
        run,
        resume,
        halt,
        force,
        explain,
        payload,
        payload_file,
        set,
        resources,
        wait,
    } = args;
    let mut opts = plan::RunOptions::from_args(&run, halt, plan::Force::from_arg(force))?;
    // One run at a time per project: the lock is taken before the run to resume is read, else
    // once the input is judged (bad input leaves nothing behind).
    let reads_only = run.dry_run || explain;
    let mut lock = None;
    if resume.is_some() && !reads_only && project.at(".lorchestra").is_dir() {
        lock = plan::lock_project(project, wait).usage()?;
    }
    // The run to resume is read once: its payload, its record, its iterations.
    opts.resumed = resume
        .map(|id| store::load(&project.at(""), &id))
        .transpose()
        .usage()?;
    opts.payload = match &opts.resumed {
        Some(old) if !payload.is_empty() || payload_file.is_some() => {
            let run_id = &old.run_id;
            return Err(anyhow::anyhow!(
                "--resume {run_id} reuses the payload of that run; --payload and \
                 --payload-file cannot change it (start a new run instead)"
            ))
            .usage();
        }
        Some(old) => old.payload.clone(),
        None => payload::from_args(&payload, payload_file.as_deref()).usage()?,
    };
    opts.set = match &opts.resumed {
        Some(old) if !set.is_empty() => {
            return Err(anyhow::anyhow!(
                "--resume {} reuses the --set values of that run; start a new run to change \
                 them",
                old.run_id
            ))
            .usage();
        }
        Some(old) => old.params_set.clone(),
        None => params::overrides(&set)
            .map_err(|e| anyhow::anyhow!(e))
            .usage()?,
    };
    let mut pipeline = project.load(&pipeline).usage()?;
    placeholders::apply(&mut pipeline, &opts.payload).usage()?;
    opts.resources = resources.unwrap_or_default();
    opts.settle_budget(&pipeline);
    plan::settle(&mut pipeline, &opts);
    plan::check_resources(&pipeline, &opts).usage()?;
    if reads_only {
        dryrun::print_plan(project, &pipeline, &opts, explain)?;
        return Ok(ExitStatus::Success);
    }
    fanout_cli::check_slurm_nodes(opts.slurm_mode, opts.slurm_nodes)?;
    if opts.slurm_mode == fanout_cli::SlurmMode::Packed {
        // The allocation is the run's: asked for once no other run holds the project.
        if lock.is_none() {
            lock = plan::lock_project(project, wait).usage()?;
        }
        if let Some(slurm) = opts.packed_slurm(&pipeline)?
            // A run with every job up to date asks Slurm for nothing (nor waits in its queue).
            && dryrun::any_would_run(project, &pipeline, &opts)?
        {
            opts.pack(&slurm)?;
            plan::settle(&mut pipeline, &opts);
        }
    }
    run::run(project, pipeline, &opts, plan::Lock { held: lock, wait })
}

/// What `lorchestra validate` prints for a valid pipeline.
fn print_valid(p: &model::Pipeline) {
    let jobs = p.job_count();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if p.is_graph {
        println!(
            "{} is valid: {jobs} job{} run as a graph by their needs",
            p.file.display(),
            plural(jobs)
        );
        return;
    }
    let per_item: usize = p
        .stages
        .iter()
        .filter_map(|s| s.looping.as_ref())
        .map(|l| l.jobs.len())
        .sum();
    println!(
        "{} is valid: {} stage{}, {jobs} job{}{}",
        p.file.display(),
        p.stages.len(),
        plural(p.stages.len()),
        plural(jobs),
        if per_item > 0 {
            format!(" and {per_item} per item of a loop")
        } else {
            String::new()
        }
    );
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
            plan::count(r, JobStatus::Succeeded),
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
    if !r.payload.is_empty() {
        writeln!(
            out,
            "payload   {}",
            serde_json::to_string(&r.payload).expect("a payload serializes")
        )
        .expect("writing to a String");
    }
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
        let note = stage
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        writeln!(out, "\nstage {}{note}", stage.name).expect("writing to a String");
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
                    .unwrap_or_default()
                    + &j.reason
                        .as_ref()
                        .filter(|_| j.status != JobStatus::UpToDate)
                        .map(|r| format!("\n  {:<width$}  ran because: {r}", ""))
                        .unwrap_or_default()
                    + &j.output
                        .as_ref()
                        .map(|v| format!("\n  {:<width$}  output: {}", "", output::short(v, 200)))
                        .unwrap_or_default(),
            )
            .expect("writing to a String");
        }
    }
    out
}
