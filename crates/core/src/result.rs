//! What a batch produced: one [`Outcome`] per task, in input order, and a [`Summary`].
//!
//! The JSON form of a [`BatchResult`] (see [`BatchResult::report`]) is the shared `--report FILE`
//! shape of every tool: a top-level `summary` and a `tasks` array.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use crate::fsutil::{self, AtomicWriteError};
use crate::strategy::Strategy;

/// The final state of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The task ran and returned a value.
    Succeeded,
    /// The task ran (perhaps several times) and its last attempt failed, or it panicked.
    Failed,
    /// The task ran past its time limit and was stopped.
    TimedOut,
    /// The task was stopped, or never started, because the batch was cancelled.
    Cancelled,
    /// The task was not run: the failure policy stopped the batch, or the task chose to skip.
    Skipped,
}

impl Status {
    /// Every status, in the order summaries list them.
    pub const ALL: [Status; 5] = [
        Status::Succeeded,
        Status::Failed,
        Status::TimedOut,
        Status::Cancelled,
        Status::Skipped,
    ];

    /// The lower-case name used in reports and logs (`timed_out`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
        }
    }

    /// Whether this status counts against the batch (failed or timed out).
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a task did not produce a value. Returned by task code; a failed task is data, not a
/// reason to stop the batch (that is the [`FailurePolicy`](crate::FailurePolicy)'s call).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// The work failed. `detail` carries supporting text such as the tail of a process's stderr.
    #[error("{message}")]
    Failed {
        message: String,
        detail: Option<String>,
        /// Whether another attempt may succeed (a rate limit, a dropped connection).
        retryable: bool,
        /// A delay the other side asked for (HTTP `Retry-After`), used instead of the backoff.
        retry_after: Option<Duration>,
    },
    /// The work ran past its time limit and was stopped.
    #[error("timed out after {}", crate::time::fmt_duration(*after))]
    TimedOut {
        after: Duration,
        detail: Option<String>,
    },
    /// The work was stopped because the batch was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The task decided not to run (its output is up to date, say).
    #[error("{reason}")]
    Skipped { reason: String },
}

/// What one item of [`Pool::map`](crate::Pool::map) came to: its value, or why there is none
/// (boxed: 16 bytes for a `u64` item).
pub type ItemResult<T> = Result<T, Box<TaskError>>;

impl TaskError {
    /// A non-retryable failure with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        TaskError::Failed {
            message: message.into(),
            detail: None,
            retryable: false,
            retry_after: None,
        }
    }

    /// A failure that another attempt may cure.
    pub fn retryable(message: impl Into<String>) -> Self {
        TaskError::Failed {
            message: message.into(),
            detail: None,
            retryable: true,
            retry_after: None,
        }
    }

    /// A task that chose not to run.
    pub fn skipped(reason: impl Into<String>) -> Self {
        TaskError::Skipped {
            reason: reason.into(),
        }
    }

    /// Attach supporting text (e.g. a stderr tail) to a `Failed` or `TimedOut` error.
    pub fn with_detail(mut self, text: impl Into<String>) -> Self {
        match &mut self {
            TaskError::Failed { detail, .. } | TaskError::TimedOut { detail, .. } => {
                *detail = Some(text.into());
            }
            TaskError::Cancelled | TaskError::Skipped { .. } => {}
        }
        self
    }

    /// Ask the retry policy to wait this long before the next attempt.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        if let TaskError::Failed { retry_after, .. } = &mut self {
            *retry_after = Some(delay);
        }
        self
    }

    /// The status a task ending with this error gets.
    pub fn status(&self) -> Status {
        match self {
            TaskError::Failed { .. } => Status::Failed,
            TaskError::TimedOut { .. } => Status::TimedOut,
            TaskError::Cancelled => Status::Cancelled,
            TaskError::Skipped { .. } => Status::Skipped,
        }
    }

    /// Whether the default retry predicate retries this error.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TaskError::Failed {
                retryable: true,
                ..
            }
        )
    }

    /// The delay the other side asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TaskError::Failed { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Supporting text, if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            TaskError::Failed { detail, .. } | TaskError::TimedOut { detail, .. } => {
                detail.as_deref()
            }
            TaskError::Cancelled | TaskError::Skipped { .. } => None,
        }
    }
}

