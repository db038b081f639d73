//! Where each job runs: the command line's backend settled on every job (`settle`), an
//! attempt's launcher with its Slurm needs (`launcher`, `slurm_needs`), what a job takes of the
//! run's own resources (`local_needs`), and `--slurm-mode packed`'s one allocation for the run
//! (`RunOptions::pack`).

use anyhow::{Context, Result};
use fanout::Launcher;
use fanout_cli::UsageResult;

use super::options::RunOptions;
use crate::model::{Backend, Job, Pipeline};

impl RunOptions {
    /// `--slurm-mode packed`: the settings of the one allocation every job bound for Slurm
    /// runs in (see [`RunOptions::pack`]), checked. A slot is as large as the largest of those
    /// jobs (cpus and mem of a first attempt), so that any of them fits any slot; the other
    /// settings are the first such job's, and the `--slurm-arg`s. `None` when no job is bound
    /// for Slurm.
    pub(crate) fn packed_slurm(&self, pipeline: &Pipeline) -> Result<Option<fanout::Slurm>> {
        let on_slurm: Vec<&Job> = (pipeline.stages.iter())
            .flat_map(|s| s.jobs.iter().chain(s.looping.iter().flat_map(|l| &l.jobs)))
            .filter(|j| j.backend.unwrap_or(self.backend) == Backend::Slurm)
            .collect();
        let Some(first) = on_slurm.first() else {
            return Ok(None);
        };
        let sized: Vec<fanout::Slurm> = (on_slurm.iter())
            .map(|j| slurm_needs((*j.slurm).clone(), &j.resources, 1))
            .collect();
        // What packed mode cannot honour (GPUs, -n), named by the job that asks for it.
        for (job, needs) in on_slurm.iter().zip(&sized) {
            fanout::process::Allocation::check_options(&needs.args)
                .with_context(|| format!("job {}", job.id))
                .usage()?;
        }
        let mut slurm = first.slurm.merged_with(&fanout::Slurm {
            args: self.slurm_args.clone(),
            ..fanout::Slurm::default()
        });
        fanout::process::Allocation::check_options(&self.slurm_args).usage()?;
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
        Ok(Some(slurm))
    }

    /// Ask Slurm for the run's allocation with `slurm` (from [`RunOptions::packed_slurm`]): a
    /// slot per worker, over `--slurm-nodes` nodes if given.
    pub(crate) fn pack(&mut self, slurm: &fanout::Slurm) -> Result<()> {
        let allocation =
            fanout_cli::packed_allocation(self.max_workers.get(), self.slurm_nodes, slurm)
                .context("--slurm-mode packed: asking Slurm for the run's allocation")?;
        self.allocation = Some(allocation);
        Ok(())
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
    let jobs: Vec<&mut Job> = templates.collect();
    for job in jobs {
        settle_job(job, opts);
    }
    for job in pipeline.stages.iter_mut().flat_map(|s| &mut s.jobs) {
        settle_job(job, opts);
    }
}

fn settle_job(job: &mut Job, opts: &RunOptions) {
    job.launcher = launcher(job, opts, 1);
    job.timeout = job.timeout.or(opts.timeout);
}

/// Where attempt `attempt` of `job` runs: here, or on Slurm with the file's settings, the
/// attempt's needs and the `--slurm-arg`s.
pub(crate) fn launcher(job: &Job, opts: &RunOptions, attempt: u32) -> Launcher {
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
fn slurm_needs(
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
pub(crate) fn local_needs(job: &Job) -> impl Iterator<Item = (&String, &crate::resources::Amount)> {
    let on_slurm = matches!(job.launcher, Launcher::Slurm(_) | Launcher::Packed(_));
    job.resources
        .iter()
        .filter(move |(name, _)| !(on_slurm && crate::resources::is_builtin(name)))
}
