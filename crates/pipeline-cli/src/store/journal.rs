//! The run record's journal: every change to the record, one JSON line each, appended to
//! `journal.jsonl` beside `run.json`. The record's writer (`writer.rs`) writes `run.json`
//! whole only when a run starts or resumes and when it ends (compaction); in between it appends
//! the changes, so a change costs the same whatever the size of the record. Readers
//! ([`load`], [`list`]) replay the journal over `run.json`.
//!
//! A journal starts with a header naming the generation of the `run.json` it goes with: a
//! journal left beside a newer `run.json` (a crash between the compaction and the removal of
//! the journal) is not replayed twice. A killed run may leave a torn last line: replay stops
//! at the first line that does not parse.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cache::CacheUpdate;
use crate::store::{JobRecord, JobStatus, RUNS_DIR, RunRecord, RunStatus, record_path, timestamp};

/// The journal's file name, in the run folder.
pub(crate) const JOURNAL: &str = "journal.jsonl";

/// The journal of the record at `record`.
pub(crate) fn journal_path(record: &Path) -> PathBuf {
    record.with_file_name(JOURNAL)
}

/// A journal's first line.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    generation: u64,
}

/// A change to the record: a line of the journal (but [`Update::Cache`], which goes to the
/// cache file).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Update {
    Started {
        stage: usize,
        job: usize,
        attempt: u32,
        #[serde(with = "unix")]
        at: SystemTime,
        /// How long it waited for resources, and what it has of them.
        #[serde(with = "seconds", default, skip_serializing_if = "Duration::is_zero")]
        waited: Duration,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        resources: crate::resources::Amounts,
    },
    Finished {
        stage: usize,
        job: usize,
        status: JobStatus,
        attempts: u32,
        exit_code: Option<i32>,
        slurm_job_id: Option<u64>,
        /// The node(s) its Slurm job ran on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slurm_node: Option<String>,
        error: Option<String>,
        #[serde(with = "seconds")]
        duration: Duration,
        #[serde(with = "unix")]
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
    Note { stage: usize, note: String },
    /// The value a job returned.
    Output {
        stage: usize,
        job: usize,
        value: serde_json::Value,
    },
    /// The values of the parameters a job tracks, added to the run's.
    Params(BTreeMap<String, serde_json::Value>),
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
    /// A job with inputs succeeded, or files were hashed afresh: for the cache file, never in
    /// the journal.
    #[serde(skip)]
    Cache(Box<CacheUpdate>),
    RunFinished {
        status: RunStatus,
        #[serde(with = "unix")]
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
            slurm_node: None,
            error: Some(why),
            duration: Duration::ZERO,
            at: SystemTime::now(),
        }
    }
}

