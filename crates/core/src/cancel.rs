//! Cooperative cancellation shared by the pool, the subprocess runner and the binaries. The
//! Ctrl-C handler that cancels the program's token lives in [`interrupt`](crate::interrupt).
//!
//! A [`CancelToken`] is a cheap clonable flag with a reason. Tokens form a tree: cancelling a
//! token cancels its children (a batch token is a child of the interrupt token), never its
//! parent (stopping one batch on failure does not interrupt the program).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// Why a token was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The user interrupted the program (Ctrl-C, SIGTERM, SIGHUP).
    Interrupted,
    /// A task failed and the failure policy is "stop now".
    FailurePolicy,
    /// Code asked for it.
    Requested,
}

impl CancelReason {
    fn to_u8(self) -> u8 {
        match self {
            CancelReason::Interrupted => 1,
            CancelReason::FailurePolicy => 2,
            CancelReason::Requested => 3,
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(CancelReason::Interrupted),
            2 => Some(CancelReason::FailurePolicy),
            3 => Some(CancelReason::Requested),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// 0 while live, else a `CancelReason`. Checked without the lock on hot paths.
    reason: AtomicU8,
    lock: Mutex<Vec<Weak<Inner>>>,
    cond: Condvar,
}

/// A shared cancellation flag. Clones observe the same flag.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<Inner>);

impl CancelToken {
    /// A new, live token.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token that is cancelled when `self` is, and can also be cancelled on its own.
    pub fn child(&self) -> CancelToken {
        let child = CancelToken::new();
        let mut children = self.0.lock.lock().expect("cancel token lock");
        if let Some(reason) = self.reason() {
            drop(children);
            child.cancel(reason);
        } else {
            children.retain(|c| c.strong_count() > 0);
            children.push(Arc::downgrade(&child.0));
        }
        child
    }

    /// Cancel this token and its children. The first reason wins; later calls are no-ops.
    pub fn cancel(&self, reason: CancelReason) {
        let children = {
            let mut children = self.0.lock.lock().expect("cancel token lock");
            if self
                .0
                .reason
                .compare_exchange(0, reason.to_u8(), Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return;
            }
            self.0.cond.notify_all();
            std::mem::take(&mut *children)
        };
        for child in children.iter().filter_map(Weak::upgrade) {
            CancelToken(child).cancel(reason);
        }
    }

    /// Whether the token has been cancelled.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.0.reason.load(Ordering::SeqCst) != 0
    }

    /// Why the token was cancelled, if it was.
    pub fn reason(&self) -> Option<CancelReason> {
        CancelReason::from_u8(self.0.reason.load(Ordering::SeqCst))
    }

    /// Sleep for `duration` unless cancelled first. Returns `true` if the full time elapsed,
    /// `false` if the token was cancelled (at once, without waiting out the rest).
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut guard = self.0.lock.lock().expect("cancel token lock");
        loop {
            if self.is_cancelled() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            guard = self
                .0
                .cond
                .wait_timeout(guard, deadline - now)
                .expect("cancel token lock")
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelling_a_parent_cancels_children_but_not_the_reverse() {
        let parent = CancelToken::new();
        let child = parent.child();
        let grandchild = child.child();
        child.cancel(CancelReason::FailurePolicy);
        assert!(!parent.is_cancelled());
        assert_eq!(grandchild.reason(), Some(CancelReason::FailurePolicy));

        let other = parent.child();
        parent.cancel(CancelReason::Interrupted);
        assert_eq!(other.reason(), Some(CancelReason::Interrupted));
        // The first reason wins.
        assert_eq!(child.reason(), Some(CancelReason::FailurePolicy));
        // A child made after cancellation starts cancelled.
        assert!(parent.child().is_cancelled());
    }

    #[test]
    fn sleep_returns_early_when_cancelled_from_another_thread() {
        let token = CancelToken::new();
        let t2 = token.clone();
        let start = Instant::now();
        let h = std::thread::spawn(move || t2.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        token.cancel(CancelReason::Requested);
        assert!(!h.join().unwrap(), "sleep reports that it was cancelled");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn sleep_runs_to_completion_when_live() {
        assert!(CancelToken::new().sleep(Duration::from_millis(5)));
    }
}
