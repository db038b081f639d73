use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fanout::{
    CancelReason, CancelToken, Event, FailurePolicy, MaxWorkers, Pool, PoolConfig, PoolError,
    RetryPolicy, Silent, Status, Strategy, Task, TaskError, TaskKind,
};
use proptest::prelude::*;

use crate::Gauge;

const PARALLEL: [Strategy; 2] = [Strategy::Threads, Strategy::Rayon];
pub(crate) const ALL: [Strategy; 4] = [
    Strategy::Serial,
    Strategy::Threads,
    Strategy::Rayon,
    Strategy::Auto,
];

pub(crate) fn pool(workers: usize, strategy: Strategy) -> Pool {
    Pool::new(PoolConfig::new(MaxWorkers::new(workers, 64).unwrap()).strategy(strategy))
}

fn tasks(n: usize) -> Vec<Task<usize>> {
    (0..n).map(|i| Task::new(format!("t{i}"), i)).collect()
}

#[test]
fn results_come_back_in_input_order_whatever_the_completion_order() {
    for strategy in PARALLEL {
        let n: usize = 6;
        // Task i may finish only after task i+1 has: completion order is the reverse of input.
        let next_to_finish = Gauge::default();
        next_to_finish.add(n.cast_signed() - 1);
        let finished_order = Mutex::new(Vec::new());
        let result = pool(n, strategy)
            .run(&tasks(n), &CancelToken::new(), &mut Silent, |&i, _| {
                assert!(
                    next_to_finish.wait_for(|v| v == i),
                    "task {i} never got its turn"
                );
                finished_order.lock().unwrap().push(i);
                if i > 0 {
                    next_to_finish.add(-1);
                }
                Ok(i * 10)
            })
            .unwrap();
        assert_eq!(*finished_order.lock().unwrap(), vec![5, 4, 3, 2, 1, 0]);
        let values: Vec<_> = result.outcomes.iter().map(|o| o.value.unwrap()).collect();
        assert_eq!(values, vec![0, 10, 20, 30, 40, 50], "{strategy:?}");
        let indexes: Vec<_> = result.outcomes.iter().map(|o| o.index).collect();
        assert_eq!(indexes, (0..n).collect::<Vec<_>>());
    }
}

#[test]
fn never_more_than_max_workers_at_once_and_the_bound_is_reached() {
    for strategy in PARALLEL {
        for workers in [1, 2, 3] {
            let running = Gauge::default();
            let peak = AtomicUsize::new(0);
            let result = pool(workers, strategy)
                .run(&tasks(12), &CancelToken::new(), &mut Silent, |_, _| {
                    let now = running.add(1);
                    peak.fetch_max(now, Ordering::SeqCst);
                    // The first tasks hold their slots until the pool has been full once; the
                    // rest run freely (a tail of the batch may never fill it: rayon runs a
                    // split's items one after another). No timing is assumed: the limit only
                    // keeps a broken pool from hanging the test.
                    running.wait_within(Duration::from_secs(60), |v| {
                        v >= workers || peak.load(Ordering::SeqCst) >= workers
                    });
                    std::thread::yield_now();
                    running.add(-1);
                    Ok(())
                })
                .unwrap();
            assert_eq!(result.summary.succeeded, 12);
            assert_eq!(
                peak.load(Ordering::SeqCst),
                workers,
                "{strategy:?} with {workers} workers"
            );
        }
    }
}