/// Apply `update` to `record`; a cache update is handed back for the cache file. An update
/// naming a job the record does not have (a journal that does not belong to it) changes
/// nothing.
pub(crate) fn apply(record: &mut RunRecord, update: Update) -> Option<Box<CacheUpdate>> {
    match update {
        Update::Cache(change) => return Some(change),
        Update::Reason { stage, job, reason } => {
            if let Some(j) = job_mut(record, stage, job) {
                j.reason = Some(reason);
            }
        }
        Update::Expand { stage, jobs, note } => {
            if let Some(s) = record.stages.get_mut(stage) {
                s.jobs = jobs;
                s.note = Some(note);
            }
        }
        Update::Note { stage, note } => {
            if let Some(s) = record.stages.get_mut(stage) {
                s.note = Some(note);
            }
        }
        Update::Strategy(strategy) => record.strategy = Some(strategy),
        Update::Output { stage, job, value } => {
            if let Some(j) = job_mut(record, stage, job) {
                j.output = Some(value);
            }
        }
        Update::Params(values) => record.params.extend(values),
        Update::Metrics { stage, job, values } => {
            if let Some(j) = job_mut(record, stage, job) {
                j.metrics = values;
            }
        }
        Update::Started {
            stage,
            job,
            attempt,
            at,
            waited,
            resources,
        } => {
            if let Some(j) = job_mut(record, stage, job) {
                started(j, attempt, at, waited, resources);
            }
        }
        Update::Finished {
            stage,
            job,
            status,
            attempts,
            exit_code,
            slurm_job_id,
            slurm_node,
            error,
            duration,
            at,
        } => {
            if let Some(j) = job_mut(record, stage, job) {
                j.status = status;
                j.attempts = attempts;
                j.slurm_job_id = slurm_job_id;
                j.slurm_node = slurm_node;
                j.exit_code = exit_code;
                j.error = error;
                if attempts > 0 {
                    let (s, u) = timestamp(at);
                    j.finished_at = Some(s);
                    j.finished_at_unix = Some(u);
                    j.duration_seconds = Some(duration.as_secs_f64());
                }
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
    None
}

fn job_mut(record: &mut RunRecord, stage: usize, job: usize) -> Option<&mut JobRecord> {
    record.stages.get_mut(stage)?.jobs.get_mut(job)
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

/// The open journal of a running record: changes are appended as lines.
#[derive(Debug)]
pub(crate) struct Journal {
    file: std::fs::File,
    /// Lines not written yet.
    held: Vec<u8>,
}

impl Journal {
    /// A new, empty journal for the `run.json` of generation `generation` at `record` (a
    /// journal already there is replaced).
    pub(crate) fn create(record: &Path, generation: u64) -> Result<Self> {
        let path = journal_path(record);
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut header = serde_json::to_vec(&Header { generation }).expect("a header serializes");
        header.push(b'\n');
        file.write_all(&header)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Journal {
            file,
            held: Vec::new(),
        })
    }

    /// Hold `update`'s line until the next [`Journal::write`]. Cache updates are not journaled.
    pub(crate) fn push(&mut self, update: &Update) {
        if matches!(update, Update::Cache(_)) {
            return;
        }
        serde_json::to_writer(&mut self.held, update).expect("updates serialize");
        self.held.push(b'\n');
    }

    /// Append the held lines and flush them to the disk. An append that fails halfway is cut
    /// off again, so the journal never holds half a line before a whole one.
    pub(crate) fn write(&mut self) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let before = self.file.metadata().map(|m| m.len());
        if let Err(e) = self.file.write_all(&self.held) {
            if let Ok(len) = before {
                let _ = self.file.set_len(len);
                let _ = self.file.seek(std::io::SeekFrom::Start(len));
            }
            return Err(e).context("appending to the run's journal");
        }
        self.held.clear();
        self.file
            .sync_data()
            .context("flushing the run's journal to disk")?;
        Ok(())
    }
}

/// `record` with the changes of `journal` applied, if it belongs to it; stops at a line that
/// does not parse (the torn last line of a killed run).
fn replay(record: &mut RunRecord, journal: Option<std::fs::File>) {
    let Some(file) = journal else {
        return;
    };
    let mut lines = BufReader::new(file).split(b'\n');
    let header: Option<Header> = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| serde_json::from_slice(&l).ok());
    if header.is_none_or(|h| h.generation != record.generation) {
        return;
    }
    for line in lines {
        let Ok(line) = line else { return };
        let Ok(update) = serde_json::from_slice::<Update>(&line) else {
            return;
        };
        apply(record, update);
    }
}

/// Read `run.json` at `path`, with its journal replayed.
pub(crate) fn read(path: &Path) -> Result<Option<RunRecord>> {
    // The journal first: a run that ends (compaction, then the journal removed) or resumes
    // (a new journal) between the two reads leaves this one readable through the open file,
    // and its generation says whether it still applies to the run.json read next.
    let journal = std::fs::File::open(journal_path(path)).ok();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut record: RunRecord = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a run record", path.display()))?;
    replay(&mut record, journal);
    Ok(Some(record))
}

/// Read a run's record (its journal replayed); the error names the run and what to do.
pub(crate) fn load(project: &Path, run_id: &str) -> Result<RunRecord> {
    match read(&record_path(project, run_id))? {
        Some(record) => Ok(record),
        None => bail!(
            "no run {run_id:?} in {} (`lorchestra runs` lists them)",
            project.join(RUNS_DIR).display()
        ),
    }
}

/// Every run's record (journals replayed), newest first. Unreadable records are skipped.
pub(crate) fn list(project: &Path) -> Vec<RunRecord> {
    let mut runs: Vec<RunRecord> = std::fs::read_dir(project.join(RUNS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| read(&e.path().join("run.json")).ok().flatten())
        .collect();
    runs.sort_by(|a, b| b.run_id.cmp(&a.run_id));
    runs
}

/// `SystemTime` as seconds since the epoch, in journal lines.
mod unix {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        s.serialize_f64(secs)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs = f64::deserialize(d)?;
        Ok(SystemTime::UNIX_EPOCH
            + Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)?)
    }
}

/// `Duration` as seconds, in journal lines.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
