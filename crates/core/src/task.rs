//! One unit of work ([`Task`]) and what its work function knows about it ([`TaskContext`]).

use std::sync::Arc;

use crate::cancel::CancelToken;
use crate::config::FailurePolicy;
use crate::resources::Demand;
use crate::retry::RetryPolicy;

/// One unit of work: a name for reports, the input for the work function, and optionally its
/// own retry policy, failure policy and the tasks it waits for.
///
/// A batch whose tasks wait for others is run as a graph: a task starts as soon as every task
/// it waits for has finished (no barrier), at most `max_workers` at once, in input order among
/// those ready.
#[derive(Debug, Clone)]
pub struct Task<I> {
    pub name: String,
    pub input: I,
    pub retry: Option<RetryPolicy>,
    /// Tasks (indices in the batch) that must succeed first; if one does not, this task is
    /// skipped, naming it.
    pub needs: Vec<usize>,
    /// Tasks that must have finished first, however they ended. Tasks that share one list
    /// ([`Task::after_shared`]: a stage after the stages before it) cost one wait per task and
    /// per listed task, not their product. `None`: none (no allocation per task).
    pub after: Option<Arc<[usize]>>,
    /// What a failure of this task does to the batch, instead of the pool's policy.
    pub failure_policy: Option<FailurePolicy>,
    /// What it takes of the pool's [`Budget`](crate::Budget) while it runs (`None`: nothing).
    pub demand: Option<Demand>,
}

impl<I> Task<I> {
    pub fn new(name: impl Into<String>, input: I) -> Self {
        Task {
            name: name.into(),
            input,
            retry: None,
            needs: Vec::new(),
            after: None,
            failure_policy: None,
            demand: None,
        }
    }

    /// Start only when `demand` fits in what the pool's budget has left (see `resources`).
    pub fn uses(mut self, demand: Demand) -> Self {
        self.demand = Some(demand);
        self
    }

    /// Start only once these tasks (indices in the batch) succeeded; skipped if one did not.
    pub fn needs(mut self, tasks: impl IntoIterator<Item = usize>) -> Self {
        self.needs.extend(tasks);
        self
    }

    /// Start only once these tasks finished, whatever their status.
    pub fn after(mut self, tasks: impl IntoIterator<Item = usize>) -> Self {
        let after: Arc<[usize]> = self.after_list().iter().copied().chain(tasks).collect();
        self.after = (!after.is_empty()).then_some(after);
        self
    }

    /// Start only once these tasks finished, whatever their status; the list may be shared
    /// with other tasks (replaces the task's `after` list).
    pub fn after_shared(mut self, tasks: Arc<[usize]>) -> Self {
        self.after = (!tasks.is_empty()).then_some(tasks);
        self
    }

    /// The tasks this one starts after (see [`Task::after`]).
    pub fn after_list(&self) -> &[usize] {
        self.after.as_deref().unwrap_or(&[])
    }

    /// What a failure of this task does to the batch, instead of the pool's policy.
    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = Some(policy);
        self
    }

    pub(crate) fn waits(&self) -> bool {
        !self.needs.is_empty() || self.after.is_some()
    }

    /// Use this policy instead of the pool's.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// Something a task tells the batch's owner thread while it runs (see [`TaskContext::note`]).
pub type Note = Box<dyn std::any::Any + Send>;

/// What the work function knows about the task it runs. It belongs to the worker thread that
/// runs the task (it is neither `Send` nor `Sync`: notes go through that worker's outbox); work
/// that starts threads of its own hands them [`cancel_token`](Self::cancel_token).
pub struct TaskContext<'a> {
    pub(crate) index: usize,
    pub(crate) name: &'a str,
    pub(crate) attempt: u32,
    pub(crate) cancel: &'a CancelToken,
    /// Where [`note`](Self::note)s go: the batch's owner thread (nowhere for `map`'s items).
    pub(crate) notes: Option<&'a dyn Fn(Note)>,
    /// How long this attempt waited for the budget's resources, and what it holds of them.
    pub(crate) resource_wait: std::time::Duration,
    pub(crate) resources: &'a [u64],
}

impl std::fmt::Debug for TaskContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("index", &self.index)
            .field("name", &self.name)
            .field("attempt", &self.attempt)
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
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

    /// How long this attempt waited, with a worker free for it, until the resources it needs
    /// were (see [`Task::uses`]); zero without a budget.
    pub fn resource_wait(&self) -> std::time::Duration {
        self.resource_wait
    }

    /// What this attempt holds of the pool's budget, in the budget's order (empty without one).
    pub fn resources(&self) -> &'a [u64] {
        self.resources
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

    /// Tell the batch's owner thread something now, while the task runs: it reaches the
    /// reporter as [`Event::TaskNote`](crate::Event::TaskNote), at once and before the task's
    /// end. For what a tool records through its one owner before a task ends (lorchestra: a
    /// job is about to start its process). Nothing happens in [`Pool::map`](crate::Pool::map),
    /// whose items are too small to tell anything of.
    pub fn note(&self, note: impl std::any::Any + Send) {
        if let Some(notes) = self.notes {
            notes(Box::new(note));
        }
    }
}
