//! The worker protocol of a Slurm allocation (see `packed.rs`): a task crosses to a worker as a
//! [`Request`] (the [`Command`] as data, one JSON line) and comes back as a [`Response`] (how it
//! ended, its captured output, the node). Text that is not UTF-8 in a command's program,
//! arguments or environment crosses lossily.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::command::{Command, Sink, Stderr};
use super::output::{Captured, Ending, ProcessError, ProcessOutput};

/// Set in a worker's environment (never in its tasks'): a task can tell it runs in a worker.
pub const WORKER_ENV: &str = "FANOUT_SLURM_WORKER";

/// A worker's only argument: this program serves tasks on stdin instead of starting.
pub(super) const WORKER_ARG: &str = "--fanout-slurm-worker";

/// How often a worker running a task says it still does (an empty line).
pub(super) const BEAT: Duration = Duration::from_secs(1);

/// How long the tool waits for a word from a worker running a task before it takes the
/// worker's node for dead.
pub(super) const SILENCE: Duration = Duration::from_secs(10);

/// A worker's first line: where it runs. Until it comes, no task has started.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Hello {
    pub(super) node: String,
    /// Its step, `JOB.STEP`: cancelled if the step outlives its srun.
    pub(super) step: String,
}

impl Hello {
    /// This worker's, from the environment Slurm gives a step.
    pub(super) fn here() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Hello {
            node: var("SLURMD_NODENAME"),
            step: format!("{}.{}", var("SLURM_JOB_ID"), var("SLURM_STEP_ID")),
        }
    }
}

/// A task, as sent to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Request {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    cwd: Option<PathBuf>,
    stdout: WireSink,
    /// `None`: into stdout's sink.
    stderr: Option<WireSink>,
    timeout_ms: Option<u64>,
    grace_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum WireSink {
    Null,
    Capture(usize),
    File(PathBuf),
    AppendFile(PathBuf),
}

/// How a task ended, as a worker answers.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Response {
    /// `exited`, `signaled`, `timed_out`, `cancelled` with its number (code, signal, ms).
    ending: (String, i64),
    duration_ms: u64,
    stdout: (Vec<u8>, u64),
    stderr: (Vec<u8>, u64),
    killed_processes: usize,
    pid: u32,
    pub(super) node: String,
    /// The task could not start (no such program, say): why.
    pub(super) error: Option<String>,
}

/// `cmd` as a worker gets it.
pub(super) fn request(cmd: &Command) -> Request {
    let text = |s: &std::ffi::OsString| s.to_string_lossy().into_owned();
    let sink = |s: &Sink| match s {
        Sink::Null => WireSink::Null,
        Sink::Capture { max_bytes } => WireSink::Capture(*max_bytes),
        Sink::File(p) => WireSink::File(p.clone()),
        Sink::AppendFile(p) => WireSink::AppendFile(p.clone()),
    };
    Request {
        program: text(&cmd.program),
        args: cmd.args.iter().map(text).collect(),
        env: cmd.env.iter().map(|(k, v)| (text(k), text(v))).collect(),
        env_remove: cmd.env_remove.iter().map(text).collect(),
        // A relative folder is relative to here: the nodes share the file system.
        cwd: cmd
            .cwd
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .map(|c| std::path::absolute(&c).unwrap_or(c)),
        stdout: sink(&cmd.stdout),
        stderr: match &cmd.stderr {
            Stderr::Sink(s) => Some(sink(s)),
            Stderr::ToStdout => None,
        },
        timeout_ms: cmd
            .timeout
            .map(|t| t.as_millis().try_into().unwrap_or(u64::MAX)),
        grace_ms: cmd.grace.as_millis().try_into().unwrap_or(u64::MAX),
    }
}

/// A worker's answer as the output of `cmd`, which ran in allocation `job_id`.
pub(super) fn response_output(r: Response, cmd: &Command, job_id: u64) -> ProcessOutput {
    let (kind, n) = r.ending;
    let ending = match kind.as_str() {
        "exited" => Ending::Exited(i32::try_from(n).unwrap_or(1)),
        "signaled" => Ending::Signaled(i32::try_from(n).unwrap_or(0)),
        "timed_out" => Ending::TimedOut(Duration::from_millis(n.unsigned_abs())),
        _ => Ending::Cancelled,
    };
    let captured = |(bytes, dropped_bytes): (Vec<u8>, u64)| Captured {
        bytes,
        dropped_bytes,
        complete: true,
    };
    ProcessOutput {
        pid: r.pid,
        ending,
        stdout: captured(r.stdout),
        stderr: captured(r.stderr),
        duration: Duration::from_millis(r.duration_ms),
        killed_processes: r.killed_processes,
        command: cmd.display(),
        slurm_job_id: Some(job_id),
        slurm_nodes: Some(r.node),
        slurm_failure: None,
    }
}

