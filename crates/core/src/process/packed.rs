//! Many tasks in one Slurm allocation ([`Allocation`]): one scheduler job for a whole batch,
//! and a task costs what a local task costs.
//!
//! The allocation is asked for once (`salloc --no-shell`, sized to the pool's slots), or is
//! the one this program already runs in (`SLURM_JOB_ID`). In it, each slot is a *worker*: a job
//! step (`srun --exact`, one task, on a node of the allocation chosen in turn) that runs this
//! same program as a worker (see [`serve_worker_if_asked`]). A task is one JSON line to a
//! worker's stdin ([`Request`]: the [`Command`] as data); the worker runs it there with its own
//! [`ProcessRunner`](super::ProcessRunner), which owns the task's whole tree and enforces its
//! time limit, and answers with one JSON line ([`Response`]: how it ended, its captured output,
//! the node). Output sent to files goes to the files directly: the nodes share the file system.
//!
//! A worker whose step ends without an answer (its node failed, someone cancelled it) fails the
//! task it had, saying so, and the slot starts a new worker for the next task. Cancelling a
//! task kills its worker's step. Dropping the allocation ends the workers (their stdin closes)
//! and cancels the allocation if this program asked for it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use super::allocation::{Allocation, Worker};
use super::command::Command;
use super::output::{Captured, Ending, ProcessError, ProcessOutput};
use super::slurm::{Slurm, SlurmError};
use super::wire::{Response, WORKER_ENV, request, response_output};
use crate::cancel::CancelToken;

impl Allocation {
    /// An allocation of `slots` tasks of `cpus_per_task` CPUs: the one this program runs in
    /// (`SLURM_JOB_ID`), else a new one asked of Slurm with `slurm`'s settings and `nodes`
    /// nodes if given. A worker is this program re-run with the arguments [`init`](super::init)
    /// was given (it serves tasks before it looks at them).
    ///
    /// # Errors
    /// Slurm refused the allocation, or cannot be asked.
    pub fn acquire(
        slots: usize,
        cpus_per_task: u32,
        nodes: Option<u32>,
        slurm: &Slurm,
    ) -> Result<Self, SlurmError> {
        let program = std::env::current_exe().map_err(|e| {
            SlurmError::Allocation(format!("cannot find this program to run as a worker: {e}"))
        })?;
        let (job_id, owned) = match std::env::var("SLURM_JOB_ID")
            .ok()
            .and_then(|j| j.parse().ok())
        {
            Some(id) => (id, false),
            None => (salloc(slots, cpus_per_task, nodes, slurm)?, true),
        };
        let mut allocation = Allocation {
            job_id,
            owned,
            nodes: Vec::new(),
            cpus_per_task,
            program,
            args: super::guardian::reexec_args(),
            idle: Mutex::new(Vec::new()),
        };
        allocation.nodes = allocation_nodes(job_id);
        if allocation.nodes.is_empty() {
            // Dropped: cancelled if ours.
            return Err(SlurmError::Allocation(format!(
                "Slurm does not say which nodes allocation {job_id} has"
            )));
        }
        Ok(allocation)
    }

    /// Run `cmd` on a worker of the allocation, to completion, its time limit, or `cancel`.
    pub(crate) fn run(
        &self,
        cmd: &Command,
        cancel: &CancelToken,
    ) -> Result<ProcessOutput, ProcessError> {
        let program = cmd.program.to_string_lossy().into_owned();
        let start = Instant::now();
        let taken = self.idle.lock().expect("allocation lock").pop();
        let mut worker = match taken {
            Some(w) => w,
            None => self.start_worker().map_err(|source| ProcessError::Spawn {
                program: "srun".to_owned(),
                source,
            })?,
        };
        let line = serde_json::to_string(&request(cmd)).expect("a request serializes");
        let sent = writeln!(worker.stdin, "{line}").and_then(|()| worker.stdin.flush());
        let answer = if sent.is_ok() {
            wait_answer(&worker, cancel)
        } else {
            Answer::Gone
        };
        let node = worker.node.clone();
        let output = |ending, failure: Option<String>| ProcessOutput {
            pid: 0,
            ending,
            stdout: Captured::default(),
            stderr: Captured::default(),
            duration: start.elapsed(),
            killed_processes: 0,
            command: cmd.display(),
            slurm_job_id: Some(self.job_id),
            slurm_nodes: node.clone(),
            slurm_failure: failure,
        };
        match answer {
            Answer::Done(r) => {
                worker.node = Some(r.node.clone());
                self.idle.lock().expect("allocation lock").push(worker);
                if let Some(error) = r.error {
                    return Err(ProcessError::Spawn {
                        program,
                        source: std::io::Error::other(error),
                    });
                }
                Ok(response_output(r, cmd, self.job_id))
            }
            Answer::Cancelled => {
                end_worker(worker);
                Ok(output(Ending::Cancelled, None))
            }
            Answer::Gone => {
                end_worker(worker);
                Ok(output(
                    Ending::Exited(1),
                    Some(format!(
                        "the Slurm step running it (allocation {}{}) ended without an answer \
                         (its node failed, or the step was cancelled)",
                        self.job_id,
                        node.as_deref()
                            .map(|n| format!(", node {n}"))
                            .unwrap_or_default()
                    )),
                ))
            }
        }
    }

