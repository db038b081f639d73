//! When its turn comes, whether a job runs or is up to date, and why: the keys of what it waits
//! for, then the cache's decision (`cache.rs`), recorded.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cache::{DepState, Entry, Stamp, Verdict};
use crate::context::{RunContext, RunState, lock};
use crate::model::{Job, Pipeline};

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

/// What deciding found: whether the job is up to date, why it runs (for a job that tracks inputs or params),
/// the files hashed afresh, the value an up-to-date job returned when it last ran, and the cache
/// entry to keep if it runs and succeeds. The worker tells the owner (see `batch.rs`).
#[derive(Debug)]
pub(crate) struct Decided {
    pub(crate) up_to_date: bool,
    pub(crate) reason: Option<String>,
    pub(crate) stamps: Vec<(String, Stamp)>,
    pub(crate) output: Option<serde_json::Value>,
    pub(crate) entry: Option<Entry>,
    /// The values of the parameters it tracks, `--set` applied (for the run record).
    pub(crate) params: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Whether job `fi` runs, and why; kept in `so_far` for the jobs that wait for it (and its
/// last value, if it is up to date). An error fails the job (a missing input).
pub(crate) fn decide(
    ctx: &RunContext<'_>,
    flat: &[(usize, usize, &Job)],
    fi: usize,
    so_far: &RunState,
    combined: &Combined,
) -> Result<Decided, String> {
    let job = flat[fi].2;
    // A job that tracks nothing always runs whatever it depends on (see `Cache::decide`): no need
    // to gather their states.
    let deps = if job.tracked() {
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
    } else {
        Vec::new()
    };
    let decision = ctx.cache.decide(job, &deps, ctx.forced[fi], ctx.run_id)?;
    let (runs, reason) = match decision.verdict {
        Verdict::UpToDate => (None, "up to date".to_owned()),
        Verdict::Run(why) => (Some("ran"), why),
    };
    let up_to_date = runs.is_none();
    if ctx.tracks_any {
        lock(&so_far.deps).insert(job.id.clone(), DepState::new(&job.id, decision.key, runs));
    }
    let output = ctx
        .cache
        .last_output(&job.id)
        .filter(|_| up_to_date)
        .cloned();
    if let Some(value) = &output {
        // Up to date: the value it returned when it last ran.
        lock(&so_far.outputs).insert(job.id.clone(), value.clone());
    }
    Ok(Decided {
        up_to_date,
        // A job that tracks nothing always runs: nothing to explain in its record.
        reason: job.tracked().then_some(reason),
        stamps: decision.stamps,
        output,
        entry: decision.entry.filter(|_| !up_to_date),
        params: decision.params,
    })
}
