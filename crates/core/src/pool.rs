//! The bounded worker pool and its execution strategies.
//!
//! [`Pool::run`] takes a list of [`Task`]s and one work function, runs at most
//! [`MaxWorkers`] tasks at once, and returns a [`BatchResult`] with one outcome per task in
//! input order. Workers only run tasks and send messages; the calling thread is the single
//! owner that turns messages into [`Event`]s for the reporter and builds the result.

use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::TaskError;
use crate::cancel::{CancelReason, CancelToken};
use crate::events::{Event, Reporter};
use crate::result::{BatchResult, Outcome, Status, Summary};
use crate::retry::RetryPolicy;

/// Environment variable that overrides the strategy of every pool: `serial`, `threads`,
/// `rayon` or `auto`.
pub const STRATEGY_ENV: &str = "FANOUT_STRATEGY";

/// Errors in a pool's configuration. Each names the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("max_workers must be between 1 and {cap}, got {value}")]
    MaxWorkersOutOfRange { value: usize, cap: usize },
    #[error(
        "{source_name}={value:?} is not a strategy; expected one of: serial, threads, rayon, auto"
    )]
    UnknownStrategy { source_name: String, value: String },
    #[error("could not start the worker threads: {0}")]
    ThreadPool(String),
    #[error("{source_name}={value:?} is not valid; expected {expected}")]
    InvalidKnob {
        source_name: String,
        value: String,
        expected: &'static str,
    },
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

/// How a batch is executed (ADR-004, Rust-native).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// On the calling thread, one task after another, in input order. For debugging and
    /// determinism.
    Serial,
    /// One blocking OS thread per worker slot. For subprocesses and I/O-bound work.
    Threads,
    /// A rayon pool sized to `max_workers` (never the global pool). For CPU-bound in-process
    /// work.
    Rayon,
    /// Choose from the task kind, the number of tasks and of workers.
    #[default]
    Auto,
}

impl Strategy {
    /// Parse `serial`, `threads`, `rayon` or `auto` (case-insensitive).
    /// `source_name` names where the value came from, for the error message.
    pub fn parse(value: &str, source_name: &str) -> Result<Self, PoolError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "serial" => Ok(Strategy::Serial),
            "threads" => Ok(Strategy::Threads),
            "rayon" => Ok(Strategy::Rayon),
            "auto" => Ok(Strategy::Auto),
            _ => Err(PoolError::UnknownStrategy {
                source_name: source_name.to_owned(),
                value: value.to_owned(),
            }),
        }
    }

    /// The strategy set by [`STRATEGY_ENV`], if it is set. An unknown value is an error, never
    /// silently ignored; an empty value counts as unset.
    pub fn from_env() -> Result<Option<Self>, PoolError> {
        match std::env::var(STRATEGY_ENV) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Self::parse(&v, STRATEGY_ENV).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(PoolError::UnknownStrategy {
                source_name: STRATEGY_ENV.to_owned(),
                value: v.to_string_lossy().into_owned(),
            }),
        }
    }

    /// The concrete strategy `Auto` stands for here. One task or one worker is always serial
    /// (no thread to start, so never slower than serial); otherwise the kind decides.
    pub fn resolve(self, kind: TaskKind, tasks: usize, max_workers: MaxWorkers) -> Strategy {
        match self {
            Strategy::Auto if tasks <= 1 || max_workers.get() == 1 => Strategy::Serial,
            Strategy::Auto => match kind {
                TaskKind::Blocking => Strategy::Threads,
                TaskKind::Cpu => Strategy::Rayon,
            },
            concrete => concrete,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Serial => "serial",
            Strategy::Threads => "threads",
            Strategy::Rayon => "rayon",
            Strategy::Auto => "auto",
        }
    }
}

