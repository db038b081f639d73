//! A [`Command`] as a std command ready to start (the program looked up once, stdin, the
//! child's set-up, folder and environment), and the started job's main process, its
//! [`Leader`], waited for through a pidfd.
//!
//! Why std and not duct: duct copies the whole environment into a map at every start and again
//! at each of an expression's layers, then sets it variable by variable on the std command:
//! 92,000 instructions a job, more than twice what std's own start costs (callgrind, `probe
//! dispatch 200 1`; see BENCHMARKS.md). A job here is one program with redirections, which std
//! does directly.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;

use super::command::Command;
use super::sys;

/// The command as a std command, its stdin from `stdin` (else `/dev/null`); stdout and stderr
/// are the caller's to wire.
#[expect(
    clippy::disallowed_methods,
    reason = "this module is the one place that starts subprocesses"
)]
pub(super) fn std_command(
    cmd: &Command,
    stdin: Option<Stdio>,
) -> io::Result<std::process::Command> {
    let program = program_path(cmd)?;
    let mut command = std::process::Command::new(&*program);
    command
        .args(&cmd.args)
        .stdin(stdin.unwrap_or_else(sys::null_stdio));
    sys::configure_child(&mut command);
    if let Some(dir) = &cmd.cwd {
        command.current_dir(dir);
    }
    for name in &cmd.env_remove {
        command.env_remove(name);
    }
    for (name, value) in &cmd.env {
        command.env(name, value);
    }
    Ok(command)
}

/// The program to execute: found on `PATH` once (see [`resolve`]); a relative path with a `/`
/// is taken from our folder even when the job runs in another one (`./run.sh` with a folder
/// of its own runs our `./run.sh`), as it always has been.
fn program_path(cmd: &Command) -> io::Result<Cow<'_, std::ffi::OsStr>> {
    if let Some(found) = resolve(cmd) {
        return Ok(Cow::Owned(found.into_os_string()));
    }
    let program = Path::new(&cmd.program);
    if cmd.cwd.is_some() && program.is_relative() && cmd.program.as_bytes().contains(&b'/') {
        return Ok(Cow::Owned(program.canonicalize()?.into_os_string()));
    }
    Ok(Cow::Borrowed(cmd.program.as_os_str()))
}

/// A started job's main process: our child, not reaped until it has exited here, so its pid
/// (and the process group it leads) cannot be reused while it is held.
#[derive(Debug)]
pub(super) struct Leader {
    child: std::process::Child,
    /// Readable once the process exited (Linux 5.3 and later); `None`: SIGCHLD instead.
    exit: Option<OwnedFd>,
    status: Option<ExitStatus>,
}

impl Leader {
    pub(super) fn spawn(command: &mut std::process::Command) -> io::Result<Self> {
        let child = command.spawn()?;
        let exit = rustix::process::Pid::from_raw(child.id().cast_signed()).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        });
        Ok(Self {
            child,
            exit,
            status: None,
        })
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.id().cast_signed()
    }

    /// How it ended, once reaped.
    pub(super) fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Wait until it exits (then reap it) or until `until`, whichever comes first. `true`:
    /// it exited.
    ///
    /// Why a pidfd: it costs one `poll` and one reap a job. Waiting with a deadline otherwise
    /// needs a SIGCHLD handler writing to a pipe (duct's way: a pipe and seven system calls a
    /// wait, and every child's exit interrupts every waiting thread); that stays the way on
    /// kernels without pidfds.
    pub(super) fn wait_until(&mut self, until: Instant) -> io::Result<bool> {
        if self.status.is_some() {
            return Ok(true);
        }
        let Some(fd) = &self.exit else {
            return self.wait_for_sigchld(until);
        };
        loop {
            let left = until.saturating_duration_since(Instant::now());
            // Any wait short of 292 billion years is a valid timespec.
            let timeout = rustix::event::Timespec::try_from(left).unwrap_or_default();
            let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            // Readable: it exited, so reaping it does not block.
            if let Some(status) = self.child.try_wait()? {
                self.status = Some(status);
                return Ok(true);
            }
            // Said early (not seen on Linux): look again in a moment, not at once.
            if Instant::now() >= until {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn wait_for_sigchld(&mut self, until: Instant) -> io::Result<bool> {
        // Made before the first look, so an exit between the look and the wait is not missed.
        let mut sigchld = sigchld::Waiter::new()?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.status = Some(status);
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            sigchld.wait_deadline(until)?;
        }
    }

    /// Wait for it to exit, however long it takes, and reap it.
    pub(super) fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Leader {
    /// Not waited for (an error cut the wait short): reap it if it is done, so no zombie of a
    /// worker thread's child is left (orphans are reaped on the main thread's list only).
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.try_wait();
        }
    }
}

