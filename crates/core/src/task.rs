//! One unit of work ([`Task`]) and what its work function knows about it ([`TaskContext`]).

use crate::cancel::CancelToken;
use crate::retry::RetryPolicy;

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
