//! Pools with a budget of counted resources: tasks start only when what they use fits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fanout::{
    Budget, CancelToken, Demand, MaxWorkers, Pool, PoolConfig, PoolError, Silent, Status, Strategy,
    Task, TaskError,
};

use crate::Gauge;

fn budgeted(workers: usize, strategy: Strategy, budget: Budget) -> Pool {
    Pool::new(
        PoolConfig::new(MaxWorkers::new(workers, 64).unwrap())
            .strategy(strategy)
            .with_budget(budget),
    )
}

fn demand(budget: &Budget, amounts: &[(&str, u64)]) -> Demand {
    let mut d = budget.nothing();
    for (name, amount) in amounts {
        d.set(budget.index(name).unwrap(), *amount, false);
    }
    d
}

/// How many tasks run at once, and the most there ever were.
#[derive(Default)]
struct Overlap {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Overlap {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

#[test]
fn four_tasks_of_six_on_a_budget_of_twelve_run_two_at_a_time() {
    for strategy in [Strategy::Threads, Strategy::Auto, Strategy::Rayon] {
        let budget = Budget::new().with("mem", 12);
        let tasks: Vec<Task<usize>> = (0..4)
            .map(|i| Task::new(format!("t{i}"), i).uses(demand(&budget, &[("mem", 6)])))
            .collect();
        let overlap = Overlap::default();
        let two_ran_together = Gauge::default();
        let result = budgeted(4, strategy, budget)
            .run(&tasks, &CancelToken::new(), &mut Silent, |_, ctx| {
                overlap.enter();
                assert_eq!(ctx.resources(), &[6]);
                if overlap.now.load(Ordering::SeqCst) == 2 {
                    two_ran_together.add(1);
                }
                std::thread::sleep(Duration::from_millis(30));
                overlap.leave();
                Ok(ctx.resource_wait())
            })
            .unwrap();
        assert!(result.all_ok());
        assert_eq!(overlap.most(), 2, "{strategy:?}: at most two fit");
        assert!(two_ran_together.get() > 0, "{strategy:?}: two fit together");
        // The later two waited for the first two, with workers free for them.
        let waited = result
            .outcomes
            .iter()
            .filter(|o| o.value.unwrap() > Duration::ZERO)
            .count();
        assert_eq!(waited, 2, "{strategy:?}");
    }
}

#[test]
fn a_group_of_one_never_overlaps_while_others_run_beside_it() {
    let budget = Budget::new().with("db", 1);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let task = Task::new(format!("t{i}"), i % 2 == 0);
        tasks.push(if i % 2 == 0 {
            task.uses(demand(&budget, &[("db", 1)]))
        } else {
            task
        });
    }
    let db = Overlap::default();
    let others_beside_db = AtomicUsize::new(0);
    let result = budgeted(3, Strategy::Threads, budget)
        .run(&tasks, &CancelToken::new(), &mut Silent, |&uses_db, _| {
            if uses_db {
                db.enter();
                std::thread::sleep(Duration::from_millis(40));
                db.leave();
            } else {
                std::thread::sleep(Duration::from_millis(10));
                if db.now.load(Ordering::SeqCst) > 0 {
                    others_beside_db.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(result.all_ok());
    assert_eq!(db.most(), 1);
    assert!(others_beside_db.load(Ordering::SeqCst) > 0);
}

#[test]
fn a_task_that_needs_more_than_the_budget_is_refused_before_anything_runs() {
    let budget = Budget::new().with("cpus", 8);
    let tasks = vec![
        Task::new("small", ()).uses(demand(&budget, &[("cpus", 2)])),
        Task::new("huge", ()).uses(demand(&budget, &[("cpus", 64)])),
    ];
    let ran = AtomicUsize::new(0);
    let err = budgeted(2, Strategy::Threads, budget)
        .run(&tasks, &CancelToken::new(), &mut Silent, |(), _| {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, PoolError::OverBudget(_)));
    assert_eq!(
        err.to_string(),
        "the task \"huge\" needs cpus=64, more than the budget's cpus=8"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn a_big_task_that_does_not_fit_lets_smaller_ones_behind_it_start() {
    let budget = Budget::new().with("cpus", 4);
    let tasks = vec![
        Task::new("a", 'a').uses(demand(&budget, &[("cpus", 3)])),
        Task::new("big", 'B').uses(demand(&budget, &[("cpus", 4)])),
        Task::new("c", 'c').uses(demand(&budget, &[("cpus", 1)])),
    ];
    let a_may_end = Gauge::default();
    let order = Mutex::new(Vec::new());
    let result = budgeted(3, Strategy::Threads, budget)
        .run(&tasks, &CancelToken::new(), &mut Silent, |&name, _| {
            order.lock().unwrap().push(name);
            match name {
                // a holds its cpus until c has started beside it.
                'a' => assert!(a_may_end.wait_for(|v| v == 1), "c never started"),
                'c' => {
                    a_may_end.add(1);
                }
                _ => {}
            }
            Ok(())
        })
        .unwrap();
    assert!(result.all_ok());
    // a and c start on two workers at once (either may tell first); big only after both.
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 3);
    assert_eq!(order[2], 'B', "{order:?}");
}

#[test]
fn a_retry_gives_back_what_it_held_and_takes_more_when_it_grows() {
    let budget = Budget::new().with("mem", 10);
    let mut grows = budget.nothing();
    grows.set(0, 4, true);
    let tasks = vec![Task::new("oom", ()).uses(grows).with_retry(
        fanout::RetryPolicy::retries(2).with_initial_backoff(Duration::from_millis(1)),
    )];
    let seen = Mutex::new(Vec::new());
    let result = budgeted(1, Strategy::Threads, budget)
        .run(&tasks, &CancelToken::new(), &mut Silent, |(), ctx| {
            seen.lock().unwrap().push(ctx.resources().to_vec());
            if ctx.attempt() < 3 {
                Err(TaskError::retryable("out of memory"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(result.outcomes[0].status, Status::Succeeded);
    // 4, 8, then 12 capped at the budget's 10.
    assert_eq!(*seen.lock().unwrap(), vec![vec![4], vec![8], vec![10]]);
}

#[test]
fn a_retry_that_needs_more_goes_before_new_tasks() {
    let budget = Budget::new().with("mem", 10);
    let mut grows = budget.nothing();
    grows.set(0, 4, true);
    let mut tasks = vec![Task::new("oom", 'A').uses(grows).with_retry(
        fanout::RetryPolicy::retries(1).with_initial_backoff(Duration::from_millis(1)),
    )];
    for name in ['b', 'c', 'd', 'e', 'f', 'g'] {
        tasks.push(Task::new(name.to_string(), name).uses(demand(&budget, &[("mem", 4)])));
    }
    let starts = Mutex::new(Vec::new());
    let result = budgeted(3, Strategy::Threads, budget)
        .run(&tasks, &CancelToken::new(), &mut Silent, |&name, ctx| {
            starts.lock().unwrap().push((name, ctx.attempt()));
            if name == 'A' && ctx.attempt() == 1 {
                return Err(TaskError::retryable("out of memory"));
            }
            std::thread::sleep(Duration::from_millis(30));
            Ok(())
        })
        .unwrap();
    assert!(result.all_ok());
    let starts = starts.lock().unwrap();
    let retry = starts.iter().position(|s| *s == ('A', 2)).unwrap();
    // Without priority the small tasks would keep taking the memory the retry waits for, and
    // it would start last.
    assert!(retry < starts.len() - 2, "{starts:?}");
}
