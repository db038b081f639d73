//! One job to one command: a shell or argv command, or this program on a nested pipeline; its
//! environment (run and job ids, the payload, `$LORCHESTRA_OUTPUT`), folder, log and time limit.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Result;
use fanout::{CancelToken, Command, ProcessRunner, Sink, TaskError};

use crate::context::RunContext;
use crate::layout::NESTED_RUN_FILE;
use crate::model::{Backend, Job, Run};
use crate::output;
use crate::payload;
use crate::store::{self, RunStatus};

/// In the run folder: the payload, for nested pipelines' `--payload-file`.
pub(crate) const PAYLOAD_FILE: &str = "payload.json";

/// Run as a nested pipeline: tell the parent run which run this is, so it can resume it.
pub(crate) fn tell_the_parent_run(run_id: &str) -> Result<()> {
    if let Some(file) = std::env::var_os(NESTED_RUN_FILE) {
        fanout::fsutil::write_atomic(Path::new(&file), run_id.as_bytes())?;
    }
    Ok(())
}

/// The payload file of a nested pipeline run by job `job_id`: its iteration's payload (a
/// loop's item over the run's), else the run's.
pub(crate) fn nested_payload_file(ctx: &RunContext<'_>, job: &Job) -> Result<PathBuf, TaskError> {
    let Some(it) = &job.iteration else {
        return Ok(ctx.run_dir.join(PAYLOAD_FILE));
    };
    let path = crate::layout::nested_payload_file(ctx.run_dir, &job.id);
    let json = serde_json::to_vec(&it.payload).expect("a payload serializes");
    fanout::fsutil::write_atomic(&path, &json)
        .map_err(|e| TaskError::failed(format!("cannot write its payload: {e}")))?;
    Ok(path)
}

/// One attempt of a job: its number (1 for the first) and what it has of each resource it
/// needs.
pub(crate) struct Attempt<'a> {
    pub(crate) number: u32,
    pub(crate) resources: &'a crate::resources::Amounts,
}

/// Run one attempt of `job`, its output appended to `log`.
pub(crate) fn run_job(
    ctx: &RunContext<'_>,
    job: &Job,
    log: &Path,
    attempt: &Attempt<'_>,
    runner: &ProcessRunner,
    cancel: &CancelToken,
) -> Result<fanout::ProcessOutput, TaskError> {
    // Only a nested pipeline's lorchestra gets NESTED_RUN_FILE (set by `nested`).
    let cmd = match &job.run {
        Run::Shell(script) => Command::shell(script).env_remove(NESTED_RUN_FILE),
        Run::Argv(argv) => Command::new(&argv[0])
            .args(&argv[1..])
            .env_remove(NESTED_RUN_FILE),
        Run::Pipeline(name) => nested(ctx, job, name)?,
    };
    let cwd = job
        .cwd
        .as_ref()
        .map_or_else(|| ctx.project.dir.clone(), |c| ctx.project.dir.join(c));
    // Each attempt starts without a value; what the job writes there is its value. An earlier
    // attempt, or the killed run a resume continues, may have left one.
    let output_file = crate::layout::value_file(ctx.run_dir, &job.id);
    let _ = std::fs::remove_file(&output_file);
    // A retry whose needs grow asks Slurm for more.
    let launcher = if attempt.number > 1 && job.resources.values().any(|a| a.grows) {
        crate::plan::launcher(job, ctx.opts, attempt.number)
    } else {
        job.launcher.clone()
    };
    let mut cmd = cmd
        .env(output::ENV, &output_file)
        .launcher(launcher)
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
    // The attempt's cpus, memory and GPUs, for a job to size its threads by.
    for (name, var) in crate::resources::ENV {
        if let Some(v) = attempt.resources.get(name) {
            cmd = cmd.env(var, v.to_string());
        }
    }
    for (k, v) in &job.env {
        cmd = cmd.env(k, v);
    }
    if !job.params.is_empty() {
        // Its parameters, `--set` applied: a job reads its values here when a run overrides them.
        let values = ctx.cache.params_of(job).map_err(TaskError::failed)?;
        cmd = cmd.env(
            crate::params::ENV,
            serde_json::to_string(&values).expect("values serialize"),
        );
    }
    log_header(log, job, attempt.number);
    runner.run(&cmd, cancel).map_err(TaskError::from)
}

/// This program on the nested pipeline `name`, with the run's settings; it resumes the nested
/// run an earlier attempt (or the run a resume continues) left unfinished.
fn nested(ctx: &RunContext<'_>, job: &Job, name: &str) -> Result<Command, TaskError> {
    let exe = std::env::current_exe()
        .map_err(|e| TaskError::failed(format!("cannot find lorchestra itself: {e}")))?;
    let mut nested = Command::new(exe)
        .arg("pipeline")
        .arg(name)
        .arg("--dir")
        // It runs in the project's folder: a relative `--dir` would be read from there.
        .arg(std::path::absolute(&ctx.project.dir).unwrap_or_else(|_| ctx.project.dir.clone()))
        .arg("--max-workers")
        .arg(ctx.opts.max_workers.get().to_string())
        .arg("--no-progress");
    if ctx.opts.backend == Backend::Slurm {
        nested = nested.args(["--backend", "slurm"]);
    }
    if ctx.opts.slurm_mode == fanout_cli::SlurmMode::Packed {
        // Packed too, in an allocation of its own: this run's slots are this run's.
        nested = nested
            .args(["--slurm-mode", "packed"])
            .env_remove("SLURM_JOB_ID")
            .env_remove("SLURM_JOBID");
        if let Some(n) = ctx.opts.slurm_nodes {
            nested = nested.arg(format!("--slurm-nodes={n}"));
        }
    }
    // The nested run writes its id here; a later attempt, or a resumed outer run, resumes that
    // run instead of starting the nested pipeline from scratch.
    let id_file = crate::layout::nested_run_file(ctx.run_dir, &job.id);
    let mut resumes_nested = false;
    if let Some(id) = std::fs::read_to_string(&id_file)
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| {
            store::load(&ctx.project.at(""), id).is_ok_and(|r| r.status != RunStatus::Succeeded)
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
    if !ctx.opts.resources.is_empty() {
        let amounts: Vec<String> = (ctx.opts.resources.iter())
            .map(|(k, v)| format!("{k}={}", crate::resources::show(k, *v)))
            .collect();
        nested = nested.arg(format!("--resources={}", amounts.join(",")));
    }
    // A resumed nested run reuses its own record's payload, which is this one.
    let has_payload = !ctx.opts.payload.is_empty() || job.iteration.is_some();
    if has_payload && !resumes_nested {
        nested = nested
            .arg("--payload-file")
            .arg(nested_payload_file(ctx, job)?);
    }
    // Its jobs key on (and see) the same overrides; a resumed nested run reuses its own. Only
    // the keys the nested pipeline's jobs track: it refuses others.
    if !resumes_nested {
        for (k, v) in &ctx.opts.set {
            nested = nested.arg(format!("--set={k}={v}"));
        }
    }
    Ok(nested)
}

/// A header per attempt, so a retried job's log reads in order.
fn log_header(log: &Path, job: &Job, attempt: u32) {
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
}

/// The last `lines` lines of a log file (at most 64 KiB are read).
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    fanout::text::last_lines(&fanout::fsutil::read_tail(log, 64 * 1024), lines).to_owned()
}
