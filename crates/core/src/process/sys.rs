//! Configuring a child between fork and exec: one of the core's two `unsafe` blocks (the other
//! is `mem.rs`).

use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::Signal;

/// Put the child in its own process group (in a terminal: its own session) and, unless a
/// guardian watches our jobs, have the kernel SIGKILL it if we die.
///
/// Own process group: the terminal's Ctrl-C goes to the foreground group, which must be us
/// alone, so that the first Ctrl-C is a graceful cancel that we turn into SIGTERM; and the group
/// gives a one-syscall check for leftovers.
///
/// Parent-death signal: if the tool is killed (even with SIGKILL), its direct children die with
/// it instead of running on unsupervised. The kernel ties it to the spawning *thread*, which is
/// fine here: a worker thread always waits for its child before it moves on.
///
/// Why only without a guardian: any `pre_exec` hook makes std start the child with `fork`
/// instead of `posix_spawn` (a `vfork`), and copying our page tables then took a third of the
/// cost of running `/bin/true` (measured by `cargo xtask bench`, dispatch scenario). The guardian
/// kills every process of every job, direct children included, so it covers what the signal
/// did; library users who do not call [`init`](super::init) keep the signal.
pub(crate) fn configure_child(cmd: &mut Command) {
    let detach = has_controlling_terminal();
    let guarded = super::guardian::running();
    if !detach {
        cmd.process_group(0);
        if guarded {
            return;
        }
    }
    let parent = rustix::process::getpid();
    #[expect(
        unsafe_code,
        reason = "pre_exec is unsafe because the closure runs between fork and exec; it only makes \
                  async-signal-safe syscalls (setsid, prctl, getppid) and allocates nothing"
    )]
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it makes the setsid, prctl and getppid system calls (rustix wraps
    // them without allocating), captures only `Copy` values, and touches no lock or memory of
    // the parent.
    unsafe {
        cmd.pre_exec(move || {
            if detach {
                // A session of its own: no controlling terminal, so a job that opens /dev/tty
                // (ssh, git or sudo asking for a password) fails at once instead of being
                // stopped by SIGTTIN and waiting forever. It also leads its own process group.
                rustix::process::setsid()?;
            }
            if !guarded {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                // We may have died between fork and prctl: then nobody would send the signal.
                if rustix::process::getppid() != Some(parent) {
                    return Err(std::io::Error::other(
                        "parent exited before the child started",
                    ));
                }
            }
            Ok(())
        });
    }
}

/// Whether this process has a controlling terminal (it runs in someone's terminal, not in CI).
/// Only then do jobs need a session of their own (and the `fork` that `pre_exec` costs):
/// without one, a job has no terminal to open anyway. Asked once.
fn has_controlling_terminal() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| std::fs::File::open("/dev/tty").is_ok())
}

/// `/dev/null` as a child's stream: a copy of one descriptor opened once per process (one `dup`
/// instead of an `open` by path for each stream of each job), or, if that cannot be had, opened
/// by name when the child is started.
pub(crate) fn null_stdio() -> std::process::Stdio {
    dev_null().map_or_else(std::process::Stdio::null, std::process::Stdio::from)
}

fn dev_null() -> Option<std::fs::File> {
    static NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .ok()
    })
    .as_ref()?
    .try_clone()
    .ok()
}
