//! Large batches of small in-process items: [`Pool::map`].
//!
//! [`Pool::run`] spends about half a microsecond per task on what makes it worth using: a name,
//! events and timings per task, an [`Outcome`] of 170-odd bytes in input order. For 100,000
//! items of a fraction of a microsecond each, that is most of the time (writing 17 MB of
//! outcomes alone costs more than the work, page faults included). `map` keeps the promises per
//! item (a result per item in input order, a panic fails its item only, cancellation, the
//! failure policy, retries) and does the rest per chunk: a worker takes a run of items at a
//! time, times it and reports it as one event. An item's result is an [`ItemResult`] (16 bytes
//! for a `u64`: the value, or the boxed error); names (`item N`), statuses, attempts and
//! timings are derived on demand ([`MapResult::outcome`], [`MapResult::into_batch_result`]).
//!
//! ```
//! use fanout::{CancelToken, MaxWorkers, Pool, PoolConfig, Silent, TaskError};
//!
//! let rows: Vec<u64> = (0..100_000).collect();
//! let pool = Pool::new(PoolConfig::new(MaxWorkers::available(16)).with_env_overrides()?);
//! let result = pool.map(&rows, &CancelToken::new(), &mut Silent, |&row, _ctx| {
//!     if row == 77 {
//!         return Err(TaskError::failed("row 77 is malformed"));
//!     }
//!     Ok(row * 2)
//! })?;
//! assert_eq!(result.items[3].as_ref().ok(), Some(&6)); // input order
//! assert_eq!(result.summary.failed, 1); // the others ran
//! assert_eq!(result.outcome(77).label(), "item 78");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Chunk sizes adapt unless fixed ([`Chunking::chunk_size`], `FANOUT_CHUNK_SIZE`): each worker
//! doubles its chunk while a chunk takes under [`TARGET_LOW`] and halves it past
//! [`TARGET_HIGH`], and no chunk takes more than a quarter of a worker's share of what is left
//! (so the last items spread over every worker). The decision table of `Auto` is in
//! ARCHITECTURE.md.

use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use crate::cancel::{CancelReason, CancelToken};
use crate::config::{Chunking, FailurePolicy, PoolError};
use crate::events::{Event, Reporter};
use crate::pool::Pool;
use crate::result::{BatchResult, ItemResult, Outcome, Status, Summary, TaskError};
use crate::retry::RetryPolicy;
use crate::strategy::Strategy;
use crate::task::TaskContext;
use crate::worker::{StopOnUnwind, panic_message};

/// An adaptive chunk that took less than this grows (twice the items next time).
pub const TARGET_LOW: Duration = Duration::from_micros(200);
/// An adaptive chunk that took more than this shrinks (half the items next time).
pub const TARGET_HIGH: Duration = Duration::from_millis(2);
/// The largest adaptive chunk.
const MAX_CHUNK: usize = 1 << 16;
/// `Auto` first runs items on the calling thread for this long, to learn their cost.
const PROBE: Duration = Duration::from_micros(100);
/// `Auto` goes parallel only when the rest of the batch would take longer than this serially:
/// waking the workers and gathering their chunks costs tens of microseconds.
const PARALLEL_WORTH: Duration = Duration::from_micros(300);

/// The timing and counts of one chunk.
#[derive(Debug, Clone, Copy)]
struct ChunkTime {
    first: usize,
    /// Items that started (the others were refused: cancelled or skipped before starting).
    ran: u32,
    queued: Duration,
    took: Duration,
    /// By status: succeeded, failed, timed out, cancelled, skipped.
    counts: [usize; 5],
}

impl ChunkTime {
    /// Each item that ran gets an equal share of the chunk's time.
    fn per_item(&self) -> Duration {
        self.took / self.ran.max(1)
    }
}

/// The results of [`Pool::map`]: one per item, in input order, and the batch's summary.
#[derive(Debug)]
pub struct MapResult<T> {
    /// One per item, in input order.
    pub items: Vec<ItemResult<T>>,
    pub summary: Summary,
    /// Attempts of the items that did not take exactly one (retried, or never started).
    attempts: std::collections::HashMap<usize, u32>,
    /// Sorted by first item.
    chunks: Vec<ChunkTime>,
}

impl<T> MapResult<T> {
    /// True when no item failed, timed out or was cancelled.
    pub fn all_ok(&self) -> bool {
        self.summary.all_ok()
    }

