//! [`ProcessRunner`]: runs a [`Command`] as a job whose whole process tree it owns.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::command::{Command, Launcher, Sink, Stderr};
use super::output::{Captured, Ending, ProcessError, ProcessOutput};
use super::pipes::wire_streams;
use super::slurm;
use super::spawn::{Leader, std_command};
use super::tree::{self, JobGroup};
use crate::cancel::CancelToken;

/// SIGKILL every process of every job this program started. For the second Ctrl-C.
pub fn kill_all_jobs() {
    tree::session().kill_all();
}

/// Runs commands as jobs whose whole process tree it owns (the local launcher).
#[derive(Debug, Clone, Default)]
pub struct ProcessRunner;

/// How often a waiting job looks at its cancel token.
pub(super) const CANCEL_POLL: Duration = Duration::from_millis(50);

impl ProcessRunner {
    /// A runner. The first one makes this process a child subreaper and, if [`init`](super::init) was
    /// called, starts the guardian.
    pub fn new() -> Self {
        tree::session();
        ProcessRunner
    }

    /// Run `cmd` to completion, its time limit, or `cancel`, whichever comes first.
    pub fn run(&self, cmd: &Command, cancel: &CancelToken) -> Result<ProcessOutput, ProcessError> {
        let session = tree::session();
        let cookie = session.next_cookie();
        // On Slurm: the step's name and its comment (the cookie), to find its job id after.
        let mut on_slurm: Option<(String, String)> = None;
        let slurm_cmd;
        let cmd = match &cmd.launcher {
            Launcher::Packed(allocation) => return allocation.run(cmd, cancel),
            Launcher::Local => cmd,
            Launcher::Slurm(slurm) => {
                session.note_slurm();
                let marker = format!("{}={}", cookie.name, cookie.value);
                slurm_cmd = cmd.wrapped_in_srun(slurm, &marker);
                on_slurm = Some((cmd.job_name_or_program(), marker));
                &slurm_cmd
            }
        };
        let program = cmd.program.to_string_lossy().into_owned();
        // Where this attempt's output starts in an appended log: srun's failure is read from
        // this attempt's lines only, not from an earlier attempt's.
        let log_start = log_file(cmd).map_or(0, |p| std::fs::metadata(p).map_or(0, |m| m.len()));

        let spawn_error = |source| ProcessError::Spawn {
            program: program.clone(),
            source,
        };
        let mut command = std_command(cmd, None).map_err(spawn_error)?;
        command.env(&cookie.name, &cookie.value);
        let streams = wire_streams(cmd, &mut command, &program)?;

        let start = Instant::now();
        let mut leader = session
            .spawn_registered(|| Leader::spawn(&mut command), |l| Some(l.pid()))
            .map_err(spawn_error)?;
        // The command holds our copies of the pipes' write ends; drop them so the readers see
        // end-of-file once the tree is gone.
        drop(command);
        let pid = leader.pid();
        // The child leads its own process group (see sys.rs), so its pid is the group's id.
        let job = Job {
            session,
            cookie: &cookie,
            group: pid,
            grace: cmd.grace,
        };
        let (wait_result, forced, mut killed_processes) =
            job.wait(&mut leader, start, cmd.timeout, cancel);
        let status = leader.status();
        session.unregister(pid);
        drop(leader);
        if let Err(source) = wait_result {
            session.kill_tree(&cookie, JobGroup::Loose(pid), Duration::ZERO);
            return Err(ProcessError::Wait { program, source });
        }
        if forced.is_none() {
            killed_processes = session.finish(&cookie, pid, cmd.grace);
        }
        let duration = start.elapsed();
        let (stdout, stderr) = streams.collect();
        let (slurm_job, slurm_failure) = match on_slurm {
            Some(step) => slurm_facts(step, status, forced.is_some(), || {
                stderr_text(cmd, &stderr, log_start)
            }),
            None => (None, None),
        };
        let (slurm_job_id, slurm_nodes) = slurm_job.map_or((None, None), |(id, nodes)| {
            (Some(id), Some(nodes).filter(|n| !n.is_empty()))
        });
        let ending = forced.unwrap_or_else(|| ending_of(status));
        Ok(ProcessOutput {
            pid: pid.cast_unsigned(),
            ending,
            stdout,
            stderr,
            duration,
            killed_processes,
            command: cmd.display(),
            slurm_job_id,
            slurm_nodes,
            slurm_failure,
        })
    }
}