#[test]
fn stop_soon_starts_nothing_new_after_a_failure() {
    for strategy in [Strategy::Serial, Strategy::Threads] {
        let started = Mutex::new(Vec::new());
        let failure_reported = Gauge::default();
        let task1_started = Gauge::default();
        let pool = Pool::new(
            PoolConfig::new(MaxWorkers::new(2, 8).unwrap())
                .strategy(strategy)
                .failure_policy(FailurePolicy::StopSoon),
        );
        let mut reporter = |e: &Event<'_, ()>| {
            if let Event::TaskFinished { outcome, .. } = e
                && outcome.index == 0
            {
                failure_reported.add(1);
            }
        };
        let result = pool
            .run(&tasks(8), &CancelToken::new(), &mut reporter, |&i, _| {
                started.lock().unwrap().push(i);
                task1_started.add(isize::from(i == 1));
                match i {
                    0 => {
                        if strategy != Strategy::Serial {
                            assert!(task1_started.wait_for(|v| v == 1));
                        }
                        Err(TaskError::failed("boom"))
                    }
                    // Task 1 runs alongside task 0 (in parallel mode) and finishes only after
                    // the failure is known: it must complete, and nothing after it may start.
                    1 if strategy != Strategy::Serial => {
                        assert!(failure_reported.wait_for(|v| v == 1));
                        Ok(())
                    }
                    _ => Ok(()),
                }
            })
            .unwrap();
        let statuses: Vec<Status> = result.outcomes.iter().map(|o| o.status).collect();
        let expected_started = if strategy == Strategy::Serial {
            vec![0]
        } else {
            vec![0, 1]
        };
        let mut got = started.lock().unwrap().clone();
        got.sort_unstable();
        assert_eq!(got, expected_started, "{strategy:?}");
        assert_eq!(statuses[0], Status::Failed);
        let skipped = statuses.iter().filter(|s| **s == Status::Skipped).count();
        assert_eq!(skipped, 8 - expected_started.len(), "{statuses:?}");
        let never_started = &result.outcomes[2];
        assert_eq!(never_started.attempts, 0);
        assert!(
            never_started
                .error_message()
                .unwrap()
                .contains("an earlier task failed")
        );
    }
}

#[test]
fn stop_now_cancels_running_tasks() {
    let pool = Pool::new(
        PoolConfig::new(MaxWorkers::new(2, 8).unwrap())
            .strategy(Strategy::Threads)
            .failure_policy(FailurePolicy::StopNow),
    );
    let task1_running = Gauge::default();
    let outer = CancelToken::new();
    let result = pool
        .run(&tasks(5), &outer, &mut Silent, |&i, ctx| match i {
            0 => {
                assert!(task1_running.wait_for(|v| v == 1));
                Err(TaskError::failed("boom"))
            }
            1 => {
                task1_running.add(1);
                if ctx.cancel_token().sleep(Duration::from_secs(60)) {
                    Ok(())
                } else {
                    Err(TaskError::Cancelled)
                }
            }
            _ => Ok(()),
        })
        .unwrap();
    let statuses: Vec<Status> = result.outcomes.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        vec![
            Status::Failed,
            Status::Cancelled,
            Status::Skipped,
            Status::Skipped,
            Status::Skipped
        ]
    );
    assert!(
        !outer.is_cancelled(),
        "stopping a batch must not cancel the caller's token"
    );
}

#[test]
fn a_cancelled_batch_reports_cancelled_tasks() {
    for strategy in ALL {
        let token = CancelToken::new();
        let first = std::sync::atomic::AtomicBool::new(true);
        let result = pool(2, strategy)
            .run(&tasks(10), &token, &mut Silent, |_, ctx| {
                if first.swap(false, Ordering::SeqCst) {
                    // Simulates Ctrl-C arriving while the batch runs.
                    token.cancel(CancelReason::Interrupted);
                }
                // Running tasks notice the cancel and stop.
                if ctx.cancel_token().sleep(Duration::from_secs(20)) {
                    Ok(())
                } else {
                    Err(TaskError::Cancelled)
                }
            })
            .unwrap();
        let s = &result.summary;
        assert_eq!(
            (s.total, s.cancelled, s.skipped),
            (10, 10, 0),
            "{strategy:?}: {s:?}"
        );
        let never_started = result.outcomes.iter().filter(|o| o.attempts == 0).count();
        assert!(never_started >= 8, "{strategy:?}: {never_started}");
        assert!(!s.all_ok());
    }
}

#[test]
fn a_panic_fails_that_task_only() {
    for strategy in ALL {
        let result = pool(3, strategy)
            .run(&tasks(7), &CancelToken::new(), &mut Silent, |&i, _| {
                assert!(i != 3, "boom in task {i}");
                Ok(i)
            })
            .unwrap();
        assert_eq!(result.summary.failed, 1, "{strategy:?}");
        assert_eq!(result.summary.succeeded, 6);
        let failed = &result.outcomes[3];
        assert_eq!(failed.status, Status::Failed);
        assert!(
            failed
                .error_message()
                .unwrap()
                .contains("task panicked: boom in task 3"),
            "{:?}",
            failed.error
        );
    }
}

