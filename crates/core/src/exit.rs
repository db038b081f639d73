//! Exit codes are part of every tool's interface: scripts rely on them.

use std::process::ExitCode;

use crate::cancel::{CancelReason, CancelToken};
use crate::result::Summary;

/// Exit code a program returns after it was interrupted (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// How a tool run ended, as scripts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: everything succeeded.
    Success,
    /// 1: some task failed, timed out or was cancelled.
    TaskFailed,
    /// 2: bad command line, configuration or input; nothing ran.
    Usage,
    /// 130: the user interrupted the run.
    Interrupted,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::TaskFailed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Interrupted => EXIT_INTERRUPTED,
        }
    }

    /// The status of a finished batch: interrupted wins, then any failure.
    pub fn of_batch(summary: &Summary, interrupt: &CancelToken) -> Self {
        if interrupt.reason() == Some(CancelReason::Interrupted) {
            ExitStatus::Interrupted
        } else if summary.all_ok() {
            ExitStatus::Success
        } else {
            ExitStatus::TaskFailed
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

/// The `EXIT STATUS` section every tool appends to its `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0    every task succeeded
  1    some task failed or timed out
  2    usage or configuration error (nothing ran)
  130  interrupted (Ctrl-C); a second Ctrl-C kills running jobs at once";
