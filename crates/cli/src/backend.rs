//! Where tasks run: `--backend`, `--slurm-arg`, `--slurm-mode`, `--slurm-nodes` turned into a
//! [`Launcher`], their errors in the flags' words.

use anyhow::{Context, Result};
use fanout::{Launcher, SlurmError};

use crate::UsageResult;

/// `--slurm-mode`: how tasks bound for Slurm run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SlurmMode {
    /// Each task a Slurm job of its own (`srun`).
    #[default]
    Jobs,
    /// One allocation for the batch; each task on a worker in it.
    Packed,
}

/// [`launcher`], and with `--slurm-mode packed` on Slurm: one allocation of `slots` workers
/// (over `nodes` nodes if given) for the batch, asked for now.
pub fn launcher_in(
    backend: &str,
    slurm_args: &[String],
    mode: SlurmMode,
    nodes: Option<u32>,
    slots: usize,
) -> Result<Launcher> {
    let chosen = checked_launcher(backend, slurm_args, mode, nodes)?;
    placed(chosen, mode, nodes, slots)
}

/// `chosen` (from [`checked_launcher`]) made ready to run tasks: with `--slurm-mode packed` on
/// Slurm, one allocation of `slots` workers (over `nodes` nodes if given), asked for now. A tool
/// calls it once its inputs are read and checked: a typo should not wait in Slurm's queue.
pub fn placed(
    chosen: Launcher,
    mode: SlurmMode,
    nodes: Option<u32>,
    slots: usize,
) -> Result<Launcher> {
    match (mode, &chosen) {
        (SlurmMode::Packed, Launcher::Slurm(slurm)) => {
            let allocation = packed_allocation(slots, nodes, slurm)
                .context("--slurm-mode packed: asking Slurm for the allocation")?;
            Ok(Launcher::Packed(allocation))
        }
        _ => Ok(chosen),
    }
}

/// [`launcher`], with `--slurm-mode` and `--slurm-nodes` checked; no allocation is asked for
/// (for `--dry-run`: nothing runs).
pub fn checked_launcher(
    backend: &str,
    slurm_args: &[String],
    mode: SlurmMode,
    nodes: Option<u32>,
) -> Result<Launcher> {
    check_slurm_nodes(mode, nodes)?;
    let chosen = launcher(backend, slurm_args)?;
    if mode == SlurmMode::Packed {
        if !matches!(chosen, Launcher::Slurm(_)) {
            return Err(anyhow::anyhow!(
                "--slurm-mode packed runs tasks in a Slurm allocation; add --backend slurm"
            ))
            .usage();
        }
        fanout::process::Allocation::check_options(slurm_args).usage()?;
    }
    Ok(chosen)
}

/// The launcher named `backend` with `slurm_args`, its errors in the flags' words.
pub fn launcher(backend: &str, slurm_args: &[String]) -> Result<Launcher> {
    Launcher::select(backend, slurm_args)
        .map_err(|e| match e {
            SlurmError::ArgsWithoutSlurm(args) => {
                anyhow::anyhow!("--slurm-arg {args}: Slurm options need --backend slurm")
            }
            other => anyhow::Error::new(other).context(format!("--backend {backend}")),
        })
        .usage()
}

/// The allocation of `--slurm-mode packed`: `slots` slots of `slurm.cpus` CPUs (over `nodes`
/// nodes if given), asked of Slurm, or the allocation this program runs in. When that one has
/// room for fewer tasks at once than `-j`, says so: the others wait for a slot.
///
/// # Errors
/// Slurm did not give the allocation.
pub fn packed_allocation(
    slots: usize,
    nodes: Option<u32>,
    slurm: &fanout::Slurm,
) -> Result<std::sync::Arc<fanout::process::Allocation>, SlurmError> {
    let allocation = fanout::process::Allocation::acquire(slots, nodes, slurm)?;
    if allocation.slots() < slots {
        eprintln!(
            "note: Slurm allocation {} has room for {} task(s) of {} CPU(s) at once; the \
             other workers of -j {slots} wait for a slot",
            allocation.job_id(),
            allocation.slots(),
            allocation.cpus_per_task()
        );
    }
    Ok(std::sync::Arc::new(allocation))
}

/// `--slurm-nodes` without `--slurm-mode packed` is the user's error.
///
/// # Errors
/// Saying which flag to add.
pub fn check_slurm_nodes(mode: SlurmMode, nodes: Option<u32>) -> Result<()> {
    if nodes.is_some() && mode != SlurmMode::Packed {
        return Err(anyhow::anyhow!(
            "--slurm-nodes spreads the allocation of --slurm-mode packed; add --slurm-mode packed"
        ))
        .usage();
    }
    Ok(())
}
