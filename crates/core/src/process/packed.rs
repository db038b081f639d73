//! Many tasks in one Slurm allocation ([`Allocation`]): one scheduler job for a whole batch,
//! and a task costs what a local task costs.
//!
//! Each slot of the allocation is a *worker*: a job step (`srun --exact`, one task, where
//! Slurm finds room) that runs this same program as a worker (see [`serve_worker_if_asked`]).
//! A worker's first line says where it runs; until then no task has started, so a worker that
//! cannot start (its node is down) is started again elsewhere, and that node avoided. A task is
//! one JSON line to a worker's stdin ([`Request`]: the [`Command`] as data); the worker runs it
//! there with its own [`ProcessRunner`](super::ProcessRunner), which owns the task's whole tree
//! and enforces its time limit, and answers with one JSON line ([`Response`]: how it ended, its
//! captured output). Output sent to files goes to the files directly: the nodes share the file
//! system.
//!
//! At most [`Allocation::slots`] workers live at once; a task waits for a free one. A worker
//! whose step ends without an answer (its node failed, the allocation ended) fails the task it
//! had, in srun's words, and the slot starts a new worker for the next task; an allocation that
//! ended fails every later task at once, saying why. Cancelling a task kills its worker's step.
//!
//! [`serve_worker_if_asked`]: super::serve_worker_if_asked
//! [`Request`]: super::wire::Request
//! [`Response`]: super::wire::Response

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::allocation::{Allocation, Worker, wait_until};
use super::command::Command;
use super::output::{Captured, Ending, ProcessError, ProcessOutput};
use super::slurm;
use super::wire::{BEAT, Hello, SILENCE, WORKER_ARG, WORKER_ENV, request, response_output};
use crate::cancel::CancelToken;

/// How long a worker step may take to start before the task fails, saying what srun said
/// (a busy allocation, a node that does not answer).
const STEP_START_LIMIT: Duration = Duration::from_secs(120);

/// Lines a worker step may print before its first (a task prolog's), skipped.
const PREAMBLE_LINES: usize = 64;

/// Why a task did not get a worker.
enum NoWorker {
    Cancelled,
    Failed(String),
}

impl Allocation {
    /// Run `cmd` on a worker of the allocation, to completion, its time limit, or `cancel`.
    pub(crate) fn run(
        &self,
        cmd: &Command,
        cancel: &CancelToken,
    ) -> Result<ProcessOutput, ProcessError> {
        let start = Instant::now();
        let ended = |ending, node: Option<String>, failure: Option<String>| ProcessOutput {
            pid: 0,
            ending,
            stdout: Captured::default(),
            stderr: Captured::default(),
            duration: start.elapsed(),
            killed_processes: 0,
            command: cmd.display(),
            slurm_job_id: Some(self.job_id),
            slurm_nodes: node,
            slurm_failure: failure,
        };
        let (worker, answer) = match self.hand_over(cmd, cancel) {
            Ok(taken) => taken,
            Err(NoWorker::Cancelled) => return Ok(ended(Ending::Cancelled, None, None)),
            Err(NoWorker::Failed(why)) => return Ok(ended(Ending::Exited(1), None, Some(why))),
        };
        let node = Some(worker.node.clone());
        let why = match answer {
            Line::Text(text) => match serde_json::from_str::<super::wire::Response>(&text) {
                Ok(r) => {
                    self.give_back(worker);
                    if let Some(error) = r.error {
                        return Err(ProcessError::Spawn {
                            program: cmd.program.to_string_lossy().into_owned(),
                            source: std::io::Error::other(error),
                        });
                    }
                    return Ok(response_output(r, cmd, self.job_id));
                }
                Err(e) => format!("its worker answered what is not an answer: {e}"),
            },
            Line::Cancelled => {
                self.end(worker);
                return Ok(ended(Ending::Cancelled, node, None));
            }
            Line::Late => {
                self.avoid(worker.node.clone());
                format!(
                    "node {} of allocation {} stopped answering: no word from the worker \
                     running it for {} s (the node died, or its network did)",
                    worker.node,
                    self.job_id,
                    SILENCE.as_secs()
                )
            }
            Line::Gone => self.why_gone(&worker),
        };
        self.end(worker);
        Ok(ended(Ending::Exited(1), node, Some(why)))
    }