/// What the tasks mostly do, as a hint for [`Strategy::Auto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskKind {
    /// Wait on subprocesses, the network or disks.
    #[default]
    Blocking,
    /// Compute in-process.
    Cpu,
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
    /// How [`Pool::map`] cuts its batches into chunks.
    pub chunking: crate::map::Chunking,
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
            chunking: crate::map::Chunking::default(),
        }
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

    /// How [`Pool::map`] cuts batches into chunks.
    pub fn chunking(mut self, chunking: crate::map::Chunking) -> Self {
        self.chunking = chunking;
        self
    }

    /// Apply [`STRATEGY_ENV`], [`CHUNK_SIZE_ENV`](crate::map::CHUNK_SIZE_ENV) and
    /// [`MIN_BATCH_ENV`](crate::map::MIN_BATCH_ENV) where set (they win over the configuration).
    pub fn with_env_overrides(mut self) -> Result<Self, PoolError> {
        if let Some(s) = Strategy::from_env()? {
            self.strategy = s;
        }
        self.chunking = self.chunking.with_env_overrides()?;
        Ok(self)
    }
}

/// One unit of work: a name for reports, the input for the work function, and optionally its
/// own retry policy.
#[derive(Debug, Clone)]
pub struct Task<I> {
    pub name: String,
    pub input: I,
    pub retry: Option<RetryPolicy>,
}

impl<I> Task<I> {
    pub fn new(name: impl Into<String>, input: I) -> Self {
        Task {
            name: name.into(),
            input,
            retry: None,
        }
    }

    /// Use this policy instead of the pool's.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// What the work function knows about the task it runs.
#[derive(Debug)]
pub struct TaskContext<'a> {
    pub(crate) index: usize,
    pub(crate) name: &'a str,
    pub(crate) attempt: u32,
    pub(crate) cancel: &'a CancelToken,
}

impl<'a> TaskContext<'a> {
    /// Position of the task in the input.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn name(&self) -> &'a str {
        self.name
    }

    /// 1 for the first attempt, 2 for the first retry...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Cancelled when the batch is interrupted or stopped by the failure policy. Pass it to
    /// [`ProcessRunner::run`](crate::process::ProcessRunner::run) so the process tree dies with
    /// the batch.
    pub fn cancel_token(&self) -> &'a CancelToken {
        self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// A bounded worker pool. Reuse one across batches (a rayon pool, once built, is kept).
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    rayon: OnceLock<Result<rayon::ThreadPool, PoolError>>,
}

enum Msg<T> {
    Started {
        index: usize,
        attempt: u32,
    },
    Retrying {
        index: usize,
        attempt: u32,
        delay: Duration,
        error: TaskError,
    },
    Finished(Outcome<T>),
}

/// Stops a batch (its token and stop flag) when dropped during a panic. If the reporter
/// panics in `Pool::run`'s owner loop, nothing watches the workers any more, yet the thread
/// scope would wait for them to run every remaining task.
pub(crate) struct StopOnUnwind<'a>(pub(crate) &'a CancelToken, pub(crate) &'a AtomicBool);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.1.store(true, Ordering::SeqCst);
            self.0.cancel(crate::CancelReason::Requested);
        }
    }
}

/// State shared by the workers of one batch.
struct Shared<'t, I, F> {
    tasks: &'t [Task<I>],
    work: &'t F,
    default_retry: &'t RetryPolicy,
    policy: FailurePolicy,
    /// Cancelled by the caller's token, or by a failure under `StopNow`.
    cancel: CancelToken,
    /// Set by the first failure under `StopSoon`/`StopNow`: start nothing new.
    stop: AtomicBool,
    start: Instant,
}

