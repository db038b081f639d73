//! When its turn comes, whether a job runs or is up to date, and why: the keys of what it waits
//! for, then the cache's decision (`cache.rs`), recorded.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cache::{CacheUpdate, DepState, Verdict};
use crate::context::{RunContext, RunState, lock};
use crate::model::{Job, Pipeline};
use crate::store::Update;

/// The combined state of each shared `after` list (by its address), computed once.
pub(crate) type Combined = Mutex<HashMap<usize, DepState>>;

/// The jobs job `fi` waits for, as the cache sees them: each job it needs, and the jobs of
/// earlier stages it comes after as one (see [`DepState::combine`]; once per stage).
pub(crate) fn deps_of(
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
pub(crate) fn decide(
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
