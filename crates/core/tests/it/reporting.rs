//! The shared report JSON and the reporters.

use std::time::Duration;

use fanout::reporters::{JsonLines, Plain};
use fanout::{
    CancelToken, MaxWorkers, Pool, PoolConfig, RetryPolicy, Silent, Strategy, Task, TaskError,
};
use serde_json::Value;

fn mixed_batch(reporter: &mut dyn fanout::Reporter<u32>) -> fanout::BatchResult<u32> {
    let tasks: Vec<_> = ["alpha", "beta", "gamma"]
        .iter()
        .enumerate()
        .map(|(i, n)| Task::new(*n, i as u32))
        .collect();
    let pool = Pool::new(
        PoolConfig::new(MaxWorkers::new(2, 16).unwrap())
            .strategy(Strategy::Serial)
            .retry(RetryPolicy::retries(1).with_initial_backoff(Duration::from_millis(1))),
    );
    pool.run(&tasks, &CancelToken::new(), reporter, |&i, ctx| match i {
        0 => Ok(7),
        1 if ctx.attempt() == 1 => Err(TaskError::retryable("rate limited")),
        1 => Err(TaskError::failed("bad input").with_detail("line 3: oops")),
        _ => Err(TaskError::TimedOut {
            after: Duration::from_secs(5),
            detail: None,
        }),
    })
    .unwrap()
}

#[test]
fn the_report_has_the_shared_shape() {
    let result = mixed_batch(&mut Silent);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/report.json");
    result.write_report(&path).unwrap();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();

    let summary = &json["summary"];
    for key in [
        "total",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "skipped",
        "wall_seconds",
        "max_workers",
        "utilization",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}: {summary}");
    }
    assert_eq!(summary["total"], 3);
    assert_eq!(summary["succeeded"], 1);
    assert_eq!(summary["failed"], 1);
    assert_eq!(summary["timed_out"], 1);
    assert_eq!(summary["max_workers"], 2);
    assert_eq!(summary["strategy"], "serial");

    let tasks = json["tasks"].as_array().unwrap();
    let names: Vec<_> = tasks.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    let statuses: Vec<_> = tasks
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "failed", "timed_out"]);
    assert_eq!(tasks[1]["attempts"], 2);
    assert_eq!(tasks[1]["error"], "bad input");
    assert_eq!(tasks[1]["error_detail"], "line 3: oops");
    assert_eq!(tasks[0]["error"], Value::Null);
    assert_eq!(tasks[2]["error"], "timed out after 5.0s");
    for t in tasks {
        assert!(t["duration_seconds"].as_f64().unwrap() >= 0.0);
        assert!(t["queue_wait_seconds"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn tools_can_add_fields_to_each_task() {
    #[derive(serde::Serialize)]
    struct Extra {
        output_path: String,
    }
    let result = mixed_batch(&mut Silent);
    let report = result.report_with(|o| Extra {
        output_path: format!("_site/{}.html", o.name),
    });
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["tasks"][0]["output_path"], "_site/alpha.html");
    assert_eq!(json["tasks"][0]["status"], "succeeded");
}

#[test]
fn plain_lines_show_every_task_and_a_summary() {
    let mut plain = Plain::new(Vec::new(), false);
    mixed_batch(&mut plain);
    let text = String::from_utf8(plain.into_inner()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("[1/3] ok        alpha ("), "{text}");
    assert!(lines[1].starts_with("retry beta: attempt 1 failed (rate limited); next in "));
    assert!(lines[2].starts_with("[2/3] FAILED    beta ("));
    assert!(lines[2].ends_with(" after 2 attempts: bad input"), "{text}");
    assert!(lines[3].contains("TIMED OUT gamma") && lines[3].ends_with(": timed out after 5.0s"));
    assert!(
        lines[4].starts_with("3 tasks: 1 succeeded, 1 failed, 1 timed out in "),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour codes when colour is off");
}

#[test]
fn quiet_mode_prints_failures_and_the_summary_only() {
    let mut quiet = Plain::new(Vec::new(), false).failures_only();
    mixed_batch(&mut quiet);
    let text = String::from_utf8(quiet.into_inner()).unwrap();
    assert!(!text.contains("alpha"), "{text}");
    assert!(!text.contains("retry"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn colour_marks_status_when_enabled() {
    let mut plain = Plain::new(Vec::new(), true);
    mixed_batch(&mut plain);
    let text = String::from_utf8(plain.into_inner()).unwrap();
    assert!(text.contains("\x1b[31mFAILED"), "{text:?}");
}

#[test]
fn json_lines_are_one_valid_object_per_event() {
    let mut sink = JsonLines::new(Vec::new());
    mixed_batch(&mut sink);
    let text = String::from_utf8(sink.into_inner()).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "batch_started",
            "task_started",
            "task_finished",
            "task_started",
            "task_retrying",
            "task_started",
            "task_finished",
            "task_started",
            "task_finished",
            "batch_finished"
        ]
    );
    assert_eq!(events[6]["status"], "failed");
    assert_eq!(events[9]["summary"]["total"], 3);
}

#[test]
fn quiet_mode_does_not_print_skips() {
    let tasks = [Task::new("fresh", 0), Task::new("stale", 1)];
    let mut quiet = Plain::new(Vec::new(), false).failures_only();
    Pool::new(PoolConfig::new(MaxWorkers::one()).noun("page", "pages"))
        .run(&tasks, &CancelToken::new(), &mut quiet, |&i, _| {
            if i == 0 {
                Err(TaskError::skipped("up to date"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    let text = String::from_utf8(quiet.into_inner()).unwrap();
    assert!(
        text.starts_with("2 pages: 1 succeeded, 1 skipped in "),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn failure_details_can_be_shown_under_the_line() {
    let mut plain = Plain::new(Vec::new(), false).with_detail(1);
    mixed_batch(&mut plain);
    let text = String::from_utf8(plain.into_inner()).unwrap();
    assert!(
        text.contains(": bad input\n    | line 3: oops\n"),
        "the last detail line follows the failure: {text}"
    );
}

#[test]
fn map_items_that_fail_are_named_by_their_place_and_counted_per_chunk() {
    let items: Vec<u32> = (0..200).collect();
    let pool = fanout::Pool::new(
        fanout::PoolConfig::new(fanout::MaxWorkers::one()).strategy(fanout::Strategy::Serial),
    );
    let chunking = fanout::Chunking::default().chunk_size(50).unwrap();
    let run = |reporter: &mut dyn fanout::Reporter<u32>| {
        pool.map_with(
            chunking,
            &items,
            &fanout::CancelToken::new(),
            reporter,
            |&i, _| {
                if i == 120 {
                    Err(fanout::TaskError::failed("row 121 is malformed"))
                } else {
                    Ok(i)
                }
            },
        )
        .unwrap()
    };
    let mut plain = Plain::new(Vec::new(), false);
    let result = run(&mut plain);
    let text = String::from_utf8(plain.into_inner()).unwrap();
    assert_eq!(result.summary.failed, 1);
    assert!(
        text.contains("[150/200] FAILED    item 121: row 121 is malformed"),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        2,
        "the failure and the summary: {text}"
    );

    let mut json = fanout::reporters::JsonLines::new(Vec::new());
    run(&mut json);
    let lines: Vec<serde_json::Value> = String::from_utf8(json.into_inner())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let chunks: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["event"] == "chunk_finished")
        .collect();
    assert_eq!(chunks.len(), 4);
    assert_eq!(chunks[2]["succeeded"], 49);
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "task_finished" && l["name"] == "item 121" && l["index"] == 120)
    );
}
