//! The ready queue of a batch whose tasks wait for others ([`Task::needs`], [`Task::after`]):
//! a task is handed to a worker as soon as everything it waits for has finished.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::config::PoolError;
use crate::resources::{Budget, Demand, fits, give, take};
use crate::result::Status;
use crate::task::Task;

/// A task handed to a worker: its index, why it must not start (a task it needs did not
/// succeed), and how long it waited for resources once a worker was free for it.
#[derive(Debug, Default)]
pub(crate) struct Handed {
    pub(crate) index: usize,
    pub(crate) blocked: Option<String>,
    pub(crate) waited: Duration,
}

/// The budget's side of a graph: each task's demand (`None`: it takes nothing).
struct Admission {
    capacity: Vec<u64>,
    demands: Vec<Option<Demand>>,
}

pub(crate) struct Graph {
    /// Tasks, then barriers: per node, the nodes waiting for it and whether they need it to
    /// succeed. A barrier stands for an `after` list shared by several tasks (or a long one):
    /// it waits for the list, the tasks wait for it, so waits add up instead of multiplying.
    dependents: Vec<Vec<(usize, bool)>>,
    tasks: usize,
    state: Mutex<State>,
    changed: Condvar,
    admission: Option<Admission>,
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
    /// With a budget: what is free, per task the attempt whose amounts it holds (0: none),
    /// and when a free worker first found it did not fit.
    free: Vec<u64>,
    held: Vec<u32>,
    refused: Vec<Option<Instant>>,
    /// Retries waiting for their next attempt's amounts: while there are, no new task that
    /// takes something starts, so a retry (whose amounts may have grown) is not overtaken
    /// for the rest of the batch.
    retries_waiting: usize,
}

impl Graph {
    /// The graph of `tasks`, admitted by `budget` if given; an error names a task waiting for
    /// one outside the batch, the tasks of a cycle, or a task that needs more than the budget.
    pub(crate) fn new<I>(tasks: &[Task<I>], budget: Option<&Budget>) -> Result<Self, PoolError> {
        let admission = budget.map(|b| admission(tasks, b)).transpose()?;
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
        let budgeted = if admission.is_some() { total } else { 0 };
        let mut graph = Graph {
            dependents,
            tasks: total,
            state: Mutex::new(State {
                waiting,
                blocked: vec![None; total],
                ready: BTreeSet::new(),
                handed: 0,
                free: admission
                    .as_ref()
                    .map_or_else(Vec::new, |a| a.capacity.clone()),
                held: vec![0; budgeted],
                refused: vec![None; budgeted],
                retries_waiting: 0,
            }),
            changed: Condvar::new(),
            admission,
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
    /// others wait for, or that hold the resources the ready ones need. `None` when every task
    /// was handed out.
    pub(crate) fn next(&self) -> Option<Handed> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(handed) = self.pick(&mut state) {
                state.handed += 1;
                return Some(handed);
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

    /// The first ready task that may start now: without a budget the first ready one; with
    /// one, the first that fits (or must not start, taking nothing), its first attempt's
    /// amounts taken.
    fn pick(&self, state: &mut State) -> Option<Handed> {
        let Some(admission) = &self.admission else {
            let index = state.ready.pop_first()?;
            let blocked = state.blocked[index].take();
            return Some(Handed {
                index,
                blocked,
                waited: Duration::ZERO,
            });
        };
        let now = Instant::now();
        // Tasks of one stage usually need the same: one that did not fit, the next alike
        // will not either.
        let mut refused_amounts: Option<Vec<u64>> = None;
        let mut skipped = Vec::new();
        let mut chosen = None;
        for &i in &state.ready {
            if state.blocked[i].is_some() {
                chosen = Some((i, None));
                break;
            }
            let Some(demand) = &admission.demands[i] else {
                chosen = Some((i, None));
                break;
            };
            if state.retries_waiting > 0 {
                skipped.push(i);
                continue;
            }
            let amounts = demand.at(1, &admission.capacity);
            if refused_amounts.as_ref() != Some(&amounts) && fits(&amounts, &state.free) {
                chosen = Some((i, Some(amounts)));
                break;
            }
            refused_amounts = Some(amounts);
            skipped.push(i);
        }
        for i in skipped {
            state.refused[i].get_or_insert(now);
        }
        let (index, amounts) = chosen?;
        state.ready.remove(&index);
        if let Some(amounts) = amounts {
            take(&amounts, &mut state.free);
            state.held[index] = 1;
        }
        let waited = state.refused[index].map_or(Duration::ZERO, |t| now - t);
        Some(Handed {
            index,
            blocked: state.blocked[index].take(),
            waited,
        })
    }

    /// Task `index` gives back what it holds (before a retry's wait).
    pub(crate) fn release(&self, index: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.give_back(&mut state, index);
        drop(state);
        self.changed.notify_all();
    }

    fn give_back(&self, state: &mut State, index: usize) {
        let Some(admission) = &self.admission else {
            return;
        };
        let attempt = std::mem::take(&mut state.held[index]);
        if attempt > 0
            && let Some(demand) = &admission.demands[index]
        {
            give(&demand.at(attempt, &admission.capacity), &mut state.free);
        }
    }

    /// Take task `index`'s amounts for attempt `attempt`, waiting until they fit; how long it
    /// waited, or `None` if `cancel` was cancelled first.
    pub(crate) fn acquire(
        &self,
        index: usize,
        attempt: u32,
        cancel: &CancelToken,
    ) -> Option<Duration> {
        let Some(admission) = &self.admission else {
            return Some(Duration::ZERO);
        };
        let Some(demand) = &admission.demands[index] else {
            return Some(Duration::ZERO);
        };
        let amounts = demand.at(attempt, &admission.capacity);
        let since = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.retries_waiting += 1;
        while !fits(&amounts, &state.free) {
            if cancel.is_cancelled() {
                state.retries_waiting -= 1;
                drop(state);
                self.changed.notify_all();
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.retries_waiting -= 1;
        take(&amounts, &mut state.free);
        state.held[index] = attempt;
        drop(state);
        // Tasks held back for this retry may start beside it.
        self.changed.notify_all();
        Some(since.elapsed())
    }

    /// The amounts task `index` holds now (empty without a budget).
    pub(crate) fn held(&self, index: usize) -> Vec<u64> {
        let Some(admission) = &self.admission else {
            return Vec::new();
        };
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match (&admission.demands[index], state.held[index]) {
            (Some(demand), attempt) if attempt > 0 => demand.at(attempt, &admission.capacity),
            _ => vec![0; admission.capacity.len()],
        }
    }

    /// Task `index`, named `name`, finished with `status`: release the tasks waiting for it.
    pub(crate) fn done(&self, index: usize, name: &str, status: Status) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.give_back(&mut state, index);
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

/// The budget's side of `tasks`; an error names a task that needs more than the budget.
fn admission<I>(tasks: &[Task<I>], budget: &Budget) -> Result<Admission, PoolError> {
    let mut demands = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Some(demand) = &task.demand
            && let Some((name, amount, cap)) = demand.exceeds(budget)
        {
            return Err(PoolError::OverBudget(format!(
                "the task {:?} needs {name}={amount}, more than the budget's {name}={cap}",
                task.name
            )));
        }
        demands.push(task.demand.clone());
    }
    Ok(Admission {
        capacity: budget.capacity().to_vec(),
        demands,
    })
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
    Graph::new(tasks, None).map(drop)
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