#[test]
fn invalid_max_workers_names_the_allowed_range() {
    for bad in [0, 17, 1000] {
        let err = MaxWorkers::new(bad, 16).unwrap_err();
        assert_eq!(
            err,
            PoolError::MaxWorkersOutOfRange {
                value: bad,
                cap: 16
            }
        );
        assert_eq!(
            err.to_string(),
            format!("max_workers must be between 1 and 16, got {bad}")
        );
    }
    assert_eq!(MaxWorkers::new(16, 16).unwrap().get(), 16);
    let default = MaxWorkers::available(16).get();
    assert!((1..=16).contains(&default));
    assert_eq!(
        MaxWorkers::available(1).get(),
        1,
        "the cap bounds the default"
    );
}

#[test]
fn unknown_strategy_values_are_errors_naming_the_choices() {
    let err = Strategy::parse("fast", "FANOUT_STRATEGY").unwrap_err();
    assert_eq!(
        err.to_string(),
        "FANOUT_STRATEGY=\"fast\" is not a strategy; expected one of: serial, threads, rayon, auto"
    );
    assert_eq!(
        Strategy::parse(" Rayon ", "x").unwrap(),
        Strategy::Rayon,
        "case and spaces are forgiven"
    );
}

#[test]
fn auto_picks_serial_for_one_task_or_one_worker_and_otherwise_follows_the_kind() {
    let auto = Strategy::Auto;
    assert_eq!(auto.resolve(TaskKind::Cpu, 1, 8), Strategy::Serial);
    assert_eq!(auto.resolve(TaskKind::Blocking, 0, 8), Strategy::Serial);
    assert_eq!(auto.resolve(TaskKind::Blocking, 50, 1), Strategy::Serial);
    assert_eq!(auto.resolve(TaskKind::Blocking, 50, 4), Strategy::Threads);
    assert_eq!(auto.resolve(TaskKind::Cpu, 50, 4), Strategy::Rayon);
    assert_eq!(
        Strategy::Threads.resolve(TaskKind::Cpu, 1, 4),
        Strategy::Threads,
        "an explicit strategy is obeyed"
    );
}

/// Auto on a large in-process batch: tiny tasks stay on the calling thread (handing them out
/// costs more than they do); once tasks prove long, the rest run in parallel.
#[test]
fn auto_keeps_tiny_cpu_tasks_serial_and_spreads_long_ones() {
    let cpu_pool = Pool::new(
        PoolConfig::new(MaxWorkers::new(4, 64).unwrap())
            .strategy(Strategy::Auto)
            .kind(TaskKind::Cpu),
    );
    let caller = std::thread::current().id();
    let tiny = cpu_pool
        .run(&tasks(1000), &CancelToken::new(), &mut Silent, |&i, _| {
            Ok((i * 2, std::thread::current().id() == caller))
        })
        .unwrap();
    assert_eq!(tiny.summary.strategy, Strategy::Serial);
    assert!(
        tiny.outcomes.iter().all(|o| o.value.unwrap().1),
        "all on the calling thread"
    );
    assert_eq!(tiny.outcomes[999].value.unwrap().0, 1998);

    let gauge = Gauge::default();
    let peak = AtomicUsize::new(0);
    let runs = AtomicUsize::new(0);
    let long = cpu_pool
        .run(&tasks(256), &CancelToken::new(), &mut Silent, |&i, _| {
            runs.fetch_add(1, Ordering::SeqCst);
            peak.fetch_max(gauge.add(1), Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            gauge.add(-1);
            Ok(i)
        })
        .unwrap();
    assert!(long.all_ok());
    assert_eq!(long.summary.strategy, Strategy::Rayon);
    assert!(
        peak.load(Ordering::SeqCst) > 1,
        "long tasks ran in parallel"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        256,
        "each task runs once: the sampled ones are not run again"
    );
    assert_eq!(
        long.outcomes
            .iter()
            .map(|o| o.value.unwrap())
            .collect::<Vec<_>>(),
        (0..256).collect::<Vec<_>>()
    );
}

#[test]
fn retryable_errors_are_retried_with_events_until_success() {
    let attempts = AtomicUsize::new(0);
    let mut retry_events = Vec::new();
    let policy = RetryPolicy::retries(3)
        .with_initial_backoff(Duration::from_millis(1))
        .with_jitter(0.0);
    let pool = Pool::new(PoolConfig::new(MaxWorkers::one()).retry(policy));
    let result = pool
        .run(
            &tasks(1),
            &CancelToken::new(),
            &mut |e: &Event<'_, usize>| {
                if let Event::TaskRetrying { attempt, error, .. } = e {
                    retry_events.push((*attempt, error.to_string()));
                }
            },
            |_, ctx| {
                attempts.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt() < 3 {
                    Err(TaskError::retryable(format!(
                        "503 on attempt {}",
                        ctx.attempt()
                    )))
                } else {
                    Ok(ctx.attempt() as usize)
                }
            },
        )
        .unwrap();
    let o = &result.outcomes[0];
    assert_eq!(o.status, Status::Succeeded);
    assert_eq!(o.attempts, 3);
    assert_eq!(o.value, Some(3));
    assert_eq!(
        retry_events,
        vec![
            (1, "503 on attempt 1".to_owned()),
            (2, "503 on attempt 2".to_owned())
        ]
    );
}

