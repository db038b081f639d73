//! Running a pipeline: stages in order, the jobs of a stage through the core's pool, every job
//! transition sent to the run record's writer.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use fanout::runlock::{RunLock, RunLockError, Wait};
use fanout::{
    CancelReason, CancelToken, Command, Event, ExitStatus, FailurePolicy, Launcher, MaxWorkers,
    Pool, PoolConfig, ProcessRunner, ProgressMode, RetryPolicy, Sink, Task, TaskError,
};

use fanout_cli::{RunArgs, UsageResult};

use crate::cache::{Cache, CacheFile, CacheUpdate, DepState, Verdict, first_reason};
use crate::cli::{Halt, Lorchestra};
use crate::model::{Backend, Job, Pipeline, Run};
use crate::output;
use crate::payload::{self, Payload};
use crate::project::Project;
use crate::report;
use crate::store::{
    self, CacheState, JobRecord, JobStatus, RecordWriter, RunRecord, RunStatus, StageRecord, Update,
};

#[derive(Debug)]
pub(crate) struct RunOptions {
    pub(crate) max_workers: MaxWorkers,
    pub(crate) halt: Halt,
    /// `--resume RUN_ID`: that run's record, read once.
    pub(crate) resumed: Option<RunRecord>,
    pub(crate) progress: ProgressMode,
    /// Lines of a failed job's log shown under it.
    pub(crate) detail_lines: usize,
    /// Where jobs whose pipeline file does not say run.
    pub(crate) backend: Backend,
    /// `--slurm-arg`s, added to every Slurm job's srun options (after the file's).
    pub(crate) slurm_args: Vec<String>,
    /// The time limit of jobs without a `timeout` of their own.
    pub(crate) timeout: Option<Duration>,
    /// `--report FILE`: a copy of the run's report.
    pub(crate) report: Option<PathBuf>,
    /// `--force [JOB]`: run jobs even if they are up to date.
    pub(crate) force: Force,
    /// The invocation payload (placeholders are replaced before anything runs).
    pub(crate) payload: Payload,
}

/// `--force`: which jobs run even if they are up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Force {
    Nothing,
    All,
    /// This job and every job that waits for it, directly or not.
    Job(String),
}

impl Force {
    #[expect(
        clippy::option_option,
        reason = "clap's shape of a flag with an optional value: absent, --force, --force=JOB"
    )]
    pub(crate) fn from_arg(arg: Option<Option<String>>) -> Self {
        match arg {
            None => Force::Nothing,
            Some(None) => Force::All,
            Some(Some(job)) => Force::Job(job),
        }
    }

    /// Per job (in job order): whether it is forced. A job that is not in the pipeline is the
    /// user's error.
    fn forced(&self, pipeline: &Pipeline) -> Result<Vec<bool>> {
        let n = pipeline.job_count();
        match self {
            Force::Nothing => Ok(vec![false; n]),
            Force::All => Ok(vec![true; n]),
            Force::Job(id) => {
                // A loop's job: every iteration of it (none before the loop is expanded).
                let mut forced: Vec<bool> = pipeline
                    .jobs()
                    .map(|(_, _, j)| {
                        &j.id == id || j.iteration.as_ref().is_some_and(|it| &it.of == id)
                    })
                    .collect();
                let templates = || {
                    pipeline
                        .stages
                        .iter()
                        .flat_map(|s| s.looping.iter().flat_map(|l| &l.jobs))
                };
                if !forced.contains(&true) && !templates().any(|t| &t.id == id) {
                    let names: Vec<&str> = pipeline
                        .jobs()
                        .map(|(_, _, j)| j.id.as_str())
                        .chain(templates().map(|t| t.id.as_str()))
                        .collect();
                    bail!(
                        "--force {id}: not a job of the pipeline {} (its jobs: {})",
                        pipeline.name,
                        names.join(", ")
                    );
                }
                // Waits point backwards in job order: one pass forward finds every dependent.
                // A stage's jobs share their `after` list: looked at once.
                let mut after_forced: HashMap<usize, bool> = HashMap::new();
                for (fi, w) in pipeline.waits.iter().enumerate() {
                    let after = *after_forced
                        .entry(w.after.as_ptr().addr())
                        .or_insert_with(|| w.after.iter().any(|&d| forced[d]));
                    if after || w.needs.iter().any(|&d| forced[d]) {
                        forced[fi] = true;
                    }
                }
                Ok(forced)
            }
        }
    }
}

