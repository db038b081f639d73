//! Running a pipeline: segment by segment (`segment.rs`), the jobs of a segment as one pool
//! batch: the work function decides whether a job runs (`uptodate.rs`) and runs it (`job.rs`);
//! the reporter on the owner thread turns events into the record's updates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, Result};
use fanout::{
    CancelReason, Event, ExitStatus, FailurePolicy, Pool, PoolConfig, ProcessRunner, RetryPolicy,
    Task, TaskError,
};
use fanout_cli::UsageResult;

use crate::cache::{Cache, CacheFile, CacheUpdate};
use crate::cli::Halt;
use crate::context::{JobFacts, JobNote, Ran, RunContext, RunState, lock};
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

/// Run the jobs of `stages` not done yet as one pool batch: each starts as soon as what it waits
/// for has finished. Workers decide and run; they tell the owner thread what happened (notes
/// while a job runs, facts with its outcome), and the owner's [`Recorder`] alone turns that into
/// the record's updates.
fn run_jobs(
    ctx: &RunContext<'_>,
    stages: std::ops::Range<usize>,
    ran: &mut Ran,
    so_far: &RunState,
) -> Result<()> {
    let flat: Vec<(usize, usize, &Job)> = ctx.pipeline.jobs().collect();
    let todo = segment_todo(ctx, &flat, stages, ran, so_far);
    let tasks = batch_tasks(ctx, &flat, &todo);
    let pool = Pool::new(
        PoolConfig::new(ctx.opts.max_workers)
            .noun("job", "jobs")
            .with_env_overrides()?,
    );
    let mut recorder = Recorder {
        ctx,
        flat: &flat,
        todo: &todo,
        ran,
        so_far,
        progress: ctx
            .opts
            .progress
            .reporter_with_detail(ctx.opts.detail_lines),
    };
    let work = Work {
        ctx,
        flat: &flat,
        so_far,
        entries: Mutex::new(vec![None; flat.len()]),
        combined: Mutex::new(HashMap::new()),
    };
    pool.run_with_meta(&tasks, ctx.interrupt, &mut recorder, |&fi, tctx| {
        work.job(fi, tctx)
    })?;
    Ok(())
}

/// The batch's tasks: each job with its retries, its stage's failure policy and what it waits
/// for, in batch positions.
fn batch_tasks(
    ctx: &RunContext<'_>,
    flat: &[(usize, usize, &Job)],
    todo: &[usize],
) -> Vec<Task<usize>> {
    let mut batch_index = vec![None; flat.len()];
    for (bi, &fi) in todo.iter().enumerate() {
        batch_index[fi] = Some(bi);
    }
    // The stages' shared `after` lists, in batch positions (once per list, not per job).
    let mut after_in_batch: HashMap<usize, std::sync::Arc<[usize]>> = HashMap::new();
    todo.iter()
        .map(|&fi| {
            let (si, _, job) = flat[fi];
            let stage = &ctx.pipeline.stages[si];
            let policy = match (stage.stop_on_failure, ctx.opts.halt) {
                (false, _) => FailurePolicy::KeepGoing,
                (true, Halt::Soon) => FailurePolicy::StopSoon,
                (true, Halt::Now) => FailurePolicy::StopNow,
            };
            let w = &ctx.pipeline.waits[fi];
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
        .collect()
}

/// The work function's side: decide whether a job runs, run it, say what happened.
struct Work<'a> {
    ctx: &'a RunContext<'a>,
    flat: &'a [(usize, usize, &'a Job)],
    so_far: &'a RunState,
    /// Per job: the cache entry to keep if it succeeds (decided at its first attempt).
    entries: Mutex<Vec<Option<crate::cache::Entry>>>,
    combined: Combined,
}

