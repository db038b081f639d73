//! A run's life: its record and folder, its segments (the stages up to the next loop stage are
//! one batch, `batch.rs`; a loop stage is expanded between them, `looping.rs`), its end: the
//! status, the report, the cache pruned.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use fanout::{CancelReason, CancelToken, ExitStatus, ProcessRunner};
use fanout_cli::UsageResult;

use crate::batch::run_jobs;
use crate::cache::{Cache, CacheFile};
use crate::context::{Ran, RunContext, RunState, lock};
use crate::job::{PAYLOAD_FILE, tell_the_parent_run};
use crate::model::Pipeline;
use crate::plan::{Lock, RunOptions, checked_record, lock_project, plural};
use crate::project::Project;
use crate::report;
use crate::segment::{expanded_records, not_run_after};
use crate::store::{self, CacheState, JobStatus, RecordWriter, RunStatus, Update};

/// The run's report in the shared shape, beside its record.
pub(crate) const REPORT_FILE: &str = "report.json";

/// Run `pipeline` (its loop stages are expanded as it goes); returns the exit status. Errors
/// are problems before any job ran.
pub(crate) fn run(
    project: &Project,
    mut pipeline: Pipeline,
    opts: &RunOptions,
    project_lock: Lock,
) -> Result<ExitStatus> {
    let (record, done) = checked_record(&pipeline, opts)?;
    // Checked before anything runs; computed again as loop stages are expanded.
    opts.force.forced(&pipeline).usage()?;
    let _lock = match project_lock.held {
        Some(held) => Some(held),
        None => lock_project(project, project_lock.wait).usage()?,
    };
    let run_id = record.run_id.clone();
    let run_dir = make_run_dir(project, &run_id, opts)?;
    let cache = Cache::new(
        &project.dir,
        &pipeline.name,
        CacheFile::load(&project.dir),
        (&opts.payload, &opts.set),
    );
    cache
        .check_set(&pipeline)
        .map_err(|e| anyhow::anyhow!(e))
        .usage()?;
    let state = RunState::default();
    for &(si, ji) in &done {
        let j = &record.stages[si].jobs[ji];
        state.done(&j.job_id, j.output.clone(), &cache);
    }
    let writer = RecordWriter::start(
        record,
        store::record_path(&project.at(""), &run_id),
        Some(CacheState::new(project.dir.clone())),
    )?;
    tell_the_parent_run(&run_id)?;
    let interrupt = fanout::install_interrupt_handler()?;
    let runner = ProcessRunner::new();
    let start = std::time::Instant::now();
    print_start(&run_id, &pipeline, opts, done.len());
    let life = Life {
        project,
        opts,
        run_dir: &run_dir,
        run_id: &run_id,
        interrupt: &interrupt,
        runner: &runner,
        writer: &writer,
        cache: &cache,
        state: &state,
    };
    let mut ran = Ran::default();
    life.segments(&mut pipeline, &mut ran)?;

    let status = if interrupt.reason() == Some(CancelReason::Interrupted) {
        RunStatus::Cancelled
    } else if ran.any_failed {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    let record_writes = finish(writer, status, project, &pipeline, &run_dir, opts)?;
    print_up_to_date(&ran);
    eprintln!(
        "run {run_id}: {} in {} ({record_writes} record writes); record: {}",
        status.as_str(),
        fanout::fmt_duration(start.elapsed()),
        store::record_path(&project.at(""), &run_id).display()
    );
    print_halted(&pipeline, &ran);
    Ok(match status {
        RunStatus::Cancelled => ExitStatus::Interrupted,
        RunStatus::Failed => ExitStatus::TaskFailed,
        RunStatus::Succeeded | RunStatus::Running => ExitStatus::Success,
    })
}

/// The record's last update and write, the cache pruned, the report written; returns how many
/// times the record was written.
fn finish(
    writer: RecordWriter,
    status: RunStatus,
    project: &Project,
    pipeline: &Pipeline,
    run_dir: &Path,
    opts: &RunOptions,
) -> Result<usize> {
    writer.send(Update::RunFinished {
        status,
        at: SystemTime::now(),
    });
    let (record, record_writes) = writer.finish()?;
    prune_cache(project, pipeline, status);
    report::write_json(&record, &run_dir.join(REPORT_FILE))?;
    if let Some(copy) = &opts.report {
        report::write_json(&record, copy)?;
    }
    Ok(record_writes)
}

/// The run's folder, with its `logs/` and `outputs/`, and the payload nested pipelines read.
/// Absolute: jobs run in the project's folder, not in ours, and get paths inside it.
fn make_run_dir(project: &Project, run_id: &str, opts: &RunOptions) -> Result<PathBuf> {
    let run_dir = std::path::absolute(store::run_dir(&project.at(""), run_id))
        .context("finding the current folder")?;
    for sub in ["logs", "outputs"] {
        std::fs::create_dir_all(run_dir.join(sub))
            .with_context(|| format!("creating {}", run_dir.display()))?;
    }
    if !opts.payload.is_empty() {
        // For nested pipelines, which get the same payload.
        let json = serde_json::to_vec(&opts.payload).expect("a payload serializes");
        fanout::fsutil::write_atomic(&run_dir.join(PAYLOAD_FILE), &json)?;
    }
    Ok(run_dir)
}

/// The run's first line: what runs, how many at once; and what a resumed run does not redo.
fn print_start(run_id: &str, pipeline: &Pipeline, opts: &RunOptions, done: usize) {
    let jobs = pipeline.job_count();
    let stages = if pipeline.is_graph {
        String::new()
    } else {
        let n = pipeline.stages.len();
        format!("{n} stage{}, ", plural(n))
    };
    eprintln!(
        "run {run_id}: pipeline {} ({stages}{jobs} job{}, up to {} at once)",
        pipeline.name,
        plural(jobs),
        opts.max_workers.get(),
    );
    if done > 0 {
        eprintln!(
            "{done} job{} succeeded earlier in this run: not run again",
            plural(done)
        );
    }
}

/// What stays the same from segment to segment of a run.
struct Life<'a> {
    project: &'a Project,
    opts: &'a RunOptions,
    run_dir: &'a Path,
    run_id: &'a str,
    interrupt: &'a CancelToken,
    runner: &'a ProcessRunner,
    writer: &'a RecordWriter,
    cache: &'a Cache,
    state: &'a RunState,
}