impl RunOptions {
    /// The shared flags, checked: a bad value is a usage error.
    pub(crate) fn from_args(args: &RunArgs<Lorchestra>, halt: Halt, force: Force) -> Result<Self> {
        let backend = match args.backend.as_deref() {
            None | Some("local") => Backend::Local,
            Some("slurm") => Backend::Slurm,
            Some(other) => {
                return Err(anyhow::anyhow!("--backend {other}: not a backend")).usage();
            }
        };
        Ok(RunOptions {
            max_workers: args.max_workers_or(None)?,
            halt,
            resumed: None,
            progress: args.progress(),
            detail_lines: args.detail_lines(LOG_TAIL_LINES),
            backend,
            slurm_args: args.slurm_args.clone(),
            timeout: args.timeout_or(None)?,
            report: args.report.clone(),
            force,
            payload: Payload::new(),
        })
    }
}

/// Settle, once and before anything runs or is printed, what the command line decides for
/// each job: where it runs (its pipeline file's `backend`, else `--backend`; on Slurm the
/// file's settings with the `--slurm-arg`s after them) and its time limit (its own, else
/// `--timeout`).
pub(crate) fn settle(pipeline: &mut Pipeline, opts: &RunOptions) {
    for job in pipeline.stages.iter_mut().flat_map(|s| &mut s.jobs) {
        job.launcher = match job.backend.unwrap_or(opts.backend) {
            Backend::Local => Launcher::Local,
            Backend::Slurm => Launcher::Slurm(job.slurm.merged_with(&fanout::Slurm {
                args: opts.slurm_args.clone(),
                ..fanout::Slurm::default()
            })),
        };
        job.timeout = job.timeout.or(opts.timeout);
    }
}

/// Before anything runs: every job bound for Slurm can go there (srun is here, its partition
/// exists). Each distinct setting is checked once.
fn check_backends(pipeline: &Pipeline) -> Result<()> {
    let mut checked: Vec<&fanout::Slurm> = Vec::new();
    for job in pipeline.stages.iter().flat_map(|s| &s.jobs) {
        if let Launcher::Slurm(slurm) = &job.launcher {
            if checked.contains(&slurm) {
                continue;
            }
            slurm
                .check()
                .with_context(|| format!("the job {:?} runs on Slurm", job.id))?;
            checked.push(slurm);
        }
    }
    Ok(())
}

/// Lines of a failed job's log shown on the terminal (without -v).
const LOG_TAIL_LINES: usize = 15;
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

