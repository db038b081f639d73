//! The guardian: a watcher process that kills a tool's jobs when the tool dies, however it dies.
//!
//! Why: the parent-death signal (see `sys.rs`) reaches a job's *direct* child only. If the tool
//! is killed with SIGKILL, the job's grandchildren (what `sh -c` forked, or a `uv run` in its own
//! session) would run on. So the runner starts one guardian per tool process: the tool's own
//! executable, re-run with [`GUARDIAN_ENV`] naming the session's cookie variable, reading a pipe
//! whose write end only the tool holds. When the tool exits or is killed, the kernel closes that
//! end, the guardian reads end-of-file, SIGKILLs every process that carries the session's
//! cookie, and exits. A normal exit finds nothing left to kill (or a leftover daemon, which it
//! should not leave anyway).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set in the guardian's environment: the cookie variable of the session it guards.
pub const GUARDIAN_ENV: &str = "FANOUT_GUARDIAN_FOR";

static ENABLED: Mutex<Option<Vec<String>>> = Mutex::new(None);
static STARTED: AtomicBool = AtomicBool::new(false);
/// The write end of the guardian's stdin, held for the life of the process.
static PIPE: Mutex<Option<ChildStdin>> = Mutex::new(None);

/// Call first thing in `main`. In a guardian process it does the guardian's work and exits;
/// otherwise it arranges for the first [`ProcessRunner`](super::ProcessRunner) to start a
/// guardian (this executable, re-run with `args`).
pub fn init(args: &[&str]) {
    if let Some(var) = std::env::var_os(GUARDIAN_ENV) {
        guard(&var.to_string_lossy());
        // A guardian is a process of its own making: ending it here is its whole purpose.
        std::process::exit(0);
    }
    *ENABLED.lock().expect("guardian lock") = Some(args.iter().map(|a| (*a).to_owned()).collect());
}

/// Start the guardian for the session whose cookie variable is `var`, if `init` enabled it.
/// Returns its pid.
pub(crate) fn start(var: &str) -> Option<i32> {
    let args = ENABLED.lock().expect("guardian lock").clone()?;
    if STARTED.swap(true, Ordering::SeqCst) {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the guardian is started by the process module, like every other process"
    )]
    let spawned = std::process::Command::new(exe)
        .args(args)
        .env(GUARDIAN_ENV, var)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: the terminal's Ctrl-C must not take the guardian down before us.
        .process_group(0)
        .spawn();
    let mut child = spawned.ok()?;
    *PIPE.lock().expect("guardian lock") = child.stdin.take();
    // The child handle is dropped without waiting: the guardian outlives us by design. It ends
    // first only if killed; then it stays a zombie until we exit.
    Some(child.id().cast_signed())
}

/// Whether a guardian watches this process's jobs (then it, not the parent-death signal, is
/// what kills them if the tool dies).
pub(crate) fn running() -> bool {
    PIPE.lock().expect("guardian lock").is_some()
}

/// The guardian's work: wait for end-of-file on stdin, then kill every process of the session.
fn guard(var: &str) {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    super::tree::kill_all_marked(var);
}
