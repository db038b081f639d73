//! `--dry-run`: what a run would do, stage by stage, without running or writing anything; with
//! `--explain`, whether each job would run now and why, decided as the run would decide it.

use std::collections::HashMap;

use anyhow::Result;
use fanout::{Command, Launcher};
use fanout_cli::UsageResult;

use crate::cache::{Cache, CacheFile, DepState, Verdict, first_reason};
use crate::model::{Job, Pipeline, Stage};
use crate::plan::{RunOptions, plural};
use crate::project::Project;
use crate::uptodate::deps_of;

/// Print what would run; with `explain`, whether each job would run and why.
pub(crate) fn print_plan(
    project: &Project,
    pipeline: &Pipeline,
    opts: &RunOptions,
    explain: bool,
) -> Result<()> {
    let verdicts = if explain {
        Some(explain_all(project, pipeline, opts)?)
    } else {
        None
    };
    println!(
        "pipeline {} ({}), up to {} job{} at once",
        pipeline.name,
        pipeline.file.display(),
        opts.max_workers.get(),
        plural(opts.max_workers.get())
    );
    if let Some(d) = &pipeline.description {
        println!("  {d}");
    }
    if !opts.payload.is_empty() {
        println!(
            "payload {}",
            serde_json::to_string(&opts.payload).expect("a payload serializes")
        );
    }
    let mut fi = 0;
    for stage in &pipeline.stages {
        print_stage(pipeline, stage);
        for job in &stage.jobs {
            print_job(job, opts);
            if let Some(v) = &verdicts {
                match &v[fi] {
                    Verdict::UpToDate => println!("    up to date"),
                    Verdict::Run(why) => println!("    would run: {why}"),
                }
            }
            fi += 1;
        }
    }
    if let Some(v) = verdicts {
        let up = v.iter().filter(|v| **v == Verdict::UpToDate).count();
        println!(
            "{} of {} job{} would run, {up} {} up to date",
            v.len() - up,
            v.len(),
            plural(v.len()),
            if up == 1 { "is" } else { "are" }
        );
    }
    Ok(())
}

/// A stage's line, and the jobs of a loop not expanded yet.
fn print_stage(pipeline: &Pipeline, stage: &Stage) {
    let stops = if stage.stop_on_failure {
        " (stops the pipeline on failure)"
    } else {
        ""
    };
    if pipeline.is_graph {
        println!("jobs, each started once the jobs it needs succeeded{stops}");
    } else {
        println!("stage {}{stops}", stage.name);
    }
    if let Some(l) = stage.looping.as_ref().filter(|l| !l.expanded) {
        let over = crate::looping::describe(&l.over);
        let from = match &l.over {
            crate::model::Reference::Run { job, .. } => job.as_str(),
            _ => "",
        };
        println!("  for each item of {over} (known once {from} has run):");
        for job in &l.jobs {
            println!("    {}[...]: {}", job.id, job.run.display());
        }
    }
}

/// A job's line: its command, what it waits for, its limits, where it runs; a matrix's job's
/// own values.
fn print_job(job: &Job, opts: &RunOptions) {
    let mut extra = Vec::new();
    if !job.needs.is_empty() {
        extra.push(format!("needs {}", job.needs.join(", ")));
    }
    if let Some(t) = job.timeout {
        extra.push(format!("timeout {}", fanout::fmt_duration(t)));
    }
    if job.retries > 0 {
        extra.push(match job.retry_backoff {
            Some(b) => format!(
                "retries {} (backoff {}, doubling)",
                job.retries,
                fanout::fmt_duration(b)
            ),
            None => format!("retries {}", job.retries),
        });
    }
    if !job.resources.is_empty() {
        let needs: Vec<String> = (job.resources.iter())
            .map(|(name, a)| {
                let v = crate::resources::show(name, a.base);
                if a.grows {
                    format!("{name}={v} * attempt")
                } else {
                    format!("{name}={v}")
                }
            })
            .collect();
        extra.push(format!("needs {}", needs.join(" ")));
    }
    if let Launcher::Slurm(slurm) = &job.launcher {
        let srun = Command::new("job").job_name(&job.id).srun_line(slurm);
        extra.push(format!("on Slurm: {srun}"));
    }
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("  [{}]", extra.join(", "))
    };
    println!("  {}: {}{extra}", job.id, job.run.display());
    // A matrix's job reads its own values from its environment: show them.
    if let Some(it) = &job.iteration {
        let own: Vec<String> = it
            .payload
            .iter()
            .filter(|(k, v)| opts.payload.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={}", crate::payload::text(v)))
            .collect();
        if !own.is_empty() {
            println!("    with {}", own.join(", "));
        }
    }
}

/// Whether some job would run now, as `--explain` decides it: `--slurm-mode packed` asks for
/// no allocation when none would. A pipeline with loops (their items are known only as the run
/// goes), one that tracks nothing (every job runs), or a `--resume`: yes, without looking.
pub(crate) fn any_would_run(
    project: &Project,
    pipeline: &Pipeline,
    opts: &RunOptions,
) -> Result<bool> {
    if opts.resumed.is_some()
        || !pipeline.tracks_any()
        || pipeline.stages.iter().any(|s| s.looping.is_some())
    {
        return Ok(true);
    }
    let verdicts = explain_all(project, pipeline, opts)?;
    Ok(verdicts.iter().any(|v| *v != Verdict::UpToDate))
}

/// `--explain`: whether each job (in job order) would run now, and why, as the run would
/// decide it, without running or writing anything.
fn explain_all(project: &Project, pipeline: &Pipeline, opts: &RunOptions) -> Result<Vec<Verdict>> {
    let forced = opts.force.forced(pipeline).usage()?;
    let cache = Cache::new(
        &project.dir,
        &pipeline.name,
        CacheFile::load(&project.dir),
        (&opts.payload, &opts.set),
    );
    cache
        .check_set(pipeline)
        .map_err(|e| anyhow::anyhow!(e))
        .usage()?;
    let mut states: Vec<DepState> = Vec::new();
    let mut combined = HashMap::new();
    let mut verdicts = Vec::new();
    for (fi, (_, _, job)) in pipeline.jobs().enumerate() {
        let deps = deps_of(pipeline, fi, |d| states[d].clone(), &mut combined);
        let new = job.tracked() && cache.last_key(&job.id).is_none();
        let (key, verdict) = if deps.iter().any(|d| d.runs.is_some()) || forced[fi] {
            // Its inputs may be what a job that runs first writes: not hashed now.
            let why = first_reason(forced[fi], new, &deps).expect("a reason");
            (String::new(), Verdict::Run(why))
        } else {
            match cache.decide(job, &deps, false, "") {
                Ok(d) => (d.key, d.verdict),
                Err(why) => (String::new(), Verdict::Run(format!("{why}: it would fail"))),
            }
        };
        let how = matches!(verdict, Verdict::Run(_)).then_some("will run");
        states.push(DepState::new(&job.id, key, how));
        verdicts.push(verdict);
    }
    Ok(verdicts)
}
