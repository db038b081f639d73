//! `fanout`: run batches of independent jobs through a bounded worker pool, safely and visibly.
//!
//! The engine shared by `export-nb`, `lorchestra` and `parallamr`. It knows tasks, pools,
//! processes, events and records; it knows nothing about notebooks, pipelines or LLMs, prints
//! nothing and parses no command line (clippy enforces both).
//!
//! ```
//! use fanout::{CancelToken, MaxWorkers, Pool, PoolConfig, Silent, Task, TaskError};
//!
//! let pool = Pool::new(PoolConfig::new(MaxWorkers::new(4, 16)?));
//! let tasks: Vec<_> = (1..=10).map(|n| Task::new(format!("square {n}"), n)).collect();
//! let result = pool.run(&tasks, &CancelToken::new(), &mut Silent, |n: &u64, _ctx| {
//!     if *n == 7 { Err(TaskError::failed("seven is unlucky")) } else { Ok(n * n) }
//! })?;
//! assert_eq!(result.summary.succeeded, 9);
//! assert_eq!(result.outcomes[2].value, Some(9)); // input order, whatever finished first
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The pieces:
//! - [`pool`] holds [`Pool`], [`MaxWorkers`], [`Strategy`] (`FANOUT_STRATEGY` overrides it),
//!   [`FailurePolicy`], [`Task`], [`TaskContext`].
//! - [`result`] holds [`BatchResult`], [`Outcome`], [`Status`], [`Summary`], [`TaskError`] and
//!   the shared `--report` JSON shape.
//! - [`events`] and [`reporters`] turn progress into events, rendered by a bar, plain lines or
//!   JSON lines.
//! - [`cancel`] holds [`CancelToken`] and the Ctrl-C helper.
//! - [`retry`] holds [`RetryPolicy`].
//! - [`process`] is the subprocess runner that owns whole process trees.
//! - [`fsutil`] does atomic file writes.
//! - [`exit`] maps how a run ended to the exit codes scripts rely on.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cancel;
pub mod events;
pub mod exit;
pub mod fsutil;
pub mod pool;
pub mod process;
pub mod reporters;
pub mod result;
pub mod retry;

pub use cancel::{CancelReason, CancelToken, EXIT_INTERRUPTED, install_interrupt_handler};
pub use events::{Event, Reporter, Silent, Tee};
pub use exit::ExitStatus;
pub use pool::{
    FailurePolicy, MaxWorkers, Pool, PoolConfig, PoolError, STRATEGY_ENV, Strategy, Task,
    TaskContext, TaskKind,
};
pub use process::{Command, Launcher, ProcessOutput, ProcessRunner, Sink, Slurm, SlurmError};
pub use reporters::ProgressMode;
pub use result::{BatchResult, Outcome, Report, Status, Summary, TaskError};
pub use retry::RetryPolicy;

use std::time::Duration;

/// A duration the way people read it: `850ms`, `3.2s`, `4m05s`, `1h02m`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let s = d.as_secs();
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(fmt_duration(Duration::from_millis(3200)), "3.2s");
        assert_eq!(fmt_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(fmt_duration(Duration::from_secs(3720)), "1h02m");
    }
}