#[test]
fn non_retryable_errors_and_exhausted_retries_fail() {
    let pool = Pool::new(
        PoolConfig::new(MaxWorkers::new(2, 4).unwrap())
            .retry(RetryPolicy::retries(2).with_initial_backoff(Duration::from_millis(1))),
    );
    let result = pool
        .run(&tasks(2), &CancelToken::new(), &mut Silent, |&i, _| {
            Err::<(), _>(if i == 0 {
                TaskError::failed("404 not found")
            } else {
                TaskError::retryable("503")
            })
        })
        .unwrap();
    assert_eq!(result.outcomes[0].attempts, 1);
    assert_eq!(result.outcomes[1].attempts, 3);
    assert_eq!(result.summary.failed, 2);
}

#[test]
fn a_task_can_carry_its_own_retry_policy() {
    let pool = Pool::new(PoolConfig::new(MaxWorkers::one()));
    let retrying = Task::new("flaky", 0).with_retry(
        RetryPolicy::retries(1)
            .with_initial_backoff(Duration::from_millis(1))
            .retry_if(|_| true),
    );
    let result = pool
        .run(&[retrying], &CancelToken::new(), &mut Silent, |_, ctx| {
            if ctx.attempt() == 1 {
                Err(TaskError::failed("first try fails"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(result.outcomes[0].status, Status::Succeeded);
    assert_eq!(result.outcomes[0].attempts, 2);
}

#[test]
fn cancelling_during_backoff_stops_at_once() {
    let token = CancelToken::new();
    let pool = Pool::new(
        PoolConfig::new(MaxWorkers::one())
            .retry(RetryPolicy::retries(5).with_initial_backoff(Duration::from_secs(600))),
    );
    let mut reporter = |e: &Event<'_, ()>| {
        if matches!(e, Event::TaskRetrying { .. }) {
            token.cancel(CancelReason::Interrupted);
        }
    };
    let t = token.clone();
    // The reporter runs on this thread, so the cancel must come from elsewhere while the worker
    // sleeps: run the batch on a helper thread, cancel from the reporter there.
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            pool.run(&tasks(1), &t, &mut reporter, |_, _| {
                Err::<(), _>(TaskError::retryable("503"))
            })
        })
        .join()
        .unwrap()
        .unwrap()
    });
    assert_eq!(result.outcomes[0].status, Status::Cancelled);
    assert_eq!(result.outcomes[0].attempts, 1);
}

