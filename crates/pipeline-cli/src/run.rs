//! Running a pipeline: segment by segment (`segment.rs`), the jobs of a segment as one pool
//! batch: the work function decides whether a job runs (`uptodate.rs`) and runs it (`job.rs`);
//! the reporter on the owner thread turns events into the record's updates.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use anyhow::{Context, Result};
use fanout::{
    CancelReason, Event, ExitStatus, FailurePolicy, Pool, PoolConfig, ProcessRunner, RetryPolicy,
    Task, TaskError,
};
use fanout_cli::UsageResult;

use crate::cache::{Cache, CacheFile, CacheUpdate};
use crate::cli::Halt;
use crate::context::{JobFacts, Ran, RunContext, RunState, lock};
use crate::job::{PAYLOAD_FILE, log_tail, run_job, tell_the_parent_run};
use crate::model::{Job, Pipeline};
use crate::output;
use crate::plan::{Lock, RunOptions, checked_record, lock_project, plural};
use crate::project::Project;
use crate::report;
use crate::segment::{expanded_records, not_run_after, segment_todo};
use crate::store::{self, CacheState, JobStatus, RecordWriter, RunStatus, Update};
use crate::uptodate::{Combined, decide};

/// Lines of a failed job's log shown on the terminal (without -v).
pub(crate) const LOG_TAIL_LINES: usize = 15;
/// The run's report in the shared shape, beside its record.
pub(crate) const REPORT_FILE: &str = "report.json";