impl Work<'_> {
    /// One attempt of job `fi`.
    fn job(&self, fi: usize, tctx: &fanout::TaskContext<'_>) -> (Result<(), TaskError>, JobFacts) {
        let ctx = self.ctx;
        if tctx.attempt() == 1 {
            let decided = decide(ctx, self.flat, fi, self.so_far, &self.combined);
            let (reason, decided) = match decided {
                Ok(d) => (d.reason.clone(), Ok(d)),
                Err(why) => (Some(why.clone()), Err(why)),
            };
            let (stamps, output, up_to_date) = match &decided {
                Ok(d) => (d.stamps.clone(), d.output.clone(), d.up_to_date),
                Err(_) => (Vec::new(), None, false),
            };
            tctx.note(JobNote::Decided {
                reason,
                stamps,
                output,
            });
            match decided {
                Err(why) => return (Err(TaskError::failed(why)), JobFacts::default()),
                Ok(d) => lock(&self.entries)[fi] = d.entry,
            }
            if up_to_date {
                let facts = JobFacts {
                    up_to_date: true,
                    ..JobFacts::default()
                };
                return (Ok(()), facts);
            }
        }
        // Until it succeeds, the job is not up to date (it may leave half-written outputs).
        let started = lock(&self.entries)[fi]
            .as_ref()
            .map(crate::cache::Entry::started);
        tctx.note(JobNote::Starting {
            attempt: tctx.attempt(),
            at: SystemTime::now(),
            entry: started,
        });
        self.run(fi, tctx)
    }

    /// Run job `fi`'s process; its value and, on success, its cache entry go with the facts.
    fn run(&self, fi: usize, tctx: &fanout::TaskContext<'_>) -> (Result<(), TaskError>, JobFacts) {
        let (ctx, job) = (self.ctx, self.flat[fi].2);
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
        let mut facts = JobFacts {
            exit_code: match out.ending {
                fanout::process::Ending::Exited(code) => Some(code),
                _ => None,
            },
            slurm_job_id: out.slurm_job_id,
            ended_at: Some(SystemTime::now()),
            ..JobFacts::default()
        };
        let result = out.into_result().map(drop).map_err(|e| match e {
            TaskError::Failed { .. } | TaskError::TimedOut { .. } => {
                e.with_detail(log_tail(&log, ctx.opts.detail_lines))
            }
            other => other,
        });
        let result = result.and_then(|()| {
            let file = crate::layout::value_file(ctx.run_dir, &job.id);
            facts.output = output::read(&file, job.output, &log).map_err(TaskError::failed)?;
            if let Some(value) = &facts.output {
                lock(&self.so_far.outputs).insert(job.id.clone(), value.clone());
            }
            Ok(())
        });
        if result.is_ok()
            && let Some(mut entry) = lock(&self.entries)[fi].take()
        {
            entry.output.clone_from(&facts.output);
            facts.entry = Some(entry);
        }
        (result, facts)
    }
}

/// The owner thread's reporter: every event to the progress reporter, and what the jobs tell
/// (notes, facts) to the record, with lorchestra's words for why a job did not start.
struct Recorder<'a, 'r> {
    ctx: &'a RunContext<'a>,
    flat: &'a [(usize, usize, &'a Job)],
    todo: &'a [usize],
    ran: &'r mut Ran,
    so_far: &'a RunState,
    progress: Box<dyn fanout::Reporter<(), JobFacts>>,
}

impl fanout::Reporter<(), JobFacts> for Recorder<'_, '_> {
    fn report(&mut self, event: &Event<'_, (), JobFacts>) {
        match event {
            Event::TaskNote { index, note, .. } => {
                if let Some(note) = note.downcast_ref::<JobNote>() {
                    self.note(self.todo[*index], note);
                }
                self.progress.report(event);
            }
            Event::TaskFinished {
                outcome,
                finished,
                total,
            } => self.finished(outcome, *finished, *total, event),
            // What ran, recorded as the pool chose it (never worked out again afterwards).
            Event::BatchStarted { strategy, .. } => {
                self.send(Update::Strategy(*strategy));
                self.progress.report(event);
            }
            _ => self.progress.report(event),
        }
    }
}

impl Recorder<'_, '_> {
    fn send(&self, update: Update) {
        self.ctx.writer.send(update);
    }

