//! The command line's options of a run, checked ([`RunOptions`]), and `--force`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use fanout::{MaxWorkers, ProgressMode};
use fanout_cli::{RunArgs, UsageResult};

use crate::cli::{Halt, Lorchestra};
use crate::model::{Backend, Pipeline};
use crate::payload::Payload;
use crate::store::RunRecord;

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

    /// Measure what the run has, once, for `pipeline`: every batch admits jobs by these
    /// numbers, as they were checked before anything ran.
    pub(crate) fn settle_budget(&mut self, pipeline: &Pipeline) {
        self.budget = crate::resources::budget(&pipeline.resources, &self.resources);
    }
}
