//! The ready queue of a batch whose tasks wait for others ([`Task::needs`], [`Task::after`]):
//! a task is handed to a worker as soon as everything it waits for has finished.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex, PoisonError};

use crate::config::PoolError;
use crate::result::Status;
use crate::task::Task;

pub(crate) struct Graph {
    /// Tasks, then barriers: per node, the nodes waiting for it and whether they need it to
    /// succeed. A barrier stands for an `after` list shared by several tasks (or a long one):
    /// it waits for the list, the tasks wait for it, so waits add up instead of multiplying.
    dependents: Vec<Vec<(usize, bool)>>,
    tasks: usize,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Per node: how many of the nodes it waits for have not finished.
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
        let mut dependents: Vec<Vec<(usize, bool)>> = vec![Vec::new(); total];
        let mut waiting = vec![0; total];
        let mut barriers: HashMap<*const usize, usize> = HashMap::new();
        let outside = |task: &Task<I>, d: usize| {
            PoolError::InvalidGraph(format!(
                "the task {:?} waits for task {d}, but the batch has {total} tasks",
                task.name
            ))
        };
        for (i, task) in tasks.iter().enumerate() {
            for &d in &task.needs {
                if d >= total {
                    return Err(outside(task, d));
                }
                dependents[d].push((i, true));
                waiting[i] += 1;
            }
            if task.after_list().len() <= 1 {
                for &d in task.after_list() {
                    if d >= total {
                        return Err(outside(task, d));
                    }
                    dependents[d].push((i, false));
                    waiting[i] += 1;
                }
                continue;
            }
            let barrier = if let Some(&b) = barriers.get(&task.after_list().as_ptr()) {
                b
            } else {
                let b = dependents.len();
                dependents.push(Vec::new());
                waiting.push(0);
                for &d in task.after_list() {
                    if d >= total {
                        return Err(outside(task, d));
                    }
                    dependents[d].push((b, false));
                    waiting[b] += 1;
                }
                barriers.insert(task.after_list().as_ptr(), b);
                b
            };
            dependents[barrier].push((i, false));
            waiting[i] += 1;
        }
        check_acyclic(tasks, &dependents, &waiting)?;
        let mut graph = Graph {
            dependents,
            tasks: total,
            state: Mutex::new(State {
                waiting,
                blocked: vec![None; total],
                ready: BTreeSet::new(),
                handed: 0,
            }),
            changed: Condvar::new(),
        };
        let state = graph
            .state
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let start: Vec<usize> = (0..state.waiting.len())
            .filter(|&n| state.waiting[n] == 0)
            .collect();
        for n in start {
            release(&graph.dependents, total, state, n);
        }
        Ok(graph)
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
            if state.handed == self.tasks {
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
                release(&self.dependents, self.tasks, &mut state, d);
            }
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// Node `n` waits for nothing any more: a task becomes ready; a barrier is passed at once,
/// releasing what waits for it.
fn release(dependents: &[Vec<(usize, bool)>], tasks: usize, state: &mut State, n: usize) {
    if n < tasks {
        state.ready.insert(n);
        return;
    }
    for &(d, _) in &dependents[n] {
        state.waiting[d] -= 1;
        if state.waiting[d] == 0 {
            release(dependents, tasks, state, d);
        }
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
    let mut queue: Vec<usize> = (0..waiting.len()).filter(|&i| waiting[i] == 0).collect();
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
    if seen == waiting.len() {
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
            .chain(tasks[at].after_list().iter())
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