impl<I, F> Shared<'_, I, F> {
    fn run_one<T>(&self, index: usize, emit: &mut dyn FnMut(Msg<T>)) -> Outcome<T>
    where
        F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError>,
    {
        let task = &self.tasks[index];
        if let Some(not_started) = self.refuse_to_start(index, task) {
            return not_started;
        }
        let retry = task.retry.as_ref().unwrap_or(self.default_retry);
        let first_start = Instant::now();
        let mut attempt = 1;
        let result = loop {
            emit(Msg::Started { index, attempt });
            let ctx = TaskContext {
                index,
                name: &task.name,
                attempt,
                cancel: &self.cancel,
            };
            let result = catch_unwind(AssertUnwindSafe(|| (self.work)(&task.input, &ctx)))
                .unwrap_or_else(|panic| Err(TaskError::failed(panic_message(&*panic))));
            match result {
                Err(error)
                    if retry.should_retry(attempt, &error) && !self.cancel.is_cancelled() =>
                {
                    let delay = retry.delay(attempt, &error);
                    emit(Msg::Retrying {
                        index,
                        attempt,
                        delay,
                        error,
                    });
                    if !self.cancel.sleep(delay) {
                        break Err(TaskError::Cancelled);
                    }
                    attempt += 1;
                }
                other => break other,
            }
        };
        let (status, value, error) = match result {
            Ok(v) => (Status::Succeeded, Some(v), None),
            Err(e) => (e.status(), None, Some(e)),
        };
        if status.is_failure() {
            self.on_failure();
        }
        Outcome {
            index,
            name: task.name.clone(),
            status,
            value,
            error,
            attempts: attempt,
            queue_wait: first_start.duration_since(self.start),
            duration: first_start.elapsed(),
            started_after: Some(first_start.duration_since(self.start)),
        }
    }

    fn refuse_to_start<T>(&self, index: usize, task: &Task<I>) -> Option<Outcome<T>> {
        let name = task.name.clone();
        if self.stop.load(Ordering::SeqCst) {
            return Some(Outcome::not_started(
                index,
                name,
                TaskError::skipped("not started: an earlier task failed"),
            ));
        }
        match self.cancel.reason() {
            None => None,
            Some(CancelReason::FailurePolicy) => Some(Outcome::not_started(
                index,
                name,
                TaskError::skipped("not started: an earlier task failed"),
            )),
            Some(_) => Some(Outcome::not_started(index, name, TaskError::Cancelled)),
        }
    }

    fn on_failure(&self) {
        match self.policy {
            FailurePolicy::KeepGoing => {}
            FailurePolicy::StopSoon => self.stop.store(true, Ordering::SeqCst),
            FailurePolicy::StopNow => {
                self.stop.store(true, Ordering::SeqCst);
                self.cancel.cancel(CancelReason::FailurePolicy);
            }
        }
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    format!("task panicked: {text}")
}

/// See [`Pool::samples_first`].
const SAMPLE_MIN_TASKS_PER_WORKER: usize = 64;
/// A mean task time under this is too short to hand tasks to other threads: the messages and
/// the owner's work per task cost as much as the task (the bench's in-process scenario).
const TINY_TASK: Duration = Duration::from_micros(50);

/// `Auto` for large in-process batches: run tasks on the calling thread while they stay tiny.
/// Returns how many ran; the rest go to the parallel strategy.
///
/// "Stay tiny": the rest go parallel once 3 tasks took [`TINY_TASK`] or longer *and* those are
/// at least a quarter of the tasks so far. Long tasks switch after 3 (a few percent of a large
/// batch); a tiny task that the scheduler happened to preempt (a busy machine, a timer tick)
/// does not switch on its own.
fn sample_serially<I, T, F>(shared: &Shared<'_, I, F>, owner: &mut Owner<'_, T>) -> usize
where
    F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError>,
{
    let mut long = 0;
    let mut ran = 0;
    while ran < shared.tasks.len() {
        let outcome = shared.run_one(ran, &mut |m| owner.handle(m));
        if outcome.duration >= TINY_TASK {
            long += 1;
        }
        owner.handle(Msg::Finished(outcome));
        ran += 1;
        if long >= 3 && long * 4 >= ran {
            break;
        }
    }
    ran
}