#[test]
fn events_arrive_in_a_sensible_order() {
    for strategy in ALL {
        let mut log: Vec<String> = Vec::new();
        let result = pool(3, strategy)
            .run(
                &tasks(5),
                &CancelToken::new(),
                &mut |e: &Event<'_, usize>| {
                    log.push(match e {
                        Event::BatchStarted { total, .. } => format!("batch {total}"),
                        Event::TaskStarted { index, .. } => format!("start {index}"),
                        Event::TaskFinished {
                            outcome, finished, ..
                        } => format!("finish {} #{finished}", outcome.index),
                        Event::BatchFinished { summary } => format!("done {}", summary.total),
                        Event::TaskRetrying { .. } => "retry".to_owned(),
                        Event::ChunkFinished { .. } => "chunk".to_owned(),
                        Event::TaskNote { .. } => "note".to_owned(),
                    });
                },
                |&i, _| Ok(i),
            )
            .unwrap();
        assert_eq!(log.first().unwrap(), "batch 5");
        assert_eq!(log.last().unwrap(), "done 5");
        for i in 0..5 {
            let s = log.iter().position(|l| *l == format!("start {i}")).unwrap();
            let f = log
                .iter()
                .position(|l| l.starts_with(&format!("finish {i} ")))
                .unwrap();
            assert!(s < f, "{strategy:?}: {log:?}");
        }
        let counters: Vec<_> = log.iter().filter_map(|l| l.split('#').nth(1)).collect();
        assert_eq!(counters, vec!["1", "2", "3", "4", "5"]);
        assert_ne!(
            result.summary.strategy,
            Strategy::Auto,
            "the summary names what ran"
        );
    }
}

#[test]
fn summary_counts_statuses_and_measures_utilization() {
    let result = pool(2, Strategy::Threads)
        .run(
            &tasks(6),
            &CancelToken::new(),
            &mut Silent,
            |&i, _| match i % 3 {
                0 => Ok(()),
                1 => Err(TaskError::failed("no")),
                _ => Err(TaskError::skipped("up to date")),
            },
        )
        .unwrap();
    let s = &result.summary;
    assert_eq!((s.total, s.succeeded, s.failed, s.skipped), (6, 2, 2, 2));
    assert_eq!(s.max_workers, 2);
    assert_eq!(s.strategy, Strategy::Threads);
    assert!((0.0..=1.0).contains(&s.utilization), "{}", s.utilization);
    assert!(s.effective_parallelism <= 2.0 + 1e-9);
    assert!(s.wall > Duration::ZERO);
    assert!(
        s.one_line()
            .starts_with("6 tasks: 2 succeeded, 2 failed, 2 skipped in ")
    );
    assert_eq!(result.failures().count(), 2);
}

/// `run_reporting`: every outcome reaches the reporter, and the summary it returns is the one
/// `run` computes from the outcomes it keeps, on every strategy and with a graph.
#[test]
fn run_reporting_tells_every_outcome_and_the_same_summary() {
    let work = |&i: &usize, _: &fanout::TaskContext<'_>| match i % 3 {
        0 => (Ok(i), i),
        1 => (Err(TaskError::failed("no")), i),
        _ => (Err(TaskError::skipped("up to date")), i),
    };
    for strategy in [Strategy::Serial, Strategy::Threads, Strategy::Rayon] {
        for graph in [false, true] {
            let batch: Vec<Task<usize>> = (0..9)
                .map(|i| {
                    let t = Task::new(format!("t{i}"), i);
                    if graph && i > 0 { t.after([i - 1]) } else { t }
                })
                .collect();
            let kept = pool(2, strategy)
                .run_with_meta(&batch, &CancelToken::new(), &mut Silent, work)
                .unwrap();
            let mut seen = Vec::new();
            let mut last_total = 0;
            let mut reporter = |e: &Event<'_, usize, usize>| {
                if let Event::TaskFinished { outcome, total, .. } = e {
                    seen.push((outcome.index, outcome.status, outcome.meta));
                    last_total = *total;
                }
            };
            let summary = pool(2, strategy)
                .run_reporting(&batch, &CancelToken::new(), &mut reporter, work)
                .unwrap();
            seen.sort_unstable_by_key(|s| s.0);
            let expected: Vec<_> = kept
                .outcomes
                .iter()
                .map(|o| (o.index, o.status, o.meta))
                .collect();
            assert_eq!(seen, expected, "{strategy:?}, graph {graph}");
            assert_eq!(last_total, 9);
            let counts = |s: &fanout::Summary| {
                (
                    s.total,
                    s.succeeded,
                    s.failed,
                    s.skipped,
                    s.cancelled,
                    s.timed_out,
                )
            };
            assert_eq!(counts(&summary), counts(&kept.summary), "{strategy:?}");
            assert_eq!(counts(&summary), (9, 3, 3, 3, 0, 0));
            assert!(summary.busy <= summary.wall * 2 + Duration::from_millis(50));
        }
    }
}

