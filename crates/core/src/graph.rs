//! The ready queue of a batch whose tasks wait for others ([`Task::needs`], [`Task::after`]):
//! a task is handed to a worker as soon as everything it waits for has finished.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, PoisonError};

use crate::config::PoolError;
use crate::result::Status;
use crate::task::Task;

pub(crate) struct Graph {
    /// Per task: the tasks waiting for it, and whether they need it to succeed.
    dependents: Vec<Vec<(usize, bool)>>,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Per task: how many of the tasks it waits for have not finished.
    waiting: Vec<usize>,
    /// Per task: why it must not start (a task it needs did not succeed).
    blocked: Vec<Option<String>>,
    /// Tasks whose waits are over, lowest index first.
    ready: BTreeSet<usize>,
    /// How many tasks were handed out.
    handed: usize,
}

impl Graph {
    /// The graph of `tasks`; an error names a task waiting for one outside the batch, or the
    /// tasks of a cycle.
    pub(crate) fn new<I>(tasks: &[Task<I>]) -> Result<Self, PoolError> {
        let total = tasks.len();
        let mut dependents = vec![Vec::new(); total];
        let mut waiting = vec![0; total];
        for (i, task) in tasks.iter().enumerate() {
            let deps = task
                .needs
                .iter()
                .map(|&d| (d, true))
                .chain(task.after.iter().map(|&d| (d, false)));
            for (d, needs) in deps {
                if d >= total {
                    return Err(PoolError::InvalidGraph(format!(
                        "the task {:?} waits for task {d}, but the batch has {total} tasks",
                        task.name
                    )));
                }
                dependents[d].push((i, needs));
                waiting[i] += 1;
            }
        }
        check_acyclic(tasks, &dependents, &waiting)?;
        let ready = (0..total).filter(|&i| waiting[i] == 0).collect();
        Ok(Graph {
            dependents,
            state: Mutex::new(State {
                waiting,
                blocked: vec![None; total],
                ready,
                handed: 0,
            }),
            changed: Condvar::new(),
        })
    }

    /// The next task to run and, if it must not start, why; waits while tasks are running that
    /// others wait for. `None` when every task was handed out.
    pub(crate) fn next(&self) -> Option<(usize, Option<String>)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(i) = state.ready.pop_first() {
                state.handed += 1;
                let blocked = state.blocked[i].take();
                return Some((i, blocked));
            }
            if state.handed == state.waiting.len() {
                return None;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Task `index`, named `name`, finished with `status`: release the tasks waiting for it.
    pub(crate) fn done(&self, index: usize, name: &str, status: Status) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for &(d, needs) in &self.dependents[index] {
            if needs && status != Status::Succeeded && state.blocked[d].is_none() {
                let how = match status {
                    Status::Failed => "failed",
                    Status::TimedOut => "timed out",
                    Status::Cancelled => "was cancelled",
                    Status::Skipped | Status::Succeeded => "was skipped",
                };
                state.blocked[d] = Some(format!("not started: needs {name}, which {how}"));
            }
            state.waiting[d] -= 1;
            if state.waiting[d] == 0 {
                state.ready.insert(d);
            }
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// Check that the waits of `tasks` name tasks of the batch and form no cycle: the error of
/// [`Pool::run`](crate::Pool::run) for such a batch, without running anything.
pub fn check_waits<I>(tasks: &[Task<I>]) -> Result<(), PoolError> {
    Graph::new(tasks).map(drop)
}

/// Kahn's algorithm; what is left over holds a cycle, which the error spells out.
fn check_acyclic<I>(
    tasks: &[Task<I>],
    dependents: &[Vec<(usize, bool)>],
    waiting: &[usize],
) -> Result<(), PoolError> {
    let mut waiting = waiting.to_vec();
    let mut queue: Vec<usize> = (0..tasks.len()).filter(|&i| waiting[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = queue.pop() {
        seen += 1;
        for &(d, _) in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                queue.push(d);
            }
        }
    }
    if seen == tasks.len() {
        return Ok(());
    }
    // Walk backwards from a task still waiting along waits that are unfinished: within
    // the leftover tasks every one waits for another, so the walk comes back to itself.
    let leftover = |i: usize| waiting[i] > 0;
    let mut path = vec![
        (0..tasks.len())
            .find(|&i| leftover(i))
            .expect("a leftover task"),
    ];
    loop {
        let at = *path.last().expect("the path is never empty");
        let next = tasks[at]
            .needs
            .iter()
            .chain(&tasks[at].after)
            .copied()
            .find(|&d| leftover(d))
            .expect("a leftover task waits for a leftover task");
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<&str> = path[pos..]
                .iter()
                .map(|&i| tasks[i].name.as_str())
                .collect();
            cycle.push(tasks[next].name.as_str());
            return Err(PoolError::InvalidGraph(format!(
                "the tasks wait for each other in a cycle (-> reads \"waits for\"): {}",
                cycle.join(" -> ")
            )));
        }
        path.push(next);
    }
}
