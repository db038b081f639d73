//! The workers' side of a batch: the state they share, running one task (with its retries,
//! panics caught), their outboxes of messages to the owner, and how tasks are sampled serially
//! first when they may be too small to be worth a thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::owner::{Msg, Owner};
use crate::cancel::{CancelReason, CancelToken};
use crate::config::FailurePolicy;
use crate::graph::{Graph, Handed};
use crate::result::{Outcome, Status, TaskError};
use crate::retry::RetryPolicy;
use crate::task::{Note, Task, TaskContext};
use crate::worker::{StopOnUnwind, panic_message};

/// State shared by the workers of one batch.
pub(super) struct Shared<'t, I, F> {
    pub(super) tasks: &'t [Task<I>],
    pub(super) work: &'t F,
    pub(super) default_retry: &'t RetryPolicy,
    pub(super) policy: FailurePolicy,
    /// Cancelled by the caller's token, or by a failure under `StopNow`.
    pub(super) cancel: CancelToken,
    /// Set by the first failure under `StopSoon`/`StopNow`: start nothing new.
    pub(super) stop: AtomicBool,
    pub(super) start: Instant,
    /// With waits or a budget: the ready queue, which also keeps the budget's books.
    pub(super) graph: Option<&'t Graph>,
}

impl<I, F> Shared<'_, I, F> {
    /// Run the task handed out, unless it must not start: `blocked` says why (a task it needs
    /// did not succeed), or the batch is stopping.
    pub(super) fn run_one<T, M: Default>(
        &self,
        handed: Handed,
        emit: &mut dyn FnMut(Msg<T, M>),
    ) -> Outcome<T, M>
    where
        F: Fn(&I, &TaskContext<'_>) -> (Result<T, TaskError>, M),
    {
        let Handed {
            index,
            blocked,
            mut waited,
        } = handed;
        let task = &self.tasks[index];
        if let Some(not_started) = self.refuse_to_start(index, task, blocked) {
            return not_started;
        }
        let retry = task.retry.as_ref().unwrap_or(self.default_retry);
        let first_start = Instant::now();
        let mut attempt = 1;
        // The work function's notes go out through the same emitter, in order.
        let emit = std::cell::RefCell::new(emit);
        let notes = |note: Note| (emit.borrow_mut())(Msg::Note { index, note });
        let (result, meta) = loop {
            (emit.borrow_mut())(Msg::Started { index, attempt });
            let held = self.graph.map(|g| g.held(index)).unwrap_or_default();
            let ctx = TaskContext {
                index,
                name: &task.name,
                attempt,
                cancel: &self.cancel,
                notes: Some(&notes),
                resource_wait: waited,
                resources: &held,
            };
            let (result, meta) = catch_unwind(AssertUnwindSafe(|| (self.work)(&task.input, &ctx)))
                .unwrap_or_else(|panic| {
                    let error = TaskError::failed(panic_message(&*panic));
                    (Err(error), M::default())
                });
            match result {
                Err(error)
                    if retry.should_retry(attempt, &error) && !self.cancel.is_cancelled() =>
                {
                    let delay = retry.delay(attempt, &error);
                    (emit.borrow_mut())(Msg::Retrying {
                        index,
                        attempt,
                        delay,
                        error,
                    });
                    // What it holds is free for others while it waits; the next attempt may
                    // need more (`mem = 4G * attempt`).
                    if let Some(graph) = self.graph {
                        graph.release(index);
                    }
                    if !self.cancel.sleep(delay) {
                        break (Err(TaskError::Cancelled), meta);
                    }
                    attempt += 1;
                    match self.graph.map(|g| g.acquire(index, attempt, &self.cancel)) {
                        Some(None) => break (Err(TaskError::Cancelled), meta),
                        Some(Some(w)) => waited = w,
                        None => {}
                    }
                }
                other => break (other, meta),
            }
        };
        let (status, value, error) = match result {
            Ok(v) => (Status::Succeeded, Some(v), None),
            Err(e) => (e.status(), None, Some(e)),
        };
        if status.is_failure() {
            self.on_failure(task.failure_policy.unwrap_or(self.policy));
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
            meta,
        }
    }

    /// Why task `index` does not start, as its outcome: `blocked` (a task it needs did not
    /// succeed; an interrupted batch cancels it instead), a failure that stops the batch, or a
    /// cancelled batch.
    fn refuse_to_start<T, M: Default>(
        &self,
        index: usize,
        task: &Task<I>,
        blocked: Option<String>,
    ) -> Option<Outcome<T, M>> {
        let not_started = |error| Some(Outcome::not_started(index, task.name.clone(), error));
        if let Some(why) = blocked {
            // An interrupted batch cancels what has not started, whatever else held it back.
            let interrupted = self
                .cancel
                .reason()
                .is_some_and(|r| r != CancelReason::FailurePolicy);
            if !interrupted {
                return not_started(TaskError::skipped(why));
            }
        }
        if self.stop.load(Ordering::SeqCst) {
            return not_started(TaskError::skipped("not started: an earlier task failed"));
        }
        match self.cancel.reason() {
            None => None,
            Some(CancelReason::FailurePolicy) => {
                not_started(TaskError::skipped("not started: an earlier task failed"))
            }
            Some(_) => not_started(TaskError::Cancelled),
        }
    }

    fn on_failure(&self, policy: FailurePolicy) {
        match policy {
            FailurePolicy::KeepGoing => {}
            FailurePolicy::StopSoon => self.stop.store(true, Ordering::SeqCst),
            FailurePolicy::StopNow => {
                self.stop.store(true, Ordering::SeqCst);
                self.cancel.cancel(CancelReason::FailurePolicy);
            }
        }
    }
}

