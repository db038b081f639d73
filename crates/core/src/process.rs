//! The subprocess runner: the only module that starts processes or sends signals.
//!
//! [`ProcessRunner::run`] starts a [`Command`] with duct (stdin from `/dev/null`, stdout and
//! stderr captured as a bounded tail, written to a file, or dropped), waits for it with an
//! optional timeout while watching a [`CancelToken`], and returns the exit as data
//! ([`ProcessOutput`]). A timeout or cancel kills the job's *whole* process tree, including
//! descendants that started their own session; see `tree` for how and why. A job's leftovers
//! are also killed when its main process exits on its own. If the tool itself dies, a guardian
//! process kills every job's whole tree (in tools that call [`init`] first thing in `main`);
//! without one, the kernel's parent-death signal kills at least the direct children.

mod forkserver;
mod guardian;
mod slurm;
mod sys;
mod tree;

pub use forkserver::{FORK_SERVER_PY, ForkJob, ForkServer, ForkServerError};
pub use guardian::{GUARDIAN_ENV, init};
pub use slurm::{Slurm, SlurmError};

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

pub use tree::JOB_ENV_PREFIX;
use tree::JobGroup;

use crate::TaskError;
use crate::cancel::CancelToken;

/// Where a stream of the child goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// `/dev/null`.
    Null,
    /// Kept in memory; only the last `max_bytes` bytes are kept.
    Capture { max_bytes: usize },
    /// Written to this file, truncating it first. The child writes to the file directly.
    File(PathBuf),
    /// Appended to this file (a retry adds to the first attempt's log).
    AppendFile(PathBuf),
}

