//! What the jobs of a run share while it runs: the run's context (the pipeline, the options,
//! the record's writer, the cache), what finished jobs left for those that wait for them
//! ([`RunState`]), and how the jobs went ([`Ran`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use fanout::{CancelToken, ProcessRunner};

use crate::cache::{Cache, DepState, Entry, Stamp};
use crate::model::Pipeline;
use crate::plan::RunOptions;
use crate::project::Project;
use crate::store::{JobStatus, RecordWriter};

/// What a job's last attempt learned besides success or failure: the work function's meta,
/// delivered with the job's outcome to the owner thread, which records it.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobFacts {
    pub(crate) exit_code: Option<i32>,
    pub(crate) slurm_job_id: Option<u64>,
    pub(crate) slurm_node: Option<String>,
    /// Not run: up to date.
    pub(crate) up_to_date: bool,
    /// When its process ended (the record's `finished_at`; the owner hears of it later).
    pub(crate) ended_at: Option<SystemTime>,
    /// The value it returned.
    pub(crate) output: Option<serde_json::Value>,
    /// Its cache entry, to keep now that it succeeded (boxed: most jobs have none, and every
    /// job's outcome holds these facts until the batch ends).
    pub(crate) entry: Option<Box<Entry>>,
    /// Its metrics, read after it succeeded (or from its files, up to date).
    pub(crate) metrics: Option<crate::metrics::Metrics>,
}

/// What a job tells the owner thread while it runs ([`fanout::TaskContext::note`]), for the
/// record, before it ends: the owner is the record's only source of updates.
#[derive(Debug)]
pub(crate) enum JobNote {
    /// Whether it runs, decided: why (or why it fails), the files hashed afresh, and the value
    /// an up-to-date job returned when it last ran.
    Decided {
        reason: Option<String>,
        stamps: Vec<(String, Stamp)>,
        output: Option<serde_json::Value>,
        /// The values of the parameters it tracks (for the run record).
        params: std::collections::BTreeMap<String, serde_json::Value>,
    },
    /// It is about to start its process: until it succeeds it is not up to date (`entry`,
    /// marked started, replaces its cache entry).
    Starting {
        attempt: u32,
        at: SystemTime,
        entry: Option<Box<Entry>>,
        /// How long it waited for resources, and what it has of them.
        waited: std::time::Duration,
        resources: crate::resources::Amounts,
    },
}

/// What the jobs of a run share.
#[derive(Clone, Copy)]
pub(crate) struct RunContext<'a> {
    pub(crate) project: &'a Project,
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) opts: &'a RunOptions,
    pub(crate) run_dir: &'a Path,
    pub(crate) run_id: &'a str,
    pub(crate) interrupt: &'a CancelToken,
    pub(crate) runner: &'a ProcessRunner,
    pub(crate) writer: &'a RecordWriter,
    pub(crate) cache: &'a Cache,
    /// Per job, in job order: `--force` names it.
    pub(crate) forced: &'a [bool],
    /// Some job tracks inputs or params ([`Pipeline::tracks_any`]): the others' states are
    /// kept for it. 30,000 jobs that track nothing keep none.
    pub(crate) tracks_any: bool,
}

/// How the jobs of a run went, for its last lines.
#[derive(Debug, Default)]
pub(crate) struct Ran {
    pub(crate) any_failed: bool,
    /// The first stage whose failure stopped the pipeline.
    pub(crate) halted_by: Option<String>,
    pub(crate) up_to_date: Vec<String>,
    /// Jobs that did not start (not counting those up to date).
    pub(crate) not_started: usize,
    /// The most jobs a batch of this run had: the record keeps that batch's strategy.
    pub(crate) largest_batch: usize,
}

/// What the segments of a run share, by job id (positions change as loops are expanded).
#[derive(Debug, Default)]
pub(crate) struct RunState {
    /// Where each job stands for those that wait for it: its key, and whether it ran.
    pub(crate) deps: Mutex<HashMap<String, DepState>>,
    /// The values jobs returned (and those of jobs done earlier or up to date).
    pub(crate) outputs: Mutex<HashMap<String, serde_json::Value>>,
    /// How each finished job ended (in this run, or earlier in a resumed run): a job with a
    /// status does not run again.
    pub(crate) statuses: Mutex<HashMap<String, JobStatus>>,
}

impl RunState {
    /// Job `id` succeeded earlier in this (resumed) run, returning `output`; those that wait
    /// for it see its last key.
    pub(crate) fn done(&self, id: &str, output: Option<serde_json::Value>, cache: &Cache) {
        let dep = match cache.last_key(id) {
            Some(key) => DepState::new(id, key.to_owned(), None),
            None => DepState::new(id, String::new(), Some("ran")),
        };
        lock(&self.deps).insert(id.to_owned(), dep);
        lock(&self.statuses).insert(id.to_owned(), JobStatus::Succeeded);
        if let Some(v) = output {
            lock(&self.outputs).insert(id.to_owned(), v);
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