/// The outcome of one task. `M` is what the work function reported about the task besides its
/// value ([`Pool::run_with_meta`](crate::Pool::run_with_meta)): delivered on success and on
/// failure alike (an exit code, a job id, token counts); `()` for [`Pool::run`](crate::Pool::run).
#[derive(Debug, Clone)]
pub struct Outcome<T, M = ()> {
    /// Position of the task in the input.
    pub index: usize,
    /// The task's name, as given.
    pub name: String,
    pub status: Status,
    /// The value, when the task succeeded.
    pub value: Option<T>,
    /// Why there is no value, otherwise.
    pub error: Option<TaskError>,
    /// How many times the work ran (0 when it never started).
    pub attempts: u32,
    /// From the start of the batch to the start of the first attempt: time spent waiting for a
    /// worker slot.
    pub queue_wait: Duration,
    /// From the start of the first attempt to the end of the last, backoff included.
    pub duration: Duration,
    /// When the first attempt started, relative to the start of the batch (`None` if it never
    /// started). Timelines draw from this.
    pub started_after: Option<Duration>,
    /// What the last attempt reported besides its value (`M::default()` when none ran to
    /// the end: never started, or panicked).
    pub meta: M,
}

impl<T, M: Default> Outcome<T, M> {
    /// An outcome for a task that never started.
    pub(crate) fn not_started(index: usize, name: String, error: TaskError) -> Self {
        Outcome {
            index,
            name,
            status: error.status(),
            value: None,
            error: Some(error),
            attempts: 0,
            queue_wait: Duration::ZERO,
            duration: Duration::ZERO,
            started_after: None,
            meta: M::default(),
        }
    }
}

impl<T, M> Outcome<T, M> {
    /// The name to show: the task's name, or `item N` (1-based) for a [`Pool::map`](crate::Pool::map)
    /// item, which has none of its own.
    pub fn label(&self) -> std::borrow::Cow<'_, str> {
        if self.name.is_empty() {
            std::borrow::Cow::Owned(format!("item {}", self.index + 1))
        } else {
            std::borrow::Cow::Borrowed(&self.name)
        }
    }

    /// The error's message, if the task has one.
    pub fn error_message(&self) -> Option<String> {
        self.error.as_ref().map(ToString::to_string)
    }
}

/// Counts and timings of a whole batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub timed_out: usize,
    pub cancelled: usize,
    pub skipped: usize,
    #[serde(rename = "wall_seconds", serialize_with = "secs")]
    pub wall: Duration,
    /// Sum of the tasks' run times.
    #[serde(rename = "busy_seconds", serialize_with = "secs")]
    pub busy: Duration,
    pub max_workers: usize,
    /// The strategy that actually ran the batch (never `auto`).
    pub strategy: Strategy,
    /// busy / (wall × workers): 1.0 means every worker was busy all the time.
    pub utilization: f64,
    /// busy / wall: how many tasks ran at once, on average.
    pub effective_parallelism: f64,
    /// Wall-clock time the batch started, as seconds since the Unix epoch.
    pub started_at_unix: f64,
    /// What the tasks are called in [`one_line`](Self::one_line) (singular, plural).
    #[serde(skip)]
    pub noun: (&'static str, &'static str),
}

impl Summary {
    /// Where a status is counted in [`Summary::from_counts`]'s `counts`.
    pub(crate) fn slot(status: Status) -> usize {
        match status {
            Status::Succeeded => 0,
            Status::Failed => 1,
            Status::TimedOut => 2,
            Status::Cancelled => 3,
            Status::Skipped => 4,
        }
    }

    /// From counts by status (succeeded, failed, timed out, cancelled, skipped) and the sum
    /// of the run times.
    pub fn from_counts(
        counts: [usize; 5],
        busy: Duration,
        wall: Duration,
        max_workers: usize,
        strategy: Strategy,
        started_at: SystemTime,
    ) -> Self {
        let wall_s = wall.as_secs_f64();
        let (utilization, effective_parallelism) = if wall_s > 0.0 {
            let p = busy.as_secs_f64() / wall_s;
            (p / max_workers as f64, p)
        } else {
            (0.0, 0.0)
        };
        Summary {
            total: counts.iter().sum(),
            succeeded: counts[0],
            failed: counts[1],
            timed_out: counts[2],
            cancelled: counts[3],
            skipped: counts[4],
            wall,
            busy,
            max_workers,
            strategy,
            utilization,
            effective_parallelism,
            started_at_unix: started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            noun: ("task", "tasks"),
        }
    }