/// See [`Pool::samples_first`].
pub(super) const SAMPLE_MIN_TASKS_PER_WORKER: usize = 64;
/// A mean task time under this is too short to hand tasks to other threads: the messages and
/// the owner's work per task cost as much as the task (the bench's in-process scenario).
pub(super) const TINY_TASK: Duration = Duration::from_micros(50);

/// `Auto` for large in-process batches: run tasks on the calling thread while they stay tiny.
/// Returns how many ran; the rest go to the parallel strategy.
///
/// "Stay tiny": the rest go parallel once 3 tasks took [`TINY_TASK`] or longer *and* those are
/// at least a quarter of the tasks so far. Long tasks switch after 3 (a few percent of a large
/// batch); a tiny task that the scheduler happened to preempt (a busy machine, a timer tick)
/// does not switch on its own.
pub(super) fn sample_serially<I, T, M, F>(
    shared: &Shared<'_, I, F>,
    owner: &mut Owner<'_, T, M>,
) -> usize
where
    M: Default,
    F: Fn(&I, &TaskContext<'_>) -> (Result<T, TaskError>, M),
{
    let mut long = 0;
    let mut ran = 0;
    while ran < shared.tasks.len() {
        let outcome = shared.run_one(handed(ran), &mut |m| owner.handle(m));
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
struct Outbox<T, M> {
    tx: mpsc::Sender<Vec<Msg<T, M>>>,
    held: Vec<Msg<T, M>>,
    since: Instant,
    /// The last task this worker ran was tiny.
    tiny: bool,
}

impl<T, M> Outbox<T, M> {
    const MAX_HOLD: Duration = Duration::from_millis(20);
    const MAX_BATCH: usize = 1024;

    fn new(tx: mpsc::Sender<Vec<Msg<T, M>>>) -> Self {
        Outbox {
            tx,
            held: Vec::new(),
            since: Instant::now(),
            tiny: false,
        }
    }

    /// Run the task handed out (see [`Shared::run_one`]); returns how it ended.
    fn run<I, F>(&mut self, shared: &Shared<'_, I, F>, handed: Handed) -> Status
    where
        M: Default,
        F: Fn(&I, &TaskContext<'_>) -> (Result<T, TaskError>, M),
    {
        let outcome = shared.run_one(handed, &mut |m| self.push(m));
        self.tiny = outcome.duration < TINY_TASK;
        let status = outcome.status;
        self.push(Msg::Finished(outcome));
        status
    }

    fn push(&mut self, msg: Msg<T, M>) {
        if self.held.is_empty() {
            self.since = Instant::now();
        }
        // A note is news now (see `TaskContext::note`): never held back.
        let now = matches!(msg, Msg::Note { .. });
        self.held.push(msg);
        if now
            || !self.tiny
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

impl<T, M> Clone for Outbox<T, M> {
    /// For rayon's `for_each_with`: each split of the work gets an empty outbox.
    fn clone(&self) -> Self {
        Outbox::new(self.tx.clone())
    }
}

impl<T, M> Drop for Outbox<T, M> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The parallel part of a batch, from task `first`: rayon's pool splits the range, or
/// `threads` workers take the next task (with a graph: the next that is ready) until none is
/// left. The calling thread is the owner: it hears every worker's messages until all are done.
pub(super) struct Workers<'g> {
    pub(super) rayon: Option<&'g rayon::ThreadPool>,
    pub(super) graph: Option<&'g Graph>,
    pub(super) first: usize,
    pub(super) threads: usize,
}

impl Workers<'_> {
    pub(super) fn run<I, T, M, F>(self, shared: &Shared<'_, I, F>, owner: &mut Owner<'_, T, M>)
    where
        I: Sync,
        T: Send,
        M: Default + Send,
        F: Fn(&I, &TaskContext<'_>) -> (Result<T, TaskError>, M) + Sync,
    {
        let Workers {
            rayon,
            graph,
            first,
            threads,
        } = self;
        let total = shared.tasks.len();
        let (tx, rx) = mpsc::channel::<Vec<Msg<T, M>>>();
        let next = &AtomicUsize::new(first);
        std::thread::scope(|scope| {
            let _stop_on_panic = StopOnUnwind(&shared.cancel, &shared.stop);
            if let Some(rayon) = rayon {
                scope.spawn(move || {
                    use rayon::prelude::*;
                    rayon.install(|| {
                        (first..total).into_par_iter().for_each_with(
                            Outbox::new(tx),
                            |outbox, i| {
                                outbox.run(shared, handed(i));
                            },
                        );
                    });
                });
            } else {
                for w in 0..threads.min(total - first) {
                    let mut outbox = Outbox::new(tx.clone());
                    std::thread::Builder::new()
                        .name(format!("fanout-worker-{w}"))
                        .spawn_scoped(scope, move || worker(&mut outbox, shared, graph, next))
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
}

/// A worker thread: the next task (with a graph, the next that is ready) until none is left.
fn worker<I, T, M, F>(
    outbox: &mut Outbox<T, M>,
    shared: &Shared<'_, I, F>,
    graph: Option<&Graph>,
    next: &AtomicUsize,
) where
    M: Default,
    F: Fn(&I, &TaskContext<'_>) -> (Result<T, TaskError>, M),
{
    if let Some(graph) = graph {
        while let Some(h) = graph.next() {
            let i = h.index;
            let status = outbox.run(shared, h);
            // The owner hears of a task's end before of the start of the tasks it releases.
            outbox.flush();
            graph.done(i, &shared.tasks[i].name, status);
        }
        return;
    }
    let total = shared.tasks.len();
    loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= total {
            break;
        }
        outbox.run(shared, handed(i));
    }
}

/// Task `index`, free to start (no graph: nothing to wait for).
pub(super) fn handed(index: usize) -> Handed {
    Handed {
        index,
        ..Handed::default()
    }
}
