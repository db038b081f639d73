//! A pool's settings, checked: [`PoolConfig`], [`MaxWorkers`], [`FailurePolicy`], [`Chunking`],
//! and the environment variables that override them.

use std::num::NonZeroUsize;

use serde::Serialize;

use crate::retry::RetryPolicy;
use crate::strategy::{Strategy, TaskKind, UnknownStrategy};

/// Errors in a pool's configuration. Each names the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("max_workers must be between 1 and {cap}, got {value}")]
    MaxWorkersOutOfRange { value: usize, cap: usize },
    #[error(transparent)]
    UnknownStrategy(#[from] UnknownStrategy),
    #[error("could not start the worker threads: {0}")]
    ThreadPool(String),
    #[error("{source_name}={value:?} is not valid; expected {expected}")]
    InvalidKnob {
        source_name: String,
        value: String,
        expected: &'static str,
    },
    /// Tasks that wait for each other in a circle, or for a task that is not in the batch.
    #[error("{0}")]
    InvalidGraph(String),
    /// A task that needs more of a resource than the pool's budget has.
    #[error("{0}")]
    OverBudget(String),
}

/// How many tasks may run at once: validated to `1..=cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MaxWorkers(NonZeroUsize);

impl MaxWorkers {
    /// `value` if it is within `1..=cap`, else an error naming the allowed range.
    pub fn new(value: usize, cap: usize) -> Result<Self, PoolError> {
        match NonZeroUsize::new(value) {
            Some(n) if value <= cap => Ok(MaxWorkers(n)),
            _ => Err(PoolError::MaxWorkersOutOfRange { value, cap }),
        }
    }

    /// The number of cores this process may use, at most `cap` (and at least 1).
    pub fn available(cap: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        MaxWorkers(NonZeroUsize::new(cores.min(cap).max(1)).expect("at least one"))
    }

    /// One worker: tasks run one after the other.
    pub fn one() -> Self {
        MaxWorkers(NonZeroUsize::MIN)
    }

    pub fn get(self) -> usize {
        self.0.get()
    }
}

/// What happens to the rest of the batch when a task fails or times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Run every task regardless (the default: one failure never stops the others).
    #[default]
    KeepGoing,
    /// Start nothing new; let running tasks finish. Unstarted tasks are `skipped`.
    StopSoon,
    /// Start nothing new and cancel running tasks (their subprocess trees are killed).
    StopNow,
}

/// A pool's settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_workers: MaxWorkers,
    pub strategy: Strategy,
    pub kind: TaskKind,
    pub failure_policy: FailurePolicy,
    /// Retry policy for tasks that do not carry their own.
    pub retry: RetryPolicy,
    /// What the tasks are called in summaries (singular, plural): `("notebook", "notebooks")`.
    pub noun: (&'static str, &'static str),
    /// How [`Pool::map`](crate::Pool::map) cuts its batches into chunks.
    pub chunking: Chunking,
    /// Counted resources tasks take while they run (see [`Task::uses`](crate::Task::uses)).
    pub budget: Option<crate::resources::Budget>,
}

impl PoolConfig {
    /// `max_workers` workers, `Auto` strategy, blocking tasks, keep going, no retries.
    pub fn new(max_workers: MaxWorkers) -> Self {
        PoolConfig {
            max_workers,
            strategy: Strategy::Auto,
            kind: TaskKind::Blocking,
            failure_policy: FailurePolicy::KeepGoing,
            retry: RetryPolicy::none(),
            noun: ("task", "tasks"),
            chunking: Chunking::default(),
            budget: None,
        }
    }

    /// Admit tasks by what they [use](crate::Task::uses) of `budget`, besides `max_workers`.
    pub fn with_budget(mut self, budget: crate::resources::Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    pub fn kind(mut self, kind: TaskKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Call the tasks this in summaries: `noun("job", "jobs")`.
    pub fn noun(mut self, singular: &'static str, plural: &'static str) -> Self {
        self.noun = (singular, plural);
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How [`Pool::map`](crate::Pool::map) cuts batches into chunks.
    pub fn chunking(mut self, chunking: Chunking) -> Self {
        self.chunking = chunking;
        self
    }

    /// Apply [`STRATEGY_ENV`](crate::strategy::STRATEGY_ENV), [`CHUNK_SIZE_ENV`] and
    /// [`MIN_BATCH_ENV`] where set (they win over the configuration).
    pub fn with_env_overrides(mut self) -> Result<Self, PoolError> {
        if let Some(s) = Strategy::from_env()? {
            self.strategy = s;
        }
        self.chunking = self.chunking.with_env_overrides()?;
        Ok(self)
    }
}

/// Environment variable for a fixed chunk size: a whole number of items, or `auto`.
pub const CHUNK_SIZE_ENV: &str = "FANOUT_CHUNK_SIZE";
/// Environment variable for the batch size below which `map` runs serially.
pub const MIN_BATCH_ENV: &str = "FANOUT_MIN_BATCH";

/// Below this many items, a batch runs on the calling thread by default: only a single item.
/// A count alone cannot tell ten tiny items (serial is best) from ten items of a second each
/// (parallel is); `Auto` measures instead. Raise it to keep small batches serial unmeasured.
pub const DEFAULT_MIN_BATCH: usize = 2;
/// How [`Pool::map`](crate::Pool::map) cuts a batch into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Items a worker takes at a time; `None`: adaptive.
    pub chunk_size: Option<NonZeroUsize>,
    /// Batches smaller than this run on the calling thread, one item after another.
    pub min_batch_size: usize,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            chunk_size: None,
            min_batch_size: DEFAULT_MIN_BATCH,
        }
    }
}

impl Chunking {
    /// A fixed chunk size (at least 1).
    pub fn chunk_size(mut self, items: usize) -> Result<Self, PoolError> {
        self.chunk_size = Some(
            NonZeroUsize::new(items).ok_or_else(|| PoolError::InvalidKnob {
                source_name: "chunk_size".to_owned(),
                value: "0".to_owned(),
                expected: "a whole number of items, at least 1",
            })?,
        );
        Ok(self)
    }

    /// Run batches smaller than `items` serially.
    pub fn min_batch_size(mut self, items: usize) -> Self {
        self.min_batch_size = items;
        self
    }

    /// Apply [`CHUNK_SIZE_ENV`] and [`MIN_BATCH_ENV`] where set (they win). A value that is not
    /// valid is an error naming the variable, never ignored; an empty one counts as unset.
    pub fn with_env_overrides(mut self) -> Result<Self, PoolError> {
        if let Some(v) = env_value(CHUNK_SIZE_ENV)? {
            self.chunk_size = if v.eq_ignore_ascii_case("auto") {
                None
            } else {
                Some(v.parse::<NonZeroUsize>().map_err(|_| {
                    invalid(
                        CHUNK_SIZE_ENV,
                        &v,
                        "a whole number of items (at least 1) or auto",
                    )
                })?)
            };
        }
        if let Some(v) = env_value(MIN_BATCH_ENV)? {
            self.min_batch_size = v
                .parse()
                .map_err(|_| invalid(MIN_BATCH_ENV, &v, "a whole number of items"))?;
        }
        Ok(self)
    }
}

fn invalid(name: &str, value: &str, expected: &'static str) -> PoolError {
    PoolError::InvalidKnob {
        source_name: name.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

fn env_value(name: &str) -> Result<Option<String>, PoolError> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(invalid(name, &v.to_string_lossy(), "valid text"))
        }
    }
}
