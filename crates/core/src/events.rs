//! Progress events and the [`Reporter`] trait that receives them.
//!
//! Workers never draw or print: they send events to the thread that called
//! [`Pool::run`](crate::Pool::run), which hands each one to the reporter in order. A reporter
//! therefore needs no locking and output never interleaves. The terminal reporters all three
//! tools share live in [`reporters`](crate::reporters).

use std::time::Duration;

use crate::result::TaskError;
use crate::result::{ItemResult, Outcome, Summary};
use crate::strategy::Strategy;

/// Something that happened in a batch.
#[derive(Debug)]
pub enum Event<'a, T, M = ()> {
    /// The batch is about to start `total` tasks with at most `max_workers` at once.
    BatchStarted {
        total: usize,
        max_workers: usize,
        strategy: Strategy,
    },
    /// A task's attempt number `attempt` (1-based) started.
    TaskStarted {
        index: usize,
        name: &'a str,
        attempt: u32,
    },
    /// A task told the owner something while it runs ([`TaskContext::note`]); the reporter
    /// downcasts it to what its work function sends.
    ///
    /// [`TaskContext::note`]: crate::TaskContext::note
    TaskNote {
        index: usize,
        name: &'a str,
        note: &'a (dyn std::any::Any + Send),
    },
    /// Attempt number `attempt` failed and another follows after `delay`.
    TaskRetrying {
        index: usize,
        name: &'a str,
        attempt: u32,
        delay: Duration,
        error: &'a TaskError,
    },
    /// A task reached its final state. `finished` counts finished tasks, this one included.
    TaskFinished {
        outcome: &'a Outcome<T, M>,
        finished: usize,
        total: usize,
    },
    /// A chunk of [`Pool::map`](crate::Pool::map) items finished: the results of the items
    /// `first..first + items.len()`. `finished` counts finished items, these included.
    ChunkFinished {
        first: usize,
        items: &'a [ItemResult<T>],
        finished: usize,
        total: usize,
    },
    /// Every task has an outcome.
    BatchFinished { summary: &'a Summary },
}

/// Receives the events of a batch, one at a time, on the thread that runs the batch.
///
/// Any `FnMut(&Event<T>)` closure is a reporter, so callers can stream results (parallamr
/// writes each CSV row from here) or count events in tests.
pub trait Reporter<T, M = ()> {
    fn report(&mut self, event: &Event<'_, T, M>);
}

impl<T, M, F: FnMut(&Event<'_, T, M>)> Reporter<T, M> for F {
    fn report(&mut self, event: &Event<'_, T, M>) {
        self(event);
    }
}

/// Sends every event to each reporter in turn.
pub struct Tee<'r, T, M = ()>(pub Vec<&'r mut dyn Reporter<T, M>>);

impl<T, M> std::fmt::Debug for Tee<'_, T, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tee({} reporters)", self.0.len())
    }
}

impl<T, M> Reporter<T, M> for Tee<'_, T, M> {
    fn report(&mut self, event: &Event<'_, T, M>) {
        for r in &mut self.0 {
            r.report(event);
        }
    }
}

/// A reporter that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl<T, M> Reporter<T, M> for Silent {
    fn report(&mut self, _event: &Event<'_, T, M>) {}
}