    /// The values of the items that succeeded, in input order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.items.iter().filter_map(|r| r.as_ref().ok())
    }

    /// How item `index` ended.
    pub fn status(&self, index: usize) -> Status {
        match &self.items[index] {
            Ok(_) => Status::Succeeded,
            Err(e) => e.status(),
        }
    }

    /// How many times the work ran for item `index` (0: it never started).
    pub fn attempts(&self, index: usize) -> u32 {
        self.attempts.get(&index).copied().unwrap_or(1)
    }

    /// Item `index` as a full [`Outcome`] (without its value), as reports show it: named
    /// `item N` by [`Outcome::label`], with its chunk's time shared equally.
    pub fn outcome(&self, index: usize) -> Outcome<()> {
        let mut outcome = Outcome {
            index,
            name: String::new(),
            status: self.status(index),
            value: None,
            error: self.items[index].as_ref().err().map(|e| (**e).clone()),
            attempts: self.attempts(index),
            queue_wait: Duration::ZERO,
            duration: Duration::ZERO,
            started_after: None,
            meta: (),
        };
        let chunk = self.chunks.partition_point(|c| c.first <= index);
        if let Some(c) = chunk.checked_sub(1).map(|c| self.chunks[c])
            && outcome.attempts > 0
        {
            outcome.queue_wait = c.queued;
            outcome.duration = c.per_item();
            outcome.started_after = Some(c.queued);
        }
        outcome
    }

    /// Every item as a full [`Outcome`], for the shared report shape and the tools' reporting.
    pub fn into_batch_result(self) -> BatchResult<T> {
        let shown: Vec<Outcome<()>> = (0..self.items.len()).map(|i| self.outcome(i)).collect();
        let outcomes = shown
            .into_iter()
            .zip(self.items)
            .map(|(o, item)| Outcome {
                index: o.index,
                name: o.name,
                status: o.status,
                value: item.ok(),
                error: o.error,
                attempts: o.attempts,
                queue_wait: o.queue_wait,
                duration: o.duration,
                started_after: o.started_after,
                meta: (),
            })
            .collect();
        BatchResult {
            outcomes,
            summary: self.summary,
        }
    }
}

/// State shared by the workers of one `map`.
struct Shared<'a, I, F> {
    items: &'a [I],
    work: &'a F,
    retry: &'a RetryPolicy,
    policy: FailurePolicy,
    cancel: CancelToken,
    stop: AtomicBool,
    start: Instant,
    /// The first item no worker has taken yet.
    cursor: AtomicUsize,
    workers: usize,
    fixed: Option<NonZeroUsize>,
}

/// What a worker sends for a chunk.
struct Chunk<T> {
    time: ChunkTime,
    items: Vec<ItemResult<T>>,
    /// Items of the chunk that did not take exactly one attempt.
    attempts: Vec<(usize, u32)>,
}

