//! A Slurm allocation that runs many tasks (the state; how it is asked for is `salloc.rs`, how
//! tasks run in it `packed.rs`): its job, its nodes, its slots and their workers. Dropping it
//! ends the workers (their stdin closes) and cancels the allocation if this program asked for
//! it.

use std::path::PathBuf;
use std::process::{Child, ChildStdin};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::slurm;

/// One Slurm allocation whose slots run a batch's tasks (see `packed.rs`).
pub struct Allocation {
    pub(super) job_id: u64,
    /// Asked for by this program (cancelled when dropped), not inherited.
    pub(super) owned: bool,
    /// The allocation's nodes.
    pub(super) nodes: Vec<String>,
    pub(super) cpus_per_task: u32,
    /// How many workers at most: the slots asked for, or what an inherited allocation holds.
    pub(super) slots: usize,
    /// `--slurm-arg`s that are not the allocation's: each worker step's.
    pub(super) step_args: Vec<String>,
    /// This program, started as a worker (see `WORKER_ARG`).
    pub(super) program: PathBuf,
    pub(super) state: Mutex<Slots>,
    /// Told when a slot frees.
    pub(super) freed: Condvar,
}

/// The slots' state.
#[derive(Default)]
pub(super) struct Slots {
    /// Workers waiting for a task (each holds its slot).
    pub(super) idle: Vec<Worker>,
    /// Slots taken by a task: its worker runs it, or is starting.
    pub(super) in_use: usize,
    /// Nodes where a worker could not start: later workers avoid them.
    pub(super) bad_nodes: Vec<String>,
    /// The allocation is over (its time limit, cancelled): why, for every later task.
    pub(super) ended: Option<String>,
}

/// A worker step, the thread that reads its answers, and what srun said.
pub(super) struct Worker {
    pub(super) srun: Child,
    pub(super) stdin: ChildStdin,
    /// Its answers, a line each; `None` once its stdout closed.
    pub(super) answers: mpsc::Receiver<Option<String>>,
    /// The node it runs on and its step (`JOB.STEP`), as its first line said.
    pub(super) node: String,
    pub(super) step: String,
    /// The last of srun's stderr: why a step failed, in Slurm's words.
    pub(super) said: Arc<Mutex<String>>,
    /// Since when it has had no task.
    pub(super) idle_since: Instant,
}

impl std::fmt::Debug for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Allocation(job {} on {})",
            self.job_id,
            self.nodes.join(",")
        )
    }
}

impl PartialEq for Allocation {
    fn eq(&self, other: &Self) -> bool {
        self.job_id == other.job_id
    }
}

impl Eq for Allocation {}

impl Allocation {
    /// The allocation's Slurm job id.
    pub fn job_id(&self) -> u64 {
        self.job_id
    }

    /// Its nodes, as Slurm names them.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// How many tasks run at once in it: the slots asked for, or fewer when the allocation
    /// this program runs in has fewer CPUs.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Each slot's CPUs.
    pub fn cpus_per_task(&self) -> u32 {
        self.cpus_per_task
    }

    /// Whether Slurm ended it (its time limit, scancel) while tasks ran in it.
    pub fn has_ended(&self) -> bool {
        self.state.lock().expect("allocation lock").ended.is_some()
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.state.lock().expect("allocation lock").idle);
        // Their stdin closed, the workers all end at once; then each is waited for.
        let ending: Vec<(Child, String)> = idle
            .into_iter()
            .map(|w| {
                drop(w.stdin);
                (w.srun, w.step)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        for (mut srun, step) in ending {
            wait_until(&mut srun, deadline, &step);
        }
        if self.owned {
            slurm::cancel(&self.job_id.to_string());
        }
    }
}

/// Wait for a worker's srun until `deadline`; past it, kill srun and cancel its step.
pub(super) fn wait_until(srun: &mut Child, deadline: Instant, step: &str) {
    while Instant::now() < deadline {
        if matches!(srun.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = srun.kill();
    let _ = srun.wait();
    if !step.is_empty() {
        slurm::cancel(step);
    }
}