/// A request as the command a worker runs.
pub(super) fn command_of(r: Request) -> Command {
    let sink = |s: WireSink| match s {
        WireSink::Null => Sink::Null,
        WireSink::Capture(max_bytes) => Sink::Capture { max_bytes },
        WireSink::File(p) => Sink::File(p),
        WireSink::AppendFile(p) => Sink::AppendFile(p),
    };
    let mut cmd = Command::new(r.program).args(r.args);
    for (k, v) in r.env {
        cmd = cmd.env(k, v);
    }
    for k in r.env_remove {
        cmd = cmd.env_remove(k);
    }
    // The worker's own mark is not the task's: a task that runs one of the tools must run it,
    // not serve as a worker of nothing.
    cmd = cmd.env_remove(WORKER_ENV);
    if let Some(cwd) = r.cwd {
        cmd = cmd.current_dir(cwd);
    }
    cmd = cmd.stdout(sink(r.stdout));
    cmd = match r.stderr {
        Some(s) => cmd.stderr(sink(s)),
        None => cmd.stderr_to_stdout(),
    };
    cmd.timeout(r.timeout_ms.map(Duration::from_millis))
        .kill_grace(Duration::from_millis(r.grace_ms))
}

/// How a worker answers for a finished task.
pub(super) fn response_of(result: Result<ProcessOutput, ProcessError>) -> Response {
    let node = std::env::var("SLURMD_NODENAME").unwrap_or_default();
    match result {
        Ok(out) => {
            let ending = match out.ending {
                Ending::Exited(c) => ("exited", i64::from(c)),
                Ending::Signaled(s) => ("signaled", i64::from(s)),
                Ending::TimedOut(after) => (
                    "timed_out",
                    i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
                ),
                Ending::Cancelled => ("cancelled", 0),
            };
            Response {
                ending: (ending.0.to_owned(), ending.1),
                duration_ms: out.duration.as_millis().try_into().unwrap_or(u64::MAX),
                stdout: (out.stdout.bytes, out.stdout.dropped_bytes),
                stderr: (out.stderr.bytes, out.stderr.dropped_bytes),
                killed_processes: out.killed_processes,
                pid: out.pid,
                node,
                error: None,
            }
        }
        Err(e) => Response {
            ending: ("exited".to_owned(), 127),
            duration_ms: 0,
            stdout: (Vec::new(), 0),
            stderr: (Vec::new(), 0),
            killed_processes: 0,
            pid: 0,
            node,
            error: Some(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a worker runs is the command as given: program, arguments, environment, folder,
    /// where its output goes, its time limit and grace.
    #[test]
    fn a_command_crosses_to_the_worker_whole() {
        let cmd = Command::new("printf")
            .args(["%s\n", "two words", "é"])
            .env("A", "1")
            .env_remove("B")
            .current_dir("/tmp")
            .stdout(Sink::AppendFile("/tmp/log".into()))
            .stderr_to_stdout()
            .timeout(Some(Duration::from_millis(1500)))
            .kill_grace(Duration::from_millis(250));
        let line = serde_json::to_string(&request(&cmd)).unwrap();
        let back = command_of(serde_json::from_str(&line).unwrap());
        assert_eq!(back.program, cmd.program);
        assert_eq!(back.args, cmd.args);
        assert_eq!(back.env, cmd.env);
        let mut removed = cmd.env_remove.clone();
        removed.push(WORKER_ENV.into());
        assert_eq!(back.env_remove, removed, "and never the worker's own mark");
        assert_eq!(back.cwd, cmd.cwd);
        assert_eq!(back.stdout, cmd.stdout);
        assert_eq!(back.stderr, cmd.stderr);
        assert_eq!(back.timeout, cmd.timeout);
        assert_eq!(back.grace, cmd.grace);
    }

    /// How it ended crosses back: exit code, signal, time limit, captured output.
    #[test]
    fn an_ending_crosses_back_whole() {
        let cmd = Command::new("true");
        for ending in [
            Ending::Exited(7),
            Ending::Signaled(9),
            Ending::TimedOut(Duration::from_millis(1500)),
            Ending::Cancelled,
        ] {
            let out = ProcessOutput {
                pid: 42,
                ending,
                stdout: Captured {
                    bytes: b"out\xff".to_vec(),
                    dropped_bytes: 3,
                    complete: true,
                },
                stderr: Captured::default(),
                duration: Duration::from_millis(20),
                killed_processes: 1,
                command: "true".to_owned(),
                slurm_job_id: None,
                slurm_nodes: None,
                slurm_failure: None,
            };
            let line = serde_json::to_string(&response_of(Ok(out))).unwrap();
            let back = response_output(serde_json::from_str(&line).unwrap(), &cmd, 5);
            assert_eq!(back.ending, ending);
            assert_eq!(back.stdout.bytes, b"out\xff");
            assert_eq!(back.stdout.dropped_bytes, 3);
            assert_eq!((back.pid, back.killed_processes), (42, 1));
            assert_eq!(back.slurm_job_id, Some(5));
        }
        let failed = response_of(Err(ProcessError::Spawn {
            program: "nope".to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }));
        assert!(failed.error.unwrap().contains("could not start `nope`"));
    }
}