#[test]
fn an_empty_batch_is_fine() {
    let result = pool(4, Strategy::Auto)
        .run(&tasks(0), &CancelToken::new(), &mut Silent, |&i, _| Ok(i))
        .unwrap();
    assert_eq!(result.summary.total, 0);
    assert!(result.all_ok());
    assert_eq!(
        result.summary.one_line().split(':').nth(1).unwrap().trim(),
        "nothing to do in 0ms (4 workers, speedup 0.0x, 0% busy)"
    );
}

fn run_with(
    strategy: Strategy,
    workers: usize,
    inputs: &[(u32, bool)],
) -> Vec<(Status, Option<u64>, Option<String>)> {
    let tasks: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| Task::new(format!("t{i}"), *input))
        .collect();
    let pool = Pool::new(
        PoolConfig::new(MaxWorkers::new(workers, 64).unwrap())
            .strategy(strategy)
            .kind(TaskKind::Cpu),
    );
    pool.run(&tasks, &CancelToken::new(), &mut Silent, |&(n, fail), _| {
        if fail {
            Err(TaskError::failed(format!("{n} failed")))
        } else {
            Ok((0..u64::from(n % 500)).map(|k| k * k).sum::<u64>())
        }
    })
    .unwrap()
    .outcomes
    .into_iter()
    .map(|o| (o.status, o.value, o.error_message()))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Parallel execution is an optimisation: any strategy, any worker count, same outcomes.
    #[test]
    fn parallel_results_equal_serial_results(
        inputs in proptest::collection::vec((any::<u32>(), proptest::bool::weighted(0.2)), 0..60),
        workers in 1usize..9,
    ) {
        let serial = run_with(Strategy::Serial, 1, &inputs);
        for strategy in [Strategy::Threads, Strategy::Rayon, Strategy::Auto] {
            prop_assert_eq!(&run_with(strategy, workers, &inputs), &serial);
        }
    }
}

fn strategy_seen_with_env(value: &str) -> String {
    crate::helper_result("strategy-from-env", fanout::STRATEGY_ENV, value)
}

#[test]
fn the_strategy_environment_variable_overrides_and_rejects_unknown_values() {
    assert_eq!(strategy_seen_with_env("serial"), "ok serial");
    assert_eq!(strategy_seen_with_env("RAYON"), "ok rayon");
    assert_eq!(
        strategy_seen_with_env(""),
        "ok auto",
        "empty counts as unset"
    );
    assert_eq!(
        strategy_seen_with_env("turbo"),
        "error FANOUT_STRATEGY=\"turbo\" is not a strategy; expected one of: serial, threads, rayon, auto"
    );
}

#[test]
fn a_panicking_reporter_stops_the_batch() {
    // Until the panic unwinds into the pool, nothing can stop the batch: the panic hook runs
    // first (with RUST_BACKTRACE set, symbolizing a backtrace under load takes up to a second
    // or so). So the bound is loose on what runs during the hook, and strict after it: no task
    // starts once the batch is cancelled.
    for strategy in PARALLEL {
        let started = AtomicUsize::new(0);
        let started_after_cancel = AtomicUsize::new(0);
        let cancelled_seen = AtomicUsize::new(0);
        let mut panicking = |event: &Event<'_, usize>| {
            if matches!(event, Event::TaskFinished { .. }) {
                panic!("the reporter broke");
            }
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool(2, strategy).run(
                &tasks(100),
                &CancelToken::new(),
                &mut panicking,
                |i, ctx| {
                    started.fetch_add(1, Ordering::SeqCst);
                    if ctx.is_cancelled() {
                        started_after_cancel.fetch_add(1, Ordering::SeqCst);
                    }
                    if !ctx.cancel_token().sleep(Duration::from_millis(100)) {
                        cancelled_seen.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(*i)
                },
            )
        }));
        assert!(result.is_err(), "the reporter's panic reaches the caller");
        let n = started.load(Ordering::SeqCst);
        assert!(
            n < 50,
            "{strategy:?}: {n} of 100 tasks ran with nobody watching"
        );
        assert_eq!(
            started_after_cancel.load(Ordering::SeqCst),
            0,
            "{strategy:?}: tasks started after the batch was cancelled"
        );
    }
}

