//! The run record: `<dir>/.lorchestra/runs/<RUN_ID>/run.json`, what it holds, where it lives
//! and how it is read back (`runs`, `show`, `--resume`). One thread writes it: [`writer`].

mod journal;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub(crate) use journal::{Update, list, load};
pub(crate) use writer::{CacheState, RecordWriter};

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
    /// The strategy the pool ran the jobs with: that of the run's largest batch, as the pool
    /// reported it (a segment of one job runs serially whatever the others did). Absent in
    /// records of older versions and of runs whose batches were all empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) strategy: Option<fanout::Strategy>,
    /// How many times the run was resumed.
    #[serde(default)]
    pub(crate) resumes: u32,
    /// The invocation payload (`--payload`, `--payload-file`); a resumed run reuses it.
    #[serde(default, skip_serializing_if = "crate::payload::Payload::is_empty")]
    pub(crate) payload: crate::payload::Payload,
    /// `--set`: the parameter overrides of the run; a resumed run reuses them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) params_set: crate::params::Overrides,
    /// The values of the parameters the run's jobs track, `--set` applied, by name
    /// (`params.yaml:train.lr`): what `lorchestra params diff` compares.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) params: BTreeMap<String, serde_json::Value>,
    pub(crate) stages: Vec<StageRecord>,
    /// Which journal (`journal.jsonl` beside it) goes with this file: see `store::journal`.
    #[serde(default)]
    pub(crate) generation: u64,
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
    /// The node(s) that Slurm job ran on (`node2`), when Slurm said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) slurm_node: Option<String>,
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
    /// The numbers of its `metrics` files, when it succeeded (or was up to date).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) metrics: crate::metrics::Metrics,
    /// Seconds it waited, over its attempts, for the resources it needs while a worker was
    /// free for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resource_wait_seconds: Option<f64>,
    /// Its attempts, once it retried or when it needs resources: when each started, what it
    /// had, how long it waited for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tries: Vec<AttemptRecord>,
}

/// One attempt of a job (see [`JobRecord::tries`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct AttemptRecord {
    pub(crate) attempt: u32,
    pub(crate) started_at_unix: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) waited_seconds: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) resources: crate::resources::Amounts,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn local() -> String {
    "local".to_owned()
}

impl JobRecord {
    pub(crate) fn pending(job_id: &str, backend: &str) -> Self {
        JobRecord {
            backend: backend.to_owned(),
            slurm_job_id: None,
            slurm_node: None,
            definition: None,
            reason: None,
            output: None,
            metrics: BTreeMap::new(),
            resource_wait_seconds: None,
            tries: Vec::new(),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
