//! A fork server: a long-lived helper process that forks one process per job.
//!
//! Why: some jobs spend most of their time starting up, not working. A Python program that
//! imports a large package pays the import in every process; a server that imports it once and
//! forks a child per job pays it once per run, while each job still runs in a process of its
//! own (its own memory, its own crash, its own kill). `export-nb` runs marimo this way.
//!
//! The server is a job of this runner like any other: it carries the session's cookie, so the
//! guardian and the second Ctrl-C reach it and everything it forked. Each forked job gets a
//! cookie of its own in its environment (inherited by whatever it executes), and is a child
//! subreaper, so its descendants stay below it in the parent tree even after `setsid`. A
//! timeout or cancel kills that tree (see `tree::Session::kill_forked`) and leaves the server
//! serving the next job. The server keeps a finished job's exit status (a zombie) until the
//! client has stopped watching it, so a pid we signal is never a reused one.
//!
//! The protocol is JSON lines over the server's stdin and stdout; [`FORK_SERVER_PY`] is its
//! server side for Python programs, described at its top.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use rustix::process::{Pid, PidfdFlags};

use super::command::{Command, Sink, shell_quote};
use super::output::{Captured, Ending, ProcessOutput};
use super::pipes::{Tail, Target, open_sink, spawn_reader};
use super::runner::CANCEL_POLL;
use super::spawn::{Leader, std_command};
use super::tree::{self, Cookie};
use crate::cancel::CancelToken;
use crate::result::TaskError;

/// The server side of the protocol for Python: a tool appends its preamble (the imports its
/// jobs share) and a call `serve(run, hello)`, where `run(args) -> int` does one job.
pub const FORK_SERVER_PY: &str = include_str!("forkserver.py");

/// How long a forked job may take to end after it was killed before we stop waiting for the
/// server to say so.
const END_WAIT: Duration = Duration::from_secs(10);

/// One job for a fork server: the server's arguments, and where the job's output goes.
#[derive(Debug, Clone)]
pub struct ForkJob {
    /// Given to the server's `run` as they are.
    pub args: Vec<String>,
    /// The job's stdout and stderr are written to these files (created or truncated).
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Kill the job's tree if it runs longer than this.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when the tree is killed.
    pub grace: Duration,
    /// How much of the end of each output file the result carries.
    pub max_captured: u64,
}

impl ForkJob {
    pub fn new(args: Vec<String>, stdout: PathBuf, stderr: PathBuf) -> Self {
        ForkJob {
            args,
            stdout,
            stderr,
            timeout: None,
            grace: Duration::from_secs(2),
            max_captured: 64 * 1024,
        }
    }
}

/// Why a fork server could not run a job, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForkServerError {
    #[error("could not start the fork server `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("the fork server `{command}` did not start: {why}")]
    NotReady { command: String, why: String },
    #[error("the fork server stopped{}", stderr_suffix(.stderr))]
    Gone { stderr: String },
    #[error("the fork server could not start the job: {0}")]
    Refused(String),
}

