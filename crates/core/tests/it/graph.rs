//! Batches whose tasks wait for others: `Task::needs`, `Task::after`, per-task failure policies.

use std::sync::Mutex;
use std::time::Duration;

use fanout::{
    CancelToken, FailurePolicy, MaxWorkers, Pool, PoolConfig, PoolError, Silent, Status, Strategy,
    Task, TaskError,
};

use crate::Gauge;
use crate::pool::pool;

/// a -> b, c -> d: b and c wait for a, d waits for both.
fn diamond() -> Vec<Task<&'static str>> {
    vec![
        Task::new("a", "a"),
        Task::new("b", "b").needs([0]),
        Task::new("c", "c").needs([0]),
        Task::new("d", "d").needs([1, 2]),
    ]
}

#[test]
fn a_task_starts_when_what_it_waits_for_is_done_and_not_before() {
    for strategy in [Strategy::Threads, Strategy::Rayon, Strategy::Auto] {
        let log = Mutex::new(Vec::new());
        let c_done = Gauge::default();
        let result = pool(2, strategy)
            .run(&diamond(), &CancelToken::new(), &mut Silent, |&name, _| {
                log.lock().unwrap().push(format!("start {name}"));
                if name == "b" {
                    // b is slow: it ends only after c did, so c did not wait for b.
                    assert!(c_done.wait_for(|v| v == 1), "c waited for b");
                }
                log.lock().unwrap().push(format!("end {name}"));
                if name == "c" {
                    c_done.add(1);
                }
                Ok(())
            })
            .unwrap();
        assert!(
            result
                .outcomes
                .iter()
                .all(|o| o.status == Status::Succeeded)
        );
        let log = log.into_inner().unwrap();
        let at = |what: &str| log.iter().position(|l| l == what).unwrap();
        assert!(
            at("start b") > at("end a") && at("start c") > at("end a"),
            "{log:?}"
        );
        assert!(at("end c") < at("end b"), "{log:?}");
        assert!(
            at("start d") > at("end b") && at("start d") > at("end c"),
            "d waited for both: {log:?}"
        );
    }
}

#[test]
fn serially_tasks_run_in_input_order_among_those_ready() {
    let tasks = vec![
        Task::new("late", 0).after([2]),
        Task::new("first", 1),
        Task::new("second", 2),
    ];
    let order = Mutex::new(Vec::new());
    pool(1, Strategy::Serial)
        .run(&tasks, &CancelToken::new(), &mut Silent, |&i, ctx| {
            order.lock().unwrap().push(ctx.name().to_owned());
            Ok(i)
        })
        .unwrap();
    assert_eq!(*order.lock().unwrap(), ["first", "second", "late"]);
}

#[test]
fn a_task_whose_need_did_not_succeed_is_skipped_naming_it_and_after_runs_anyway() {
    for strategy in [Strategy::Serial, Strategy::Threads] {
        let tasks = vec![
            Task::new("fetch", 0),
            Task::new("clean", 1).needs([0]),
            Task::new("report", 2).needs([1]),
            Task::new("cleanup", 3).after([0]),
        ];
        let ran = Mutex::new(Vec::new());
        let result = pool(2, strategy)
            .run(&tasks, &CancelToken::new(), &mut Silent, |&i, ctx| {
                ran.lock().unwrap().push(ctx.name().to_owned());
                if i == 0 {
                    Err(TaskError::failed("no network"))
                } else {
                    Ok(())
                }
            })
            .unwrap();
        let ran = ran.into_inner().unwrap();
        assert_eq!(ran.len(), 2, "{ran:?}");
        assert!(ran.contains(&"cleanup".to_owned()), "{ran:?}");
        let o = &result.outcomes;
        assert_eq!(o[0].status, Status::Failed);
        assert_eq!(o[1].status, Status::Skipped);
        assert_eq!(
            o[1].error_message().unwrap(),
            "not started: needs fetch, which failed"
        );
        assert_eq!(
            o[2].error_message().unwrap(),
            "not started: needs clean, which was skipped"
        );
        assert_eq!(
            o[3].status,
            Status::Succeeded,
            "after waits, whatever the end"
        );
        assert_eq!(result.summary.skipped, 2);
    }
}

