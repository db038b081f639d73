//! `Pool::map`: large batches of small items, in chunks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use fanout::{
    CancelReason, CancelToken, Chunking, Event, FailurePolicy, MaxWorkers, Pool, PoolConfig,
    Silent, Status, Strategy, TaskError,
};

use crate::pool::{ALL, pool};

fn chunks(size: usize) -> Chunking {
    Chunking::default()
        .chunk_size(size)
        .unwrap()
        .min_batch_size(0)
}

#[test]
fn every_item_has_its_outcome_in_input_order_whatever_the_chunk_size() {
    let items: Vec<u64> = (0..1000).collect();
    for strategy in ALL {
        for chunking in [
            chunks(1),
            chunks(7),
            chunks(1000),
            chunks(5000),
            Chunking::default(),
        ] {
            let result = pool(3, strategy)
                .map_with(
                    chunking,
                    &items,
                    &CancelToken::new(),
                    &mut Silent,
                    |&i, ctx| {
                        assert_eq!(ctx.index() as u64, i);
                        Ok(i * 2)
                    },
                )
                .unwrap();
            assert_eq!(result.items.len(), 1000, "{strategy:?} {chunking:?}");
            for (i, r) in result.items.iter().enumerate() {
                assert_eq!(
                    r.as_ref().ok(),
                    Some(&(i as u64 * 2)),
                    "{strategy:?} {chunking:?}"
                );
                assert_eq!(result.status(i), Status::Succeeded);
                assert_eq!(result.attempts(i), 1);
            }
            assert_eq!(result.summary.succeeded, 1000);
            assert_eq!(result.summary.total, 1000);
            let full = result.into_batch_result();
            assert!(full.outcomes.iter().enumerate().all(|(i, o)| o.index == i
                && o.value == Some(i as u64 * 2)
                && o.started_after.is_some()));
        }
    }
}

#[test]
fn a_panic_in_the_middle_of_a_chunk_fails_that_item_only() {
    let items: Vec<usize> = (0..100).collect();
    for strategy in ALL {
        let result = pool(2, strategy)
            .map_with(
                chunks(10),
                &items,
                &CancelToken::new(),
                &mut Silent,
                |&i, _| {
                    assert!(i != 45, "item 45 is broken");
                    Ok(i)
                },
            )
            .unwrap();
        let failed: Vec<usize> = (0..100)
            .filter(|&i| result.status(i) == Status::Failed)
            .collect();
        assert_eq!(failed, [45], "{strategy:?}");
        let broken = result.outcome(45);
        assert_eq!(broken.label(), "item 46");
        assert!(
            broken
                .error_message()
                .unwrap()
                .contains("task panicked: item 45 is broken"),
            "{:?}",
            broken.error
        );
        // Its neighbours in the same chunk ran.
        assert_eq!(result.items[44].as_ref().ok(), Some(&44));
        assert_eq!(result.items[46].as_ref().ok(), Some(&46));
    }
}

#[test]
fn cancelling_between_chunks_leaves_the_rest_cancelled() {
    let items: Vec<usize> = (0..400).collect();
    for strategy in ALL {
        let cancel = CancelToken::new();
        let seen = AtomicUsize::new(0);
        let result = pool(2, strategy)
            .map_with(chunks(20), &items, &cancel, &mut Silent, |&i, _| {
                if seen.fetch_add(1, Ordering::SeqCst) == 49 {
                    cancel.cancel(CancelReason::Requested);
                }
                Ok(i)
            })
            .unwrap();
        let ran = seen.load(Ordering::SeqCst);
        assert!(ran < 400, "{strategy:?}: every item ran ({ran})");
        let cancelled: Vec<usize> = (0..400)
            .filter(|&i| result.status(i) == Status::Cancelled)
            .collect();
        assert_eq!(cancelled.len(), 400 - ran, "{strategy:?}");
        assert_eq!(result.summary.cancelled, 400 - ran);
        assert!(
            cancelled
                .iter()
                .all(|&i| result.attempts(i) == 0 && result.outcome(i).started_after.is_none())
        );
    }
}

#[test]
fn stop_soon_skips_what_comes_after_a_failure() {
    let items: Vec<usize> = (0..300).collect();
    let pool = Pool::new(
        PoolConfig::new(MaxWorkers::one())
            .strategy(Strategy::Serial)
            .failure_policy(FailurePolicy::StopSoon),
    );
    let result = pool
        .map_with(
            chunks(16),
            &items,
            &CancelToken::new(),
            &mut Silent,
            |&i, _| {
                if i == 100 {
                    Err(TaskError::failed("bad row"))
                } else {
                    Ok(i)
                }
            },
        )
        .unwrap();
    assert_eq!(result.summary.succeeded, 100);
    assert_eq!(result.summary.failed, 1);
    assert_eq!(result.summary.skipped, 199);
}

