//! The plan of a run: the command line's options checked ([`RunOptions`]), what they settle
//! for each job (where it runs, its time limit), the project's lock, the run's record (new, or
//! the resumed run's, with what is done). Every input error is raised here, before anything
//! runs; the dry run that prints the plan is `dryrun.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use fanout::runlock::{RunLock, RunLockError, Wait};
use fanout::{Launcher, MaxWorkers, PoolConfig, ProgressMode};
use fanout_cli::{RunArgs, UsageResult};

use crate::cli::{Halt, Lorchestra};
use crate::layout::NESTED_RUN_FILE;
use crate::model::{Backend, Pipeline};
use crate::payload::Payload;
use crate::project::Project;
use crate::store::{self, JobRecord, JobStatus, RunRecord, RunStatus, StageRecord};

/// Lines of a failed job's log shown on the terminal (without -v).
const LOG_TAIL_LINES: usize = 15;

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
    /// `--set`: parameter overrides for this run (a resumed run reuses its own).
    pub(crate) set: crate::params::Overrides,
    /// `--resources`: what the run has, over the pipeline's and the machine's.
    pub(crate) resources: crate::resources::Amounts,
    /// What the run has of each resource: the machine's (measured once, when the run starts),
    /// the pipeline's `resources`, then `--resources` (see [`RunOptions::settle_budget`]).
    pub(crate) budget: crate::resources::Amounts,
    /// `--slurm-mode` and `--slurm-nodes`: a nested pipeline's run is given them too.
    pub(crate) slurm_mode: fanout_cli::SlurmMode,
    pub(crate) slurm_nodes: Option<u32>,
    /// `--slurm-mode packed`: the run's allocation, once asked for (see [`RunOptions::pack`]).
    pub(crate) allocation: Option<std::sync::Arc<fanout::process::Allocation>>,
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
    pub(crate) fn forced(&self, pipeline: &Pipeline) -> Result<Vec<bool>> {
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
            set: crate::params::Overrides::new(),
            resources: crate::resources::Amounts::new(),
            budget: crate::resources::Amounts::new(),
            slurm_mode: args.slurm_mode,
            slurm_nodes: args.slurm_nodes,
            allocation: None,
        })
    }

    /// `--slurm-mode packed`: ask Slurm for one allocation of a slot per worker (`nodes` nodes
    /// if given), for every job bound for Slurm to run in. A slot is as large as the largest
    /// of those jobs (cpus and mem of a first attempt), so that any of them fits any slot; the
    /// other settings are the first such job's, and the `--slurm-arg`s. Nothing to do when no
    /// job is bound for Slurm.
    pub(crate) fn pack(&mut self, pipeline: &Pipeline, nodes: Option<u32>) -> Result<()> {
        let on_slurm: Vec<&crate::model::Job> = (pipeline.stages.iter())
            .flat_map(|s| s.jobs.iter().chain(s.looping.iter().flat_map(|l| &l.jobs)))
            .filter(|j| j.backend.unwrap_or(self.backend) == Backend::Slurm)
            .collect();
        let Some(first) = on_slurm.first() else {
            return Ok(());
        };
        let sized: Vec<fanout::Slurm> = (on_slurm.iter())
            .map(|j| slurm_needs((*j.slurm).clone(), &j.resources, 1))
            .collect();
        if let Some((job, _)) = (on_slurm.iter().zip(&sized)).find(|(_, s)| {
            s.args
                .iter()
                .any(|a| a.starts_with("--gres") || a.starts_with("--gpus"))
        }) {
            return Err(anyhow::anyhow!(
                "job {} asks for GPUs: --slurm-mode packed does not share GPUs out between its \
                 slots yet; run it with --slurm-mode jobs",
                job.id
            ))
            .usage();
        }
        let mut slurm = first.slurm.merged_with(&fanout::Slurm {
            args: self.slurm_args.clone(),
            ..fanout::Slurm::default()
        });
        fanout::process::Allocation::check_options(&slurm.args).usage()?;
        slurm.cpus = sized.iter().filter_map(|s| s.cpus).max();
        let mem_of = |m: &str| crate::resources::quantity(crate::resources::MEM, m).ok();
        slurm.mem = (sized.iter())
            .filter_map(|s| s.mem.as_deref().and_then(mem_of))
            .max()
            .map(|m| format!("{m}M"));
        if let Some(grows) = on_slurm
            .iter()
            .find(|j| j.resources.values().any(|a| a.grows))
        {
            eprintln!(
                "lorchestra: note: --slurm-mode packed gives every slot the same size; job {} \
                 gets no more on a retry than on its first attempt (--slurm-mode jobs would)",
                grows.id
            );
        }
        let allocation = fanout_cli::packed_allocation(
            self.max_workers.get(),
            slurm.cpus.unwrap_or(1),
            nodes,
            &slurm,
        )
        .context("--slurm-mode packed: asking Slurm for the run's allocation")?;
        self.allocation = Some(allocation);
        Ok(())
    }

    /// Measure what the run has, once, for `pipeline`: every batch admits jobs by these
    /// numbers, as they were checked before anything ran.
    pub(crate) fn settle_budget(&mut self, pipeline: &Pipeline) {
        self.budget = crate::resources::budget(&pipeline.resources, &self.resources);
    }
}

