//! The subprocess runner: the only module that starts processes or sends signals.
//!
//! [`ProcessRunner::run`] starts a [`Command`] (stdin from `/dev/null`, stdout and
//! stderr captured as a bounded tail, written to a file, or dropped), waits for it with an
//! optional timeout while watching a [`CancelToken`](crate::cancel::CancelToken), and returns the exit as data
//! ([`ProcessOutput`]). A timeout or cancel kills the job's *whole* process tree, including
//! descendants that started their own session; see `tree` for how and why. A job's leftovers
//! are also killed when its main process exits on its own. If the tool itself dies, a guardian
//! process kills every job's whole tree (in tools that call [`init`] first thing in `main`);
//! without one, the kernel's parent-death signal kills at least the direct children.

//!
//! The modules, lowest first: `procs` (processes as `/proc` shows them, pidfd signals),
//! `guardian` (the process that kills every job's tree if the tool dies), `tree` (a job's
//! tree: cookie, subreaper, kills), `slurm` (cluster settings and queries), `command` (what to
//! run, where), `output` (how it ended), `sys`/`spawn`/`pipes` (starting it, wiring its
//! streams), `runner` and `forkserver` (running it).

mod allocation;
mod command;
mod forkserver;
mod guardian;
mod output;
mod packed;
mod pipes;
mod procs;
mod runner;
mod salloc;
mod serve;
mod slurm;
mod spawn;
mod sys;
mod tree;
mod wire;

pub use allocation::Allocation;
pub use command::{Command, Launcher, Sink, shell_quote};
pub use forkserver::{FORK_SERVER_PY, ForkJob, ForkServer, ForkServerError};
pub use guardian::{GUARDIAN_ENV, init};
pub use output::{Captured, Ending, ProcessError, ProcessOutput};
pub use runner::{ProcessRunner, kill_all_jobs};
pub use serve::serve_worker_if_asked;
pub use slurm::{Slurm, SlurmError};
pub use tree::JOB_ENV_PREFIX;
pub use wire::WORKER_ENV;
