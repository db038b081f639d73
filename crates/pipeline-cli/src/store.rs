//! The run record: `<dir>/.lorchestra/runs/<RUN_ID>/run.json`, and the one thread that writes it.
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

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::cache::{CacheFile, CacheUpdate};

/// Where runs live, below the project folder.
pub(crate) const RUNS_DIR: &str = ".lorchestra/runs";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Skipped,
    /// Not run: nothing it depends on changed since it last succeeded (see `cache`).
    UpToDate,
}

impl JobStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Skipped => "skipped",
            JobStatus::UpToDate => "up_to_date",
        }
    }

    pub(crate) fn from_task(status: fanout::Status) -> Self {
        match status {
            fanout::Status::Succeeded => JobStatus::Succeeded,
            fanout::Status::Failed => JobStatus::Failed,
            fanout::Status::TimedOut => JobStatus::TimedOut,
            fanout::Status::Cancelled => JobStatus::Cancelled,
            fanout::Status::Skipped => JobStatus::Skipped,
        }
    }
}

impl RunStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub(crate) run_id: String,
    pub(crate) pipeline: String,
    pub(crate) pipeline_file: String,
    pub(crate) status: RunStatus,
    pub(crate) started_at: String,
    pub(crate) started_at_unix: f64,
    pub(crate) finished_at: Option<String>,
    pub(crate) finished_at_unix: Option<f64>,
    pub(crate) duration_seconds: Option<f64>,
    pub(crate) max_workers: usize,
    /// The strategy the pool ran the jobs with (of the last batch: every batch of a run has the
    /// same settings). Absent in records of older versions and of runs that ran nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) strategy: Option<fanout::Strategy>,
    /// How many times the run was resumed.
    #[serde(default)]
    pub(crate) resumes: u32,
    /// The invocation payload (`--payload`, `--payload-file`); a resumed run reuses it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) payload: crate::payload::Payload,
    pub(crate) stages: Vec<StageRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StageRecord {
    pub(crate) name: String,
    pub(crate) jobs: Vec<JobRecord>,
    /// A loop stage: how many items it had, or why it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    pub(crate) job_id: String,
    pub(crate) status: JobStatus,
    pub(crate) attempts: u32,
    pub(crate) exit_code: Option<i32>,
    pub(crate) started_at: Option<String>,
    pub(crate) started_at_unix: Option<f64>,
    pub(crate) finished_at: Option<String>,
    pub(crate) finished_at_unix: Option<f64>,
    pub(crate) duration_seconds: Option<f64>,
    /// Relative to the run folder.
    pub(crate) log: String,
    pub(crate) error: Option<String>,
    /// Where it runs: `local` or `slurm`.
    #[serde(default = "local")]
    pub(crate) backend: String,
    /// The Slurm job of its last attempt, when it ran on Slurm.
    #[serde(default)]
    pub(crate) slurm_job_id: Option<u64>,
    /// A hash of the job's definition when it ran (`Job::definition_hash`): `--resume` runs a
    /// succeeded job again when it changed. Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) definition: Option<String>,
    /// Why it ran ("input data/a.csv changed"), or why not ("up to date").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// The JSON value the job returned (see `output.rs`), when it succeeded and returned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) output: Option<serde_json::Value>,
}

fn local() -> String {
    "local".to_owned()
}

impl JobRecord {
    pub(crate) fn pending(job_id: &str, backend: &str) -> Self {
        JobRecord {
            backend: backend.to_owned(),
            slurm_job_id: None,
            definition: None,
            reason: None,
            output: None,
            job_id: job_id.to_owned(),
            status: JobStatus::Pending,
            attempts: 0,
            exit_code: None,
            started_at: None,
            started_at_unix: None,
            finished_at: None,
            finished_at_unix: None,
            duration_seconds: None,
            log: crate::layout::log_name(job_id),
            error: None,
        }
    }
}

pub(crate) fn timestamp(t: SystemTime) -> (String, f64) {
    (
        humantime::format_rfc3339_millis(t).to_string(),
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    )
}

/// A new run id: sortable by time (`20261123T014512.345Z-1a2b`).
pub(crate) fn new_run_id() -> String {
    run_id_at(SystemTime::now(), fastrand::u16(..))
}

/// The run id of a run started at `at`: the time to the millisecond (so ids sort by it), and
/// `salt` to tell apart runs started in the same millisecond.
fn run_id_at(at: SystemTime, salt: u16) -> String {
    let stamp: String = humantime::format_rfc3339_millis(at)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{stamp}-{salt:04x}")
}

pub(crate) fn run_dir(project: &Path, run_id: &str) -> PathBuf {
    project.join(RUNS_DIR).join(run_id)
}

pub(crate) fn record_path(project: &Path, run_id: &str) -> PathBuf {
    run_dir(project, run_id).join("run.json")
}

/// Read a run's record; the error names the run and what to do.
pub(crate) fn load(project: &Path, run_id: &str) -> Result<RunRecord> {
    let path = record_path(project, run_id);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no run {run_id:?} in {} (`lorchestra runs` lists them)",
            project.join(RUNS_DIR).display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a run record", path.display()))
}

/// Every run's record, newest first. Unreadable records are skipped.
pub(crate) fn list(project: &Path) -> Vec<RunRecord> {
    let mut runs: Vec<RunRecord> = std::fs::read_dir(project.join(RUNS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("run.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    runs.sort_by(|a, b| b.run_id.cmp(&a.run_id));
    runs
}

/// A change to the record.
#[derive(Debug)]
pub(crate) enum Update {
    Started {
        stage: usize,
        job: usize,
        attempt: u32,
        at: SystemTime,
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
    /// Why a job runs, or that it is up to date: decided when its turn came.
    Reason {
        stage: usize,
        job: usize,
        reason: String,
    },
    /// A job with inputs succeeded, or files were hashed afresh.
    Cache(CacheUpdate),
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
        Update::Cache(change) => {
            if let Some(cache) = cache {
                cache.changed.apply(change);
                cache.dirty = true;
            }
        }
        Update::Started {
            stage,
            job,
            attempt,
            at,
        } => {
            let j = &mut record.stages[stage].jobs[job];
            j.status = JobStatus::Running;
            j.attempts = attempt;
            if attempt == 1 {
                let (s, u) = timestamp(at);
                j.started_at = Some(s);
                j.started_at_unix = Some(u);
                j.finished_at = None;
                j.finished_at_unix = None;
                j.error = None;
                j.exit_code = None;
                j.output = None;
            }
        }
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
    use super::*;

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

    #[test]
    fn run_ids_sort_by_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // A later millisecond sorts later, whatever the salts.
        let a = run_id_at(t, 0xffff);
        let b = run_id_at(t + Duration::from_millis(1), 0);
        assert!(a < b, "{a} {b}");
        assert_eq!(a, "20270115T080000.000Z-ffff");
        assert!(!new_run_id().contains(':'));
    }
}
