//! The bounded worker pool and its execution strategies.
//!
//! [`Pool::run`] takes a list of [`Task`]s and one work function, runs at most
//! [`MaxWorkers`](crate::config::MaxWorkers) tasks at once, and returns a [`BatchResult`] with one outcome per task in
//! input order. Workers only run tasks and send messages; the calling thread is the single
//! owner that turns messages into [`Event`]s for the reporter and builds the result.

use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use crate::cancel::CancelToken;
use crate::config::{PoolConfig, PoolError};
use crate::events::{Event, Reporter};
use crate::graph::Graph;
use crate::result::{BatchResult, Summary, TaskError};
use crate::strategy::{Strategy, TaskKind};
use crate::task::{Task, TaskContext};

mod owner;
mod workers;

use owner::{Msg, Owner};
use workers::{SAMPLE_MIN_TASKS_PER_WORKER, Shared, Workers, handed, sample_serially};

/// A bounded worker pool. Reuse one across batches (a rayon pool, once built, is kept).
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    rayon: OnceLock<Result<rayon::ThreadPool, PoolError>>,
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
    /// Tasks that wait for others ([`Task::needs`], [`Task::after`]) start as soon as those
    /// finished; a task whose need did not succeed is skipped, naming it. Waits that form a
    /// cycle, or name a task outside the batch, are an error before anything runs.
    ///
    /// A task's `Err` or panic fails that task only. `cancel` stops the batch: unstarted tasks
    /// become `cancelled`, running ones see their [`TaskContext::cancel_token`] cancelled.
    /// Events go to `reporter` on this thread.
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
        self.run_with_meta(tasks, cancel, reporter, |input, ctx| (work(input, ctx), ()))
    }

    /// [`Pool::run`] for work that reports more than its value: `work` returns its result and
    /// a `meta` value (an exit code, a job id, token counts) that reaches the task's
    /// [`Outcome::meta`], and the reporter with it, whether the task succeeded or failed. Workers
    /// only send; no table shared between workers and the reporter is needed. A retried task's
    /// outcome carries its last attempt's meta; a task that never started, or panicked, carries
    /// `M::default()`.
    pub fn run_with_meta<I, T, M, F>(
        &self,
        tasks: &[Task<I>],
        cancel: &CancelToken,
        reporter: &mut dyn Reporter<T, M>,
        work: F,
    ) -> Result<BatchResult<T, M>, PoolError>
    where
        I: Sync,
        T: Send,
        M: Default + Send,
        F: Fn(&I, &TaskContext<'_>) -> (Result<T, TaskError>, M) + Sync,
    {
        self.run_batch(tasks, cancel, reporter, work, true)
    }

    /// [`Pool::run_with_meta`] for a caller that reads each outcome from the reporter's
    /// [`Event::TaskFinished`] and needs no table of them after: no outcome is kept, so a batch
    /// of 30,000 tasks holds what its running tasks hold, not 30,000 outcomes. Returns the
    /// batch's summary.
    pub fn run_reporting<I, T, M, F>(
        &self,
        tasks: &[Task<I>],
        cancel: &CancelToken,
        reporter: &mut dyn Reporter<T, M>,
        work: F,
    ) -> Result<Summary, PoolError>
    where
        I: Sync,
        T: Send,
        M: Default + Send,
        F: Fn(&I, &TaskContext<'_>) -> (Result<T, TaskError>, M) + Sync,
    {
        self.run_batch(tasks, cancel, reporter, work, false)
            .map(|r| r.summary)
    }

    fn run_batch<I, T, M, F>(
        &self,
        tasks: &[Task<I>],
        cancel: &CancelToken,
        reporter: &mut dyn Reporter<T, M>,
        work: F,
        keep: bool,
    ) -> Result<BatchResult<T, M>, PoolError>
    where
        I: Sync,
        T: Send,
        M: Default + Send,
        F: Fn(&I, &TaskContext<'_>) -> (Result<T, TaskError>, M) + Sync,
    {
        let max_workers = self.config.max_workers;
        let budget = self.config.budget.as_ref();
        let graph = if budget.is_some() || tasks.iter().any(Task::waits) {
            Some(Graph::new(tasks, budget)?)
        } else {
            None
        };
        let mut strategy =
            self.config
                .strategy
                .resolve(self.config.kind, tasks.len(), max_workers.get());
        if graph.is_some() && strategy == Strategy::Rayon {
            // Rayon splits a range up front; a graph needs workers that take what is ready.
            strategy = Strategy::Threads;
        }
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
            graph: graph.as_ref(),
        };
        let total = tasks.len();
        reporter.report(&Event::BatchStarted {
            total,
            max_workers: max_workers.get(),
            strategy,
        });
        let mut owner = Owner::new(
            reporter,
            tasks.iter().map(|t| t.name.as_str()).collect(),
            keep,
        );
        let (first, ran) = self.run_here(&shared, &mut owner, graph.as_ref(), strategy);
        if first < total && strategy != Strategy::Serial {
            let workers = Workers {
                rayon,
                graph: graph.as_ref(),
                first,
                threads: max_workers.get(),
            };
            workers.run(&shared, &mut owner);
        }

        Ok(owner.finish(|counts, busy| {
            let mut summary = Summary::from_counts(
                counts,
                busy,
                shared.start.elapsed(),
                max_workers.get(),
                ran,
                started_at,
            );
            summary.noun = self.config.noun;
            summary
        }))
    }

    /// What runs on the calling thread: the whole batch under `Serial` (or an empty one), else
    /// the tasks `Auto` samples first for in-process work. Returns where the parallel part
    /// starts and the strategy that ran (`Serial` when the sample was the whole batch).
    fn run_here<I, T, M, F>(
        &self,
        shared: &Shared<'_, I, F>,
        owner: &mut Owner<'_, T, M>,
        graph: Option<&Graph>,
        strategy: Strategy,
    ) -> (usize, Strategy)
    where
        M: Default,
        F: Fn(&I, &TaskContext<'_>) -> (Result<T, TaskError>, M),
    {
        let total = shared.tasks.len();
        if let (Some(graph), Strategy::Serial) = (graph, strategy) {
            while let Some(h) = graph.next() {
                let i = h.index;
                let outcome = shared.run_one(h, &mut |m| owner.handle(m));
                graph.done(i, &outcome.name, outcome.status);
                owner.handle(Msg::Finished(outcome));
            }
        } else if strategy == Strategy::Serial || total == 0 {
            for i in 0..total {
                let outcome = shared.run_one(handed(i), &mut |m| owner.handle(m));
                owner.handle(Msg::Finished(outcome));
            }
        } else if graph.is_none() && self.samples_first(total) {
            let first = sample_serially(shared, owner);
            let ran = if first == total {
                Strategy::Serial
            } else {
                strategy
            };
            return (first, ran);
        }
        (0, strategy)
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
