//! What the workers of [`Pool::run`](crate::Pool::run) and [`Pool::map`](crate::Pool::map)
//! share: stopping a batch when its owner panics, and a panic's message.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cancel::{CancelReason, CancelToken};

/// Stops a batch (its token and stop flag) when dropped during a panic. If the reporter
/// panics in `Pool::run`'s owner loop, nothing watches the workers any more, yet the thread
/// scope would wait for them to run every remaining task.
pub(crate) struct StopOnUnwind<'a>(pub(crate) &'a CancelToken, pub(crate) &'a AtomicBool);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.1.store(true, Ordering::SeqCst);
            self.0.cancel(CancelReason::Requested);
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
