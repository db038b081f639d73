//! What a batch's jobs take of the run's resources: the pool's budget for the batch, each job's
//! demand, and what an attempt was handed (see `resources.rs` for the amounts, the core's
//! `Budget` for the admission itself).

use std::collections::BTreeSet;

use fanout::Budget;

use crate::model::Job;
use crate::plan::{RunOptions, local_needs};
use crate::resources::Amounts;

/// The batch's budget: what the run has of each resource one of its jobs takes (see
/// `plan::local_needs`); `None` when none takes anything, so only `-j` limits them.
pub(crate) fn batch_budget(
    opts: &RunOptions,
    flat: &[(usize, usize, &Job)],
    todo: &[usize],
) -> Option<Budget> {
    let names: BTreeSet<&String> = todo
        .iter()
        .flat_map(|&fi| local_needs(flat[fi].2).map(|(name, _)| name))
        .collect();
    if names.is_empty() {
        return None;
    }
    let has = &opts.budget;
    Some(names.into_iter().fold(Budget::new(), |b, name| {
        // `plan::check_resources` made sure the run has every resource a job needs.
        b.with(name.clone(), has.get(name).copied().unwrap_or(0))
    }))
}

/// What `job` takes of `budget` (per attempt: an amount may grow with it).
pub(crate) fn demand(budget: &Budget, job: &Job) -> fanout::Demand {
    let mut demand = budget.nothing();
    for (name, amount) in local_needs(job) {
        if let Some(i) = budget.index(name) {
            demand.set(i, amount.base, amount.grows);
        }
    }
    demand
}

/// What this attempt of `job` has of each resource it needs: what the pool handed it (capped
/// at the run's), else (on Slurm) what it asks Slurm for.
pub(crate) fn attempt_resources(
    budget: Option<&Budget>,
    job: &Job,
    tctx: &fanout::TaskContext<'_>,
) -> Amounts {
    if job.resources.is_empty() {
        return Amounts::new();
    }
    let handed: Amounts = budget.map_or_else(Amounts::new, |b| {
        b.names()
            .iter()
            .cloned()
            .zip(tctx.resources().iter().copied())
            .collect()
    });
    // What the pool did not hand out (on Slurm: cpus, memory, GPUs) is what Slurm is asked.
    let local: BTreeSet<&String> = local_needs(job).map(|(name, _)| name).collect();
    job.resources
        .iter()
        .map(|(name, amount)| {
            let value = handed
                .get(name)
                .filter(|_| local.contains(name))
                .copied()
                .unwrap_or_else(|| amount.at(tctx.attempt()));
            (name.clone(), value)
        })
        .collect()
}