    /// Give `cmd` to a worker, and wait for its answer. A worker idle for a while is asked
    /// first whether it is still there (an empty line, answered at once): one whose node died
    /// meanwhile never gets the task (and its node is avoided), and the next worker does.
    fn hand_over(&self, cmd: &Command, cancel: &CancelToken) -> Result<(Worker, Line), NoWorker> {
        let line = serde_json::to_string(&request(cmd)).expect("a request serializes");
        // Each try ends a worker that did not answer: at most every slot's, and a few new ones.
        for _ in 0..self.slots + 3 {
            let mut worker = self.take_worker(cancel)?;
            if worker.idle_since.elapsed() >= BEAT {
                let pinged = writeln!(worker.stdin).and_then(|()| worker.stdin.flush());
                let pong = match pinged {
                    Ok(()) => wait_line(&worker, cancel, Some(Instant::now() + SILENCE)),
                    Err(_) => Line::Gone,
                };
                match pong {
                    Line::Text(_) => {}
                    Line::Cancelled => {
                        // Its answer still to come: not a worker to hand out again.
                        self.end(worker);
                        return Err(NoWorker::Cancelled);
                    }
                    Line::Late => {
                        self.avoid(worker.node.clone());
                        self.end(worker);
                        continue;
                    }
                    Line::Gone => {
                        self.end(worker);
                        continue;
                    }
                }
            }
            if writeln!(worker.stdin, "{line}")
                .and_then(|()| worker.stdin.flush())
                .is_err()
            {
                self.end(worker);
                continue;
            }
            let answer = wait_answer(&worker, cancel);
            return Ok((worker, answer));
        }
        Err(NoWorker::Failed(format!(
            "no worker of allocation {} answered: each one tried had ended or was silent",
            self.job_id
        )))
    }

    /// A worker for one task: an idle one, else a new one once a slot is free.
    fn take_worker(&self, cancel: &CancelToken) -> Result<Worker, NoWorker> {
        let mut slots = self.state.lock().expect("allocation lock");
        loop {
            if let Some(why) = &slots.ended {
                return Err(NoWorker::Failed(why.clone()));
            }
            while let Some(mut worker) = slots.idle.pop() {
                if alive(&mut worker) {
                    slots.in_use += 1;
                    return Ok(worker);
                }
                // Its step ended while idle (its node failed): no task was lost.
                drop(slots);
                end_worker(worker);
                slots = self.state.lock().expect("allocation lock");
            }
            if slots.in_use < self.slots {
                slots.in_use += 1;
                drop(slots);
                let started = self.start_worker(cancel);
                if started.is_err() {
                    self.free_slot();
                }
                return started;
            }
            if cancel.is_cancelled() {
                return Err(NoWorker::Cancelled);
            }
            slots = (self.freed)
                .wait_timeout(slots, Duration::from_millis(50))
                .expect("allocation lock")
                .0;
        }
    }

    /// A worker back to the idle ones, its slot free for the next task.
    fn give_back(&self, mut worker: Worker) {
        worker.idle_since = Instant::now();
        let mut slots = self.state.lock().expect("allocation lock");
        slots.idle.push(worker);
        slots.in_use -= 1;
        self.freed.notify_one();
    }

    /// End a task's worker; its slot is free.
    fn end(&self, worker: Worker) {
        end_worker(worker);
        self.free_slot();
    }

    fn free_slot(&self) {
        self.state.lock().expect("allocation lock").in_use -= 1;
        self.freed.notify_one();
    }

    /// A new worker step, started where Slurm finds room; a node where it cannot start is
    /// avoided by the next try, until no node is left.
    fn start_worker(&self, cancel: &CancelToken) -> Result<Worker, NoWorker> {
        let (mut said, mut before) = (String::new(), String::new());
        for _ in 0..=self.nodes.len() {
            let avoid = self
                .state
                .lock()
                .expect("allocation lock")
                .bad_nodes
                .clone();
            if avoid.len() >= self.nodes.len() {
                break;
            }
            let mut worker = self.spawn_step(&avoid).map_err(|e| {
                NoWorker::Failed(format!("could not run srun for a worker step: {e}"))
            })?;
            let deadline = Instant::now() + STEP_START_LIMIT;
            let (first, printed) = hello_line(&worker, cancel, deadline);
            match first {
                Line::Text(text) => {
                    if let Ok(hello) = serde_json::from_str::<Hello>(&text) {
                        (worker.node, worker.step) = (hello.node, hello.step);
                        worker.idle_since = Instant::now();
                        return Ok(worker);
                    }
                    end_worker(worker);
                    return Err(NoWorker::Failed(format!(
                        "a worker step of allocation {} did not start as one; it said: {text}",
                        self.job_id
                    )));
                }
                Line::Cancelled => {
                    end_worker(worker);
                    return Err(NoWorker::Cancelled);
                }
                Line::Late => {
                    let said = last_said(&worker);
                    end_worker(worker);
                    return Err(NoWorker::Failed(format!(
                        "no worker step started within {} s in allocation {} (are its CPUs \
                         taken by other steps?); srun said: {said}{printed}",
                        STEP_START_LIMIT.as_secs(),
                        self.job_id
                    )));
                }
                Line::Gone => {
                    said = last_said(&worker);
                    before = printed;
                    end_worker(worker);
                    if let Some(why) = self.ended_why() {
                        return Err(NoWorker::Failed(why));
                    }
                    match failed_node(&said) {
                        Some(node) => self.avoid(node),
                        None => break,
                    }
                }
            }
        }
        Err(NoWorker::Failed(format!(
            "no worker step could start in allocation {}; srun said: {said}{before}",
            self.job_id
        )))
    }