fn stderr_suffix(stderr: &str) -> String {
    let tail = crate::text::last_lines(stderr, 5);
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

impl From<ForkServerError> for TaskError {
    fn from(e: ForkServerError) -> Self {
        TaskError::failed(e.to_string())
    }
}

#[derive(Debug)]
enum Reply {
    Pid(i32),
    Exit(i32),
    Signal(i32),
    Refused(String),
    Gone,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<HashMap<u64, mpsc::Sender<Reply>>>,
    gone: AtomicBool,
}

impl Shared {
    fn dispatch(&self, id: u64, reply: Reply) {
        if let Some(tx) = self.pending.lock().expect("pending lock").get(&id) {
            let _ = tx.send(reply);
        }
    }

    fn close(&self) {
        self.gone.store(true, Ordering::SeqCst);
        for tx in self.pending.lock().expect("pending lock").values() {
            let _ = tx.send(Reply::Gone);
        }
    }
}

/// A running fork server. Jobs may be run from many threads at once. Dropping it ends the
/// server (end of file on its stdin, then its tree is killed if it lingers).
#[derive(Debug)]
pub struct ForkServer {
    command: String,
    requests: Mutex<Option<os_pipe::PipeWriter>>,
    shared: Arc<Shared>,
    leader: Option<Leader>,
    cookie: Cookie,
    pid: i32,
    stderr: Arc<Mutex<Tail>>,
    next_id: AtomicU64,
    hello: serde_json::Value,
}

impl ForkServer {
    /// Start `cmd` and wait up to `ready_within` for its hello. Its stdin and stdout carry the
    /// protocol; its stderr is kept (the last 64 KiB) for error messages. `cmd`'s own sinks
    /// and time limit are not used.
    pub fn start(cmd: &Command, ready_within: Duration) -> Result<ForkServer, ForkServerError> {
        let session = tree::session();
        let cookie = session.next_cookie();
        let command = cmd.display();
        let spawn_err = |source| ForkServerError::Spawn {
            command: command.clone(),
            source,
        };
        let (requests_in, requests_out) = os_pipe::pipe().map_err(spawn_err)?;
        let (replies_in, replies_out) = os_pipe::pipe().map_err(spawn_err)?;
        let program = cmd.program.to_string_lossy().into_owned();
        let (err_target, err_reader) = open_sink(
            &Sink::Capture {
                max_bytes: 64 * 1024,
            },
            &program,
        )
        .map_err(|e| spawn_err(std::io::Error::other(e.to_string())))?;
        let Target::Pipe(err_write) = err_target else {
            unreachable!("a capture sink is a pipe")
        };
        let mut server = std_command(cmd, Some(requests_in.into())).map_err(spawn_err)?;
        server
            .env(&cookie.name, &cookie.value)
            .stdout(replies_out)
            .stderr(err_write);
        let leader = session
            .spawn_registered(|| Leader::spawn(&mut server), |l| Some(l.pid()))
            .map_err(spawn_err)?;
        // Our copies of the pipes' other ends: closed, so end of file means the server is gone.
        drop(server);
        let pid = leader.pid();
        let (stderr, _done) = match err_reader {
            Some((reader, max)) => spawn_reader(reader, max),
            None => unreachable!("a capture sink has a reader"),
        };

        let shared = Arc::new(Shared::default());
        let (hello_tx, hello_rx) = mpsc::channel();
        let for_reader = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("fanout-forkserver".to_owned())
            .spawn(move || read_replies(replies_in, &for_reader, &hello_tx))
            .map_err(spawn_err)?;

        let mut server = ForkServer {
            command,
            requests: Mutex::new(Some(requests_out)),
            shared,
            leader: Some(leader),
            cookie,
            pid,
            stderr,
            next_id: AtomicU64::new(1),
            hello: serde_json::Value::Null,
        };
        match hello_rx.recv_timeout(ready_within) {
            Ok(hello) => {
                server.hello = hello;
                Ok(server)
            }
            Err(e) => Err(server.not_ready(e, ready_within)),
        }
    }

    /// Why a server that did not say hello is not ready, with what it said; it is stopped.
    fn not_ready(mut self, e: mpsc::RecvTimeoutError, ready_within: Duration) -> ForkServerError {
        let why = if matches!(e, mpsc::RecvTimeoutError::Timeout) {
            format!(
                "no answer within {}",
                crate::time::fmt_duration(ready_within)
            )
        } else {
            "it exited".to_owned()
        };
        // Stop it before reading its stderr, so what it said is all there.
        self.stop();
        let said = self.stderr_text();
        ForkServerError::NotReady {
            command: self.command.clone(),
            why: format!("{why}{}", stderr_suffix(&said)),
        }
    }

    /// What the server said when it was ready.
    pub fn hello(&self) -> &serde_json::Value {
        &self.hello
    }

    /// The server's command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The server's own pid.
    pub fn pid(&self) -> u32 {
        self.pid.cast_unsigned()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("tail lock").snapshot(true).bytes)
            .into_owned()
    }

    fn gone(&self) -> ForkServerError {
        ForkServerError::Gone {
            stderr: self.stderr_text(),
        }
    }

    /// Run one job to completion, its time limit, or `cancel`, whichever comes first. Like
    /// [`ProcessRunner::run`](super::ProcessRunner::run): the exit is data, and a timeout or
    /// cancel kills the job's whole tree.
    pub fn run(
        &self,
        job: &ForkJob,
        cancel: &CancelToken,
    ) -> Result<ProcessOutput, ForkServerError> {
        let session = tree::session();
        let cookie = session.next_cookie();
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        self.shared
            .pending
            .lock()
            .expect("pending lock")
            .insert(id, tx);
        let result = self.supervise(id, job, &cookie, &rx, cancel);
        self.shared
            .pending
            .lock()
            .expect("pending lock")
            .remove(&id);
        result
    }

    fn supervise(
        &self,
        id: u64,
        job: &ForkJob,
        cookie: &Cookie,
        replies: &mpsc::Receiver<Reply>,
        cancel: &CancelToken,
    ) -> Result<ProcessOutput, ForkServerError> {
        let session = tree::session();
        if self.shared.gone.load(Ordering::SeqCst) {
            return Err(self.gone());
        }
        let start = Instant::now();
        self.send(&job.request(id, cookie))?;
        let deadline = job.timeout.and_then(|t| start.checked_add(t));

        let mut child: Option<(i32, OwnedFd)> = None;
        let mut forced: Option<Ending> = None;
        let mut killed = false;
        let mut killed_processes = 0;
        let mut gave_up_at: Option<Instant> = None;
        let end = loop {
            let now = Instant::now();
            let slice = deadline.map_or(CANCEL_POLL, |d| {
                d.saturating_duration_since(now).min(CANCEL_POLL)
            });
            match replies.recv_timeout(slice) {
                Ok(Reply::Pid(pid)) => child = Some((pid, pidfd(pid)?)),
                Ok(Reply::Exit(code)) => break Ending::Exited(code),
                Ok(Reply::Signal(sig)) => break Ending::Signaled(sig),
                Ok(Reply::Refused(why)) => return Err(ForkServerError::Refused(why)),
                Ok(Reply::Gone) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.gone());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if forced.is_none() {
                if cancel.is_cancelled() {
                    forced = Some(Ending::Cancelled);
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    forced = Some(Ending::TimedOut(start.elapsed()));
                }
            }
            if forced.is_some()
                && !killed
                && let Some((pid, fd)) = &child
            {
                killed_processes = session.kill_forked(*pid, fd, cookie, job.grace);
                killed = true;
                gave_up_at = Some(Instant::now() + END_WAIT);
            }
            if gave_up_at.is_some_and(|t| Instant::now() >= t) {
                // Killed, but the server never said it ended: it is stuck or gone.
                return Err(self.gone());
            }
        };
        let _ = self.send(&serde_json::json!({ "reap": id }));
        if !killed {
            killed_processes = session.finish_forked(cookie, job.grace);
        }
        // The job's time, not counting the reading of its output files.
        let duration = start.elapsed();
        Ok(ProcessOutput {
            pid: child.map_or(0, |(p, _)| p.cast_unsigned()),
            ending: forced.unwrap_or(end),
            stdout: captured_file(&job.stdout, job.max_captured),
            stderr: captured_file(&job.stderr, job.max_captured),
            duration,
            killed_processes,
            command: job
                .args
                .iter()
                .map(|a| shell_quote(a).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            slurm_job_id: None,
            slurm_nodes: None,
            slurm_failure: None,
        })
    }

    fn send(&self, message: &serde_json::Value) -> Result<(), ForkServerError> {
        let mut line = serde_json::to_vec(message).expect("requests serialize");
        line.push(b'\n');
        let mut requests = self.requests.lock().expect("requests lock");
        let Some(pipe) = requests.as_mut() else {
            return Err(self.gone());
        };
        pipe.write_all(&line).map_err(|_| self.gone())
    }

    /// End the server: end of file on its stdin, a moment to exit, then its tree is killed.
    fn stop(&mut self) {
        self.requests.lock().expect("requests lock").take();
        let Some(mut leader) = self.leader.take() else {
            return;
        };
        let session = tree::session();
        let exited = leader
            .wait_until(Instant::now() + Duration::from_secs(2))
            .unwrap_or(false);
        if exited {
            session.unregister(self.pid);
            session.finish(&self.cookie, self.pid, Duration::from_secs(1));
        } else {
            // Not waited for yet: the server's group id is pinned.
            session.kill_tree(
                &self.cookie,
                tree::JobGroup::Pinned(self.pid),
                Duration::from_secs(1),
            );
            let _ = leader.wait();
            session.unregister(self.pid);
        }
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Read the server's replies until end of file: the hello first, then job replies by id.
fn read_replies(
    pipe: os_pipe::PipeReader,
    shared: &Shared,
    hello: &mpsc::Sender<serde_json::Value>,
) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(h) = msg.get("hello") {
            let _ = hello.send(h.clone());
            continue;
        }
        let Some(id) = msg.get("id").and_then(serde_json::Value::as_u64) else {
            continue;
        };
        let int = |key: &str| {
            msg.get(key)
                .and_then(serde_json::Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
        };
        let reply = if let Some(pid) = int("pid") {
            Reply::Pid(pid)
        } else if let Some(code) = int("exit") {
            Reply::Exit(code)
        } else if let Some(sig) = int("signal") {
            Reply::Signal(sig)
        } else {
            Reply::Refused(
                msg.get("error")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("an answer it could not read")
                    .to_owned(),
            )
        };
        shared.dispatch(id, reply);
    }
    shared.close();
}

impl ForkJob {
    /// The server's request to fork this job, the cookie in its environment.
    fn request(&self, id: u64, cookie: &Cookie) -> serde_json::Value {
        serde_json::json!({
            "id": id,
            "args": self.args,
            "env": { cookie.name.clone(): cookie.value.clone() },
            "stdout": self.stdout,
            "stderr": self.stderr,
        })
    }
}

/// A pidfd on the server's child `pid`: it stays that process whatever reaps it.
fn pidfd(pid: i32) -> Result<OwnedFd, ForkServerError> {
    let p = Pid::from_raw(pid).ok_or_else(|| ForkServerError::Refused(format!("bad pid {pid}")))?;
    rustix::process::pidfd_open(p, PidfdFlags::empty())
        .map_err(|e| ForkServerError::Refused(format!("cannot watch pid {pid}: {e}")))
}

/// The end of an output file, as a captured stream.
fn captured_file(path: &std::path::Path, max: u64) -> Captured {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    Captured {
        bytes: crate::fsutil::read_tail(path, max).into_bytes(),
        dropped_bytes: len.saturating_sub(max),
        complete: true,
    }
}
