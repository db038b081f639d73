//! The one thread that writes the run record (and the cache with it).
//!
//! Crash safety: every write is a complete file written atomically (temp file, fsync, rename),
//! so `kill -9` at any instant leaves the previous or the next complete record, never a torn
//! one. Cost: one thread owns the record; the run sends it transitions over a channel and never
//! waits for the disk. The writer applies every transition it has received, then writes. While
//! jobs are slow, each transition gets its own write at once; when transitions come faster than
//! a write takes (a 10,000-job stage of `true`), they are coalesced, with writes at least
//! `5 x the last write's duration` (and 50 ms) apart, so writing never takes more than about a
//! sixth of the writer's time however large the record grows.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use crate::cache::{CacheFile, CacheUpdate};
use crate::store::{JobRecord, JobStatus, RunRecord, RunStatus, timestamp};

/// A change to the record.
#[derive(Debug)]
pub(crate) enum Update {
    Started {
        stage: usize,
        job: usize,
        attempt: u32,
        at: SystemTime,
        /// How long it waited for resources, and what it has of them.
        waited: Duration,
        resources: crate::resources::Amounts,
    },
    Finished {
        stage: usize,
        job: usize,
        status: JobStatus,
        attempts: u32,
        exit_code: Option<i32>,
        slurm_job_id: Option<u64>,
        error: Option<String>,
        duration: Duration,
        at: SystemTime,
    },
    /// A loop stage's iterations, now known.
    Expand {
        stage: usize,
        jobs: Vec<JobRecord>,
        note: String,
    },
    /// A batch started, with the strategy the pool chose.
    Strategy(fanout::Strategy),
    /// A loop stage not expanded in this run (not reached, or its list not found): its note;
    /// the iterations recorded so far stay.
    Note {
        stage: usize,
        note: String,
    },
    /// The value a job returned.
    Output {
        stage: usize,
        job: usize,
        value: serde_json::Value,
    },
    /// The values of the parameters a job tracks, added to the run's.
    Params(std::collections::BTreeMap<String, serde_json::Value>),
    /// The numbers of a job's metrics files.
    Metrics {
        stage: usize,
        job: usize,
        values: crate::metrics::Metrics,
    },
    /// Why a job runs, or that it is up to date: decided when its turn came.
    Reason {
        stage: usize,
        job: usize,
        reason: String,
    },
    /// A job with inputs succeeded, or files were hashed afresh.
    Cache(Box<CacheUpdate>),
    RunFinished {
        status: RunStatus,
        at: SystemTime,
    },
}

impl Update {
    /// Job `job` of stage `stage` ended without starting, with `status` and why.
    pub(crate) fn not_started(stage: usize, job: usize, status: JobStatus, why: String) -> Self {
        Update::Finished {
            stage,
            job,
            status,
            attempts: 0,
            exit_code: None,
            slurm_job_id: None,
            error: Some(why),
            duration: Duration::ZERO,
            at: SystemTime::now(),
        }
    }
}

fn apply(record: &mut RunRecord, cache: Option<&mut CacheState>, update: Update) {
    match update {
        Update::Reason { stage, job, reason } => {
            record.stages[stage].jobs[job].reason = Some(reason);
        }
        Update::Expand { stage, jobs, note } => {
            let s = &mut record.stages[stage];
            s.jobs = jobs;
            s.note = Some(note);
        }
        Update::Note { stage, note } => record.stages[stage].note = Some(note),
        Update::Strategy(strategy) => record.strategy = Some(strategy),
        Update::Output { stage, job, value } => {
            record.stages[stage].jobs[job].output = Some(value);
        }
        Update::Params(values) => record.params.extend(values),
        Update::Metrics { stage, job, values } => {
            record.stages[stage].jobs[job].metrics = values;
        }
        Update::Cache(change) => {
            if let Some(cache) = cache {
                cache.changed.apply(*change);
                cache.dirty = true;
            }
        }
        Update::Started {
            stage,
            job,
            attempt,
            at,
            waited,
            resources,
        } => started(
            &mut record.stages[stage].jobs[job],
            attempt,
            at,
            waited,
            resources,
        ),
        Update::Finished {
            stage,
            job,
            status,
            attempts,
            exit_code,
            slurm_job_id,
            error,
            duration,
            at,
        } => {
            let j = &mut record.stages[stage].jobs[job];
            j.status = status;
            j.attempts = attempts;
            j.slurm_job_id = slurm_job_id;
            j.exit_code = exit_code;
            j.error = error;
            if attempts > 0 {
                let (s, u) = timestamp(at);
                j.finished_at = Some(s);
                j.finished_at_unix = Some(u);
                j.duration_seconds = Some(duration.as_secs_f64());
            }
        }
        Update::RunFinished { status, at } => {
            record.status = status;
            let (s, u) = timestamp(at);
            record.finished_at = Some(s);
            record.finished_at_unix = Some(u);
            record.duration_seconds = Some(u - record.started_at_unix);
        }
    }
}

