//! A run is segments: the stages up to the next loop stage are one pool batch. Here: which jobs
//! a segment runs, the records of a loop stage's iterations once it is expanded, and the record
//! of the stages a stopped run does not reach.

use fanout::CancelToken;

use crate::cache::Cache;
use crate::context::{Ran, RunContext, RunState, lock};
use crate::model::{Job, Pipeline};
use crate::store::{JobRecord, JobStatus, RecordWriter, RunRecord, Update};

/// The jobs of `stages` this segment runs, in job order: not those done earlier in a resumed
/// run, and not those that need a job of an earlier segment that did not succeed (recorded as
/// skipped, naming it).
pub(crate) fn segment_todo(
    ctx: &RunContext<'_>,
    flat: &[(usize, usize, &Job)],
    stages: std::ops::Range<usize>,
    ran: &mut Ran,
    so_far: &RunState,
) -> Vec<usize> {
    let mut todo = Vec::new();
    let mut in_segment = vec![false; flat.len()];
    for (fi, &(si, ji, job)) in flat.iter().enumerate() {
        if !stages.contains(&si) || lock(&so_far.statuses).contains_key(&job.id) {
            continue;
        }
        let failed_need = ctx.pipeline.waits[fi].needs.iter().find_map(|&d| {
            let dep = &flat[d].2.id;
            let status = lock(&so_far.statuses).get(dep).copied();
            (!in_segment[d] && !matches!(status, Some(JobStatus::Succeeded | JobStatus::UpToDate)))
                .then(|| {
                    let how = status.map_or("did not run", JobStatus::as_str);
                    format!("not started: needs {dep}, which {how}")
                })
        });
        if let Some(why) = failed_need {
            lock(&so_far.statuses).insert(job.id.clone(), JobStatus::Skipped);
            ran.not_started += 1;
            ctx.writer
                .send(Update::not_started(si, ji, JobStatus::Skipped, why));
            continue;
        }
        in_segment[fi] = true;
        todo.push(fi);
    }
    todo
}

/// The records of loop stage `si`'s iterations, just expanded: pending, or, for a resumed run,
/// the record of an iteration that succeeded earlier (same name, same definition), which is
/// then done.
pub(crate) fn expanded_records(
    pipeline: &Pipeline,
    si: usize,
    old: Option<&RunRecord>,
    so_far: &RunState,
    cache: &Cache,
) -> Vec<JobRecord> {
    let stage = &pipeline.stages[si];
    let old_jobs = old
        .and_then(|r| r.stages.iter().find(|s| s.name == stage.name))
        .map_or(&[][..], |s| s.jobs.as_slice());
    stage
        .jobs
        .iter()
        .map(|j| {
            let fresh = JobRecord {
                definition: Some(j.definition_hash()),
                ..JobRecord::pending(&j.id, j.launcher.name())
            };
            match old_jobs.iter().find(|o| {
                o.job_id == j.id
                    && matches!(o.status, JobStatus::Succeeded | JobStatus::UpToDate)
                    && o.definition == fresh.definition
            }) {
                Some(o) => {
                    so_far.done(&j.id, o.output.clone(), cache);
                    o.clone()
                }
                None => fresh,
            }
        })
        .collect()
}

/// The run stops before stage `from` (a failure stopped the pipeline, or it was interrupted):
/// record every job of the stages from there as not started.
pub(crate) fn not_run_after(
    pipeline: &Pipeline,
    from: usize,
    writer: &RecordWriter,
    interrupt: &CancelToken,
    ran: &mut Ran,
    state: &RunState,
) {
    let (status, why) = if interrupt.is_cancelled() {
        (
            JobStatus::Cancelled,
            "not started: the run was interrupted".to_owned(),
        )
    } else {
        (
            JobStatus::Skipped,
            format!(
                "not started: stage {:?} failed and stops the pipeline",
                ran.halted_by.as_deref().unwrap_or_default()
            ),
        )
    };
    for (si, stage) in pipeline.stages.iter().enumerate().skip(from) {
        if stage.looping.as_ref().is_some_and(|l| !l.expanded) {
            // A resumed run's record keeps the iterations it had (the next resume skips those
            // that succeeded); only the note says this run did not reach them.
            writer.send(Update::Note {
                stage: si,
                note: format!("not run: {}", why.trim_start_matches("not started: ")),
            });
        }
        let statuses = lock(&state.statuses);
        for (ji, job) in stage.jobs.iter().enumerate() {
            // A resumed run's job that succeeded earlier keeps its record.
            if statuses.get(&job.id) == Some(&JobStatus::Succeeded) {
                continue;
            }
            ran.not_started += 1;
            writer.send(Update::not_started(si, ji, status, why.clone()));
        }
    }
}
