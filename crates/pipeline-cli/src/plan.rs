//! The plan of a run: the command line's options checked ([`RunOptions`]), what they settle
//! for each job (where it runs, its time limit), the project's lock, the run's record (new, or
//! the resumed run's, with what is done). Every input error is raised here, before anything
//! runs; the dry run that prints the plan is `dryrun.rs`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use fanout::runlock::{RunLock, RunLockError, Wait};
use fanout::{Launcher, PoolConfig};
use fanout_cli::UsageResult;

use crate::layout::NESTED_RUN_FILE;
use crate::model::Pipeline;
use crate::project::Project;
use crate::store::{self, JobRecord, JobStatus, RunRecord, RunStatus, StageRecord};

mod options;
mod placement;

pub(crate) use options::{Force, RunOptions};
pub(crate) use placement::{launcher, local_needs, settle};

/// Before anything runs: every job (loop templates included) fits in the run's resources on
/// its own; the error names the job, what it needs and what the run has.
pub(crate) fn check_resources(pipeline: &Pipeline, opts: &RunOptions) -> Result<()> {
    let budget = &opts.budget;
    let templates = pipeline
        .stages
        .iter()
        .flat_map(|s| s.looping.iter().flat_map(|l| &l.jobs));
    for job in pipeline
        .stages
        .iter()
        .flat_map(|s| &s.jobs)
        .chain(templates)
    {
        for (name, need) in local_needs(job) {
            let show = |v| crate::resources::show(name, v);
            match budget.get(name) {
                None => bail!(
                    "{}: the job {:?} needs {name}={}, but the run has no {name:?}: give it \
                     with resources = {{ {name} = N }} in the pipeline, or --resources {name}=N",
                    job.defined_in.display(),
                    job.id,
                    show(need.base)
                ),
                Some(&has) if need.base > has => bail!(
                    "{}: the job {:?} needs {name}={}, more than the run has ({name}={}); \
                     change it with --resources {name}=AMOUNT",
                    job.defined_in.display(),
                    job.id,
                    show(need.base),
                    show(has)
                ),
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Before anything runs: every job bound for Slurm can go there (srun is here, its partition
/// exists). Each distinct setting is checked once.
fn check_backends(pipeline: &Pipeline) -> Result<()> {
    let mut checked: Vec<&fanout::Slurm> = Vec::new();
    for job in pipeline.stages.iter().flat_map(|s| &s.jobs) {
        if let Launcher::Slurm(slurm) = &job.launcher {
            if checked.contains(&&**slurm) {
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

/// Before anything is recorded or runs: the backends, the pool's settings, and the run's
/// record (new, or the resumed run's, with the jobs that are done). Errors here are the user's.
pub(crate) fn checked_record(
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

pub(crate) fn plural(n: usize) -> &'static str {
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
        strategy: None,
        resumes: 0,
        payload: opts.payload.clone(),
        params_set: opts.set.clone(),
        params: BTreeMap::new(),
        generation: 0,
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
    // The journal beside it is of this generation: the writer starts the next one.
    record.generation = old.generation;
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

/// Status of the jobs, for `status` and `report`.
pub(crate) fn count(record: &RunRecord, status: JobStatus) -> usize {
    record
        .stages
        .iter()
        .flat_map(|s| &s.jobs)
        .filter(|j| j.status == status)
        .count()
}