impl<I, F> Shared<'_, I, F> {
    fn total(&self) -> usize {
        self.items.len()
    }

    /// Take the next chunk of at most `size` items: `(first, end)`, or `None` when none is left.
    fn take(&self, size: usize) -> Option<(usize, usize)> {
        let size = if self.fixed.is_some() {
            size
        } else {
            let left = self
                .total()
                .saturating_sub(self.cursor.load(Ordering::Relaxed));
            size.min((left / (self.workers * 4)).max(1))
        };
        let first = self.cursor.fetch_add(size, Ordering::Relaxed);
        (first < self.total()).then(|| (first, (first + size).min(self.total())))
    }

    fn first_size(&self) -> usize {
        self.fixed.map_or(1, NonZeroUsize::get)
    }

    /// The size after a chunk of `used` items (of `size` asked) took `took`.
    fn next_size(&self, size: usize, used: usize, took: Duration) -> usize {
        if self.fixed.is_some() {
            size
        } else if took < TARGET_LOW && used == size {
            (size * 2).min(MAX_CHUNK)
        } else if took > TARGET_HIGH {
            (size / 2).max(1)
        } else {
            size
        }
    }

    /// Run the items `first..end`, appending their results to `out` and their attempts, where
    /// not exactly one, to `attempts`.
    fn run_chunk_into<T>(
        &self,
        first: usize,
        end: usize,
        out: &mut Vec<ItemResult<T>>,
        attempts: &mut Vec<(usize, u32)>,
    ) -> ChunkTime
    where
        F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError>,
    {
        let started = Instant::now();
        let mut counts = [0; 5];
        let mut ran = 0u32;
        for index in first..end {
            let (result, tries) = if let Some(refused) = self.refusal() {
                (Err(Box::new(refused)), 0)
            } else {
                ran += 1;
                self.run_item(index)
            };
            let status = match &result {
                Ok(_) => Status::Succeeded,
                Err(e) => e.status(),
            };
            counts[Summary::slot(status)] += 1;
            if tries != 1 {
                attempts.push((index, tries));
            }
            out.push(result);
        }
        ChunkTime {
            first,
            ran,
            queued: started.duration_since(self.start),
            took: started.elapsed(),
            counts,
        }
    }

    /// Why the next item must not start, if it must not.
    fn refusal(&self) -> Option<TaskError> {
        if self.stop.load(Ordering::Relaxed) {
            return Some(TaskError::skipped("not started: an earlier item failed"));
        }
        if !self.cancel.is_cancelled() {
            return None;
        }
        Some(match self.cancel.reason() {
            Some(CancelReason::FailurePolicy) => {
                TaskError::skipped("not started: an earlier item failed")
            }
            _ => TaskError::Cancelled,
        })
    }

    /// One item, with its retries: its result and how many attempts it took.
    fn run_item<T>(&self, index: usize) -> (ItemResult<T>, u32)
    where
        F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError>,
    {
        let mut attempt = 1;
        loop {
            let ctx = TaskContext {
                index,
                name: "",
                attempt,
                cancel: &self.cancel,
                notes: None,
                resource_wait: std::time::Duration::ZERO,
                resources: &[],
            };
            // The common case returns at once: moving a whole `Result<T, TaskError>` around
            // costs more than a tiny item does.
            let error =
                match catch_unwind(AssertUnwindSafe(|| (self.work)(&self.items[index], &ctx))) {
                    Ok(Ok(value)) => return (Ok(value), attempt),
                    Ok(Err(error)) => error,
                    Err(panic) => TaskError::failed(panic_message(&*panic)),
                };
            if self.retry.should_retry(attempt, &error) && !self.cancel.is_cancelled() {
                if !self.cancel.sleep(self.retry.delay(attempt, &error)) {
                    return (Err(Box::new(TaskError::Cancelled)), attempt);
                }
                attempt += 1;
                continue;
            }
            if error.status().is_failure() {
                self.on_failure();
            }
            return (Err(Box::new(error)), attempt);
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

    /// A worker: take chunks until none is left, sending each.
    fn work_chunks<T>(&self, tx: &mpsc::Sender<Chunk<T>>, mut size: usize)
    where
        F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError>,
    {
        while let Some((first, end)) = self.take(size) {
            let mut items = Vec::with_capacity(end - first);
            let mut attempts = Vec::new();
            let time = self.run_chunk_into(first, end, &mut items, &mut attempts);
            let took = time.took;
            if tx
                .send(Chunk {
                    time,
                    items,
                    attempts,
                })
                .is_err()
            {
                break;
            }
            size = self.next_size(size, end - first, took);
        }
    }
}

/// The single owner of a `map`'s results: hands each chunk to the reporter and keeps its
/// results in input order (a chunk that arrives before the ones in front of it waits).
struct Owner<'r, T> {
    reporter: &'r mut dyn Reporter<T>,
    /// The results so far: of the items `0..items.len()`.
    items: Vec<ItemResult<T>>,
    /// Chunks that came before the ones in front of them, by their first item.
    early: std::collections::BTreeMap<usize, Vec<ItemResult<T>>>,
    attempts: std::collections::HashMap<usize, u32>,
    chunks: Vec<ChunkTime>,
    finished: usize,
    total: usize,
}

