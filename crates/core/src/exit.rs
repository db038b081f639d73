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

/// The `Exit status` section every tool appends to its `--help`, with its own name for its tasks
/// (`("notebook", "notebooks")`).
pub fn exit_codes_help(noun: (&str, &str)) -> String {
    let (one, many) = noun;
    format!(
        "Exit status:\n  \
         0    every {one} succeeded (or was up to date)\n  \
         1    some {one} failed or timed out, or the run failed after {many} started\n  \
         2    usage, input or configuration error (nothing ran)\n  \
         130  interrupted (Ctrl-C); a second Ctrl-C kills running {many} at once"
    )
}

/// An error in what the user asked for (the command line, a configuration or input file),
/// found before anything ran: [`ExitStatus::of_error`] maps it to [`ExitStatus::Usage`]. Raise
/// it where the input is judged; every other error is one of the run ([`ExitStatus::TaskFailed`]).
#[derive(Debug)]
pub struct UsageError(pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for UsageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl ExitStatus {
    /// The status of a run that ended with `error`: [`ExitStatus::Usage`] when a
    /// [`UsageError`] is anywhere in its chain (context added later does not change its class),
    /// else [`ExitStatus::TaskFailed`]: something failed while running.
    pub fn of_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<UsageError>() {
                return ExitStatus::Usage;
            }
            next = e.source();
        }
        ExitStatus::TaskFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(UsageError);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("while reading the pipeline")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn usage_errors_are_found_under_context_and_the_rest_are_run_time() {
        let usage = || UsageError("no such pipeline".into());
        assert_eq!(ExitStatus::of_error(&usage()), ExitStatus::Usage);
        assert_eq!(ExitStatus::of_error(&Outer(usage())), ExitStatus::Usage);
        let io = std::io::Error::other("disk full");
        assert_eq!(ExitStatus::of_error(&io), ExitStatus::TaskFailed);
        assert_eq!(Outer(usage()).to_string(), "while reading the pipeline");
        assert_eq!(usage().to_string(), "no such pipeline");
    }

    #[test]
    fn the_help_names_the_tools_tasks() {
        let help = exit_codes_help(("job", "jobs"));
        assert!(
            help.starts_with("Exit status:\n  0    every job succeeded"),
            "{help}"
        );
        assert!(help.ends_with("kills running jobs at once"), "{help}");
    }
}