    /// How many tasks ended with this status.
    pub fn count(&self, status: Status) -> usize {
        match status {
            Status::Succeeded => self.succeeded,
            Status::Failed => self.failed,
            Status::TimedOut => self.timed_out,
            Status::Cancelled => self.cancelled,
            Status::Skipped => self.skipped,
        }
    }

    /// True when no task failed, timed out or was cancelled.
    pub fn all_ok(&self) -> bool {
        self.failed == 0 && self.timed_out == 0 && self.cancelled == 0
    }

    /// One line for humans:
    /// `10 tasks: 8 succeeded, 2 failed in 3.2s (4 workers, speedup 3.1x, 78% busy)`.
    /// Speedup is busy time over wall time: how much faster than one task at a time.
    pub fn one_line(&self) -> String {
        let parts: Vec<String> = Status::ALL
            .iter()
            .filter(|s| self.count(**s) > 0)
            .map(|s| format!("{} {}", self.count(*s), s.as_str().replace('_', " ")))
            .collect();
        let noun = if self.total == 1 {
            self.noun.0
        } else {
            self.noun.1
        };
        format!(
            "{} {noun}: {} in {} ({} worker{}, speedup {:.1}x, {:.0}% busy)",
            self.total,
            if parts.is_empty() {
                "nothing to do".to_owned()
            } else {
                parts.join(", ")
            },
            crate::time::fmt_duration(self.wall),
            self.max_workers,
            if self.max_workers == 1 { "" } else { "s" },
            self.effective_parallelism,
            self.utilization * 100.0
        )
    }
}

/// The result of a batch: one outcome per task, in input order whatever the completion order.
#[derive(Debug, Clone)]
pub struct BatchResult<T, M = ()> {
    pub outcomes: Vec<Outcome<T, M>>,
    pub summary: Summary,
}

impl<T, M> BatchResult<T, M> {
    /// True when no task failed, timed out or was cancelled.
    pub fn all_ok(&self) -> bool {
        self.summary.all_ok()
    }

    /// The values of the tasks that succeeded, in input order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.outcomes.iter().filter_map(|o| o.value.as_ref())
    }

    /// The outcomes that failed or timed out.
    pub fn failures(&self) -> impl Iterator<Item = &Outcome<T, M>> {
        self.outcomes.iter().filter(|o| o.status.is_failure())
    }

    /// The shared report shape, with no tool-specific fields.
    pub fn report(&self) -> Report<'_, ()> {
        self.report_with(|_| ())
    }

    /// The shared report shape; `extra` adds tool-specific fields to each task entry (it must
    /// serialize as a map, e.g. a struct; `()` adds nothing).
    pub fn report_with<X: Serialize>(&self, extra: impl Fn(&Outcome<T, M>) -> X) -> Report<'_, X> {
        Report {
            summary: &self.summary,
            tasks: self
                .outcomes
                .iter()
                .map(|o| TaskRecord {
                    name: &o.name,
                    status: o.status,
                    duration_seconds: o.duration.as_secs_f64(),
                    queue_wait_seconds: o.queue_wait.as_secs_f64(),
                    started_after_seconds: o.started_after.map(|d| d.as_secs_f64()),
                    attempts: o.attempts,
                    error: o.error_message(),
                    error_detail: o.error.as_ref().and_then(TaskError::detail),
                    extra: extra(o),
                })
                .collect(),
        }
    }

    /// Write the shared report as pretty JSON, atomically.
    pub fn write_report(&self, path: &Path) -> Result<(), AtomicWriteError> {
        self.report().write_json(path)
    }
}

/// The serializable report: `{"summary": {...}, "tasks": [...]}`.
#[derive(Debug, Serialize)]
pub struct Report<'a, X> {
    pub summary: &'a Summary,
    pub tasks: Vec<TaskRecord<'a, X>>,
}

impl<X: Serialize> Report<'_, X> {
    /// Write as pretty JSON, atomically (a reader never sees half a report).
    pub fn write_json(&self, path: &Path) -> Result<(), AtomicWriteError> {
        fsutil::write_json_atomic(path, self, true)
    }
}

/// One task's entry in a [`Report`].
#[derive(Debug, Serialize)]
pub struct TaskRecord<'a, X> {
    pub name: &'a str,
    pub status: Status,
    pub duration_seconds: f64,
    pub queue_wait_seconds: f64,
    pub started_after_seconds: Option<f64>,
    pub attempts: u32,
    pub error: Option<String>,
    pub error_detail: Option<&'a str>,
    #[serde(flatten)]
    pub extra: X,
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
