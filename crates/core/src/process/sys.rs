//! The one audited place with `unsafe`: configuring a child between fork and exec.

use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::Signal;

/// Put the child in its own process group and, unless a guardian watches our jobs, have the
/// kernel SIGKILL it if we die.
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
#[expect(
    clippy::unnecessary_wraps,
    reason = "the signature duct requires of a before_spawn hook"
)]
pub(crate) fn configure_child(cmd: &mut Command) -> std::io::Result<()> {
    cmd.process_group(0);
    if super::guardian::running() {
        return Ok(());
    }
    let parent = rustix::process::getpid();
    #[expect(
        unsafe_code,
        reason = "pre_exec is unsafe because the closure runs between fork and exec; it only makes \
                  two async-signal-safe syscalls (prctl, getppid) and allocates nothing"
    )]
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // We may have died between fork and prctl: then nobody would send the signal.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other(
                    "parent exited before the child started",
                ));
            }
            Ok(())
        });
    }
    Ok(())
}