/// Before anything is recorded or runs: the backends, the pool's settings, and the run's
/// record (new, or the resumed run's, with the jobs that are done). Errors here are the user's.
fn checked_record(
    pipeline: &Pipeline,
    opts: &RunOptions,
) -> Result<(RunRecord, Vec<(usize, usize)>)> {
    check_backends(pipeline).usage()?;
    // Every stage builds its pool from these; a bad FANOUT_STRATEGY is found here, before a
    // run is recorded, not after.
    PoolConfig::new(opts.max_workers)
        .with_env_overrides()
        .usage()?;
    Ok(match &opts.resumed {
        Some(old) => resumed_record(pipeline, old, opts).usage()?,
        None => (new_record(pipeline, opts), Vec::new()),
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(crate) fn new_record(pipeline: &Pipeline, opts: &RunOptions) -> RunRecord {
    let (started_at, started_at_unix) = store::timestamp(SystemTime::now());
    RunRecord {
        run_id: store::new_run_id(),
        pipeline: pipeline.name.clone(),
        pipeline_file: pipeline.file.display().to_string(),
        status: RunStatus::Running,
        started_at,
        started_at_unix,
        finished_at: None,
        finished_at_unix: None,
        duration_seconds: None,
        max_workers: opts.max_workers.get(),
        resumes: 0,
        payload: opts.payload.clone(),
        stages: pipeline
            .stages
            .iter()
            .map(|s| StageRecord {
                note: None,
                name: s.name.clone(),
                jobs: s
                    .jobs
                    .iter()
                    .map(|j| JobRecord {
                        definition: Some(j.definition_hash()),
                        ..JobRecord::pending(&j.id, j.launcher.name())
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The record of run `run_id`, rebuilt on the pipeline as it is now: jobs recorded `succeeded`
/// keep their record and are not run again; every other job is pending again.
pub(crate) fn resumed_record(
    pipeline: &Pipeline,
    old: &RunRecord,
    opts: &RunOptions,
) -> Result<(RunRecord, Vec<(usize, usize)>)> {
    let run_id = &old.run_id;
    if old.pipeline != pipeline.name {
        bail!(
            "run {run_id} ran the pipeline {:?}, not {:?}: resume it with `lorchestra pipeline {} --resume {run_id}`",
            old.pipeline,
            pipeline.name,
            old.pipeline
        );
    }
    let mut record = new_record(pipeline, opts);
    record.run_id.clone_from(&old.run_id);
    record.started_at.clone_from(&old.started_at);
    record.started_at_unix = old.started_at_unix;
    record.resumes = old.resumes + 1;
    let mut done = Vec::new();
    for (si, stage) in record.stages.iter_mut().enumerate() {
        let Some(old_stage) = old.stages.iter().find(|s| s.name == stage.name) else {
            continue;
        };
        if pipeline.stages[si].looping.is_some() {
            // Its iterations are known once it is expanded again; until then the record keeps
            // the old ones, so a resumed run stopped before the loop still knows what succeeded.
            stage.jobs.clone_from(&old_stage.jobs);
            stage.note.clone_from(&old_stage.note);
            continue;
        }
        for (ji, job) in stage.jobs.iter_mut().enumerate() {
            let Some(prev) = old_stage.jobs.iter().find(|j| {
                j.job_id == job.job_id
                    && matches!(j.status, JobStatus::Succeeded | JobStatus::UpToDate)
            }) else {
                continue;
            };
            // A record of an older version has no hash: its succeeded jobs stay done.
            if prev.definition.is_some() && prev.definition != job.definition {
                eprintln!(
                    "job {} (stage {}) changed since it succeeded: it runs again",
                    job.job_id, stage.name
                );
                continue;
            }
            *job = prev.clone();
            done.push((si, ji));
        }
    }
    Ok((record, done))
}

/// What a job's process left besides success or failure: the work function's meta, delivered
/// with the job's outcome to the record.
#[derive(Debug, Clone, Copy, Default)]
struct JobFacts {
    exit_code: Option<i32>,
    slurm_job_id: Option<u64>,
    /// Not run: up to date.
    up_to_date: bool,
    /// When its process ended (the record's `finished_at`; the owner hears of it later).
    ended_at: Option<SystemTime>,
}

/// What the jobs of a run share.
#[derive(Clone, Copy)]
struct RunContext<'a> {
    project: &'a Project,
    pipeline: &'a Pipeline,
    opts: &'a RunOptions,
    run_dir: &'a Path,
    run_id: &'a str,
    interrupt: &'a CancelToken,
    runner: &'a ProcessRunner,
    writer: &'a RecordWriter,
    cache: &'a Cache,
    /// Per job, in job order: `--force` names it.
    forced: &'a [bool],
}

/// How the jobs of a run went, for its last lines.
#[derive(Debug, Default)]
struct Ran {
    any_failed: bool,
    /// The first stage whose failure stopped the pipeline.
    halted_by: Option<String>,
    up_to_date: Vec<String>,
    /// Jobs that did not start (not counting those up to date).
    not_started: usize,
}

/// What the segments of a run share, by job id (positions change as loops are expanded).
#[derive(Debug, Default)]
struct RunState {
    /// Where each job stands for those that wait for it: its key, and whether it ran.
    deps: Mutex<HashMap<String, DepState>>,
    /// The values jobs returned (and those of jobs done earlier or up to date).
    outputs: Mutex<HashMap<String, serde_json::Value>>,
    /// How each finished job ended (in this run, or earlier in a resumed run): a job with a
    /// status does not run again.
    statuses: Mutex<HashMap<String, JobStatus>>,
}

impl RunState {
    /// Job `id` succeeded earlier in this (resumed) run, returning `output`; those that wait
    /// for it see its last key.
    fn done(&self, id: &str, output: Option<serde_json::Value>, cache: &Cache) {
        let dep = match cache.last_key(id) {
            Some(key) => DepState::new(id, key.to_owned(), None),
            None => DepState::new(id, String::new(), Some("ran")),
        };
        lock(&self.deps).insert(id.to_owned(), dep);
        lock(&self.statuses).insert(id.to_owned(), JobStatus::Succeeded);
        if let Some(v) = output {
            lock(&self.outputs).insert(id.to_owned(), v);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The jobs of `stages` this segment runs, in job order: not those done earlier in a resumed
/// run, and not those that need a job of an earlier segment that did not succeed (recorded as
/// skipped, naming it).
fn segment_todo(
    ctx: &RunContext<'_>,
    flat: &[(usize, usize, &Job)],
    stages: std::ops::Range<usize>,
    ran: &mut Ran,
    so_far: &RunState,
) -> Vec<usize> {
    let mut todo = Vec::new();
    let mut in_segment = vec![false; flat.len()];
    for (fi, &(si, ji, job)) in flat.iter().enumerate() {
        if !stages.contains(&si) || lock(&so_far.statuses).contains_key(&job.id) {
            continue;
        }
        let failed_need = ctx.pipeline.waits[fi].needs.iter().find_map(|&d| {
            let dep = &flat[d].2.id;
            let status = lock(&so_far.statuses).get(dep).copied();
            (!in_segment[d] && !matches!(status, Some(JobStatus::Succeeded | JobStatus::UpToDate)))
                .then(|| {
                    let how = status.map_or("did not run", JobStatus::as_str);
                    format!("not started: needs {dep}, which {how}")
                })
        });
        if let Some(why) = failed_need {
            lock(&so_far.statuses).insert(job.id.clone(), JobStatus::Skipped);
            ran.not_started += 1;
            ctx.writer
                .send(Update::not_started(si, ji, JobStatus::Skipped, why));
            continue;
        }
        in_segment[fi] = true;
        todo.push(fi);
    }
    todo
}

/// The records of loop stage `si`'s iterations, just expanded: pending, or, for a resumed run,
/// the record of an iteration that succeeded earlier (same name, same definition), which is
/// then done.
fn expanded_records(
    pipeline: &Pipeline,
    si: usize,
    old: Option<&RunRecord>,
    so_far: &RunState,
    cache: &Cache,
) -> Vec<JobRecord> {
    let stage = &pipeline.stages[si];
    let old_jobs = old
        .and_then(|r| r.stages.iter().find(|s| s.name == stage.name))
        .map_or(&[][..], |s| s.jobs.as_slice());
    stage
        .jobs
        .iter()
        .map(|j| {
            let fresh = JobRecord {
                definition: Some(j.definition_hash()),
                ..JobRecord::pending(&j.id, j.launcher.name())
            };
            match old_jobs.iter().find(|o| {
                o.job_id == j.id
                    && matches!(o.status, JobStatus::Succeeded | JobStatus::UpToDate)
                    && o.definition == fresh.definition
            }) {
                Some(o) => {
                    so_far.done(&j.id, o.output.clone(), cache);
                    o.clone()
                }
                None => fresh,
            }
        })
        .collect()
}

/// The run stops before stage `from` (a failure stopped the pipeline, or it was interrupted):
/// record every job of the stages from there as not started.
fn not_run_after(
    pipeline: &Pipeline,
    from: usize,
    writer: &RecordWriter,
    interrupt: &CancelToken,
    ran: &mut Ran,
    state: &RunState,
) {
    let (status, why) = if interrupt.is_cancelled() {
        (
            JobStatus::Cancelled,
            "not started: the run was interrupted".to_owned(),
        )
    } else {
        (
            JobStatus::Skipped,
            format!(
                "not started: stage {:?} failed and stops the pipeline",
                ran.halted_by.as_deref().unwrap_or_default()
            ),
        )
    };
    for (si, stage) in pipeline.stages.iter().enumerate().skip(from) {
        if stage.looping.as_ref().is_some_and(|l| !l.expanded) {
            // A resumed run's record keeps the iterations it had (the next resume skips those
            // that succeeded); only the note says this run did not reach them.
            writer.send(Update::Note {
                stage: si,
                note: format!("not run: {}", why.trim_start_matches("not started: ")),
            });
        }
        let statuses = lock(&state.statuses);
        for (ji, job) in stage.jobs.iter().enumerate() {
            // A resumed run's job that succeeded earlier keeps its record.
            if statuses.get(&job.id) == Some(&JobStatus::Succeeded) {
                continue;
            }
            ran.not_started += 1;
            writer.send(Update::not_started(si, ji, status, why.clone()));
        }
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

/// The combined state of each shared `after` list (by its address), computed once.
type Combined = Mutex<HashMap<usize, DepState>>;

/// The jobs job `fi` waits for, as the cache sees them: each job it needs, and the jobs of
/// earlier stages it comes after as one (see [`DepState::combine`]; once per stage).
fn deps_of(
    pipeline: &Pipeline,
    fi: usize,
    state: impl Fn(usize) -> DepState,
    combined: &mut HashMap<usize, DepState>,
) -> Vec<DepState> {
    let w = &pipeline.waits[fi];
    let mut deps: Vec<DepState> = w.needs.iter().map(|&d| state(d)).collect();
    if !w.after.is_empty() {
        let all = combined
            .entry(w.after.as_ptr().addr())
            .or_insert_with(|| {
                let each: Vec<DepState> = w.after.iter().map(|&d| state(d)).collect();
                DepState::combine(&each)
            })
            .clone();
        deps.push(all);
    }
    deps
}

/// Whether job `fi` runs, and why: recorded, and kept in `states` for the jobs that wait for
/// it. Returns the cache entry to store if it runs and succeeds; an error fails the job (a
/// missing input).
fn decide(
    ctx: &RunContext<'_>,
    flat: &[(usize, usize, &Job)],
    fi: usize,
    so_far: &RunState,
    combined: &Combined,
) -> Result<Option<crate::cache::Entry>, String> {
    let (si, ji, job) = flat[fi];
    // A job without inputs always runs whatever it depends on (see `Cache::decide`): no need
    // to gather their states.
    let deps = if job.inputs.is_empty() {
        Vec::new()
    } else {
        let mut combined = lock(combined);
        let states = lock(&so_far.deps);
        deps_of(
            ctx.pipeline,
            fi,
            |d| {
                states.get(&flat[d].2.id).cloned().unwrap_or_else(|| {
                    // Finished without a decision: it failed before one, or was skipped.
                    DepState::new(&flat[d].2.id, String::new(), Some("did not succeed"))
                })
            },
            &mut combined,
        )
    };
    let decision = ctx.cache.decide(job, &deps, ctx.forced[fi], ctx.run_id);
    let decision = match decision {
        Ok(d) => d,
        Err(why) => {
            ctx.writer.send(Update::Reason {
                stage: si,
                job: ji,
                reason: why.clone(),
            });
            return Err(why);
        }
    };
    if !decision.stamps.is_empty() {
        ctx.writer.send(Update::Cache(CacheUpdate {
            job: None,
            stamps: decision.stamps,
        }));
    }
    let (runs, reason) = match decision.verdict {
        Verdict::UpToDate => (None, "up to date".to_owned()),
        Verdict::Run(why) => (Some("ran"), why),
    };
    let runs_now = runs.is_some();
    // A job without inputs always runs: nothing to explain in its record.
    if !job.inputs.is_empty() {
        ctx.writer.send(Update::Reason {
            stage: si,
            job: ji,
            reason,
        });
    }
    lock(&so_far.deps).insert(job.id.clone(), DepState::new(&job.id, decision.key, runs));
    if !runs_now && let Some(value) = ctx.cache.last_output(&job.id) {
        // Up to date: the value it returned when it last ran.
        lock(&so_far.outputs).insert(job.id.clone(), value.clone());
        ctx.writer.send(Update::Output {
            stage: si,
            job: ji,
            value: value.clone(),
        });
    }
    let entry = decision.entry.filter(|_| runs_now);
    if let Some(e) = &entry {
        // Until it succeeds, the job is not up to date (it may leave half-written outputs).
        ctx.writer.send(Update::Cache(CacheUpdate {
            job: Some((ctx.cache.name(&job.id), e.started())),
            stamps: Vec::new(),
        }));
    }
    Ok(entry)
}

/// In the run folder: the payload, for nested pipelines' `--payload-file`.
const PAYLOAD_FILE: &str = "payload.json";

/// Set for a nested pipeline's lorchestra: the file it writes its run id to.
const NESTED_RUN_FILE: &str = "LORCHESTRA_NESTED_RUN_FILE";

/// The project's lock: already held (taken before the run to resume was read), or to take once
/// the input is judged, waiting for another run or not (`--wait`).
#[derive(Debug)]
pub(crate) struct Lock {
    pub(crate) held: Option<RunLock>,
    pub(crate) wait: bool,
}

/// One run at a time per project (`.lorchestra/lock`): the cache and a run's record have one
/// writer. A second run is refused naming the first, or waits (`--wait`). A nested pipeline's
/// run is its parent's job and runs under the parent's lock.
pub(crate) fn lock_project(project: &Project, wait: bool) -> Result<Option<RunLock>> {
    if std::env::var_os(NESTED_RUN_FILE).is_some() {
        return Ok(None);
    }
    let state = project.at(".lorchestra");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let wait = if wait { Wait::Yes } else { Wait::No };
    match RunLock::acquire(&state.join("lock"), "lorchestra pipeline", wait) {
        Ok(lock) => Ok(Some(lock)),
        Err(RunLockError::Held { holder, .. }) => Err(anyhow!(
            "another lorchestra run is using the project {}: {holder}; wait for it to end (or \
             pass --wait)",
            project.dir.display()
        )),
        Err(other) => Err(other.into()),
    }
}

/// Run as a nested pipeline: tell the parent run which run this is, so it can resume it.
fn tell_the_parent_run(run_id: &str) -> Result<()> {
    if let Some(file) = std::env::var_os(NESTED_RUN_FILE) {
        fanout::fsutil::write_atomic(Path::new(&file), run_id.as_bytes())?;
    }
    Ok(())
}

/// The payload file of a nested pipeline run by job `job_id`: its iteration's payload (a
/// loop's item over the run's), else the run's.
fn nested_payload_file(ctx: &RunContext<'_>, job: &Job) -> Result<PathBuf, TaskError> {
    let Some(it) = &job.iteration else {
        return Ok(ctx.run_dir.join(PAYLOAD_FILE));
    };
    let path = crate::layout::nested_payload_file(ctx.run_dir, &job.id);
    let json = serde_json::to_vec(&it.payload).expect("a payload serializes");
    fanout::fsutil::write_atomic(&path, &json)
        .map_err(|e| TaskError::failed(format!("cannot write its payload: {e}")))?;
    Ok(path)
}

/// Run one attempt of `job`, its output appended to `log`.
fn run_job(
    ctx: &RunContext<'_>,
    job: &Job,
    log: &Path,
    attempt: u32,
    runner: &ProcessRunner,
    cancel: &CancelToken,
) -> Result<fanout::ProcessOutput, TaskError> {
    // Only a nested pipeline's lorchestra gets NESTED_RUN_FILE (set below).
    let cmd = match &job.run {
        Run::Shell(script) => Command::shell(script).env_remove(NESTED_RUN_FILE),
        Run::Argv(argv) => Command::new(&argv[0])
            .args(&argv[1..])
            .env_remove(NESTED_RUN_FILE),
        Run::Pipeline(name) => {
            let exe = std::env::current_exe()
                .map_err(|e| TaskError::failed(format!("cannot find lorchestra itself: {e}")))?;
            let mut nested = Command::new(exe)
                .arg("pipeline")
                .arg(name)
                .arg("--dir")
                .arg(&ctx.project.dir)
                .arg("--max-workers")
                .arg(ctx.opts.max_workers.get().to_string())
                .arg("--no-progress");
            if ctx.opts.backend == Backend::Slurm {
                nested = nested.args(["--backend", "slurm"]);
            }
            // The nested run writes its id here; a later attempt, or a resumed outer run,
            // resumes that run instead of starting the nested pipeline from scratch.
            let id_file = crate::layout::nested_run_file(ctx.run_dir, &job.id);
            let mut resumes_nested = false;
            if let Some(id) = std::fs::read_to_string(&id_file)
                .ok()
                .map(|id| id.trim().to_owned())
                .filter(|id| {
                    store::load(&ctx.project.at(""), id)
                        .is_ok_and(|r| r.status != RunStatus::Succeeded)
                })
            {
                nested = nested.arg("--resume").arg(id);
                resumes_nested = true;
            }
            nested = nested.env(NESTED_RUN_FILE, id_file);
            for a in &ctx.opts.slurm_args {
                nested = nested.arg(format!("--slurm-arg={a}"));
            }
            if let Some(t) = ctx.opts.timeout {
                nested = nested.arg(format!("--timeout={}", t.as_secs_f64()));
            }
            // A resumed nested run reuses its own record's payload, which is this one.
            let has_payload = !ctx.opts.payload.is_empty() || job.iteration.is_some();
            if has_payload && !resumes_nested {
                nested = nested
                    .arg("--payload-file")
                    .arg(nested_payload_file(ctx, job)?);
            }
            nested
        }
    };
    let cwd = job
        .cwd
        .as_ref()
        .map_or_else(|| ctx.project.dir.clone(), |c| ctx.project.dir.join(c));
    // Each attempt starts without a value; what the job writes there is its value. An earlier
    // attempt, or the killed run a resume continues, may have left one.
    let output_file = crate::layout::value_file(ctx.run_dir, &job.id);
    let _ = std::fs::remove_file(&output_file);
    let mut cmd = cmd
        .env(output::ENV, &output_file)
        .launcher(job.launcher.clone())
        .job_name(&job.id)
        .current_dir(cwd)
        .env("LORCHESTRA_RUN_ID", ctx.run_id)
        .env("LORCHESTRA_JOB_ID", &job.id)
        .stdout(Sink::AppendFile(log.to_path_buf()))
        .stderr_to_stdout()
        .timeout(job.timeout);
    // An iteration of a loop's job has its item's payload (over the run's).
    let job_payload = job
        .iteration
        .as_ref()
        .map_or(&ctx.opts.payload, |it| &it.payload);
    for (k, v) in payload::env(job_payload) {
        cmd = cmd.env(k, v);
    }
    for (k, v) in &job.env {
        cmd = cmd.env(k, v);
    }
    // A header per attempt, so a retried job's log reads in order.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let header = format!(
            "=== lorchestra: {} attempt {attempt} at {}: {}\n",
            job.id,
            humantime::format_rfc3339_seconds(SystemTime::now()),
            job.run.display()
        );
        // One write call (an unbuffered writeln! makes one per piece).
        let _ = f.write_all(header.as_bytes());
    }
    runner.run(&cmd, cancel).map_err(TaskError::from)
}

/// The last `lines` lines of a log file (at most 64 KiB are read).
fn log_tail(log: &Path, lines: usize) -> String {
    fanout::text::last_lines(&fanout::fsutil::read_tail(log, 64 * 1024), lines).to_owned()
}

/// `--dry-run`: what would run, stage by stage; with `explain`, whether each job would run
/// and why.
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
        for job in &stage.jobs {
            let mut extra = Vec::new();
            if !job.needs.is_empty() {
                extra.push(format!("needs {}", job.needs.join(", ")));
            }
            if let Some(t) = job.timeout {
                extra.push(format!("timeout {}", fanout::fmt_duration(t)));
            }
            if job.retries > 0 {
                extra.push(format!("retries {}", job.retries));
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

/// `--explain`: whether each job (in job order) would run now, and why, as the run would
/// decide it, without running or writing anything.
fn explain_all(project: &Project, pipeline: &Pipeline, opts: &RunOptions) -> Result<Vec<Verdict>> {
    let forced = opts.force.forced(pipeline).usage()?;
    let cache = Cache::new(
        &project.dir,
        &pipeline.name,
        CacheFile::load(&project.dir),
        &opts.payload,
    );
    let mut states: Vec<DepState> = Vec::new();
    let mut combined = HashMap::new();
    let mut verdicts = Vec::new();
    for (fi, (_, _, job)) in pipeline.jobs().enumerate() {
        let deps = deps_of(pipeline, fi, |d| states[d].clone(), &mut combined);
        let new = !job.inputs.is_empty() && cache.last_key(&job.id).is_none();
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

/// Status of the jobs, for `status` and `report`.
pub(crate) fn count(record: &RunRecord, status: JobStatus) -> usize {
    record
        .stages
        .iter()
        .flat_map(|s| &s.jobs)
        .filter(|j| j.status == status)
        .count()
}
