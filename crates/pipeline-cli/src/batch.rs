//! One segment's jobs as one pool batch. The work function (any worker thread) decides whether
//! a job runs (`uptodate.rs`) and runs it (`job.rs`); it tells what it learned as notes while
//! the job runs and as facts with its outcome. The [`Recorder`], the pool's reporter on the
//! owner thread, alone turns those into the run record's updates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::Result;
use fanout::{Budget, Event, FailurePolicy, Pool, PoolConfig, RetryPolicy, Task, TaskError};

use crate::cache::CacheUpdate;
use crate::cli::Halt;
use crate::context::{JobFacts, JobNote, Ran, RunContext, RunState, lock};
use crate::job::{log_tail, run_job};
use crate::model::Job;
use crate::output;
use crate::segment::segment_todo;
use crate::store::{JobStatus, Update};
use crate::uptodate::{Combined, Decided, decide};

/// Run the jobs of `stages` not done yet as one pool batch: each starts as soon as what it waits
/// for has finished. Workers decide and run; they tell the owner thread what happened (notes
/// while a job runs, facts with its outcome), and the owner's [`Recorder`] alone turns that into
/// the record's updates.
pub(crate) fn run_jobs(
    ctx: &RunContext<'_>,
    stages: std::ops::Range<usize>,
    ran: &mut Ran,
    so_far: &RunState,
) -> Result<()> {
    let flat: Vec<(usize, usize, &Job)> = ctx.pipeline.jobs().collect();
    let todo = segment_todo(ctx, &flat, stages, ran, so_far);
    let budget = crate::admission::batch_budget(ctx.opts, &flat, &todo);
    let tasks = batch_tasks(ctx, &flat, &todo, budget.as_ref());
    let mut config = PoolConfig::new(ctx.opts.max_workers)
        .noun("job", "jobs")
        .with_env_overrides()?;
    if let Some(budget) = &budget {
        config = config.with_budget(budget.clone());
    }
    let pool = Pool::new(config);
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
        decided: Mutex::new(vec![false; flat.len()]),
        entries: Mutex::new(vec![None; flat.len()]),
        combined: Mutex::new(HashMap::new()),
        budget,
    };
    pool.run_reporting(&tasks, ctx.interrupt, &mut recorder, |&fi, tctx| {
        work.job(fi, tctx)
    })?;
    Ok(())
}

/// The batch's tasks: each job with its retries, its stage's failure policy, what it waits
/// for (in batch positions) and what it takes of the budget.
fn batch_tasks(
    ctx: &RunContext<'_>,
    flat: &[(usize, usize, &Job)],
    todo: &[usize],
    budget: Option<&Budget>,
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
            let task = match budget {
                Some(budget) if crate::plan::local_needs(job).next().is_some() => {
                    Task::new(job.id.clone(), fi).uses(crate::admission::demand(budget, job))
                }
                _ => Task::new(job.id.clone(), fi),
            };
            // No retries: the pool's own policy (none), not a policy per job.
            let task = match job.retries {
                0 => task,
                _ => task.with_retry(retry_policy(job)),
            };
            task.with_failure_policy(policy)
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
    /// Per job: whether it was decided (at its first attempt; a retry decides again after a
    /// decision that failed, so a job never runs without one).
    decided: Mutex<Vec<bool>>,
    /// Per job: the cache entry to keep if it succeeds.
    /// Boxed: most jobs have none.
    entries: Mutex<Vec<Option<Box<crate::cache::Entry>>>>,
    combined: Combined,
    /// The batch's budget, if its jobs take resources: names what the pool hands out.
    budget: Option<Budget>,
}