/// The absolute path of a program named without a `/`, looked up on `PATH` once per program and
/// remembered. `None` leaves the lookup to the spawn: when the command sets or removes `PATH`,
/// when `PATH` has a relative entry (which depends on the child's working folder), or when the
/// program is not found (so the spawn reports the error).
///
/// Why: std starts a child with `posix_spawn` (a `vfork`) only when it needs no `PATH` search
/// of its own under a modified environment, and every job's environment is modified (the
/// cookie). Otherwise it forks, and the fork's page-table copy cost more than the job itself
/// for short jobs; searching `PATH` in the child also cost one failed `execve` per entry.
fn resolve(cmd: &Command) -> Option<PathBuf> {
    static CACHE: OnceLock<Mutex<HashMap<(OsString, OsString), PathBuf>>> = OnceLock::new();
    let program = &cmd.program;
    if program.as_bytes().contains(&b'/') || program.is_empty() {
        return None;
    }
    let touches_path = |name: &OsString| name == "PATH";
    if cmd.env.iter().any(|(name, _)| touches_path(name)) || cmd.env_remove.iter().any(touches_path)
    {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    if std::env::split_paths(&path).any(|dir| !dir.is_absolute()) {
        return None;
    }
    let cache = CACHE.get_or_init(Mutex::default);
    let key = (program.clone(), path);
    if let Some(found) = cache.lock().expect("program cache").get(&key) {
        return Some(found.clone());
    }
    let found = which::which_in(program, Some(&key.1), "/").ok()?;
    cache
        .lock()
        .expect("program cache")
        .insert(key, found.clone());
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_on_path_are_looked_up_once_unless_the_job_sets_its_own_path() {
        let sh = resolve(&Command::new("sh")).expect("sh is on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        // Paths, unknown programs and commands with their own PATH are left to the spawn.
        assert_eq!(resolve(&Command::new("/bin/sh")), None);
        assert_eq!(resolve(&Command::new("./run.sh")), None);
        assert_eq!(resolve(&Command::new("no-such-program-fanout")), None);
        assert_eq!(resolve(&Command::new("sh").env("PATH", "/nowhere")), None);
        assert_eq!(resolve(&Command::new("sh").env_remove("PATH")), None);
    }

    /// A leader that exits after `secs`, started as the runner starts one, and the instant
    /// before it was started (its sleep cannot end earlier than `secs` after it).
    fn leader(secs: &str) -> (Leader, Instant) {
        let started = Instant::now();
        let mut command = std_command(&Command::new("sleep").arg(secs), None).expect("command");
        (Leader::spawn(&mut command).expect("sleep starts"), started)
    }

    fn a_leader_is_waited_for_until_a_deadline_then_reaped(
        (mut leader, started): (Leader, Instant),
    ) {
        assert!(
            !leader
                .wait_until(started + Duration::from_millis(20))
                .unwrap()
        );
        assert!(leader.status().is_none(), "still running, not reaped");
        assert!(
            leader
                .wait_until(started + Duration::from_secs(30))
                .unwrap()
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(leader.status().is_some_and(|s| s.success()));
        // Reaped: asking again answers from what was kept.
        assert!(leader.wait_until(Instant::now()).unwrap());
        assert!(leader.wait().unwrap().success());
    }

    #[test]
    fn a_leader_is_waited_for_with_its_pidfd() {
        let leader = leader("0.3");
        assert!(
            leader.0.exit.is_some(),
            "this kernel has pidfds (Linux 5.3+)"
        );
        a_leader_is_waited_for_until_a_deadline_then_reaped(leader);
    }

    #[test]
    fn a_leader_is_waited_for_by_sigchld_where_there_are_no_pidfds() {
        let mut leader = leader("0.3");
        leader.0.exit = None;
        a_leader_is_waited_for_until_a_deadline_then_reaped(leader);
    }

    #[test]
    fn a_relative_program_path_is_ours_even_when_the_job_runs_elsewhere() {
        let ours = tempfile::tempdir().expect("temp dir");
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let script = ours.path().join("job.sh");
        std::fs::write(&script, "#!/bin/sh\npwd\n").expect("write script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        // Relative to the test's folder, as a user's `./job.sh` is relative to theirs.
        let relative = pathdiff(&script);
        let cmd = Command::new(&relative).current_dir(elsewhere.path());
        let program = program_path(&cmd).expect("found");
        assert_eq!(Path::new(&*program), script.canonicalize().unwrap());
        // Without a folder of its own, the path is left as given.
        let cmd = Command::new(&relative);
        assert_eq!(
            Path::new(&*program_path(&cmd).unwrap()),
            Path::new(&relative)
        );
    }

    /// `path` relative to the current folder, with at least one `/` (`./` or `../..`).
    fn pathdiff(path: &Path) -> PathBuf {
        let here = std::env::current_dir().expect("current dir");
        let ups = here.components().count() - 1;
        let mut relative = PathBuf::from(".");
        for _ in 0..ups {
            relative.push("..");
        }
        relative.join(path.strip_prefix("/").expect("absolute"))
    }
}
