//! Requests in flight per provider: a counting semaphore per provider inside the pool's `-j`
//! (`--provider-limit NAME=N`, else each provider's default).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use fanout::CancelToken;

use crate::plan::RunArgs;
use crate::providers::{self};

/// A counting semaphore: at most `n` requests in flight to one provider.
#[derive(Debug)]
pub(crate) struct Limit {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Limit {
    pub(crate) fn new(n: usize) -> Self {
        Limit {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    /// Wait for a slot; `None` if cancelled while waiting.
    pub(crate) fn acquire<'a>(&'a self, cancel: &CancelToken) -> Option<LimitGuard<'a>> {
        let mut free = self.free.lock().expect("limit");
        while *free == 0 {
            if cancel.is_cancelled() {
                return None;
            }
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(50))
                .expect("limit")
                .0;
        }
        *free -= 1;
        Some(LimitGuard(self))
    }
}

pub(crate) struct LimitGuard<'a>(&'a Limit);

impl Drop for LimitGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("limit") += 1;
        self.0.freed.notify_one();
    }
}

/// The concurrency limit of each provider used: `--provider-limit`, else its default.
pub(crate) fn limits<'a>(args: &RunArgs, used: &'a [String]) -> HashMap<&'a str, Limit> {
    used.iter()
        .map(|p| {
            let n = args.limits.iter().find(|(name, _)| name == p).map_or_else(
                || providers::default_limit(p, args.max_workers.get()),
                |(_, n)| *n,
            );
            (p.as_str(), Limit::new(n))
        })
        .collect()
}
