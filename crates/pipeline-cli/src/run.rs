//! Running a pipeline: stages in order, the jobs of a stage through the core's pool, every job
//! transition sent to the run record's writer.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use fanout::{
    CancelReason, CancelToken, Command, Event, ExitStatus, FailurePolicy, Launcher, MaxWorkers,
    Pool, PoolConfig, ProcessRunner, ProgressMode, Reporter, RetryPolicy, Sink, Task, TaskError,
    Tee,
};

use fanout_cli::{RunArgs, UsageResult};

use crate::cli::{Halt, Lorchestra};
use crate::config::{Backend, Job, Pipeline, Project, Run};
use crate::report;
use crate::store::{
    self, JobRecord, JobStatus, RecordWriter, RunRecord, RunStatus, StageRecord, Update,
};

#[derive(Debug)]
pub(crate) struct RunOptions {
    pub(crate) max_workers: MaxWorkers,
    pub(crate) halt: Halt,
    pub(crate) resume: Option<String>,
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
}

impl RunOptions {
    /// The shared flags, checked: a bad value is a usage error.
    pub(crate) fn from_args(
        args: &RunArgs<Lorchestra>,
        halt: Halt,
        resume: Option<String>,
    ) -> Result<Self> {
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
            resume,
            progress: args.progress(),
            detail_lines: args.detail_lines(LOG_TAIL_LINES),
            backend,
            slurm_args: args.slurm_args.clone(),
            timeout: args.timeout_or(None)?,
            report: args.report.clone(),
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
pub(crate) fn run(project: &Project, pipeline: &Pipeline, opts: &RunOptions) -> Result<ExitStatus> {
    let (record, done) = checked_record(project, pipeline, opts)?;
    let run_id = record.run_id.clone();
    let run_dir = store::run_dir(&project.at(""), &run_id);
    std::fs::create_dir_all(run_dir.join("logs"))
        .with_context(|| format!("creating {}", run_dir.display()))?;
    let writer = RecordWriter::start(record, store::record_path(&project.at(""), &run_id))?;
    tell_the_parent_run(&run_id)?;
    let interrupt = fanout::install_interrupt_handler()?;
    let runner = ProcessRunner::new();
    let start = std::time::Instant::now();
    eprintln!(
        "run {run_id}: pipeline {} ({} stage{}, up to {} job{} at once)",
        pipeline.name,
        pipeline.stages.len(),
        plural(pipeline.stages.len()),
        opts.max_workers.get(),
        plural(opts.max_workers.get())
    );

    let ctx = StageContext {
        project,
        opts,
        run_dir: &run_dir,
        run_id: &run_id,
        interrupt: &interrupt,
        runner: &runner,
        writer: &writer,
    };
    let mut any_failed = false;
    let mut halted_by: Option<String> = None;
    for (si, stage) in pipeline.stages.iter().enumerate() {
        let todo: Vec<usize> = (0..stage.jobs.len())
            .filter(|ji| !done.contains(&(si, *ji)))
            .collect();
        if let Some((status, why)) = not_starting(&interrupt, halted_by.as_deref()) {
            for &ji in &todo {
                writer.send(not_run(si, ji, status, &why));
            }
            continue;
        }
        if todo.is_empty() {
            eprintln!("stage {}: every job succeeded earlier", stage.name);
            continue;
        }
        eprintln!(
            "stage {} ({} job{})",
            stage.name,
            todo.len(),
            plural(todo.len())
        );
        let summary = run_stage(&ctx, si, stage, &todo)?;
        if summary.failed + summary.timed_out > 0 {
            any_failed = true;
            if stage.stop_on_failure {
                halted_by = Some(stage.name.clone());
            }
        }
    }

    let status = if interrupt.reason() == Some(CancelReason::Interrupted) {
        RunStatus::Cancelled
    } else if any_failed {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    writer.send(Update::RunFinished {
        status,
        at: SystemTime::now(),
    });
    let (record, record_writes) = writer.finish()?;
    let report = run_dir.join(REPORT_FILE);
    report::write_json(&record, &report)?;
    if let Some(copy) = &opts.report {
        report::write_json(&record, copy)?;
    }
    eprintln!(
        "run {run_id}: {} in {} ({record_writes} record writes); record: {}",
        status.as_str(),
        fanout::fmt_duration(start.elapsed()),
        store::record_path(&project.at(""), &run_id).display()
    );
    if let Some(stage) = halted_by {
        eprintln!("later stages were skipped: stage {stage:?} failed (stop_on_failure)");
    }
    Ok(match status {
        RunStatus::Cancelled => ExitStatus::Interrupted,
        RunStatus::Failed => ExitStatus::TaskFailed,
        RunStatus::Succeeded | RunStatus::Running => ExitStatus::Success,
    })
}

/// Before anything is recorded or runs: the backends, the pool's settings, and the run's
/// record (new, or the resumed run's, with the jobs that are done). Errors here are the user's.
fn checked_record(
    project: &Project,
    pipeline: &Pipeline,
    opts: &RunOptions,
) -> Result<(RunRecord, Vec<(usize, usize)>)> {
    check_backends(pipeline).usage()?;
    // Every stage builds its pool from these; a bad FANOUT_STRATEGY is found here, before a
    // run is recorded, not after.
    PoolConfig::new(opts.max_workers)
        .with_env_overrides()
        .usage()?;
    Ok(match &opts.resume {
        Some(run_id) => resumed_record(project, pipeline, run_id, opts).usage()?,
        None => (new_record(pipeline, opts), Vec::new()),
    })
}

/// Why a stage starts none of its jobs, if it does not: the run was interrupted, or an earlier
/// stage failed and stops the pipeline.
fn not_starting(interrupt: &CancelToken, halted_by: Option<&str>) -> Option<(JobStatus, String)> {
    if interrupt.is_cancelled() {
        return Some((
            JobStatus::Cancelled,
            "not started: the run was interrupted".to_owned(),
        ));
    }
    halted_by.map(|s| {
        (
            JobStatus::Skipped,
            format!("not started: stage {s:?} failed and stops the pipeline"),
        )
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn not_run(stage: usize, job: usize, status: JobStatus, why: &str) -> Update {
    Update::Finished {
        stage,
        job,
        status,
        attempts: 0,
        exit_code: None,
        slurm_job_id: None,
        error: Some(why.to_owned()),
        duration: std::time::Duration::ZERO,
        at: SystemTime::now(),
    }
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
        stages: pipeline
            .stages
            .iter()
            .map(|s| StageRecord {
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
    project: &Project,
    pipeline: &Pipeline,
    run_id: &str,
    opts: &RunOptions,
) -> Result<(RunRecord, Vec<(usize, usize)>)> {
    let old = store::load(&project.at(""), run_id)?;
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
        for (ji, job) in stage.jobs.iter_mut().enumerate() {
            let Some(prev) = old_stage
                .jobs
                .iter()
                .find(|j| j.job_id == job.job_id && j.status == JobStatus::Succeeded)
            else {
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
}

/// What every stage of a run shares.
#[derive(Clone, Copy)]
struct StageContext<'a> {
    project: &'a Project,
    opts: &'a RunOptions,
    run_dir: &'a Path,
    run_id: &'a str,
    interrupt: &'a CancelToken,
    runner: &'a ProcessRunner,
    writer: &'a RecordWriter,
}

/// Run the jobs `todo` of stage `si` as one pool batch; every transition goes to the record.
fn run_stage(
    ctx: &StageContext<'_>,
    si: usize,
    stage: &crate::config::Stage,
    todo: &[usize],
) -> Result<fanout::Summary> {
    let StageContext {
        opts,
        interrupt,
        runner,
        writer,
        ..
    } = *ctx;
    let policy = match (stage.stop_on_failure, opts.halt) {
        (false, _) => FailurePolicy::KeepGoing,
        (true, Halt::Soon) => FailurePolicy::StopSoon,
        (true, Halt::Now) => FailurePolicy::StopNow,
    };
    let pool = Pool::new(
        PoolConfig::new(opts.max_workers)
            .noun("job", "jobs")
            .failure_policy(policy)
            .with_env_overrides()?,
    );
    let tasks: Vec<Task<usize>> = todo
        .iter()
        .map(|&ji| {
            let job = &stage.jobs[ji];
            Task::new(job.id.clone(), ji).with_retry(
                RetryPolicy::retries(job.retries).retry_if(|e| {
                    matches!(e, TaskError::Failed { .. } | TaskError::TimedOut { .. })
                }),
            )
        })
        .collect();

    let mut progress = opts.progress.reporter_with_detail(opts.detail_lines);
    let mut record = |event: &Event<'_, (), JobFacts>| match event {
        Event::TaskStarted { index, attempt, .. } => writer.send(Update::Started {
            stage: si,
            job: todo[*index],
            attempt: *attempt,
            at: SystemTime::now(),
        }),
        Event::TaskFinished { outcome, .. } => {
            let ji = todo[outcome.index];
            writer.send(Update::Finished {
                stage: si,
                job: ji,
                status: JobStatus::from_task(outcome.status),
                attempts: outcome.attempts,
                exit_code: outcome.meta.exit_code,
                slurm_job_id: outcome.meta.slurm_job_id,
                error: outcome.error_message(),
                duration: outcome.duration,
                at: SystemTime::now(),
            });
        }
        _ => {}
    };
    let mut tee = Tee(vec![
        &mut record,
        progress.as_mut() as &mut dyn Reporter<(), JobFacts>,
    ]);
    let result = pool.run_with_meta(&tasks, interrupt, &mut tee, |&ji, tctx| {
        let job = &stage.jobs[ji];
        let log = ctx.run_dir.join(store::log_name(&job.id));
        let out = match run_job(ctx, job, &log, tctx.attempt(), runner, tctx.cancel_token()) {
            Ok(out) => out,
            Err(e) => return (Err(e), JobFacts::default()),
        };
        let facts = JobFacts {
            exit_code: match out.ending {
                fanout::process::Ending::Exited(code) => Some(code),
                _ => None,
            },
            slurm_job_id: out.slurm_job_id,
        };
        let result = out.into_result().map(drop).map_err(|e| match e {
            TaskError::Failed { .. } | TaskError::TimedOut { .. } => {
                e.with_detail(log_tail(&log, opts.detail_lines))
            }
            other => other,
        });
        (result, facts)
    })?;
    Ok(result.summary)
}

/// Set for a nested pipeline's lorchestra: the file it writes its run id to.
const NESTED_RUN_FILE: &str = "LORCHESTRA_NESTED_RUN_FILE";

/// Run as a nested pipeline: tell the parent run which run this is, so it can resume it.
fn tell_the_parent_run(run_id: &str) -> Result<()> {
    if let Some(file) = std::env::var_os(NESTED_RUN_FILE) {
        fanout::fsutil::write_atomic(Path::new(&file), run_id.as_bytes())?;
    }
    Ok(())
}

/// Where the nested pipeline run by job `job_id` of the run in `run_dir` notes its run id.
fn nested_run_file(run_dir: &Path, job_id: &str) -> std::path::PathBuf {
    run_dir.join("nested").join(format!("{job_id}.run-id"))
}

/// Run one attempt of `job`, its output appended to `log`.
fn run_job(
    ctx: &StageContext<'_>,
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
            let id_file = nested_run_file(ctx.run_dir, &job.id);
            if let Some(id) = std::fs::read_to_string(&id_file)
                .ok()
                .map(|id| id.trim().to_owned())
                .filter(|id| {
                    store::load(&ctx.project.at(""), id)
                        .is_ok_and(|r| r.status != RunStatus::Succeeded)
                })
            {
                nested = nested.arg("--resume").arg(id);
            }
            nested = nested.env(NESTED_RUN_FILE, id_file);
            for a in &ctx.opts.slurm_args {
                nested = nested.arg(format!("--slurm-arg={a}"));
            }
            if let Some(t) = ctx.opts.timeout {
                nested = nested.arg(format!("--timeout={}", t.as_secs_f64()));
            }
            nested
        }
    };
    let cwd = job
        .cwd
        .as_ref()
        .map_or_else(|| ctx.project.dir.clone(), |c| ctx.project.dir.join(c));
    let mut cmd = cmd
        .launcher(job.launcher.clone())
        .job_name(&job.id)
        .current_dir(cwd)
        .env("LORCHESTRA_RUN_ID", ctx.run_id)
        .env("LORCHESTRA_JOB_ID", &job.id)
        .stdout(Sink::AppendFile(log.to_path_buf()))
        .stderr_to_stdout()
        .timeout(job.timeout);
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

/// `--dry-run`: what would run, stage by stage.
pub(crate) fn print_plan(pipeline: &Pipeline, opts: &RunOptions) {
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
    for stage in &pipeline.stages {
        println!(
            "stage {}{}",
            stage.name,
            if stage.stop_on_failure {
                " (stops the pipeline on failure)"
            } else {
                ""
            }
        );
        for job in &stage.jobs {
            let mut extra = Vec::new();
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
        }
    }
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