impl<T> Owner<'_, T> {
    /// The items' results in order, the chunks' times, and the batch's summary (told to the
    /// reporter).
    fn finish<I, F>(
        mut self,
        shared: &Shared<'_, I, F>,
        ran: Strategy,
        started_at: SystemTime,
        noun: (&'static str, &'static str),
    ) -> MapResult<T> {
        let mut counts = [0; 5];
        let mut busy = Duration::ZERO;
        for c in &self.chunks {
            busy += c.took;
            for (sum, n) in counts.iter_mut().zip(c.counts) {
                *sum += n;
            }
        }
        let mut summary = Summary::from_counts(
            counts,
            busy,
            shared.start.elapsed(),
            shared.workers,
            ran,
            started_at,
        );
        summary.noun = noun;
        self.reporter
            .report(&Event::BatchFinished { summary: &summary });
        self.chunks.sort_unstable_by_key(|c| c.first);
        MapResult {
            items: self.items,
            summary,
            attempts: self.attempts,
            chunks: self.chunks,
        }
    }

    fn report(&mut self, time: ChunkTime, items: &[ItemResult<T>]) {
        self.finished += items.len();
        self.reporter.report(&Event::ChunkFinished {
            first: time.first,
            items,
            finished: self.finished,
            total: self.total,
        });
        self.chunks.push(time);
    }

    /// A chunk a worker ran.
    fn handle(&mut self, chunk: Chunk<T>) {
        self.report(chunk.time, &chunk.items);
        self.attempts.extend(chunk.attempts);
        if chunk.time.first == self.items.len() {
            self.items.extend(chunk.items);
            while let Some(next) = self.early.remove(&self.items.len()) {
                self.items.extend(next);
            }
        } else {
            self.early.insert(chunk.time.first, chunk.items);
        }
    }

    /// Run a chunk on this thread, straight into the results (this thread takes chunks only
    /// while no worker runs, so they come in order).
    fn run_here<I, F>(&mut self, shared: &Shared<'_, I, F>, first: usize, end: usize) -> Duration
    where
        F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError>,
    {
        debug_assert_eq!(first, self.items.len());
        let mut items = std::mem::take(&mut self.items);
        let mut attempts = Vec::new();
        let time = shared.run_chunk_into(first, end, &mut items, &mut attempts);
        self.attempts.extend(attempts);
        self.report(time, &items[first..]);
        self.items = items;
        time.took
    }
}

impl Pool {
    /// Run `work` once per item of `items` (more with retries), in chunks, with the pool's
    /// [`Chunking`]; one result per item in input order. See [`Pool::map_with`].
    pub fn map<I, T, F>(
        &self,
        items: &[I],
        cancel: &CancelToken,
        reporter: &mut dyn Reporter<T>,
        work: F,
    ) -> Result<MapResult<T>, PoolError>
    where
        I: Sync,
        T: Send,
        F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError> + Sync,
    {
        self.map_with(self.config().chunking, items, cancel, reporter, work)
    }

    /// [`Pool::map`] with this call's `chunking`.
    ///
    /// For large batches of small in-process items (see the module docs): events come per
    /// chunk ([`Event::ChunkFinished`]) and an item's time is its chunk's, shared equally.
    /// `Serial`, one worker, or fewer items than `min_batch_size`: on the calling thread.
    /// `Threads`: chunks on threads of their own. `Rayon`: on the pool's rayon threads. `Auto`:
    /// the calling thread first, for about 100 µs, then rayon only if the rest would take
    /// longer than about 300 µs.
    pub fn map_with<I, T, F>(
        &self,
        chunking: Chunking,
        items: &[I],
        cancel: &CancelToken,
        reporter: &mut dyn Reporter<T>,
        work: F,
    ) -> Result<MapResult<T>, PoolError>
    where
        I: Sync,
        T: Send,
        F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError> + Sync,
    {
        let config = self.config();
        let total = items.len();
        let workers = config.max_workers.get();
        let serial = config.strategy == Strategy::Serial
            || workers == 1
            || total < chunking.min_batch_size.max(2);
        let planned = if serial {
            Strategy::Serial
        } else {
            match config.strategy {
                Strategy::Threads => Strategy::Threads,
                _ => Strategy::Rayon,
            }
        };
        let rayon = match planned {
            Strategy::Rayon => Some(self.rayon_pool()?),
            _ => None,
        };
        let started_at = SystemTime::now();
        let shared = Shared {
            items,
            work: &work,
            retry: &config.retry,
            policy: config.failure_policy,
            cancel: cancel.child(),
            stop: AtomicBool::new(false),
            start: Instant::now(),
            cursor: AtomicUsize::new(0),
            workers,
            fixed: chunking.chunk_size,
        };
        reporter.report(&Event::BatchStarted {
            total,
            max_workers: workers,
            strategy: planned,
        });
        let mut items = Vec::with_capacity(total);
        crate::mem::populate(&mut items);
        let mut owner = Owner {
            reporter,
            items,
            early: std::collections::BTreeMap::new(),
            attempts: std::collections::HashMap::new(),
            chunks: Vec::new(),
            finished: 0,
            total,
        };
        let ran = if serial {
            serially(&shared, &mut owner, None, shared.first_size());
            planned
        } else {
            auto_or_parallel(&shared, &mut owner, config.strategy, rayon, planned)
        };
        debug_assert!(owner.early.is_empty());
        Ok(owner.finish(&shared, ran, started_at, config.noun))
    }
}