    /// What job `fi` told while it runs.
    fn note(&self, fi: usize, note: &JobNote) {
        let (stage, job, _) = self.flat[fi];
        match note {
            JobNote::Decided {
                reason,
                stamps,
                output,
            } => {
                if let Some(reason) = reason {
                    let reason = reason.clone();
                    self.send(Update::Reason { stage, job, reason });
                }
                if !stamps.is_empty() {
                    self.send(Update::Cache(CacheUpdate {
                        job: None,
                        stamps: stamps.clone(),
                    }));
                }
                if let Some(value) = output {
                    let value = value.clone();
                    self.send(Update::Output { stage, job, value });
                }
            }
            JobNote::Starting { attempt, at, entry } => {
                if let Some(entry) = entry {
                    let name = self.ctx.cache.name(&self.flat[fi].2.id);
                    self.send(Update::Cache(CacheUpdate {
                        job: Some((name, entry.clone())),
                        stamps: Vec::new(),
                    }));
                }
                self.send(Update::Started {
                    stage,
                    job,
                    attempt: *attempt,
                    at: *at,
                });
            }
        }
    }

    /// A job's end: its value, its cache entry, then how it ended, in lorchestra's words for
    /// why a job did not start (the progress reporter gets those words too).
    fn finished(
        &mut self,
        outcome: &fanout::Outcome<(), JobFacts>,
        finished: usize,
        total: usize,
        event: &Event<'_, (), JobFacts>,
    ) {
        let fi = self.todo[outcome.index];
        let (si, ji, job) = self.flat[fi];
        let stage = &self.ctx.pipeline.stages[si];
        let facts = &outcome.meta;
        let mut job_status = JobStatus::from_task(outcome.status);
        if facts.up_to_date {
            job_status = JobStatus::UpToDate;
            self.ran.up_to_date.push(job.id.clone());
        }
        lock(&self.so_far.statuses).insert(job.id.clone(), job_status);
        if outcome.status.is_failure() {
            self.ran.any_failed = true;
            if stage.stop_on_failure && self.ran.halted_by.is_none() {
                self.ran.halted_by = Some(stage.name.clone());
            }
        }
        let error = self.why_not_started(outcome, job);
        if error != outcome.error_message()
            && let Some(why) = &error
        {
            let mut reworded = outcome.clone();
            reworded.error = Some(TaskError::skipped(why.clone()));
            self.progress.report(&Event::TaskFinished {
                outcome: &reworded,
                finished,
                total,
            });
        } else {
            self.progress.report(event);
        }
        if let Some(value) = &facts.output {
            let value = value.clone();
            self.send(Update::Output {
                stage: si,
                job: ji,
                value,
            });
        }
        if let Some(entry) = &facts.entry {
            self.send(Update::Cache(CacheUpdate {
                job: Some((self.ctx.cache.name(&job.id), entry.clone())),
                stamps: Vec::new(),
            }));
        }
        self.send(Update::Finished {
            stage: si,
            job: ji,
            status: job_status,
            attempts: if facts.up_to_date {
                0
            } else {
                outcome.attempts
            },
            exit_code: facts.exit_code,
            slurm_job_id: facts.slurm_job_id,
            error,
            duration: outcome.duration,
            at: facts.ended_at.unwrap_or_else(SystemTime::now),
        });
    }

    /// The error to record: for a job that did not start, why, in lorchestra's words.
    fn why_not_started(
        &mut self,
        outcome: &fanout::Outcome<(), JobFacts>,
        job: &Job,
    ) -> Option<String> {
        let mut error = outcome.error_message();
        if outcome.attempts == 0 {
            self.ran.not_started += 1;
            if outcome.status == fanout::Status::Cancelled {
                error = Some("not started: the run was interrupted".to_owned());
            } else if let (Some(by), true) = (&self.ran.halted_by, job.needs.is_empty()) {
                error = Some(if self.ctx.pipeline.is_graph {
                    "not started: a job failed and stops the pipeline".to_owned()
                } else {
                    format!("not started: stage {by:?} failed and stops the pipeline")
                });
            }
        }
        error
    }
}