/// A worker's messages to the owner. Each goes at once while tasks take long enough to watch;
/// while they are tiny (a message per task would cost more than the task, and the owner would
/// be the bottleneck), they are batched and sent every [`Outbox::MAX_HOLD`] or
/// [`Outbox::MAX_BATCH`] messages. What is left goes when the outbox is dropped. So events of
/// tiny tasks reach the reporter late by at most `MAX_HOLD` plus the length of the worker's next
/// task (a long task after tiny ones flushes their messages when it ends).
struct Outbox<T> {
    tx: mpsc::Sender<Vec<Msg<T>>>,
    held: Vec<Msg<T>>,
    since: Instant,
    /// The last task this worker ran was tiny.
    tiny: bool,
}

impl<T> Outbox<T> {
    const MAX_HOLD: Duration = Duration::from_millis(20);
    const MAX_BATCH: usize = 1024;

    fn new(tx: mpsc::Sender<Vec<Msg<T>>>) -> Self {
        Outbox {
            tx,
            held: Vec::new(),
            since: Instant::now(),
            tiny: false,
        }
    }

    fn run<I, F>(&mut self, shared: &Shared<'_, I, F>, index: usize)
    where
        F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError>,
    {
        let outcome = shared.run_one(index, &mut |m| self.push(m));
        self.tiny = outcome.duration < TINY_TASK;
        self.push(Msg::Finished(outcome));
    }

    fn push(&mut self, msg: Msg<T>) {
        if self.held.is_empty() {
            self.since = Instant::now();
        }
        self.held.push(msg);
        if !self.tiny
            || self.held.len() >= Self::MAX_BATCH
            || self.since.elapsed() >= Self::MAX_HOLD
        {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.held.is_empty() {
            drop(self.tx.send(std::mem::take(&mut self.held)));
        }
    }
}

impl<T> Clone for Outbox<T> {
    /// For rayon's `for_each_with`: each split of the work gets an empty outbox.
    fn clone(&self) -> Self {
        Outbox::new(self.tx.clone())
    }
}

impl<T> Drop for Outbox<T> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The single owner of the batch's state: turns messages into events and outcomes.
struct Owner<'r, T> {
    reporter: &'r mut dyn Reporter<T>,
    names: Vec<&'r str>,
    outcomes: Vec<Option<Outcome<T>>>,
    finished: usize,
}

impl<T> Owner<'_, T> {
    fn handle(&mut self, msg: Msg<T>) {
        match msg {
            Msg::Started { index, attempt } => self.reporter.report(&Event::TaskStarted {
                index,
                name: self.names[index],
                attempt,
            }),
            Msg::Retrying {
                index,
                attempt,
                delay,
                error,
            } => self.reporter.report(&Event::TaskRetrying {
                index,
                name: self.names[index],
                attempt,
                delay,
                error: &error,
            }),
            Msg::Finished(outcome) => {
                self.finished += 1;
                self.reporter.report(&Event::TaskFinished {
                    outcome: &outcome,
                    finished: self.finished,
                    total: self.outcomes.len(),
                });
                let index = outcome.index;
                self.outcomes[index] = Some(outcome);
            }
        }
    }
}