/// A batch that is not serial: under `Auto`, on the calling thread first to learn what an item
/// costs, staying there if the rest is short; then in parallel. Returns the strategy that ran.
fn auto_or_parallel<I, T, F>(
    shared: &Shared<'_, I, F>,
    owner: &mut Owner<'_, T>,
    strategy: Strategy,
    rayon: Option<&rayon::ThreadPool>,
    planned: Strategy,
) -> Strategy
where
    I: Sync,
    T: Send,
    F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError> + Sync,
{
    let total = shared.items.len();
    let mut ran = planned;
    let mut size = shared.first_size();
    if strategy == Strategy::Auto {
        // Learn what an item costs on this thread; stay here if the rest is short.
        let (done, took, next) = serially(shared, owner, Some(PROBE), size);
        size = next;
        let left = total - done.min(total);
        let per_item = took / u32::try_from(done.max(1)).unwrap_or(u32::MAX);
        if left > 0
            && per_item.saturating_mul(u32::try_from(left).unwrap_or(u32::MAX)) < PARALLEL_WORTH
        {
            serially(shared, owner, None, size);
        }
        if shared.cursor.load(Ordering::Relaxed) >= total {
            ran = Strategy::Serial;
        }
    }
    if shared.cursor.load(Ordering::Relaxed) < total {
        in_parallel(shared, owner, rayon, size);
    }
    ran
}

/// Run chunks on the calling thread, sizes adapting, until none is left or `limit` has passed.
/// Returns how many items ran, in how long, and the chunk size to go on with.
fn serially<I, T, F>(
    shared: &Shared<'_, I, F>,
    owner: &mut Owner<'_, T>,
    limit: Option<Duration>,
    mut size: usize,
) -> (usize, Duration, usize)
where
    F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError>,
{
    let started = Instant::now();
    let mut done = 0;
    while limit.is_none_or(|l| started.elapsed() < l) {
        let Some((first, end)) = shared.take(size) else {
            break;
        };
        let took = owner.run_here(shared, first, end);
        size = shared.next_size(size, end - first, took);
        done += end - first;
    }
    (done, started.elapsed(), size)
}

/// Run the chunks that are left on the workers (rayon's, or threads of their own), chunks of
/// `size` first; this thread hands them to the owner as they come.
fn in_parallel<I, T, F>(
    shared: &Shared<'_, I, F>,
    owner: &mut Owner<'_, T>,
    rayon: Option<&rayon::ThreadPool>,
    size: usize,
) where
    I: Sync,
    T: Send,
    F: Fn(&I, &TaskContext<'_>) -> Result<T, TaskError> + Sync,
{
    let (tx, rx) = mpsc::channel::<Chunk<T>>();
    let receive = |owner: &mut Owner<'_, T>, rx: mpsc::Receiver<Chunk<T>>| {
        // A reporter that panics stops the batch instead of leaving it to run unobserved.
        let _stop_on_panic = StopOnUnwind(&shared.cancel, &shared.stop);
        for chunk in rx {
            owner.handle(chunk);
        }
    };
    match rayon {
        Some(rayon) => rayon.in_place_scope(|scope| {
            for _ in 0..shared.workers {
                let tx = tx.clone();
                scope.spawn(move |_| shared.work_chunks(&tx, size));
            }
            drop(tx);
            receive(owner, rx);
        }),
        None => std::thread::scope(|scope| {
            for w in 0..shared.workers {
                let tx = tx.clone();
                std::thread::Builder::new()
                    .name(format!("fanout-worker-{w}"))
                    .spawn_scoped(scope, move || shared.work_chunks(&tx, size))
                    .expect("spawn a worker thread");
            }
            drop(tx);
            receive(owner, rx);
        }),
    }
}