impl Sink {
    /// Keep the last 64 KiB.
    pub fn tail() -> Self {
        Sink::Capture {
            max_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stderr {
    Sink(Sink),
    ToStdout,
}

/// Where a command runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Launcher {
    /// Here, as a child process of this program.
    #[default]
    Local,
    /// On a Slurm cluster, as a job step started with `srun` (see [`Slurm`]).
    Slurm(Slurm),
}

impl Launcher {
    /// The values a tool's `--backend` flag takes.
    pub const NAMES: [&'static str; 2] = ["local", "slurm"];

    /// The launcher a tool's `--backend NAME` and `--slurm-arg ARG...` flags ask for, checked
    /// before anything runs (see [`Slurm::check`]).
    ///
    /// # Errors
    /// An unknown backend, `--slurm-arg` without `--backend slurm`, or a Slurm that cannot be
    /// used here.
    pub fn from_flags(backend: &str, slurm_args: &[String]) -> Result<Launcher, SlurmError> {
        match backend {
            "local" if slurm_args.is_empty() => Ok(Launcher::Local),
            "local" => Err(SlurmError::ArgsWithoutSlurm(slurm_args.join(" "))),
            "slurm" => {
                let slurm = Slurm {
                    args: slurm_args.to_vec(),
                    ..Slurm::default()
                };
                slurm.check()?;
                Ok(Launcher::Slurm(slurm))
            }
            other => Err(SlurmError::UnknownBackend(other.to_owned())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Launcher::Local => "local",
            Launcher::Slurm(_) => "slurm",
        }
    }
}

/// A command to run: program, arguments, environment, folder, output sinks, time limit, and
/// where it runs.
#[derive(Debug, Clone)]
pub struct Command {
    program: OsString,
    /// A name for the job on a cluster; the program's file name when unset.
    name: Option<String>,
    launcher: Launcher,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    cwd: Option<PathBuf>,
    stdout: Sink,
    stderr: Stderr,
    timeout: Option<Duration>,
    grace: Duration,
}

impl Command {
    /// Run `program` (looked up on `PATH` unless it contains a `/`). Output is captured as a
    /// 64 KiB tail per stream; no time limit; 2 s between SIGTERM and SIGKILL.
    pub fn new(program: impl Into<OsString>) -> Self {
        Command {
            program: program.into(),
            name: None,
            launcher: Launcher::Local,
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            stdout: Sink::tail(),
            stderr: Stderr::Sink(Sink::tail()),
            timeout: None,
            grace: Duration::from_secs(2),
        }
    }

    /// `sh -c script`.
    pub fn shell(script: impl Into<OsString>) -> Self {
        Command::new("sh").arg("-c").arg(script)
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<A: Into<OsString>>(mut self, args: impl IntoIterator<Item = A>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn env_remove(mut self, name: impl Into<OsString>) -> Self {
        self.env_remove.push(name.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdout(mut self, sink: Sink) -> Self {
        self.stdout = sink;
        self
    }

    pub fn stderr(mut self, sink: Sink) -> Self {
        self.stderr = Stderr::Sink(sink);
        self
    }

    /// Send stderr wherever stdout goes (one interleaved log).
    pub fn stderr_to_stdout(mut self) -> Self {
        self.stderr = Stderr::ToStdout;
        self
    }

    /// Kill the tree if it runs longer than this. `None`: no limit.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between SIGTERM and SIGKILL when the tree is killed.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Run it there (default: [`Launcher::Local`]).
    pub fn launcher(mut self, launcher: Launcher) -> Self {
        self.launcher = launcher;
        self
    }

    /// The job's name on a cluster (the task's name, say).
    pub fn job_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    fn job_name_or_program(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            Path::new(&self.program)
                .file_name()
                .map_or_else(|| "job".to_owned(), |n| n.to_string_lossy().into_owned())
        })
    }

    pub fn program(&self) -> &OsStr {
        &self.program
    }

    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The command line as a shell would accept it, for `--dry-run` and error messages.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(&a.to_string_lossy()).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `word` as one word for `sh`: as it is when it holds only characters no shell treats
/// specially, else in single quotes (a `'` inside written `'\''`).
pub fn shell_quote(word: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

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
        let text = self.text();
        let lines: Vec<&str> = text.trim_end().lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
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
    /// Why `srun` itself failed (the scheduler refused the job, a node failed), read from its
    /// stderr wherever that went; the task's error then says so instead of "exited with code 1".
    pub slurm_failure: Option<String>,
}

impl ProcessOutput {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.ending == Ending::Exited(0)
    }

    /// `Ok(self)` on exit code 0, else the matching [`TaskError`] with the last 20 lines of
    /// stderr (or stdout, if stderr is empty) as detail.
    pub fn into_result(self) -> Result<ProcessOutput, TaskError> {
        let detail = || {
            if self.stderr.bytes.is_empty() {
                self.stdout.tail_lines(20)
            } else {
                self.stderr.tail_lines(20)
            }
        };
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

/// SIGKILL every process of every job this program started. For the second Ctrl-C.
pub fn kill_all_jobs() {
    tree::session().kill_all();
}

/// Runs commands as jobs whose whole process tree it owns (the local launcher).
#[derive(Debug, Clone, Default)]
pub struct ProcessRunner;

/// How long to wait for a stream to close after the process tree is gone before giving up on
/// the rest of its output.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How often a waiting job looks at its cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(50);

impl ProcessRunner {
    /// A runner. The first one makes this process a child subreaper and, if [`init`] was
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
            Launcher::Local => cmd,
            Launcher::Slurm(slurm) => {
                session.note_slurm();
                let marker = format!("{}={}", cookie.name, cookie.value);
                slurm_cmd = slurm.wrap(cmd, &marker);
                on_slurm = Some((cmd.job_name_or_program(), marker));
                &slurm_cmd
            }
        };
        let program = cmd.program.to_string_lossy().into_owned();
        // Where this attempt's output starts in an appended log: srun's failure is read from
        // this attempt's lines only, not from an earlier attempt's.
        let log_start = log_file(cmd).map_or(0, |p| std::fs::metadata(p).map_or(0, |m| m.len()));

        let base = base_expression(cmd).env(&cookie.name, &cookie.value);
        let (expr, streams) = wire_streams(cmd, base, &program)?;

        let start = Instant::now();
        let handle = session
            .spawn_registered(
                || expr.start(),
                |h| h.pids().first().map(|&p| p.cast_signed()),
            )
            .map_err(|source| ProcessError::Spawn {
                program: program.clone(),
                source,
            })?;
        // The expression holds our copies of the pipes' write ends; drop them so the readers
        // see end-of-file once the tree is gone.
        drop(expr);
        let pid = handle.pids().first().copied().unwrap_or(0);
        // The child leads its own process group (see sys.rs), so its pid is the group's id.
        let group = pid.cast_signed();
        // A limit too far away to be an instant is no limit (the tools refuse those earlier).
        let deadline = cmd.timeout.and_then(|t| start.checked_add(t));

        let mut killed_processes = 0;
        let mut forced: Option<Ending> = None;
        let wait_result = loop {
            let now = Instant::now();
            let slice_end = deadline.map_or(now + CANCEL_POLL, |d| d.min(now + CANCEL_POLL));
            match handle.wait_deadline(slice_end) {
                Ok(Some(_)) => break Ok(()),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            let ending = if cancel.is_cancelled() {
                Ending::Cancelled
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Ending::TimedOut(start.elapsed())
            } else {
                continue;
            };
            // Not reaped yet (wait_deadline saw it running): the group's id is pinned.
            killed_processes = session.kill_tree(&cookie, JobGroup::Pinned(group), cmd.grace);
            forced = Some(ending);
            break handle.wait().map(|_| ());
        };
        let status = handle.try_wait().ok().flatten().map(|o| o.status);
        session.unregister(group);
        drop(handle);
        if let Err(source) = wait_result {
            session.kill_tree(&cookie, JobGroup::Loose(group), Duration::ZERO);
            return Err(ProcessError::Wait { program, source });
        }
        if forced.is_none() {
            killed_processes = session.finish(&cookie, group, cmd.grace);
        }
        let duration = start.elapsed();
        let (stdout, stderr) = streams.collect();
        let slurm_failure = if on_slurm.is_some() && status.is_some_and(|s| !s.success()) {
            slurm::failure(&stderr_text(cmd, &stderr, log_start))
        } else {
            None
        };
        // A job the scheduler refused never existed: nothing to look up or cancel.
        let slurm_job_id = on_slurm
            .filter(|_| !slurm_failure.as_deref().is_some_and(slurm::refused))
            .and_then(|(name, marker)| slurm::job_id(&name, &marker));
        if let (Some(id), Some(_)) = (slurm_job_id, &forced) {
            // srun cancels its step when it gets SIGTERM; if it had to be SIGKILLed, or the job
            // was still waiting for resources, make sure the cluster lets go of it too.
            slurm::cancel(id);
        }
        let ending = forced.unwrap_or_else(|| {
            status.map_or(Ending::Signaled(0), |s| match (s.code(), s.signal()) {
                (Some(code), _) => Ending::Exited(code),
                (None, Some(sig)) => Ending::Signaled(sig),
                (None, None) => Ending::Signaled(0),
            })
        });
        Ok(ProcessOutput {
            pid,
            ending,
            stdout,
            stderr,
            duration,
            killed_processes,
            command: cmd.display(),
            slurm_job_id,
            slurm_failure,
        })
    }
}

fn base_expression(cmd: &Command) -> duct::Expression {
    expression_with_stdin(cmd, None)
}

/// The command as a duct expression, its stdin from `stdin` (else `/dev/null`). duct lets the
/// innermost redirection win, so stdin is chosen here, not wrapped around the result.
#[expect(
    clippy::disallowed_methods,
    reason = "this module is the one place that starts subprocesses"
)]
fn expression_with_stdin(cmd: &Command, stdin: Option<os_pipe::PipeReader>) -> duct::Expression {
    let program = resolve(cmd).map_or(Cow::Borrowed(cmd.program.as_os_str()), |p| {
        Cow::Owned(p.into_os_string())
    });
    let expr = duct::cmd(&*program, &cmd.args);
    let expr = match stdin {
        Some(pipe) => expr.stdin_file(pipe),
        None => expr.stdin_null(),
    };
    let mut expr = expr.unchecked().before_spawn(sys::configure_child);
    if let Some(dir) = &cmd.cwd {
        expr = expr.dir(dir);
    }
    for name in &cmd.env_remove {
        expr = expr.env_remove(name);
    }
    for (name, value) in &cmd.env {
        expr = expr.env(name, value);
    }
    expr
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

/// The reading side of a job's captured streams.
struct Streams {
    stdout: Option<Arc<Mutex<Tail>>>,
    stderr: Option<Arc<Mutex<Tail>>>,
    done: Vec<mpsc::Receiver<()>>,
}

impl Streams {
    /// What the streams hold once the tree is gone, waiting a bounded time for the pipes to
    /// close (an escaped process may hold one open forever).
    fn collect(self) -> (Captured, Captured) {
        let deadline = Instant::now() + DRAIN_GRACE;
        let complete = self.done.iter().all(|done| {
            done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok()
        });
        let take = |tail: Option<Arc<Mutex<Tail>>>| {
            tail.map(|t| t.lock().expect("tail lock").snapshot(complete))
                .unwrap_or_default()
        };
        (take(self.stdout), take(self.stderr))
    }
}

/// Point the child's stdout and stderr at their sinks; start a reader thread per captured pipe.
fn wire_streams(
    cmd: &Command,
    mut expr: duct::Expression,
    program: &str,
) -> Result<(duct::Expression, Streams), ProcessError> {
    let mut streams = Streams {
        stdout: None,
        stderr: None,
        done: Vec::new(),
    };
    let mut capture = |reader: Option<(os_pipe::PipeReader, usize)>| {
        reader.map(|(r, max)| {
            let (tail, done) = spawn_reader(r, max);
            streams.done.push(done);
            tail
        })
    };
    let err = match &cmd.stderr {
        Stderr::ToStdout => {
            expr = expr.stderr_to_stdout();
            None
        }
        Stderr::Sink(sink) => {
            let (target, reader) = open_sink(sink, program)?;
            expr = match target {
                Target::Null => expr.stderr_null(),
                Target::File(f) => expr.stderr_file(f),
                Target::Pipe(w) => expr.stderr_file(w),
            };
            capture(reader)
        }
    };
    // duct applies the outermost redirection first, so stdout is wired after (outside) stderr:
    // `stderr_to_stdout` then joins the stream stdout is about to become.
    let (target, reader) = open_sink(&cmd.stdout, program)?;
    expr = match target {
        Target::Null => expr.stdout_null(),
        Target::File(f) => expr.stdout_file(f),
        Target::Pipe(w) => expr.stdout_file(w),
    };
    let out = capture(reader);
    streams.stdout = out;
    streams.stderr = err;
    Ok((expr, streams))
}

enum Target {
    Null,
    File(File),
    Pipe(os_pipe::PipeWriter),
}

fn open_sink(
    sink: &Sink,
    program: &str,
) -> Result<(Target, Option<(os_pipe::PipeReader, usize)>), ProcessError> {
    let open = |path: &Path, append: bool| {
        OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|source| ProcessError::OpenOutput {
                program: program.to_owned(),
                path: path.to_owned(),
                source,
            })
    };
    Ok(match sink {
        Sink::Null => (Target::Null, None),
        Sink::File(path) => (Target::File(open(path, false)?), None),
        Sink::AppendFile(path) => (Target::File(open(path, true)?), None),
        Sink::Capture { max_bytes } => {
            let (r, w) = os_pipe::pipe().map_err(|source| ProcessError::Spawn {
                program: program.to_owned(),
                source,
            })?;
            (Target::Pipe(w), Some((r, *max_bytes)))
        }
    })
}

/// The last bytes of a stream, bounded.
#[derive(Debug, Default)]
struct Tail {
    buf: Vec<u8>,
    max: usize,
    dropped: u64,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        // Trim in amortised steps: only when the buffer holds twice what it keeps.
        if self.buf.len() > self.max.saturating_mul(2).max(8192) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.max {
            let cut = self.buf.len() - self.max;
            self.buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    fn snapshot(&self, complete: bool) -> Captured {
        let keep = self.buf.len().min(self.max);
        let cut = self.buf.len() - keep;
        Captured {
            bytes: self.buf[cut..].to_vec(),
            dropped_bytes: self.dropped + cut as u64,
            complete,
        }
    }
}

/// Read a pipe on its own thread, so a full pipe never blocks the child and a descendant that
/// keeps the pipe open never blocks us: we wait for `done` only for a bounded time.
fn spawn_reader(
    mut reader: os_pipe::PipeReader,
    max: usize,
) -> (Arc<Mutex<Tail>>, mpsc::Receiver<()>) {
    let tail = Arc::new(Mutex::new(Tail {
        buf: Vec::new(),
        max,
        dropped: 0,
    }));
    let (done_tx, done_rx) = mpsc::channel();
    let for_thread = Arc::clone(&tail);
    std::thread::Builder::new()
        .name("fanout-pipe".to_owned())
        .spawn(move || {
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => for_thread.lock().expect("tail lock").push(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done_tx.send(());
        })
        .expect("spawn a pipe reader thread");
    (tail, done_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_and_counts_the_rest() {
        let mut t = Tail {
            max: 10,
            ..Tail::default()
        };
        for i in 0..10_000u32 {
            t.push(format!("{:04}", i % 10_000).as_bytes());
        }
        let c = t.snapshot(true);
        assert_eq!(c.bytes, b"9799989999");
        assert_eq!(c.dropped_bytes, 40_000 - 10);
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let c = Command::new("uvx").args(["marimo", "export", "my notebook.py", "it's"]);
        assert_eq!(c.display(), r"uvx marimo export 'my notebook.py' 'it'\''s'");
    }

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