impl Life<'_> {
    /// The segments: the stages up to the next loop stage run as one batch; then the loop stage
    /// is expanded from the outputs so far, and the next segment starts with it.
    fn segments(&self, pipeline: &mut Pipeline, ran: &mut Ran) -> Result<()> {
        let mut from = 0;
        loop {
            if from > 0 && ran.halted_by.is_some() {
                // A loop stage that failed stops the pipeline.
                not_run_after(pipeline, from, self.writer, self.interrupt, ran, self.state);
                return Ok(());
            }
            let until = (from..pipeline.stages.len())
                .find(|&si| {
                    pipeline.stages[si]
                        .looping
                        .as_ref()
                        .is_some_and(|l| !l.expanded)
                })
                .unwrap_or(pipeline.stages.len());
            let forced = self.opts.force.forced(pipeline)?;
            let ctx = RunContext {
                project: self.project,
                pipeline,
                opts: self.opts,
                run_dir: self.run_dir,
                run_id: self.run_id,
                interrupt: self.interrupt,
                runner: self.runner,
                writer: self.writer,
                cache: self.cache,
                forced: &forced,
                tracks_any: pipeline.tracks_any(),
            };
            run_jobs(&ctx, from..until, ran, self.state)?;
            if until == pipeline.stages.len() {
                return Ok(());
            }
            if self.interrupt.is_cancelled() || ran.halted_by.is_some() {
                not_run_after(
                    pipeline,
                    until,
                    self.writer,
                    self.interrupt,
                    ran,
                    self.state,
                );
                return Ok(());
            }
            self.expand(pipeline, until, ran);
            from = until;
        }
    }

    /// Expand loop stage `si` from the outputs so far, and record its iterations (or why it
    /// failed).
    fn expand(&self, pipeline: &mut Pipeline, si: usize, ran: &mut Ran) {
        let outputs = lock(&self.state.outputs).clone();
        let stage_name = pipeline.stages[si].name.clone();
        match crate::looping::expand(pipeline, si, &outputs, &self.opts.payload) {
            Ok(n) => {
                let looping = pipeline.stages[si].looping.as_ref().expect("a loop");
                let over = crate::looping::describe(&looping.over);
                // A resumed run: its iterations that succeeded are not run again.
                let resumed = self.opts.resumed.as_ref();
                let jobs = expanded_records(pipeline, si, resumed, self.state, self.cache);
                let again = jobs
                    .iter()
                    .filter(|j| j.status == JobStatus::Pending)
                    .count();
                let note = if n == 0 {
                    format!("{over} is an empty list: no iterations")
                } else {
                    format!("{n} item{} from {over}", plural(n))
                };
                let earlier = match jobs.len() - again {
                    0 => String::new(),
                    e => format!(
                        " ({e} iteration{} succeeded earlier in this run)",
                        plural(e)
                    ),
                };
                eprintln!("stage {stage_name}: {note}{earlier}");
                self.writer.send(Update::Expand {
                    stage: si,
                    jobs,
                    note,
                });
            }
            Err(why) => {
                eprintln!("stage {stage_name} FAILED: {why}");
                ran.any_failed = true;
                if pipeline.stages[si].stop_on_failure && ran.halted_by.is_none() {
                    ran.halted_by = Some(stage_name);
                }
                if let Some(l) = pipeline.stages[si].looping.as_mut() {
                    l.expanded = true;
                }
                self.writer.send(Update::Note {
                    stage: si,
                    note: format!("failed: {why}"),
                });
            }
        }
    }
}