/// Settle, once and before anything runs or is printed, what the command line decides for
/// each job (loop templates included): where it runs (its pipeline file's `backend`, else
/// `--backend`; on Slurm the file's settings, then its `cpus`, `mem` and `gpus` as `srun`
/// options, then the `--slurm-arg`s) and its time limit (its own, else `--timeout`).
pub(crate) fn settle(pipeline: &mut Pipeline, opts: &RunOptions) {
    let templates = pipeline
        .stages
        .iter_mut()
        .flat_map(|s| s.looping.iter_mut().flat_map(|l| &mut l.jobs));
    let jobs: Vec<&mut crate::model::Job> = templates.collect();
    for job in jobs {
        settle_job(job, opts);
    }
    for job in pipeline.stages.iter_mut().flat_map(|s| &mut s.jobs) {
        settle_job(job, opts);
    }
}

fn settle_job(job: &mut crate::model::Job, opts: &RunOptions) {
    job.launcher = launcher(job, opts, 1);
    job.timeout = job.timeout.or(opts.timeout);
}

/// Where attempt `attempt` of `job` runs: here, or on Slurm with the file's settings, the
/// attempt's needs and the `--slurm-arg`s.
pub(crate) fn launcher(job: &crate::model::Job, opts: &RunOptions, attempt: u32) -> Launcher {
    match job.backend.unwrap_or(opts.backend) {
        Backend::Local => Launcher::Local,
        Backend::Slurm if opts.allocation.is_some() => {
            Launcher::Packed(opts.allocation.clone().expect("checked"))
        }
        Backend::Slurm => Launcher::Slurm(
            slurm_needs((*job.slurm).clone(), &job.resources, attempt)
                .merged_with(&fanout::Slurm {
                    args: opts.slurm_args.clone(),
                    ..fanout::Slurm::default()
                })
                .into(),
        ),
    }
}

/// `slurm` with a job's needs of attempt `attempt` as `srun` options: `cpus` as
/// `--cpus-per-task` and `mem` as `--mem` (over the `slurm` tables' `cpus` and `mem`: what the
/// job declares wins, and grows per attempt), `gpus` as `--gres=gpu:N` (unless the tables'
/// `args` have a `--gres` of their own, e.g. `--gres=gpu:a100:2`).
pub(crate) fn slurm_needs(
    mut slurm: fanout::Slurm,
    needs: &crate::resources::Needs,
    attempt: u32,
) -> fanout::Slurm {
    use crate::resources::{CPUS, GPUS, MEM};
    if let Some(cpus) = needs.get(CPUS) {
        slurm.cpus = Some(u32::try_from(cpus.at(attempt)).unwrap_or(u32::MAX));
    }
    if let Some(mem) = needs.get(MEM) {
        slurm.mem = Some(format!("{}M", mem.at(attempt)));
    }
    let has_gres = slurm.args.iter().any(|a| a.starts_with("--gres"));
    if let Some(gpus) = needs.get(GPUS).filter(|_| !has_gres) {
        slurm.args.push(format!("--gres=gpu:{}", gpus.at(attempt)));
    }
    slurm
}

/// What job `job` takes of the run's resources: all its needs here, only the named ones on
/// Slurm (whose own scheduler gives it cpus, memory and GPUs).
pub(crate) fn local_needs(
    job: &crate::model::Job,
) -> impl Iterator<Item = (&String, &crate::resources::Amount)> {
    let on_slurm = matches!(job.launcher, Launcher::Slurm(_) | Launcher::Packed(_));
    job.resources
        .iter()
        .filter(move |(name, _)| !(on_slurm && crate::resources::is_builtin(name)))
}

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