    fn avoid(&self, node: String) {
        if node.is_empty() {
            return;
        }
        let mut slots = self.state.lock().expect("allocation lock");
        if !slots.bad_nodes.contains(&node) {
            slots.bad_nodes.push(node);
        }
    }

    /// srun for a worker step (not on the `avoid` nodes), its stdout read by a thread of its
    /// own, its stderr kept.
    fn spawn_step(&self, avoid: &[String]) -> std::io::Result<Worker> {
        #[expect(
            clippy::disallowed_methods,
            reason = "the process module starts the worker steps, like every other process"
        )]
        let mut cmd = std::process::Command::new("srun");
        cmd.arg(format!("--jobid={}", self.job_id))
            .args(["--exact", "--nodes=1", "--ntasks=1"])
            .arg(format!("--cpus-per-task={}", self.cpus_per_task))
            .arg("--job-name=fanout-worker");
        if !avoid.is_empty() {
            cmd.arg(format!("--exclude={}", avoid.join(",")));
        }
        let mut srun = cmd
            .args(&self.step_args)
            .arg(&self.program)
            // Marked on its command line, which `--export` cannot take away, and in its
            // environment, which its tasks do not inherit.
            .arg(WORKER_ARG)
            .env(WORKER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let stdin = srun.stdin.take().expect("piped stdin");
        let stdout = srun.stdout.take().expect("piped stdout");
        let stderr = srun.stderr.take().expect("piped stderr");
        let (tx, answers) = mpsc::channel();
        let said = Arc::new(Mutex::new(String::new()));
        let keep = Arc::clone(&said);
        let stderr_read = std::thread::Builder::new()
            .name("fanout-worker-stderr".to_owned())
            .spawn(move || keep_tail(stderr, &keep))?;
        std::thread::Builder::new()
            .name("fanout-worker-reader".to_owned())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(Some(line)).is_err() {
                        return;
                    }
                }
                // Its stdout closed: what srun said about it is read to the end first.
                let _ = stderr_read.join();
                let _ = tx.send(None);
            })?;
        Ok(Worker {
            srun,
            stdin,
            answers,
            node: String::new(),
            step: String::new(),
            said,
            idle_since: Instant::now(),
        })
    }

    /// Why a worker's step ended without an answer: the allocation is over, else srun's words.
    fn why_gone(&self, worker: &Worker) -> String {
        if let Some(why) = self.ended_why() {
            return why;
        }
        let said = last_said(worker);
        format!(
            "the Slurm step running it (allocation {}, node {}) ended without an answer: its \
             node failed, or the step was cancelled{}",
            self.job_id,
            worker.node,
            if said.is_empty() {
                String::new()
            } else {
                format!("; srun said: {said}")
            }
        )
    }

    /// If the allocation is over (Slurm says so): why, remembered for every later task.
    fn ended_why(&self) -> Option<String> {
        if let Some(why) = &self.state.lock().expect("allocation lock").ended {
            return Some(why.clone());
        }
        let state = slurm::query(&[
            "squeue",
            "--noheader",
            "--states=all",
            "--format=%T",
            "--jobs",
            &self.job_id.to_string(),
        ])?;
        let state = state.trim();
        let over = [
            "COMPLETING",
            "COMPLETED",
            "CANCELLED",
            "TIMEOUT",
            "FAILED",
            "NODE_FAIL",
            "PREEMPTED",
            "BOOT_FAIL",
            "DEADLINE",
            "OUT_OF_MEMORY",
        ];
        if !over.contains(&state) {
            return None;
        }
        let hint = match state {
            "TIMEOUT" => {
                ": it reached its time limit; ask for a longer one with --slurm-arg=--time=..."
            }
            _ => "",
        };
        let why = format!("Slurm ended allocation {} ({state}){hint}", self.job_id);
        self.state.lock().expect("allocation lock").ended = Some(why.clone());
        Some(why)
    }
}