impl Work<'_> {
    /// One attempt of job `fi`.
    fn job(&self, fi: usize, tctx: &fanout::TaskContext<'_>) -> (Result<(), TaskError>, JobFacts) {
        let first = !lock(&self.decided)[fi];
        if first {
            match decide(self.ctx, self.flat, fi, self.so_far, &self.combined) {
                Err(why) => {
                    tctx.note(JobNote::Decided {
                        reason: Some(why.clone()),
                        stamps: Vec::new(),
                        output: None,
                        params: std::collections::BTreeMap::new(),
                    });
                    return (Err(TaskError::failed(why)), JobFacts::default());
                }
                Ok(Decided {
                    up_to_date,
                    reason,
                    stamps,
                    output,
                    entry,
                    params,
                }) => {
                    tctx.note(JobNote::Decided {
                        reason,
                        stamps,
                        output,
                        params,
                    });
                    lock(&self.decided)[fi] = true;
                    lock(&self.entries)[fi] = entry.map(Box::new);
                    if up_to_date {
                        let job = self.flat[fi].2;
                        // Its metrics as its last success left them (none if they are gone).
                        let metrics = (!job.metrics.is_empty())
                            .then(|| {
                                crate::metrics::read(&job_dir(self.ctx, job), &job.metrics).ok()
                            })
                            .flatten();
                        let facts = JobFacts {
                            up_to_date: true,
                            metrics,
                            ..JobFacts::default()
                        };
                        return (Ok(()), facts);
                    }
                }
            }
        }
        // Until it succeeds, the job is not up to date (it may leave half-written outputs):
        // said once, before it first runs.
        let started = if first {
            lock(&self.entries)[fi]
                .as_ref()
                .map(|e| Box::new(e.started()))
        } else {
            None
        };
        let resources =
            crate::admission::attempt_resources(self.budget.as_ref(), self.flat[fi].2, tctx);
        tctx.note(JobNote::Starting {
            attempt: tctx.attempt(),
            at: SystemTime::now(),
            entry: started,
            waited: tctx.resource_wait(),
            resources: resources.clone(),
        });
        self.run(fi, tctx, &resources)
    }

    /// Run job `fi`'s process; its value and, on success, its cache entry go with the facts.
    fn run(
        &self,
        fi: usize,
        tctx: &fanout::TaskContext<'_>,
        resources: &crate::resources::Amounts,
    ) -> (Result<(), TaskError>, JobFacts) {
        let (ctx, job) = (self.ctx, self.flat[fi].2);
        let log = ctx.run_dir.join(crate::layout::log_name(&job.id));
        let attempt = crate::job::Attempt {
            number: tctx.attempt(),
            resources,
        };
        let out = match run_job(ctx, job, &log, &attempt, ctx.runner, tctx.cancel_token()) {
            Ok(out) => out,
            Err(e) => return (Err(e), JobFacts::default()),
        };
        let mut facts = JobFacts {
            exit_code: match out.ending {
                fanout::process::Ending::Exited(code) => Some(code),
                _ => None,
            },
            slurm_job_id: out.slurm_job_id,
            slurm_node: out.slurm_nodes.clone(),
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
            if !job.metrics.is_empty() {
                facts.metrics = Some(
                    crate::metrics::read(&job_dir(ctx, job), &job.metrics)
                        .map_err(TaskError::failed)?,
                );
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

/// A job's retries: failures and time-outs, after a backoff doubling from its `retry_backoff`
/// (else the core's 500 ms) with 20% jitter, at most 32 times the first (and at least 30 s).
fn retry_policy(job: &Job) -> RetryPolicy {
    let policy = RetryPolicy::retries(job.retries)
        .retry_if(|e| matches!(e, TaskError::Failed { .. } | TaskError::TimedOut { .. }));
    match job.retry_backoff {
        Some(first) => policy.with_initial_backoff(first).with_max_backoff(
            first
                .saturating_mul(32)
                .max(std::time::Duration::from_secs(30)),
        ),
        None => policy,
    }
}

/// The folder job `job` runs in.
fn job_dir(ctx: &RunContext<'_>, job: &Job) -> std::path::PathBuf {
    job.cwd
        .as_ref()
        .map_or_else(|| ctx.project.dir.clone(), |c| ctx.project.dir.join(c))
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
            // What ran, recorded as the pool chose it (never worked out again afterwards): the
            // strategy of the run's largest batch (a loop of one item runs serially, an empty
            // one runs nothing; neither says how the run's jobs ran).
            Event::BatchStarted {
                strategy, total, ..
            } => {
                if *total > self.ran.largest_batch {
                    self.ran.largest_batch = *total;
                    self.send(Update::Strategy(*strategy));
                }
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
                params,
            } => {
                if !params.is_empty() {
                    self.send(Update::Params(params.clone()));
                }
                if let Some(reason) = reason {
                    let reason = reason.clone();
                    self.send(Update::Reason { stage, job, reason });
                }
                if !stamps.is_empty() {
                    self.send(Update::Cache(Box::new(CacheUpdate {
                        job: None,
                        stamps: stamps.clone(),
                    })));
                }
                if let Some(value) = output {
                    let value = value.clone();
                    self.send(Update::Output { stage, job, value });
                }
            }
            JobNote::Starting {
                attempt,
                at,
                entry,
                waited,
                resources,
            } => {
                if let Some(entry) = entry {
                    let name = self.ctx.cache.name(&self.flat[fi].2.id);
                    self.send(Update::Cache(Box::new(CacheUpdate {
                        job: Some((name, (**entry).clone())),
                        stamps: Vec::new(),
                    })));
                }
                self.send(Update::Started {
                    stage,
                    job,
                    attempt: *attempt,
                    at: *at,
                    waited: *waited,
                    resources: resources.clone(),
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
        if let Some(values) = &facts.metrics {
            self.send(Update::Metrics {
                stage: si,
                job: ji,
                values: values.clone(),
            });
        }
        if let Some(entry) = &facts.entry {
            self.send(Update::Cache(Box::new(CacheUpdate {
                job: Some((self.ctx.cache.name(&job.id), (**entry).clone())),
                stamps: Vec::new(),
            })));
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
            slurm_node: facts.slurm_node.clone(),
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