/// Run `pipeline`; returns the exit status. Errors are problems before any job ran.
#[expect(
    clippy::too_many_lines,
    reason = "a run's whole life: its record, its segments between loop stages, its end"
)]
pub(crate) fn run(
    project: &Project,
    pipeline: &Pipeline,
    opts: &RunOptions,
    project_lock: Lock,
) -> Result<ExitStatus> {
    let (record, done) = checked_record(pipeline, opts)?;
    // Checked before anything runs; computed again as loop stages are expanded.
    opts.force.forced(pipeline).usage()?;
    let _lock = match project_lock.held {
        Some(held) => Some(held),
        None => lock_project(project, project_lock.wait).usage()?,
    };
    let run_id = record.run_id.clone();
    let run_dir = store::run_dir(&project.at(""), &run_id);
    for sub in ["logs", "outputs"] {
        std::fs::create_dir_all(run_dir.join(sub))
            .with_context(|| format!("creating {}", run_dir.display()))?;
    }
    let cache = Cache::new(
        &project.dir,
        &pipeline.name,
        CacheFile::load(&project.dir),
        &opts.payload,
    );
    let state = RunState::default();
    for &(si, ji) in &done {
        let j = &record.stages[si].jobs[ji];
        state.done(&j.job_id, j.output.clone(), &cache);
    }
    if !opts.payload.is_empty() {
        // For nested pipelines, which get the same payload.
        let json = serde_json::to_vec(&opts.payload).expect("a payload serializes");
        fanout::fsutil::write_atomic(&run_dir.join(PAYLOAD_FILE), &json)?;
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
    let jobs = pipeline.job_count();
    eprintln!(
        "run {run_id}: pipeline {} ({}{jobs} job{}, up to {} at once)",
        pipeline.name,
        if pipeline.is_graph {
            String::new()
        } else {
            format!(
                "{} stage{}, ",
                pipeline.stages.len(),
                plural(pipeline.stages.len())
            )
        },
        plural(jobs),
        opts.max_workers.get(),
    );
    if !done.is_empty() {
        eprintln!(
            "{} job{} succeeded earlier in this run: not run again",
            done.len(),
            plural(done.len())
        );
    }

    let mut pipeline = pipeline.clone();
    let mut ran = Ran::default();
    let mut from = 0;
    // Segments: the stages up to the next loop stage run as one batch; then the loop stage is
    // expanded from the outputs so far, and the next segment starts with it.
    loop {
        if from > 0 && ran.halted_by.is_some() {
            // A loop stage that failed stops the pipeline.
            not_run_after(&pipeline, from, &writer, &interrupt, &mut ran, &state);
            break;
        }
        let until = (from..pipeline.stages.len())
            .find(|&si| {
                pipeline.stages[si]
                    .looping
                    .as_ref()
                    .is_some_and(|l| !l.expanded)
            })
            .unwrap_or(pipeline.stages.len());
        let forced = opts.force.forced(&pipeline)?;
        let ctx = RunContext {
            project,
            pipeline: &pipeline,
            opts,
            run_dir: &run_dir,
            run_id: &run_id,
            interrupt: &interrupt,
            runner: &runner,
            writer: &writer,
            cache: &cache,
            forced: &forced,
        };
        run_jobs(&ctx, from..until, &mut ran, &state)?;
        if until == pipeline.stages.len() {
            break;
        }
        if interrupt.is_cancelled() || ran.halted_by.is_some() {
            not_run_after(&pipeline, until, &writer, &interrupt, &mut ran, &state);
            break;
        }
        let outputs = lock(&state.outputs).clone();
        let stage_name = pipeline.stages[until].name.clone();
        match crate::looping::expand(&mut pipeline, until, &outputs, &opts.payload) {
            Ok(n) => {
                let over = crate::looping::describe(
                    &pipeline.stages[until]
                        .looping
                        .as_ref()
                        .expect("a loop")
                        .over,
                );
                // A resumed run: its iterations that succeeded are not run again.
                let jobs =
                    expanded_records(&pipeline, until, opts.resumed.as_ref(), &state, &cache);
                let again = jobs
                    .iter()
                    .filter(|j| j.status == JobStatus::Pending)
                    .count();
                let note = if n == 0 {
                    format!("{over} is an empty list: no iterations")
                } else {
                    format!("{n} item{} from {over}", plural(n))
                };
                let earlier = jobs.len() - again;
                eprintln!(
                    "stage {stage_name}: {note}{}",
                    if earlier > 0 {
                        format!(
                            " ({earlier} iteration{} succeeded earlier in this run)",
                            plural(earlier)
                        )
                    } else {
                        String::new()
                    }
                );
                writer.send(Update::Expand {
                    stage: until,
                    jobs,
                    note,
                });
            }
            Err(why) => {
                eprintln!("stage {stage_name} FAILED: {why}");
                ran.any_failed = true;
                if pipeline.stages[until].stop_on_failure && ran.halted_by.is_none() {
                    ran.halted_by = Some(stage_name);
                }
                if let Some(l) = pipeline.stages[until].looping.as_mut() {
                    l.expanded = true;
                }
                writer.send(Update::Note {
                    stage: until,
                    note: format!("failed: {why}"),
                });
            }
        }
        from = until;
    }

    let status = if interrupt.reason() == Some(CancelReason::Interrupted) {
        RunStatus::Cancelled
    } else if ran.any_failed {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    writer.send(Update::RunFinished {
        status,
        at: SystemTime::now(),
    });
    let (record, record_writes) = writer.finish()?;
    prune_cache(project, &pipeline, status);
    let report = run_dir.join(REPORT_FILE);
    report::write_json(&record, &report)?;
    if let Some(copy) = &opts.report {
        report::write_json(&record, copy)?;
    }
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

/// Run every job not in `done` as one pool batch: each starts as soon as what it waits for has
/// finished; every transition goes to the record.
#[expect(
    clippy::too_many_lines,
    reason = "the batch, its record events and the work function read best together"
)]
fn run_jobs(
    ctx: &RunContext<'_>,
    stages: std::ops::Range<usize>,
    ran: &mut Ran,
    so_far: &RunState,
) -> Result<()> {
    let RunContext {
        pipeline,
        opts,
        interrupt,
        writer,
        cache,
        ..
    } = *ctx;
    let flat: Vec<(usize, usize, &Job)> = pipeline.jobs().collect();
    let todo = segment_todo(ctx, &flat, stages, ran, so_far);
    let mut batch_index = vec![None; flat.len()];
    for (bi, &fi) in todo.iter().enumerate() {
        batch_index[fi] = Some(bi);
    }
    let entries: Mutex<Vec<Option<crate::cache::Entry>>> = Mutex::new(vec![None; flat.len()]);
    let combined: Combined = Mutex::new(HashMap::new());
    // The stages' shared `after` lists, in batch positions (once per list, not per job).
    let mut after_in_batch: HashMap<usize, std::sync::Arc<[usize]>> = HashMap::new();

    let tasks: Vec<Task<usize>> = todo
        .iter()
        .map(|&fi| {
            let (si, _, job) = flat[fi];
            let stage = &pipeline.stages[si];
            let policy = match (stage.stop_on_failure, opts.halt) {
                (false, _) => FailurePolicy::KeepGoing,
                (true, Halt::Soon) => FailurePolicy::StopSoon,
                (true, Halt::Now) => FailurePolicy::StopNow,
            };
            let w = &pipeline.waits[fi];
            Task::new(job.id.clone(), fi)
                .with_retry(RetryPolicy::retries(job.retries).retry_if(|e| {
                    matches!(e, TaskError::Failed { .. } | TaskError::TimedOut { .. })
                }))
                .with_failure_policy(policy)
                .needs(w.needs.iter().filter_map(|&d| batch_index[d]))
                .after_shared(
                    after_in_batch
                        .entry(w.after.as_ptr().addr())
                        .or_insert_with(|| w.after.iter().filter_map(|&d| batch_index[d]).collect())
                        .clone(),
                )
        })
        .collect();
    let pool = Pool::new(
        PoolConfig::new(opts.max_workers)
            .noun("job", "jobs")
            .with_env_overrides()?,
    );

    let mut progress = opts.progress.reporter_with_detail(opts.detail_lines);
    // Every event goes to the progress reporter; a job's end also to the record, with why a
    // job did not start in lorchestra's words (the reporter gets those words too).
    let mut record = |event: &Event<'_, (), JobFacts>| {
        let Event::TaskFinished {
            outcome,
            finished,
            total,
        } = event
        else {
            progress.report(event);
            return;
        };
        let fi = todo[outcome.index];
        let (si, ji, job) = flat[fi];
        let stage = &pipeline.stages[si];
        let mut job_status = JobStatus::from_task(outcome.status);
        let mut error = outcome.error_message();
        if outcome.meta.up_to_date {
            job_status = JobStatus::UpToDate;
            ran.up_to_date.push(job.id.clone());
        }
        lock(&so_far.statuses).insert(job.id.clone(), job_status);
        if outcome.status.is_failure() {
            ran.any_failed = true;
            if stage.stop_on_failure && ran.halted_by.is_none() {
                ran.halted_by = Some(stage.name.clone());
            }
        }
        if outcome.attempts == 0 {
            ran.not_started += 1;
            // Not started: say why in lorchestra's words.
            if outcome.status == fanout::Status::Cancelled {
                error = Some("not started: the run was interrupted".to_owned());
            } else if let (Some(by), true) = (&ran.halted_by, job.needs.is_empty()) {
                error = Some(if pipeline.is_graph {
                    "not started: a job failed and stops the pipeline".to_owned()
                } else {
                    format!("not started: stage {by:?} failed and stops the pipeline")
                });
            }
        }
        if error != outcome.error_message()
            && let Some(why) = &error
        {
            let mut reworded = (*outcome).clone();
            reworded.error = Some(TaskError::skipped(why.clone()));
            progress.report(&Event::TaskFinished {
                outcome: &reworded,
                finished: *finished,
                total: *total,
            });
        } else {
            progress.report(event);
        }
        writer.send(Update::Finished {
            stage: si,
            job: ji,
            status: job_status,
            attempts: if outcome.meta.up_to_date {
                0
            } else {
                outcome.attempts
            },
            exit_code: outcome.meta.exit_code,
            slurm_job_id: outcome.meta.slurm_job_id,
            error,
            duration: outcome.duration,
            at: outcome.meta.ended_at.unwrap_or_else(SystemTime::now),
        });
    };
    pool.run_with_meta(&tasks, interrupt, &mut record, |&fi, tctx| {
        let (si, ji, job) = flat[fi];
        if tctx.attempt() == 1 {
            match decide(ctx, &flat, fi, so_far, &combined) {
                Err(why) => return (Err(TaskError::failed(why)), JobFacts::default()),
                Ok(Some(entry)) => {
                    entries.lock().unwrap_or_else(PoisonError::into_inner)[fi] = Some(entry);
                }
                Ok(None) => {}
            }
            let up_to_date = lock(&so_far.deps)
                .get(&job.id)
                .is_some_and(|d| d.runs.is_none());
            if up_to_date {
                let facts = JobFacts {
                    up_to_date: true,
                    ..JobFacts::default()
                };
                return (Ok(()), facts);
            }
        }
        writer.send(Update::Started {
            stage: si,
            job: ji,
            attempt: tctx.attempt(),
            at: SystemTime::now(),
        });
        let log = ctx.run_dir.join(crate::layout::log_name(&job.id));
        let out = match run_job(
            ctx,
            job,
            &log,
            tctx.attempt(),
            ctx.runner,
            tctx.cancel_token(),
        ) {
            Ok(out) => out,
            Err(e) => return (Err(e), JobFacts::default()),
        };
        let facts = JobFacts {
            exit_code: match out.ending {
                fanout::process::Ending::Exited(code) => Some(code),
                _ => None,
            },
            slurm_job_id: out.slurm_job_id,
            up_to_date: false,
            ended_at: Some(SystemTime::now()),
        };
        let result = out.into_result().map(drop).map_err(|e| match e {
            TaskError::Failed { .. } | TaskError::TimedOut { .. } => {
                e.with_detail(log_tail(&log, opts.detail_lines))
            }
            other => other,
        });
        let result = result.and_then(|()| {
            let value = output::read(
                &crate::layout::value_file(ctx.run_dir, &job.id),
                job.output,
                &log,
            )
            .map_err(TaskError::failed)?;
            if let Some(value) = value {
                lock(&so_far.outputs).insert(job.id.clone(), value.clone());
                writer.send(Update::Output {
                    stage: si,
                    job: ji,
                    value,
                });
            }
            Ok(())
        });
        if result.is_ok()
            && let Some(mut entry) = lock(&entries)[fi].take()
        {
            entry.output = lock(&so_far.outputs).get(&job.id).cloned();
            writer.send(Update::Cache(CacheUpdate {
                job: Some((cache.name(&job.id), entry)),
                stamps: Vec::new(),
            }));
        }
        (result, facts)
    })?;
    Ok(())
}