/// What a worker's stdout gave next.
enum Line {
    Text(String),
    /// Its stdout closed.
    Gone,
    Cancelled,
    /// The deadline passed first.
    Late,
}

fn wait_line(worker: &Worker, cancel: &CancelToken, deadline: Option<Instant>) -> Line {
    loop {
        if cancel.is_cancelled() {
            return Line::Cancelled;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Line::Late;
        }
        match worker.answers.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(line)) => return Line::Text(line),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => return Line::Gone,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// The answer of a worker that took a task: its line, or why there is none. Its beats keep it
/// waiting; [`SILENCE`] without one is [`Line::Late`].
fn wait_answer(worker: &Worker, cancel: &CancelToken) -> Line {
    loop {
        match wait_line(worker, cancel, Some(Instant::now() + SILENCE)) {
            Line::Text(beat) if beat.is_empty() => {}
            other => return other,
        }
    }
}

/// Whether an idle worker's step still runs and has said nothing since its last answer.
fn alive(worker: &mut Worker) -> bool {
    matches!(worker.srun.try_wait(), Ok(None))
        && matches!(worker.answers.try_recv(), Err(mpsc::TryRecvError::Empty))
}

/// A new worker's first line of ours, past up to [`PREAMBLE_LINES`] lines that are not (a
/// site's `TaskProlog`, or `srun --task-prolog`, may `print` lines into every task's output
/// before the task starts), else the last line read; and the lines skipped, for the error when
/// no first line comes.
fn hello_line(worker: &Worker, cancel: &CancelToken, deadline: Instant) -> (Line, String) {
    let mut skipped = Vec::new();
    for _ in 0..PREAMBLE_LINES {
        match wait_line(worker, cancel, Some(deadline)) {
            Line::Text(text) if serde_json::from_str::<Hello>(&text).is_err() => {
                skipped.push(text);
            }
            other => return (other, printed(&skipped)),
        }
    }
    let last = wait_line(worker, cancel, Some(deadline));
    (last, printed(&skipped))
}

/// What a worker printed before its first line, for an error: `; before that it printed: ...`.
fn printed(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = lines
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    format!("; it printed: {}", shown.join(" / "))
}

/// The last lines srun wrote to its stderr, on one line.
fn last_said(worker: &Worker) -> String {
    let said = worker.said.lock().expect("said lock");
    said.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Read `stderr` to its end, keeping its last 2 KB in `keep` as it comes.
fn keep_tail(mut stderr: impl std::io::Read, keep: &Mutex<String>) {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if all.len() > 4096 {
            all.drain(..all.len() - 2048);
        }
        let tail = &all[all.len().saturating_sub(2048)..];
        *keep.lock().expect("said lock") = String::from_utf8_lossy(tail).into_owned();
    }
}

/// The node srun names as the one where a step could not start (`... on node NAME: ...`).
fn failed_node(said: &str) -> Option<String> {
    let (_, rest) = said.split_once(" on node ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Kill a worker's step: SIGTERM to srun (which cancels the step), then, if it lingers,
/// SIGKILL and `scancel` of the step.
fn end_worker(worker: Worker) {
    let Worker { mut srun, step, .. } = worker;
    if let Some(pid) = rustix::process::Pid::from_raw(srun.id().cast_signed()) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    wait_until(&mut srun, Instant::now() + Duration::from_secs(5), &step);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node srun says a step failed on, from its words.
    #[test]
    fn the_failed_node_is_read_from_srun() {
        let said = "srun: error: Task launch for StepId=12.3 failed on node fanout-n2: \
                    Communication connection failure";
        assert_eq!(failed_node(said).as_deref(), Some("fanout-n2"));
        assert_eq!(failed_node("srun: error: something else"), None);
    }

    /// The tail of a long stderr is kept, whole lines at the end.
    #[test]
    fn the_end_of_what_srun_said_is_kept() {
        let keep = Mutex::new(String::new());
        let text = format!("{}\nsrun: error: the reason\n", "x".repeat(10_000));
        keep_tail(text.as_bytes(), &keep);
        let kept = keep.lock().unwrap().clone();
        assert!(kept.len() <= 2048);
        assert!(kept.ends_with("srun: error: the reason\n"), "{kept}");
    }
}