/// A started job's tree: its cookie and process group, and its grace before SIGKILL.
struct Job<'a> {
    session: &'a tree::Session,
    cookie: &'a tree::Cookie,
    group: i32,
    grace: Duration,
}

impl Job<'_> {
    /// Wait for the job's leader, killing the tree once `timeout` has passed since `start` or
    /// on `cancel`. Returns the wait's result, the ending it forced (if it did) and how many
    /// processes it killed.
    fn wait(
        &self,
        leader: &mut Leader,
        start: Instant,
        timeout: Option<Duration>,
        cancel: &CancelToken,
    ) -> (std::io::Result<()>, Option<Ending>, usize) {
        // A limit too far away to be an instant is no limit (the tools refuse those earlier).
        let deadline = timeout.and_then(|t| start.checked_add(t));
        loop {
            let now = Instant::now();
            let slice_end = deadline.map_or(now + CANCEL_POLL, |d| d.min(now + CANCEL_POLL));
            match leader.wait_until(slice_end) {
                Ok(true) => return (Ok(()), None, 0),
                Ok(false) => {}
                Err(e) => return (Err(e), None, 0),
            }
            let ending = if cancel.is_cancelled() {
                Ending::Cancelled
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Ending::TimedOut(start.elapsed())
            } else {
                continue;
            };
            // Not reaped yet (it was running a moment ago): the group's id is pinned.
            let killed =
                self.session
                    .kill_tree(self.cookie, JobGroup::Pinned(self.group), self.grace);
            return (leader.wait().map(drop), Some(ending), killed);
        }
    }
}

/// A Slurm step's job id and, when it failed, srun's reason (read from `stderr`). A step the
/// scheduler refused never existed: nothing to look up. A step that was killed (`forced`) is
/// cancelled on the cluster too.
fn slurm_facts(
    (name, marker): (String, String),
    status: Option<std::process::ExitStatus>,
    forced: bool,
    stderr: impl FnOnce() -> String,
) -> (Option<(u64, String)>, Option<String>) {
    let failure = if status.is_some_and(|s| !s.success()) {
        slurm::failure(&stderr())
    } else {
        None
    };
    let job = if failure.as_deref().is_some_and(slurm::refused) {
        None
    } else {
        slurm::job(&name, &marker)
    };
    if let (Some((id, _)), true) = (&job, forced) {
        // srun cancels its step when it gets SIGTERM; if it had to be SIGKILLed, or the job was
        // still waiting for resources, make sure the cluster lets go of it too.
        slurm::cancel(&id.to_string());
    }
    (job, failure)
}

/// How a process that exited by itself ended.
fn ending_of(status: Option<std::process::ExitStatus>) -> Ending {
    status.map_or(Ending::Signaled(0), |s| match (s.code(), s.signal()) {
        (Some(code), _) => Ending::Exited(code),
        (None, Some(sig)) => Ending::Signaled(sig),
        (None, None) => Ending::Signaled(0),
    })
}

/// The file the command's stderr goes to, if it goes to one (also with stdout into a file).
fn log_file(cmd: &Command) -> Option<&Path> {
    match (&cmd.stderr, &cmd.stdout) {
        (Stderr::Sink(Sink::File(p) | Sink::AppendFile(p)), _)
        | (Stderr::ToStdout, Sink::File(p) | Sink::AppendFile(p)) => Some(p),
        _ => None,
    }
}

/// The end of what this run of the command wrote to stderr: the captured tail, or the end of
/// the file it went to, from `log_start` (where this attempt began writing) on.
fn stderr_text(cmd: &Command, captured: &Captured, log_start: u64) -> String {
    match log_file(cmd) {
        Some(p) => {
            let len = std::fs::metadata(p).map_or(0, |m| m.len());
            crate::fsutil::read_tail(p, len.saturating_sub(log_start).min(16 * 1024))
        }
        None => captured.text().into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_with_its_own_path_runs_the_program_found_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("sh");
        std::fs::write(&script, "#!/bin/sh\necho from-job-path\n").expect("write script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let runner = ProcessRunner::new();
        let cancel = CancelToken::new();
        // Look `sh` up on our PATH first, so a cached answer would be wrong for the second job.
        runner
            .run(&Command::new("sh").arg("-c").arg("true"), &cancel)
            .expect("sh runs");
        let out = runner
            .run(&Command::new("sh").env("PATH", dir.path()), &cancel)
            .expect("the job's own sh runs");
        assert_eq!(out.stdout.text().trim(), "from-job-path");
    }
}