    /// A new worker step, where Slurm finds a free slot of the allocation.
    fn start_worker(&self) -> std::io::Result<Worker> {
        #[expect(
            clippy::disallowed_methods,
            reason = "the process module starts the worker steps, like every other process"
        )]
        let mut srun = std::process::Command::new("srun")
            .arg(format!("--jobid={}", self.job_id))
            .args(["--exact", "--nodes=1", "--ntasks=1", "--quiet"])
            .arg(format!("--cpus-per-task={}", self.cpus_per_task))
            .arg("--job-name=fanout-worker")
            .arg(&self.program)
            .args(&self.args)
            .env(WORKER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = srun.stdin.take().expect("piped stdin");
        let stdout = srun.stdout.take().expect("piped stdout");
        let (tx, answers) = mpsc::channel();
        std::thread::Builder::new()
            .name("fanout-worker-reader".to_owned())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(Some(line)).is_err() {
                        return;
                    }
                }
                let _ = tx.send(None);
            })?;
        Ok(Worker {
            srun,
            stdin,
            answers,
            node: None,
        })
    }
}

enum Answer {
    Done(Response),
    Cancelled,
    Gone,
}

fn wait_answer(worker: &Worker, cancel: &CancelToken) -> Answer {
    loop {
        if cancel.is_cancelled() {
            return Answer::Cancelled;
        }
        match worker.answers.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(line)) => match serde_json::from_str(&line) {
                Ok(r) => return Answer::Done(r),
                Err(_) => return Answer::Gone,
            },
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => return Answer::Gone,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Kill a worker's step (srun cancels the step on SIGTERM... and on SIGKILL, scancel would be
/// needed: SIGTERM first, SIGKILL if it lingers).
fn end_worker(mut worker: Worker) {
    let pid = rustix::process::Pid::from_raw(worker.srun.id().cast_signed());
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(worker.srun.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = worker.srun.kill();
    let _ = worker.srun.wait();
}

/// `salloc --no-shell`: a new allocation; returns its job id.
fn salloc(
    slots: usize,
    cpus_per_task: u32,
    nodes: Option<u32>,
    slurm: &Slurm,
) -> Result<u64, SlurmError> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the process module runs Slurm's own commands"
    )]
    let mut cmd = std::process::Command::new("salloc");
    // The session's mark: the second Ctrl-C and the guardian cancel what carries it.
    let session = super::tree::session();
    session.note_slurm();
    let cookie = session.next_cookie();
    cmd.args(["--no-shell", "--job-name=fanout-alloc"])
        .arg(format!("--comment={}={}", cookie.name, cookie.value))
        .arg(format!("--ntasks={slots}"))
        .arg(format!("--cpus-per-task={cpus_per_task}"));
    if let Some(n) = nodes {
        cmd.arg(format!("--nodes={n}"));
    }
    if let Some(p) = &slurm.partition {
        cmd.arg(format!("--partition={p}"));
    }
    if let Some(a) = &slurm.account {
        cmd.arg(format!("--account={a}"));
    }
    if let Some(m) = &slurm.mem {
        cmd.arg(format!("--mem-per-cpu={m}"));
    }
    cmd.args(&slurm.args);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|_| SlurmError::NoSrun)?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = said
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok())
        .next_back();
    match (out.status.success(), id) {
        (true, Some(id)) => Ok(id),
        _ => Err(SlurmError::Allocation(format!(
            "salloc said: {}",
            said.trim()
        ))),
    }
}

/// The nodes of allocation `job_id`, one name each (`scontrol show hostnames`).
fn allocation_nodes(job_id: u64) -> Vec<String> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the process module runs Slurm's own commands"
    )]
    let list = std::process::Command::new("squeue")
        .args(["--noheader", "--format=%N", "--jobs"])
        .arg(job_id.to_string())
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if list.is_empty() {
        return Vec::new();
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "the process module runs Slurm's own commands"
    )]
    let names = std::process::Command::new("scontrol")
        .args(["show", "hostnames", &list])
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    names.split_whitespace().map(str::to_owned).collect()
}