/// `run_with_meta`: what the work reports besides its value reaches the outcome (and the
/// reporter) on success and on failure; a retried task carries its last attempt's meta, a task
/// that never ran or panicked the default.
#[test]
fn meta_reaches_the_outcome_on_success_and_on_failure() {
    for strategy in [Strategy::Serial, Strategy::Threads, Strategy::Rayon] {
        let pool = Pool::new(
            PoolConfig::new(MaxWorkers::new(3, 8).unwrap())
                .strategy(strategy)
                .retry(
                    RetryPolicy::retries(2)
                        .with_initial_backoff(Duration::ZERO)
                        .retry_if(|_| true),
                ),
        );
        let mut seen = Vec::new();
        let mut reporter = |e: &Event<'_, usize, Option<u32>>| {
            if let Event::TaskFinished { outcome, .. } = e {
                seen.push((outcome.index, outcome.meta));
            }
        };
        let result = pool
            .run_with_meta(
                &tasks(6),
                &CancelToken::new(),
                &mut reporter,
                |&n, ctx| match n {
                    1 => (Err(TaskError::failed("exit 3")), Some(3)),
                    // Fails twice, then succeeds: the last attempt's meta.
                    2 if ctx.attempt() < 3 => (Err(TaskError::failed("flaky")), Some(10)),
                    2 => (Ok(n), Some(ctx.attempt())),
                    4 => panic!("boom"),
                    _ => (Ok(n * 10), Some(0)),
                },
            )
            .unwrap();
        let metas: Vec<Option<u32>> = result.outcomes.iter().map(|o| o.meta).collect();
        assert_eq!(
            metas,
            [Some(0), Some(3), Some(3), Some(0), None, Some(0)],
            "{strategy:?}"
        );
        assert_eq!(result.outcomes[1].status, Status::Failed);
        assert_eq!(result.outcomes[2].attempts, 3);
        seen.sort_unstable();
        assert_eq!(
            seen.into_iter().map(|(_, m)| m).collect::<Vec<_>>(),
            metas,
            "{strategy:?}: the reporter sees the same meta"
        );
    }
    // Tasks that never start carry the default.
    let pool = Pool::new(PoolConfig::new(MaxWorkers::one()));
    let cancel = CancelToken::new();
    cancel.cancel(CancelReason::Requested);
    let result = pool
        .run_with_meta(&tasks(2), &cancel, &mut Silent, |_, _| (Ok(()), Some(1u8)))
        .unwrap();
    assert!(result.outcomes.iter().all(|o| o.meta.is_none()));
}

/// A task's note reaches the reporter on the owner thread at once, while the task still runs
/// (even after tiny tasks, whose messages a worker batches), and before the task's end.
#[test]
fn a_note_reaches_the_reporter_while_its_task_runs() {
    for strategy in [Strategy::Serial, Strategy::Threads, Strategy::Rayon] {
        let pool = Pool::new(PoolConfig::new(MaxWorkers::new(2, 16).unwrap()).strategy(strategy));
        // Tiny tasks first, then one that notes and waits until the reporter has seen its note.
        let tasks: Vec<Task<usize>> = (0..200).map(|i| Task::new(format!("t{i}"), i)).collect();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut order = Vec::new();
        let result = pool
            .run(
                &tasks,
                &CancelToken::new(),
                &mut |e: &Event<'_, usize>| match e {
                    Event::TaskNote { index, note, .. } => {
                        assert_eq!(note.downcast_ref::<&str>(), Some(&"about to start"));
                        order.push(format!("note {index}"));
                        seen.store(true, Ordering::SeqCst);
                    }
                    Event::TaskFinished { outcome, .. } if outcome.index == 199 => {
                        order.push("end 199".to_owned());
                    }
                    _ => {}
                },
                |&i, ctx| {
                    if i == 199 {
                        ctx.note("about to start");
                        // Serially the reporter runs on this thread: it has the note already.
                        let deadline = std::time::Instant::now() + Duration::from_secs(10);
                        while !seen.load(Ordering::SeqCst) {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "{strategy:?}: note held back"
                            );
                            std::thread::yield_now();
                        }
                    }
                    Ok(i)
                },
            )
            .unwrap();
        assert_eq!(result.summary.succeeded, 200, "{strategy:?}");
        assert_eq!(order, ["note 199", "end 199"], "{strategy:?}");
    }
}
