//! What each job waits for: the jobs it `needs`, and the earlier stages' jobs it comes after
//! (the frontier), as positions in job order; and a stage's jobs ordered by their needs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};

use crate::model::{Job, Pipeline, Waits};

/// `items` reordered so that each comes after the items it needs, otherwise in their order.
/// Needs naming no item are ignored; items in a cycle keep their order at the end (the cycle
/// is reported by [`waits`], with names).
pub(crate) fn after_needs<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    needs: impl Fn(&T) -> &[String],
) -> Vec<T> {
    if items.iter().all(|t| needs(t).is_empty()) {
        return items;
    }
    let ids: HashSet<String> = items.iter().map(|t| id(t).to_owned()).collect();
    let mut placed: HashSet<String> = HashSet::new();
    let mut rest: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(rest.len());
    loop {
        let before = ordered.len();
        for slot in &mut rest {
            let ready = slot.as_ref().is_some_and(|t| {
                needs(t)
                    .iter()
                    .all(|n| placed.contains(n) || !ids.contains(n) || n == id(t))
            });
            if ready && let Some(t) = slot.take() {
                placed.insert(id(&t).to_owned());
                ordered.push(t);
            }
        }
        if ordered.len() == before {
            break;
        }
    }
    ordered.extend(rest.into_iter().flatten());
    ordered
}

/// Where each job name stands: its positions in job order (a loop's job: all its iterations,
/// none before the loop is expanded) and its stage.
type Positions<'a> = HashMap<&'a str, (Vec<usize>, usize)>;

/// What each job of `pipeline` waits for (see [`Waits`]); an error names a job that needs an
/// unknown job, a job of a later stage, or the jobs of a cycle.
pub(crate) fn waits(pipeline: &Pipeline) -> Result<Vec<Waits>> {
    let any_needs = pipeline.jobs().any(|(_, _, j)| !j.needs.is_empty());
    // Only `needs` name jobs (and can form cycles): without them, no lookups to prepare.
    let position = if any_needs {
        positions(pipeline)
    } else {
        HashMap::new()
    };
    let mut waits = Vec::with_capacity(pipeline.job_count());
    // The jobs of the stages so far that no later job waits for: a job without `needs`
    // comes after them (and so after every earlier stage).
    let mut frontier: Vec<usize> = Vec::new();
    let mut first = 0;
    for (si, stage) in pipeline.stages.iter().enumerate() {
        let mut waited_for: HashSet<usize> = HashSet::new();
        let after: Arc<[usize]> = frontier.as_slice().into();
        let none: Arc<[usize]> = Arc::from([]);
        let mut any_after = false;
        for job in &stage.jobs {
            // Clones of two lists per stage: no allocation per job.
            let mut w = Waits {
                needs: Vec::new(),
                after: none.clone(),
            };
            if job.needs.is_empty() {
                w.after = after.clone();
                any_after = true;
            } else {
                w.needs = needs(pipeline, &position, si, job)?;
            }
            waited_for.extend(w.needs.iter().copied());
            waits.push(w);
        }
        if any_after {
            frontier.clear();
        }
        frontier.retain(|fi| !waited_for.contains(fi));
        frontier.extend(first..first + stage.jobs.len());
        first += stage.jobs.len();
    }
    if any_needs {
        check_cycles(pipeline, &waits)?;
    }
    Ok(waits)
}

fn positions(pipeline: &Pipeline) -> Positions<'_> {
    let mut position: Positions<'_> = HashMap::new();
    for (fi, (si, _, j)) in pipeline.jobs().enumerate() {
        position.insert(j.id.as_str(), (vec![fi], si));
        if let Some(it) = &j.iteration {
            position
                .entry(it.of.as_str())
                .or_insert((Vec::new(), si))
                .0
                .push(fi);
        }
    }
    for (si, stage) in pipeline.stages.iter().enumerate() {
        for t in stage.looping.iter().flat_map(|l| &l.jobs) {
            position.entry(t.id.as_str()).or_insert((Vec::new(), si));
        }
    }
    position
}

/// The positions of the jobs `job` (of stage `si`) needs; an error names a need that is not a
/// job, is of a later stage, or is the job itself.
fn needs(
    pipeline: &Pipeline,
    position: &Positions<'_>,
    si: usize,
    job: &Job,
) -> Result<Vec<usize>> {
    let at = pipeline.file.display();
    let mut found = Vec::new();
    for need in &job.needs {
        let Some((indices, need_stage)) = position.get(need.as_str()) else {
            let mut names: Vec<&str> = position.keys().copied().collect();
            names.sort_unstable();
            bail!(
                "{at}: the job {:?} needs {need:?}, which is not a job of this pipeline (its \
                 jobs: {})",
                job.id,
                names.join(", ")
            );
        };
        let need_stage = *need_stage;
        if need_stage > si {
            bail!(
                "{at}: the job {:?} (stage {:?}) needs {need:?}, which runs in the later stage \
                 {:?}; `needs` may point only to a job of the same or an earlier stage",
                job.id,
                pipeline.stages[si].name,
                pipeline.stages[need_stage].name
            );
        }
        if need == &job.id {
            bail!("{at}: the job {:?} needs itself", job.id);
        }
        for &fi in indices {
            if !found.contains(&fi) {
                found.push(fi);
            }
        }
    }
    Ok(found)
}

/// An error naming the jobs of a cycle of `needs`, if there is one.
fn check_cycles(pipeline: &Pipeline, waits: &[Waits]) -> Result<()> {
    let tasks: Vec<fanout::Task<()>> = pipeline
        .jobs()
        .zip(waits)
        .map(|((_, _, j), w)| {
            fanout::Task::new(j.id.clone(), ())
                .needs(w.needs.iter().copied())
                .after_shared(w.after.clone())
        })
        .collect();
    fanout::check_waits(&tasks).map_err(|e| {
        anyhow!(
            "{}: {}",
            pipeline.file.display(),
            e.to_string().replace(
                "the tasks wait for each other in a cycle (-> reads \"waits for\")",
                "the jobs need each other in a cycle (-> reads \"needs\")"
            )
        )
    })
}
