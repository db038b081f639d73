//! The program's Ctrl-C handler: the first signal cancels the run, the second kills every job.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cancel::{CancelReason, CancelToken};
use crate::exit::EXIT_INTERRUPTED;
use crate::fsutil::own_status;
use crate::process::kill_all_jobs;

static INTERRUPT: OnceLock<CancelToken> = OnceLock::new();
static SECOND: AtomicBool = AtomicBool::new(false);

/// Error from [`install_interrupt_handler`].
#[derive(Debug, thiserror::Error)]
#[error("could not install the Ctrl-C handler: {0}")]
pub struct InterruptHandlerError(#[from] std::io::Error);

/// Install the program's Ctrl-C (and SIGTERM/SIGHUP) handler and return the token it cancels.
///
/// The first signal cancels the token with [`CancelReason::Interrupted`]: pools start nothing
/// new, running subprocess trees get SIGTERM then SIGKILL, and the program still writes its
/// reports and exits with [`EXIT_INTERRUPTED`]. A second signal kills every job's process tree
/// at once and exits with 130 immediately: the user has asked twice.
///
/// A signal that was set to be ignored when the program started stays ignored: under `nohup`
/// a closed terminal (SIGHUP) does not cancel the run, and a program started with `&` from a
/// script (SIGINT ignored) is not cancelled by the script's Ctrl-C. Signals are handled on a
/// thread of their own (signal-hook), not in a signal handler.
///
/// Calling it again returns the same token.
pub fn install_interrupt_handler() -> Result<CancelToken, InterruptHandlerError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    if let Some(token) = INTERRUPT.get() {
        return Ok(token.clone());
    }
    let token = CancelToken::new();
    let ignored = ignored_signals();
    let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter(|s| !ignored.contains(s))
        .collect();
    let mut signals = signal_hook::iterator::Signals::new(&wanted)?;
    let for_handler = token.clone();
    std::thread::Builder::new()
        .name("fanout-signals".to_owned())
        .spawn(move || {
            for _ in signals.forever() {
                if SECOND.swap(true, Ordering::SeqCst) {
                    kill_all_jobs();
                    // The user asked twice: leave now, without unwinding through workers that
                    // may be blocked. This is the one place the core ends the process.
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
                for_handler.cancel(CancelReason::Interrupted);
            }
        })?;
    Ok(INTERRUPT.get_or_init(|| token).clone())
}

/// The signals this process ignores, from the `SigIgn` mask of `/proc/self/status` (bit n-1 is
/// signal n). Empty when it cannot be read.
fn ignored_signals() -> Vec<i32> {
    let mask = own_status("SigIgn")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0);
    (1..=64).filter(|n| mask & (1u64 << (n - 1)) != 0).collect()
}