#[test]
fn progress_comes_per_chunk_and_counts_every_item() {
    let items: Vec<usize> = (0..1000).collect();
    for strategy in ALL {
        let log = Mutex::new(Vec::new());
        let mut reporter = |e: &Event<'_, usize>| match e {
            Event::ChunkFinished {
                first,
                items,
                finished,
                total,
            } => log
                .lock()
                .unwrap()
                .push((*first, items.len(), *finished, *total)),
            Event::TaskStarted { .. } | Event::TaskFinished { .. } => {
                panic!("map reports chunks, not tasks")
            }
            _ => {}
        };
        pool(2, strategy)
            .map_with(
                chunks(100),
                &items,
                &CancelToken::new(),
                &mut reporter,
                |&i, _| Ok(i),
            )
            .unwrap();
        let log = log.into_inner().unwrap();
        assert_eq!(log.len(), 10, "{strategy:?}: {log:?}");
        assert_eq!(log.last().unwrap().2, 1000, "the last chunk counts all");
        let mut firsts: Vec<usize> = log.iter().map(|c| c.0).collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..10).map(|c| c * 100).collect::<Vec<_>>());
        assert!(
            log.windows(2).all(|w| w[0].2 < w[1].2),
            "finished only grows"
        );
    }
}

#[test]
fn a_small_batch_runs_on_the_calling_thread() {
    let items: Vec<usize> = (0..10).collect();
    let here = std::thread::current().id();
    let result = pool(4, Strategy::Threads)
        .map_with(
            Chunking::default().min_batch_size(64),
            &items,
            &CancelToken::new(),
            &mut Silent,
            |&i, _| {
                assert_eq!(std::thread::current().id(), here);
                Ok(i)
            },
        )
        .unwrap();
    assert_eq!(result.summary.strategy, Strategy::Serial);
    assert_eq!(result.summary.succeeded, 10);
}

#[test]
fn auto_keeps_a_short_batch_serial_and_spreads_a_long_one() {
    // A few microseconds of work in all.
    let items: Vec<u64> = (0..100).collect();
    let short = pool(2, Strategy::Auto)
        .map(&items, &CancelToken::new(), &mut Silent, |&i, _| Ok(i))
        .unwrap();
    assert_eq!(short.summary.strategy, Strategy::Serial, "100 additions");
    let slow: Vec<u64> = (0..200).collect();
    let threads = Mutex::new(std::collections::HashSet::new());
    let long = pool(2, Strategy::Auto)
        .map(&slow, &CancelToken::new(), &mut Silent, |&i, _| {
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(i)
        })
        .unwrap();
    assert_eq!(long.summary.strategy, Strategy::Rayon, "200 x 1 ms");
    assert!(threads.into_inner().unwrap().len() >= 2);
    // Few items, but slow ones: spread too (a count alone would have kept them serial).
    let few: Vec<u64> = (0..6).collect();
    let spread = pool(2, Strategy::Auto)
        .map(&few, &CancelToken::new(), &mut Silent, |&i, _| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(i)
        })
        .unwrap();
    assert_eq!(spread.summary.strategy, Strategy::Rayon, "6 x 20 ms");
}

#[test]
fn a_zero_chunk_size_is_refused() {
    let e = Chunking::default().chunk_size(0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "chunk_size=\"0\" is not valid; expected a whole number of items, at least 1"
    );
}

fn chunking_seen_with_env(var: &str, value: &str) -> String {
    crate::helper_result("chunking-from-env", var, value)
}

#[test]
fn the_chunk_environment_variables_override_and_reject_bad_values() {
    assert_eq!(
        chunking_seen_with_env(fanout::CHUNK_SIZE_ENV, "256"),
        "ok Some(256) 2"
    );
    assert_eq!(
        chunking_seen_with_env(fanout::CHUNK_SIZE_ENV, "auto"),
        "ok None 2"
    );
    assert_eq!(
        chunking_seen_with_env(fanout::MIN_BATCH_ENV, "0"),
        "ok None 0"
    );
    assert_eq!(
        chunking_seen_with_env(fanout::CHUNK_SIZE_ENV, "0"),
        "error FANOUT_CHUNK_SIZE=\"0\" is not valid; expected a whole number of items (at least 1) or auto"
    );
    assert_eq!(
        chunking_seen_with_env(fanout::MIN_BATCH_ENV, "-5"),
        "error FANOUT_MIN_BATCH=\"-5\" is not valid; expected a whole number of items"
    );
}

#[test]
fn a_retryable_item_is_retried_and_its_attempts_are_kept() {
    let items: Vec<usize> = (0..100).collect();
    let tries = Mutex::new(std::collections::HashMap::<usize, u32>::new());
    let pool = Pool::new(
        PoolConfig::new(MaxWorkers::new(2, 8).unwrap())
            .strategy(Strategy::Threads)
            .retry(
                fanout::RetryPolicy::retries(2)
                    .with_initial_backoff(std::time::Duration::from_millis(1)),
            ),
    );
    let result = pool
        .map_with(
            chunks(10),
            &items,
            &CancelToken::new(),
            &mut Silent,
            |&i, ctx| {
                *tries.lock().unwrap().entry(i).or_default() += 1;
                match i {
                    // Flaky once, then fine.
                    7 if ctx.attempt() == 1 => Err(TaskError::retryable("busy")),
                    // Never fine: three attempts, then failed.
                    8 => Err(TaskError::retryable("down")),
                    _ => Ok(i),
                }
            },
        )
        .unwrap();
    assert_eq!(result.status(7), Status::Succeeded);
    assert_eq!(result.attempts(7), 2);
    assert_eq!(result.status(8), Status::Failed);
    assert_eq!(result.attempts(8), 3);
    assert_eq!(result.outcome(8).attempts, 3);
    assert_eq!(result.attempts(9), 1);
    assert_eq!(tries.lock().unwrap()[&8], 3);
    assert_eq!(result.summary.succeeded, 99);
}
