//! `fanout`: run batches of independent jobs through a bounded worker pool, safely and visibly.
//!
//! The engine shared by `export-nb`, `lorchestra` and `parallamr`. It knows tasks, pools,
//! processes, events and records; it knows nothing about notebooks, pipelines or LLMs (nor
//! their flags), parses no command line, and prints only through the reporters a tool picks
//! (progress on stderr; clippy denies print macros elsewhere). The tools' shared command line
//! is the `fanout-cli` crate.
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
//! # Running programs
//!
//! Tasks that are programs run through the [`ProcessRunner`], which owns each job's whole
//! process tree (a timeout, a cancel or Ctrl-C kills descendants too; a guardian kills them if
//! the tool itself is killed):
//!
//! ```no_run
//! use fanout::{Command, MaxWorkers, Pool, PoolConfig, ProcessRunner, ProgressMode, Task};
//!
//! let pool = Pool::new(PoolConfig::new(MaxWorkers::new(4, 16)?).with_env_overrides()?);
//! let runner = ProcessRunner::new();
//! let interrupt = fanout::install_interrupt_handler()?; // Ctrl-C: cancel, then kill
//! let tasks: Vec<_> = ["a.txt", "b.txt"]
//!     .iter()
//!     .map(|f| {
//!         let gzip = Command::new("gzip").args(["-k", f]);
//!         Task::new(*f, gzip.timeout(Some(std::time::Duration::from_secs(60))))
//!     })
//!     .collect();
//! let mut progress = ProgressMode::Auto.reporter(); // a bar on a terminal, lines in CI
//! let result = pool.run(&tasks, &interrupt, progress.as_mut(), |cmd, ctx| {
//!     Ok(runner.run(cmd, ctx.cancel_token())?.into_result()?.duration)
//! })?;
//! result.report().write_json("report.json".as_ref())?; // the shared --report shape
//! std::process::exit(fanout::ExitStatus::of_batch(&result.summary, &interrupt).code().into());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! When the work knows more than its value, and the reporter needs it on failure too (an exit
//! code, a job id, token counts), [`Pool::run_with_meta`] delivers it in each task's
//! [`Outcome::meta`], whether it succeeded or failed: no table shared between workers and the
//! reporter.
//!
//! # Many small items
//!
//! For large batches of small in-process items (scoring 100,000 rows, say), [`Pool::map`]
//! keeps a result per item in input order, a panic failing its item only, cancellation and the
//! failure policy, but times and reports per chunk: within 2x of a bare rayon `par_iter` on
//! 100,000 tiny items, and serially within 1.2x of a bare loop (`BENCHMARKS.md`). Chunks adapt
//! to the items' cost unless fixed (`Chunking::default().chunk_size(256)?`, or
//! `FANOUT_CHUNK_SIZE=256`); batches under `min_batch_size` (`FANOUT_MIN_BATCH`) stay on the
//! calling thread.
//!
//! ```
//! use fanout::{CancelToken, MaxWorkers, Pool, PoolConfig, Silent};
//!
//! let pool = Pool::new(PoolConfig::new(MaxWorkers::new(2, 16)?));
//! let items: Vec<u64> = (0..10_000).collect();
//! let squares = pool.map(&items, &CancelToken::new(), &mut Silent, |n, _ctx| Ok(n * n))?;
//! assert_eq!(squares.items.len(), 10_000);
//! assert_eq!(squares.summary.succeeded, 10_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `cargo run -p fanout --example batch` runs a batch of real subprocesses through the pool,
//! with a failing and a hanging job, and writes `target/demo/report.json`.
//!
//! # The pieces
//!
//! The pieces, lowest layer first (no module uses one above it; `tests/it/layering.rs` checks
//! the written list of layers):
//! - [`time`], [`text`], [`fsutil`] (atomic file writes), [`cancel`] ([`CancelToken`]),
//!   [`strategy`] ([`Strategy`], `FANOUT_STRATEGY` overrides it).
//! - [`result`] holds [`BatchResult`], [`Outcome`], [`Status`], [`Summary`], [`TaskError`] and
//!   the shared `--report` JSON shape; [`runlock`] keeps two runs off one folder.
//! - [`events`] and [`exit`] (how a run ended, as exit codes), [`retry`] ([`RetryPolicy`]),
//!   [`shell`] (values in shell scripts that stay data).
//! - [`config`] holds [`PoolConfig`], [`MaxWorkers`], [`FailurePolicy`], [`Chunking`];
//!   [`reporters`] render events as a bar, plain lines or JSON lines; [`interrupt`] is the
//!   Ctrl-C handler that cancels a run and, the second time, kills every job.
//! - [`task`] holds [`Task`] and [`TaskContext`] (through which work sends notes to the
//!   reporter while it runs); [`process`] is the subprocess runner that owns whole process
//!   trees.
//! - [`pool`] runs tasks ([`Pool::run`]); [`map`] runs large batches of small in-process items
//!   in chunks ([`Pool::map`]; `FANOUT_CHUNK_SIZE` and `FANOUT_MIN_BATCH` override it).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cancel;
pub mod config;
pub mod events;
pub mod exit;
pub mod fsutil;
mod graph;
pub mod interrupt;
pub mod map;
mod mem;
pub mod pool;
pub mod process;
pub mod reporters;
pub mod resources;
pub mod result;
pub mod retry;
pub mod runlock;
pub mod shell;
pub mod strategy;
pub mod task;
pub mod text;
pub mod time;
mod worker;

pub use cancel::{CancelReason, CancelToken};
pub use config::{
    CHUNK_SIZE_ENV, Chunking, FailurePolicy, MIN_BATCH_ENV, MaxWorkers, PoolConfig, PoolError,
};
pub use events::{Event, Reporter, Silent, Tee};
pub use exit::{EXIT_INTERRUPTED, ExitStatus, UsageError};
pub use graph::check_waits;
pub use interrupt::install_interrupt_handler;
pub use map::MapResult;
pub use pool::Pool;
pub use process::{Command, Launcher, ProcessOutput, ProcessRunner, Sink, Slurm, SlurmError};
pub use reporters::ProgressMode;
pub use resources::{Budget, Demand};
pub use result::{BatchResult, ItemResult, Outcome, Report, Status, Summary, TaskError};
pub use retry::RetryPolicy;
pub use strategy::{STRATEGY_ENV, Strategy, TaskKind, UnknownStrategy};
pub use task::{Note, Task, TaskContext};

pub use time::{MAX_TIMEOUT, fmt_duration, fmt_seconds, timeout_from_secs};
