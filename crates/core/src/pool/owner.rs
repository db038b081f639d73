//! The owner of a batch: the one thread that hears what workers tell it (see [`Msg`]), tells
//! the reporter, tallies the summary and keeps the outcomes a caller asked for.

use std::time::Duration;

use crate::events::{Event, Reporter};
use crate::result::{BatchResult, Outcome, Summary, TaskError};
use crate::task::Note;

/// What a worker tells the owner.
pub(super) enum Msg<T, M> {
    Started {
        index: usize,
        attempt: u32,
    },
    Note {
        index: usize,
        note: Note,
    },
    Retrying {
        index: usize,
        attempt: u32,
        delay: Duration,
        error: TaskError,
    },
    Finished(Outcome<T, M>),
}

/// The single owner of the batch's state: turns messages into events, tallies, and (unless
/// the caller keeps none) outcomes.
pub(super) struct Owner<'r, T, M> {
    reporter: &'r mut dyn Reporter<T, M>,
    names: Vec<&'r str>,
    /// Per task, once finished; empty when the outcomes are not kept (see
    /// [`Pool::run_reporting`]).
    outcomes: Vec<Option<Outcome<T, M>>>,
    keep: bool,
    total: usize,
    finished: usize,
    /// Finished tasks by status, in [`Summary::from_counts`] order, and their run time.
    counts: [usize; 5],
    busy: Duration,
}

impl<'r, T, M> Owner<'r, T, M> {
    pub(super) fn new(
        reporter: &'r mut dyn Reporter<T, M>,
        names: Vec<&'r str>,
        keep: bool,
    ) -> Self {
        let total = names.len();
        Owner {
            reporter,
            names,
            outcomes: if keep {
                std::iter::repeat_with(|| None).take(total).collect()
            } else {
                Vec::new()
            },
            keep,
            total,
            finished: 0,
            counts: [0; 5],
            busy: Duration::ZERO,
        }
    }

    /// Every task's outcome in task order (none if not kept), with the batch's summary (told
    /// to the reporter).
    pub(super) fn finish(
        self,
        summarize: impl FnOnce([usize; 5], Duration) -> Summary,
    ) -> BatchResult<T, M> {
        let outcomes: Vec<Outcome<T, M>> = self
            .outcomes
            .into_iter()
            .map(|o| o.expect("every task reports an outcome"))
            .collect();
        let summary = summarize(self.counts, self.busy);
        self.reporter
            .report(&Event::BatchFinished { summary: &summary });
        BatchResult { outcomes, summary }
    }

    pub(super) fn handle(&mut self, msg: Msg<T, M>) {
        match msg {
            Msg::Started { index, attempt } => self.reporter.report(&Event::TaskStarted {
                index,
                name: self.names[index],
                attempt,
            }),
            Msg::Note { index, note } => self.reporter.report(&Event::TaskNote {
                index,
                name: self.names[index],
                note: &*note,
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
                self.counts[Summary::slot(outcome.status)] += 1;
                self.busy += outcome.duration;
                self.reporter.report(&Event::TaskFinished {
                    outcome: &outcome,
                    finished: self.finished,
                    total: self.total,
                });
                if self.keep {
                    let index = outcome.index;
                    self.outcomes[index] = Some(outcome);
                }
            }
        }
    }
}