/// Attempt `attempt` of job `j` started at `at`, after waiting `waited` for `resources`.
fn started(
    j: &mut JobRecord,
    attempt: u32,
    at: SystemTime,
    waited: Duration,
    resources: crate::resources::Amounts,
) {
    j.status = JobStatus::Running;
    j.attempts = attempt;
    let (s, u) = timestamp(at);
    if attempt == 1 {
        j.started_at = Some(s);
        j.started_at_unix = Some(u);
        j.finished_at = None;
        j.finished_at_unix = None;
        j.error = None;
        j.exit_code = None;
        j.output = None;
        j.tries.clear();
        j.resource_wait_seconds = None;
    }
    if !waited.is_zero() {
        *j.resource_wait_seconds.get_or_insert(0.0) += waited.as_secs_f64();
    }
    if resources.is_empty() && attempt == 1 {
        return;
    }
    if j.tries.is_empty() && attempt > 1 {
        // A job without resources is recorded per attempt once it retries.
        j.tries.push(crate::store::AttemptRecord {
            attempt: 1,
            started_at_unix: j.started_at_unix.unwrap_or(u),
            waited_seconds: 0.0,
            resources: crate::resources::Amounts::new(),
        });
    }
    j.tries.push(crate::store::AttemptRecord {
        attempt,
        started_at_unix: u,
        waited_seconds: waited.as_secs_f64(),
        resources,
    });
}

/// The cache's changes made by this run, written beside the record.
#[derive(Debug)]
pub(crate) struct CacheState {
    /// The project folder.
    pub(crate) project: PathBuf,
    /// Only this run's changes: written over what is on disk then.
    pub(crate) changed: CacheFile,
    pub(crate) dirty: bool,
}

impl CacheState {
    pub(crate) fn new(project: PathBuf) -> Self {
        CacheState {
            project,
            changed: CacheFile::default(),
            dirty: false,
        }
    }

    fn write(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        CacheFile::save_merged(&self.project, &self.changed)
    }
}

/// The cache first: a crash between the two leaves a job recorded as running whose success is
/// in the cache, never the reverse.
fn write_both(record: &RunRecord, cache: Option<&mut CacheState>, path: &Path) -> Result<()> {
    if let Some(c) = cache {
        c.write()?;
    }
    write(record, path)
}

fn write(record: &RunRecord, path: &Path) -> Result<()> {
    // Compact: a third smaller than pretty-printed, and faster to write; `lorchestra status` is
    // the human view.
    let mut json = serde_json::to_vec(record).expect("records serialize");
    json.push(b'\n');
    fanout::fsutil::write_atomic(path, &json)?;
    Ok(())
}

/// The record's single writer.
#[derive(Debug)]
pub(crate) struct RecordWriter {
    tx: Option<Sender<Update>>,
    thread: Option<JoinHandle<(RunRecord, Result<()>, usize)>>,
}

