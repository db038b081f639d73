//! What a finished process left behind ([`ProcessOutput`]: how it ended, its captured output),
//! and the errors that keep a process from running at all.

use std::borrow::Cow;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::result::TaskError;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this code.
    Exited(i32),
    /// A signal we did not send killed it.
    Signaled(i32),
    /// It ran past its time limit; we killed its tree.
    TimedOut(Duration),
    /// The cancel token fired; we killed its tree.
    Cancelled,
}

/// Captured output of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The last bytes written (all of them if fewer than the limit).
    pub bytes: Vec<u8>,
    /// How many earlier bytes were dropped to respect the limit.
    pub dropped_bytes: u64,
    /// False if something still held the pipe open after the process tree was gone (a process
    /// that escaped the tree): what is here is what had arrived by then.
    pub complete: bool,
}

impl Captured {
    /// The bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// The last `n` lines, trimmed.
    pub fn tail_lines(&self, n: usize) -> String {
        crate::text::last_lines(&self.text(), n).to_owned()
    }
}

/// What a finished process left behind.
#[derive(Debug, Clone)]
pub struct ProcessOutput {
    pub pid: u32,
    pub ending: Ending,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
    /// How many processes of the tree we had to signal (leftovers, or the tree on timeout).
    pub killed_processes: usize,
    /// The command line, for messages.
    pub command: String,
    /// The Slurm job the command ran as, when it ran on a cluster and Slurm still knew it at
    /// the end.
    pub slurm_job_id: Option<u64>,
    /// The node(s) that job ran on, as Slurm names them (`node2`, `node[1-3]`).
    pub slurm_nodes: Option<String>,
    /// Why `srun` itself failed (the scheduler refused the job, a node failed), read from its
    /// stderr wherever that went; the task's error then says so instead of "exited with code 1".
    pub slurm_failure: Option<String>,
}

impl ProcessOutput {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.ending == Ending::Exited(0)
    }

    /// The last `n` lines of stderr, or of stdout if stderr is empty: what to show of a failure.
    pub fn output_tail(&self, n: usize) -> String {
        if self.stderr.bytes.is_empty() {
            self.stdout.tail_lines(n)
        } else {
            self.stderr.tail_lines(n)
        }
    }

    /// `Ok(self)` on exit code 0, else the matching [`TaskError`] with the last 20 lines of
    /// stderr (or stdout, if stderr is empty) as detail.
    pub fn into_result(self) -> Result<ProcessOutput, TaskError> {
        let detail = || self.output_tail(20);
        match self.ending {
            Ending::Exited(0) => Ok(self),
            Ending::Exited(_) if self.slurm_failure.is_some() => {
                let why = self.slurm_failure.clone().unwrap_or_default();
                Err(TaskError::failed(why).with_detail(detail()))
            }
            Ending::Exited(code) => {
                Err(TaskError::failed(format!("exited with code {code}")).with_detail(detail()))
            }
            Ending::Signaled(sig) => Err(TaskError::failed(format!(
                "killed by signal {sig}{}",
                signal_name(sig)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ))
            .with_detail(detail())),
            Ending::TimedOut(after) => Err(TaskError::TimedOut {
                after,
                detail: None,
            }
            .with_detail(detail())),
            Ending::Cancelled => Err(TaskError::Cancelled),
        }
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// Errors that prevent a process from running at all. A process that runs and fails is not an
/// error: see [`ProcessOutput::ending`].
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start `{program}`: {}", spawn_hint(source))]
    Spawn { program: String, source: io::Error },
    #[error("could not open {} for the output of `{program}`: {source}", path.display())]
    OpenOutput {
        program: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("lost track of `{program}`: {source}")]
    Wait { program: String, source: io::Error },
}

fn spawn_hint(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => {
            "no such program (is it installed and on PATH, and does the working folder exist?)"
                .to_owned()
        }
        io::ErrorKind::PermissionDenied => "permission denied (is it executable?)".to_owned(),
        _ => e.to_string(),
    }
}

impl From<ProcessError> for TaskError {
    fn from(e: ProcessError) -> Self {
        TaskError::failed(e.to_string())
    }
}