/// After a run that reached every stage, the cache keeps only what a run can use again (see
/// `CacheFile::prune`); a run stopped early has not seen all its jobs, so it prunes nothing.
fn prune_cache(project: &Project, pipeline: &Pipeline, status: RunStatus) {
    let complete = status != RunStatus::Cancelled
        && pipeline
            .stages
            .iter()
            .all(|s| s.looping.as_ref().is_none_or(|l| l.expanded));
    if !complete {
        return;
    }
    let live: std::collections::HashSet<&str> =
        pipeline.jobs().map(|(_, _, j)| j.id.as_str()).collect();
    match CacheFile::prune(&project.dir, &pipeline.name, &live) {
        Ok((0, 0)) => {}
        Ok((jobs, files)) => eprintln!(
            "cache: {jobs} entr{} of jobs that no longer exist and {files} stamp{} of files \
             that no longer exist removed",
            if jobs == 1 { "y" } else { "ies" },
            plural(files)
        ),
        Err(e) => eprintln!("warning: {e:#}"),
    }
}

/// The jobs that were up to date: named when they are few.
fn print_up_to_date(ran: &Ran) {
    let n = ran.up_to_date.len();
    if n == 0 {
        return;
    }
    let names = if n <= 8 {
        format!(": {}", ran.up_to_date.join(", "))
    } else {
        String::new()
    };
    eprintln!("{n} job{} up to date, not run{names}", plural(n));
}

/// Why jobs did not start, when a failure stopped the pipeline.
fn print_halted(pipeline: &Pipeline, ran: &Ran) {
    let Some(stage) = ran.halted_by.as_ref().filter(|_| ran.not_started > 0) else {
        return;
    };
    if pipeline.is_graph {
        eprintln!("jobs not started were skipped: a job failed (stop_on_failure)");
    } else {
        eprintln!("later stages were skipped: stage {stage:?} failed (stop_on_failure)");
    }
}