impl RecordWriter {
    /// Write `record` now (so a valid file exists before any job starts), then own it on a
    /// thread of its own.
    /// Cache updates go to `cache`, written with the record (not at all without it).
    pub(crate) fn start(
        record: RunRecord,
        path: PathBuf,
        cache: Option<CacheState>,
    ) -> Result<Self> {
        write(&record, &path)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("lorchestra-record".to_owned())
            .spawn(move || writer_loop(record, cache, &path, &rx))
            .context("starting the run record's writer")?;
        Ok(RecordWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn send(&self, update: Update) {
        if let Some(tx) = &self.tx {
            // The writer only stops when we drop the sender; a send cannot fail before that.
            let _ = tx.send(update);
        }
    }

    /// Apply what is queued, write the final record, and return it with the number of writes.
    /// A writer dropped without `finish` (the run stopped on an error) ends the run as failed:
    /// a record never stays `running` after its run is gone.
    pub(crate) fn finish(mut self) -> Result<(RunRecord, usize)> {
        drop(self.tx.take());
        let (record, result, writes) = self
            .thread
            .take()
            .expect("finish is called once")
            .join()
            .expect("the record writer does not panic");
        result.map(|()| (record, writes))
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        self.send(Update::RunFinished {
            status: RunStatus::Failed,
            at: SystemTime::now(),
        });
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn writer_loop(
    mut record: RunRecord,
    mut cache: Option<CacheState>,
    path: &Path,
    rx: &Receiver<Update>,
) -> (RunRecord, Result<()>, usize) {
    let mut last_write = Instant::now();
    let mut min_gap = Duration::ZERO;
    let mut writes = 0;
    let mut result = Ok(());
    let mut open = true;
    while open {
        match rx.recv() {
            Ok(update) => apply(&mut record, cache.as_mut(), update),
            Err(_) => break,
        }
        // Coalesce: take whatever else is queued, and if the last write was recent, keep
        // collecting until the gap has passed.
        loop {
            let wait = (last_write + min_gap).saturating_duration_since(Instant::now());
            let next = if wait.is_zero() {
                rx.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                rx.recv_timeout(wait)
            };
            match next {
                Ok(update) => apply(&mut record, cache.as_mut(), update),
                Err(RecvTimeoutError::Timeout) if wait.is_zero() => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let started = Instant::now();
        if let Err(e) = write_both(&record, cache.as_mut(), path) {
            result = Err(e);
        }
        writes += 1;
        last_write = Instant::now();
        min_gap = (last_write - started)
            .saturating_mul(5)
            .max(Duration::from_millis(50));
        if writes == 1 {
            // The first transitions of a run are the ones people watch: write them promptly.
            min_gap = Duration::ZERO;
        }
    }
    if open || writes == 0 {
        if let Err(e) = write_both(&record, cache.as_mut(), path) {
            result = Err(e);
        }
        writes += 1;
    }
    (record, result, writes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::{StageRecord, new_run_id};

    fn record(jobs: usize) -> RunRecord {
        let (s, u) = timestamp(SystemTime::now());
        RunRecord {
            run_id: new_run_id(),
            pipeline: "p".into(),
            pipeline_file: "pipelines/p.toml".into(),
            status: RunStatus::Running,
            started_at: s,
            started_at_unix: u,
            finished_at: None,
            finished_at_unix: None,
            duration_seconds: None,
            max_workers: 2,
            strategy: None,
            resumes: 0,
            payload: BTreeMap::new(),
            params_set: BTreeMap::new(),
            params: BTreeMap::new(),
            stages: vec![StageRecord {
                note: None,
                name: "s".into(),
                jobs: (0..jobs)
                    .map(|i| JobRecord::pending(&format!("j{i}"), "local"))
                    .collect(),
            }],
        }
    }

    #[test]
    fn every_update_reaches_the_file_and_writes_are_coalesced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let n = 5000;
        let w = RecordWriter::start(record(n), path.clone(), None).unwrap();
        for job in 0..n {
            w.send(Update::Started {
                stage: 0,
                job,
                attempt: 1,
                at: SystemTime::now(),
                waited: Duration::ZERO,
                resources: crate::resources::Amounts::new(),
            });
            w.send(Update::Finished {
                stage: 0,
                job,
                status: JobStatus::Succeeded,
                attempts: 1,
                exit_code: Some(0),
                slurm_job_id: None,
                error: None,
                duration: Duration::from_millis(1),
                at: SystemTime::now(),
            });
        }
        w.send(Update::RunFinished {
            status: RunStatus::Succeeded,
            at: SystemTime::now(),
        });
        let (_, writes) = w.finish().unwrap();
        assert!(writes < 2 * n, "{writes} writes for {} transitions", 2 * n);
        let on_disk: RunRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk.status, RunStatus::Succeeded);
        assert!(
            on_disk.stages[0]
                .jobs
                .iter()
                .all(|j| j.status == JobStatus::Succeeded)
        );
    }
}