#[test]
fn waits_in_a_cycle_or_for_a_task_outside_the_batch_are_refused_before_anything_runs() {
    let tasks = vec![
        Task::new("a", 0).needs([2]),
        Task::new("b", 1).needs([0]),
        Task::new("c", 2).after([1]),
        Task::new("free", 3),
    ];
    let calls = Mutex::new(0);
    let err = pool(2, Strategy::Threads)
        .run(&tasks, &CancelToken::new(), &mut Silent, |_, _| {
            *calls.lock().unwrap() += 1;
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, PoolError::InvalidGraph(_)));
    assert!(err.to_string().ends_with("a -> c -> b -> a"), "{err}");
    let err = pool(2, Strategy::Serial)
        .run(
            &[Task::new("x", 0).needs([7])],
            &CancelToken::new(),
            &mut Silent,
            |_, _| Ok(()),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the task \"x\" waits for task 7, but the batch has 1 tasks"
    );
    assert_eq!(*calls.lock().unwrap(), 0);
}

#[test]
fn a_task_may_carry_its_own_failure_policy() {
    // The pool keeps going; one task's failure stops what has not started.
    let tasks = vec![
        Task::new("tolerated", 0),
        Task::new("critical", 1).with_failure_policy(FailurePolicy::StopSoon),
        Task::new("later", 2).after([1]),
    ];
    let result = pool(1, Strategy::Serial)
        .run(&tasks, &CancelToken::new(), &mut Silent, |_, _| {
            Err::<(), _>(TaskError::failed("boom"))
        })
        .unwrap();
    let statuses: Vec<Status> = result.outcomes.iter().map(|o| o.status).collect();
    assert_eq!(statuses, [Status::Failed, Status::Failed, Status::Skipped]);
    // And the other way round: a pool that stops, a task whose failure does not stop it.
    let tasks = vec![
        Task::new("optional", 0).with_failure_policy(FailurePolicy::KeepGoing),
        Task::new("next", 1),
    ];
    let stopping = Pool::new(
        PoolConfig::new(MaxWorkers::new(1, 64).unwrap()).failure_policy(FailurePolicy::StopSoon),
    );
    let result = stopping
        .run(&tasks, &CancelToken::new(), &mut Silent, |&i, _| {
            if i == 0 {
                Err(TaskError::failed("boom"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(result.outcomes[1].status, Status::Succeeded);
}

#[test]
fn a_graph_stays_within_max_workers_and_reaches_it() {
    let running = Gauge::default();
    let most = Mutex::new(0);
    // One root, then 12 tasks released together.
    let tasks: Vec<Task<usize>> = std::iter::once(Task::new("root", 0))
        .chain((1..13).map(|i| Task::new(format!("t{i}"), i).after([0])))
        .collect();
    pool(3, Strategy::Threads)
        .run(&tasks, &CancelToken::new(), &mut Silent, |_, _| {
            let now = running.add(1);
            {
                let mut m = most.lock().unwrap();
                *m = (*m).max(now);
            }
            std::thread::sleep(Duration::from_millis(20));
            running.add(-1);
            Ok(())
        })
        .unwrap();
    assert_eq!(*most.lock().unwrap(), 3);
}

#[test]
fn an_interrupted_graph_cancels_what_did_not_start_rather_than_skipping_it() {
    for strategy in [Strategy::Serial, Strategy::Threads] {
        let cancel = CancelToken::new();
        let tasks = vec![Task::new("a", 0), Task::new("b", 1).needs([0])];
        let result = pool(2, strategy)
            .run(&tasks, &cancel, &mut Silent, |_, _| {
                cancel.cancel(fanout::CancelReason::Interrupted);
                Err::<(), _>(TaskError::Cancelled)
            })
            .unwrap();
        assert_eq!(result.outcomes[1].status, Status::Cancelled, "{strategy:?}");
    }
}

#[test]
fn tasks_sharing_an_after_list_start_only_once_all_of_it_finished() {
    // Two "stages" of 200 tasks: the second shares one list of the first (a barrier inside).
    let first: std::sync::Arc<[usize]> = (0..200).collect();
    let tasks: Vec<Task<usize>> = (0..400)
        .map(|i| {
            let t = Task::new(format!("t{i}"), i);
            if i >= 200 {
                t.after_shared(first.clone())
            } else {
                t
            }
        })
        .collect();
    let finished_first = Gauge::default();
    let early = Mutex::new(Vec::new());
    let result = pool(4, Strategy::Threads)
        .run(&tasks, &CancelToken::new(), &mut Silent, |&i, _| {
            if i < 200 {
                finished_first.add(1);
            } else if finished_first.get() < 200 {
                early.lock().unwrap().push(i);
            }
            Ok(())
        })
        .unwrap();
    assert!(
        early.lock().unwrap().is_empty(),
        "{:?}",
        early.lock().unwrap()
    );
    assert_eq!(result.summary.succeeded, 400);
}
