//! A Slurm allocation that runs many tasks (the state; how tasks run in it is `packed.rs`): its
//! job, its nodes, its idle workers. Dropping it ends the workers (their stdin closes) and
//! cancels the allocation if this program asked for it.

use std::path::PathBuf;
use std::process::{Child, ChildStdin};
use std::sync::{Mutex, mpsc};

/// One Slurm allocation whose slots run a batch's tasks (see the module's notes).
pub struct Allocation {
    pub(super) job_id: u64,
    /// Asked for by this program (cancelled when dropped), not inherited.
    pub(super) owned: bool,
    /// The allocation's nodes.
    pub(super) nodes: Vec<String>,
    pub(super) cpus_per_task: u32,
    /// How to start this program as a worker: its path and the arguments `init` was given.
    pub(super) program: PathBuf,
    pub(super) args: Vec<String>,
    pub(super) idle: Mutex<Vec<Worker>>,
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

/// A worker step and the thread that reads its answers.
pub(super) struct Worker {
    pub(super) srun: Child,
    pub(super) stdin: ChildStdin,
    /// Its answers, a line each; `None` once its stdout closed.
    pub(super) answers: mpsc::Receiver<Option<String>>,
    /// The node it runs on, once its first answer said (Slurm places the step).
    pub(super) node: Option<String>,
}

impl Allocation {
    /// The allocation's Slurm job id.
    pub fn job_id(&self) -> u64 {
        self.job_id
    }

    /// Its nodes, as Slurm names them.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        for worker in self.idle.lock().expect("allocation lock").drain(..) {
            let Worker {
                mut srun, stdin, ..
            } = worker;
            // Its stdin closed, a worker ends after its task.
            drop(stdin);
            let _ = srun.wait();
        }
        if self.owned {
            super::slurm::cancel(self.job_id);
        }
    }
}