impl Pool {
    pub fn new(config: PoolConfig) -> Self {
        Pool {
            config,
            rayon: OnceLock::new(),
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Run `work` once per task (more with retries), at most `max_workers` at once, and return
    /// one outcome per task in input order.
    ///
    /// A task's `Err` or panic fails that task only. `cancel` stops the batch: unstarted tasks
    /// become `cancelled`, running ones see their [`TaskContext::cancel_token`] cancelled.
    /// Events go to `reporter` on this thread.
    #[expect(
        clippy::too_many_lines,
        reason = "a batch's whole life in one place: strategy, sampling, workers, the owner loop"
    )]
    pub fn run<I, T, F>(
        &self,
        tasks: &[Task<I>],
        cancel: &CancelToken,
        reporter: &mut dyn Reporter<T>,
        work: F,
    ) -> Result<BatchResult<T>, PoolError>
    where
        I: Sync,
        T: Send,
        F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError> + Sync,
    {
        let max_workers = self.config.max_workers;
        let strategy = self
            .config
            .strategy
            .resolve(self.config.kind, tasks.len(), max_workers);
        let rayon = match strategy {
            Strategy::Rayon => Some(self.rayon_pool()?),
            _ => None,
        };
        let started_at = SystemTime::now();
        let shared = Shared {
            tasks,
            work: &work,
            default_retry: &self.config.retry,
            policy: self.config.failure_policy,
            cancel: cancel.child(),
            stop: AtomicBool::new(false),
            start: Instant::now(),
        };
        let total = tasks.len();
        reporter.report(&Event::BatchStarted {
            total,
            max_workers: max_workers.get(),
            strategy,
        });
        let mut owner = Owner {
            reporter,
            names: tasks.iter().map(|t| t.name.as_str()).collect(),
            outcomes: std::iter::repeat_with(|| None).take(total).collect(),
            finished: 0,
        };

        // Where the parallel part starts: after whatever ran on this thread.
        let mut first = 0;
        let mut ran = strategy;
        if strategy == Strategy::Serial || total == 0 {
            for i in 0..total {
                let outcome = shared.run_one(i, &mut |m| owner.handle(m));
                owner.handle(Msg::Finished(outcome));
            }
        } else if self.samples_first(tasks.len()) {
            first = sample_serially(&shared, &mut owner);
            if first == total {
                ran = Strategy::Serial;
            }
        }
        if first < total && strategy != Strategy::Serial {
            let (tx, rx) = mpsc::channel::<Vec<Msg<T>>>();
            let shared = &shared;
            let next = &AtomicUsize::new(first);
            std::thread::scope(|scope| {
                let _stop_on_panic = StopOnUnwind(&shared.cancel, &shared.stop);
                if let Some(rayon) = rayon {
                    scope.spawn(move || {
                        use rayon::prelude::*;
                        rayon.install(|| {
                            (first..total)
                                .into_par_iter()
                                .for_each_with(Outbox::new(tx), |outbox, i| outbox.run(shared, i));
                        });
                    });
                } else {
                    for w in 0..max_workers.get().min(total - first) {
                        let mut outbox = Outbox::new(tx.clone());
                        std::thread::Builder::new()
                            .name(format!("fanout-worker-{w}"))
                            .spawn_scoped(scope, move || {
                                loop {
                                    let i = next.fetch_add(1, Ordering::SeqCst);
                                    if i >= total {
                                        break;
                                    }
                                    outbox.run(shared, i);
                                }
                            })
                            .expect("spawn a worker thread");
                    }
                    drop(tx);
                }
                // The owner loop: ends when every sender is gone, i.e. every worker is done.
                for batch in rx {
                    for msg in batch {
                        owner.handle(msg);
                    }
                }
            });
        }

        let outcomes: Vec<Outcome<T>> = owner
            .outcomes
            .into_iter()
            .map(|o| o.expect("every task reports an outcome"))
            .collect();
        let mut summary = Summary::compute(
            &outcomes,
            shared.start.elapsed(),
            max_workers.get(),
            ran,
            started_at,
        );
        summary.noun = self.config.noun;
        owner
            .reporter
            .report(&Event::BatchFinished { summary: &summary });
        Ok(BatchResult { outcomes, summary })
    }

    /// Whether `Auto` first runs tasks on the calling thread to see how long they take: for
    /// in-process work in batches large enough (64 tasks per worker) that running the first
    /// one alone costs at most a few percent even when tasks are long.
    fn samples_first(&self, tasks: usize) -> bool {
        self.config.strategy == Strategy::Auto
            && self.config.kind == TaskKind::Cpu
            && self.config.max_workers.get() > 1
            && tasks >= SAMPLE_MIN_TASKS_PER_WORKER * self.config.max_workers.get()
    }

    pub(crate) fn rayon_pool(&self) -> Result<&rayon::ThreadPool, PoolError> {
        self.rayon
            .get_or_init(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.config.max_workers.get())
                    .thread_name(|i| format!("fanout-rayon-{i}"))
                    .build()
                    .map_err(|e| PoolError::ThreadPool(e.to_string()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}
