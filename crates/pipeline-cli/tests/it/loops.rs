//! Loop stages: jobs run once per item of a list an earlier job returned.

use std::fmt::Write as _;

use serde_json::Value;
use testkit::{read_pid, wait_for};

use super::{BIN, Project, statuses};

/// `peek` returns `items` (a JSON list); the loop runs `a` and `b` for each, with the item's
/// session id as payload (and the run's model).
fn pipeline(items: &str, extra_jobs: &str) -> String {
    format!(
        r#"
[[stages]]
name = "query_phase"
jobs = ["peek"]

[[stages]]
name = "extraction"
loop = {{ over = "@run.peek.items", key = "@item.session_id", payload = {{ session_id = "@item.session_id", model = "@payload.model" }}, jobs = ["a", "b"] }}

[[stages]]
name = "report"
jobs = ["summary"]

[jobs.peek]
command = "echo peek >> ran; cat items.json > \"$LORCHESTRA_OUTPUT\""
[jobs.summary]
command = "echo summary >> ran"
{extra_jobs}
"#
    ) + &format!("# items: {items}\n")
}

const A_AND_B: &str = r#"
[jobs.a]
command = "echo + >> events; sleep 0.3; echo - >> events; printf 'a %s %s %s\n' {{payload.session_id}} \"$LORCHESTRA_PAYLOAD_SESSION_ID\" {{payload.model}} >> ran"
[jobs.b]
command = ["sh", "-c", "printf 'b %s\n' \"$1\" >> ran", "sh", "{{payload.session_id}}"]
"#;

fn items(ids: &[&str]) -> String {
    let list: Vec<Value> = ids
        .iter()
        .map(|id| serde_json::json!({ "session_id": id }))
        .collect();
    serde_json::json!({ "items": list }).to_string()
}

fn ran(p: &Project) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(p.path().join("ran"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_loop_runs_its_jobs_once_per_item_with_the_items_values_within_max_workers() {
    let ids = ["s1", "s2", "s3", "s4", "x'; touch pwned"];
    let p = Project::create(&[
        ("pipelines/p.toml", &pipeline("5", A_AND_B)),
        ("items.json", &items(&ids)),
    ]);
    let out = p.run(&[
        "pipeline",
        "p",
        "-j",
        "3",
        "--no-progress",
        "--payload",
        "model=m1",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("stage extraction: 5 items from @run.peek.items"),
        "{}",
        out.stderr
    );
    assert!(
        !p.path().join("pwned").exists(),
        "an item's value ran as code"
    );
    let valid = p.run(&["validate", "p"]).stdout;
    assert!(
        valid.contains("is valid: 3 stages, 2 jobs and 2 per item of a loop"),
        "{valid}"
    );
    let mut expected = vec!["peek".to_owned(), "summary".to_owned()];
    for id in ids {
        expected.push(format!("a {id} {id} m1"));
        expected.push(format!("b {id}"));
    }
    expected.sort();
    assert_eq!(ran(&p), expected);
    let peak = p.peak();
    assert!(
        (1..=3).contains(&peak),
        "-j 3 bounds the iterations: {peak}"
    );
    let record = p.last_record();
    let st = statuses(&record);
    assert_eq!(st.len(), 12, "{st:?}");
    assert!(st.contains(&("extraction".into(), "a[s1]".into(), "succeeded".into())));
    assert!(st.contains(&(
        "extraction".into(),
        "b[x'; touch pwned]".into(),
        "succeeded".into()
    )));
    assert_eq!(record["stages"][1]["note"], "5 items from @run.peek.items");
    // The report runs after every iteration.
    let summary_start = record["stages"][2]["jobs"][0]["started_at_unix"]
        .as_f64()
        .unwrap();
    for j in record["stages"][1]["jobs"].as_array().unwrap() {
        assert!(j["finished_at_unix"].as_f64().unwrap() <= summary_start);
    }
}

#[test]
fn kill_9_mid_loop_then_resume_runs_exactly_the_iterations_that_did_not_succeed() {
    let jobs = r#"
[jobs.a]
command = "echo a {{payload.session_id}} >> ran; if [ {{payload.session_id}} = s4 ]; then echo $$ > a.pid; while [ ! -f go ]; do sleep 0.05; done; fi"
[jobs.b]
command = "echo b {{payload.session_id}} >> ran"
"#;
    let p = Project::create(&[
        ("pipelines/p.toml", &pipeline("5", jobs)),
        ("items.json", &items(&["s1", "s2", "s3", "s4", "s5"])),
    ]);
    let mut child = testkit::command(BIN)
        .args([
            "pipeline",
            "p",
            "-j",
            "2",
            "--no-progress",
            "--payload",
            "model=m",
        ])
        .current_dir(p.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let nine_done = || {
        p.only_record().is_some_and(|r| {
            statuses(&r)
                .iter()
                .filter(|s| s.0 == "extraction" && s.2 == "succeeded")
                .count()
                == 9
        })
    };
    wait_for("nine iterations recorded as succeeded", nine_done);
    let pid = read_pid(&p.path().join("a.pid"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    wait_for("the killed run's job to die", || !testkit::alive(pid));
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    std::fs::write(p.path().join("ran"), "").unwrap();
    std::fs::write(p.path().join("go"), "").unwrap();
    let out = p.run(&["pipeline", "p", "--resume", &run_id, "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("5 items from @run.peek.items (9 iterations succeeded earlier in this run)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        ran(&p),
        ["a s4", "summary"],
        "only what did not succeed ran again"
    );
    let r = p.last_record();
    assert_eq!(r["run_id"], run_id.as_str());
    assert!(statuses(&r).iter().all(|s| s.2 == "succeeded"), "{r}");
}

#[test]
fn the_yaml_form_gives_the_same_record_as_the_toml_form() {
    let yaml = r"
stages:
  - name: query_phase
    jobs: [peek]
  - name: extraction
    loop:
      over: '@run.peek.items'
      key: '@item.session_id'
      payload:
        session_id: '@item.session_id'
        model: '@payload.model'
      jobs: [a, b]
  - name: report
    jobs: [summary]
";
    let toml = pipeline("3", "");
    let shared = |name: &str| {
        let start = toml.find(&format!("[jobs.{name}]")).unwrap();
        let rest = &toml[start..];
        let end = rest[1..].find("\n[").map_or(rest.len(), |e| e + 1);
        rest[..end].lines().skip(1).collect::<Vec<_>>().join("\n") + "\n"
    };
    let mut a_and_b = String::new();
    let _ = write!(
        a_and_b,
        "{}",
        A_AND_B.replace("[jobs.a]\n", "").replace("[jobs.b]\n", "")
    );
    let a_b: Vec<&str> = a_and_b.trim().lines().collect();
    let p = Project::create(&[
        ("pipelines/t.toml", &pipeline("3", A_AND_B)),
        ("pipelines/y.yaml", yaml),
        ("jobs/peek.toml", &shared("peek")),
        ("jobs/summary.toml", &shared("summary")),
        ("jobs/a.toml", a_b[0]),
        ("jobs/b.toml", a_b[1]),
        ("items.json", &items(&["s1", "s2", "s3"])),
    ]);
    let mut records = Vec::new();
    for name in ["t", "y"] {
        let out = p.run(&["pipeline", name, "--no-progress", "--payload", "model=m"]);
        assert_eq!(out.code, Some(0), "{name}: {}", out.stderr);
        records.push(statuses(&p.last_record()));
    }
    assert_eq!(records[0], records[1]);
    assert_eq!(records[0].len(), 8);
}

#[test]
fn a_list_that_is_not_one_fails_its_stage_and_an_empty_one_runs_nothing() {
    let p = Project::create(&[
        ("pipelines/p.toml", &pipeline("-", A_AND_B)),
        ("items.json", r#"{"items": {"session_id": "s1"}}"#),
    ]);
    let out = p.run(&["pipeline", "p", "--no-progress", "--payload", "model=m"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "stage extraction FAILED: loop.over = @run.peek.items is an object, not a list"
        ),
        "{}",
        out.stderr
    );
    let r = p.last_record();
    assert_eq!(r["status"], "failed");
    assert!(statuses(&r).contains(&("report".into(), "summary".into(), "skipped".into())));
    assert!(
        r["stages"][1]["note"]
            .as_str()
            .unwrap()
            .starts_with("failed: loop.over")
    );

    p.write("items.json", r#"{"items": []}"#);
    let out = p.run(&["pipeline", "p", "--no-progress", "--payload", "model=m"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("stage extraction: @run.peek.items is an empty list: no iterations"),
        "{}",
        out.stderr
    );
    assert_eq!(p.last_record()["stages"][1]["jobs"], serde_json::json!([]));
}

#[test]
fn loops_that_cannot_work_are_refused_before_anything_runs() {
    let stage = |l: &str| {
        format!(
            "[[stages]]\nname = \"one\"\njobs = [\"peek\"]\n[[stages]]\nname = \"two\"\nloop = {l}\n\
             [[stages]]\nname = \"three\"\njobs = [\"later\"]\n\
             [jobs.peek]\ncommand = \"true\"\n[jobs.later]\ncommand = \"true\"\n\
             [jobs.a]\ncommand = \"echo {{{{payload.x}}}}\"\n[jobs.b]\ncommand = \"true\"\n"
        )
    };
    let cases = [
        (
            stage(r#"{ over = "@run.nope.items", jobs = ["b"] }"#),
            "pipelines/p.toml, line 6: stage \"two\": loop.over names the job \"nope\", which is not a job of this pipeline",
        ),
        (
            stage(r#"{ over = "@run.later.items", jobs = ["b"] }"#),
            "pipelines/p.toml, line 6: stage \"two\": loop.over names the job \"later\", which does not run before the loop",
        ),
        (
            stage(r#"{ over = "@run.b", jobs = ["b"] }"#),
            "loop.over names the job \"b\", which does not run before the loop",
        ),
        (
            stage(r#"{ over = "items", jobs = ["b"] }"#),
            "pipelines/p.toml, line 6: stage \"two\": loop.over = \"items\": expected @run.JOB[.path]",
        ),
        (
            stage(r#"{ over = "@run.peek", key = "session", jobs = ["b"] }"#),
            "loop.key = \"session\": expected @item[.path]",
        ),
        (
            stage(r#"{ over = "@run.peek", payload = { y = "@item" }, jobs = ["a"] }"#),
            "the job \"a\" (in the loop of stage \"two\") uses {{payload.x}}, but neither",
        ),
        (
            stage(r#"{ over = "@run.peek", jobs = [] }"#),
            "stage \"two\": the loop has no jobs",
        ),
    ];
    for (text, expected) in cases {
        assert_refused(&text, expected);
    }
}

/// Pipeline `text` (with a `list.json` beside it) exits 2 naming its file and `expected`, and
/// nothing ran.
fn assert_refused(text: &str, expected: &str) {
    let p = Project::create(&[("pipelines/p.toml", text), ("list.json", "{}")]);
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(2), "{expected}: {}", out.stderr);
    assert!(
        out.stderr.contains(expected),
        "expected {expected:?} in {}",
        out.stderr
    );
    assert!(out.stderr.contains("pipelines/p.toml"), "{}", out.stderr);
    assert!(!p.path().join(".lorchestra/runs").exists());
}

#[test]
fn a_matrix_job_runs_once_per_combination_and_what_needs_it_waits_for_all() {
    let pipeline = r#"
[jobs.sync]
command = "echo sync {{payload.account}} {{payload.region}} $LORCHESTRA_PAYLOAD_REGION >> ran"
matrix = { account = [1, 2, 3, 4], region = ["eu", "us"] }
[jobs.after]
command = "echo after >> ran"
needs = ["sync"]
[jobs.lines]
command = ["sh", "-c", "echo line \"$1\" >> ran", "sh", "{{payload.item}}"]
matrix_from = { file = "accounts.txt" }
[jobs.objects]
command = "echo object {{payload.id}} >> ran"
matrix_from = { json = "accounts.json" }
"#;
    let p = Project::create(&[
        ("pipelines/m.toml", pipeline),
        ("accounts.txt", "a 1\n\na'2\n"),
        ("accounts.json", r#"[{"id": "x"}, {"id": "y"}]"#),
    ]);
    let out = p.run(&["pipeline", "m", "-j", "2", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut expected: Vec<String> = vec!["after".into(), "line a 1".into(), "line a'2".into()];
    for a in 1..=4 {
        for r in ["eu", "us"] {
            expected.push(format!("sync {a} {r} {r}"));
        }
    }
    expected.extend(["object x".to_owned(), "object y".to_owned()]);
    expected.sort();
    assert_eq!(ran(&p), expected);
    let record = p.last_record();
    let after = super::job(&record, "after")["started_at_unix"]
        .as_f64()
        .unwrap();
    for a in 1..=4 {
        for r in ["eu", "us"] {
            let j = super::job(&record, &format!("sync[{a},{r}]"));
            assert!(
                j["finished_at_unix"].as_f64().unwrap() <= after,
                "after waited"
            );
        }
    }
    let plan = p.run(&["pipeline", "m", "--dry-run"]).stdout;
    assert!(
        plan.contains(
            "  sync[4,us]: echo sync \"${LORCHESTRA_PAYLOAD_ACCOUNT}\" \
             \"${LORCHESTRA_PAYLOAD_REGION}\" $LORCHESTRA_PAYLOAD_REGION >> ran\n    \
             with account=4, region=us\n"
        ),
        "{plan}"
    );
}

#[test]
fn a_matrix_that_is_not_a_table_of_lists_is_refused_naming_the_line() {
    let job = |m: &str| format!("[jobs.a]\ncommand = \"true\"\n{m}\n");
    let cases = [
        (job("matrix = { account = 3 }"), "line 3"),
        (
            job("matrix = { account = [] }"),
            "matrix.account is an empty list",
        ),
        (job("matrix = [1, 2]"), "line 3"),
        (
            job("matrix_from = { json = \"list.json\" }"),
            "matrix_from.json list.json is an object, not a list",
        ),
        (
            job("matrix = { a = [1] }\nmatrix_from = { file = \"x\" }"),
            "has both matrix and matrix_from",
        ),
    ];
    for (text, expected) in cases {
        assert_refused(&text, expected);
    }
}

#[test]
fn the_timeline_shows_many_iterations_as_one_row_expandable_in_the_table() {
    let ids: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let jobs = "[jobs.a]\ncommand = \"true\"\n[jobs.b]\ncommand = \"true\"\n";
    let p = Project::create(&[
        ("pipelines/p.toml", &pipeline("12", jobs)),
        ("items.json", &items(&ids)),
    ]);
    let out = p.run(&["pipeline", "p", "-q", "--payload", "model=m"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    let out = p.run(&["report", &run_id, "-o", "t.html"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let html = std::fs::read_to_string(p.path().join("t.html")).unwrap();
    assert!(
        html.contains("a \u{d7}12</text>"),
        "one chart row per loop job"
    );
    assert!(
        html.contains("<details><summary>a \u{d7}12: 12 iterations: 12 succeeded</summary>"),
        "{html}"
    );
    assert!(
        html.contains("<td>a[s11]</td>"),
        "each iteration in the table"
    );
    assert!(html.contains("stage extraction (12 items from @run.peek.items)"));
    assert_eq!(
        html.matches("<g class=\"job\">").count(),
        4,
        "peek, a, b, summary"
    );
}

#[test]
fn a_resumed_run_stopped_before_its_loop_still_knows_which_iterations_succeeded() {
    resume_stopped_before_its_loop(|child| child.kill().unwrap());
}

/// Issue 27: a resume interrupted with Ctrl-C (or halted) before its loop stage wrote the
/// stage's iterations as `[]`, and the next resume ran the finished ones again.
#[test]
fn a_resume_interrupted_before_its_loop_keeps_its_iterations_for_the_next() {
    resume_stopped_before_its_loop(|child| testkit::interrupt(child));
}

/// A run whose loop ran (a[s2] failed), then a resume stopped by `stop` while the stage before
/// the loop runs again, then a resume that must run only what never succeeded.
fn resume_stopped_before_its_loop(stop: impl Fn(&mut std::process::Child)) {
    // stop_on_failure = false: `slow` failing does not stop the loop.
    let text = pipeline("3", "")
        .replacen(
            "[[stages]]\nname = \"extraction\"",
            "[[stages]]\nname = \"wait\"\njobs = [\"slow\"]\n\n[[stages]]\nname = \"extraction\"",
            1,
        )
        .replacen("\n[[stages]]", "stop_on_failure = false\n\n[[stages]]", 1)
        + r#"
[jobs.slow]
command = "test -f first-done || { touch first-done; exit 1; }; echo $$ > slow.pid; while [ ! -f go ]; do sleep 0.05; done"
[jobs.a]
command = "echo a {{payload.session_id}} >> ran; test {{payload.session_id}} != s2 || test -f fixed"
[jobs.b]
command = "echo b {{payload.session_id}} >> ran"
"#;
    let p = Project::create(&[
        ("pipelines/p.toml", &text),
        ("items.json", &items(&["s1", "s2", "s3"])),
    ]);
    let run = |args: &[&str]| {
        let mut all = vec!["pipeline", "p", "--no-progress"];
        all.extend(args);
        p.run(&all)
    };
    // First run: slow fails, the loop runs, a[s2] fails.
    let out = run(&["--payload", "model=m"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    // A resume killed while slow runs again: the loop stage is never reached.
    std::fs::write(p.path().join("ran"), "").unwrap();
    let mut child = testkit::command(BIN)
        .args(["pipeline", "p", "--resume", &run_id, "--no-progress"])
        .current_dir(p.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = read_pid(&p.path().join("slow.pid"));
    stop(&mut child);
    child.wait().unwrap();
    wait_for("slow to die with its run", || !testkit::alive(pid));
    // The next resume runs only what never succeeded: slow and a[s2] (the report succeeded
    // in the first run).
    p.write("go", "");
    p.write("fixed", "");
    let out = run(&["--resume", &run_id]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(ran(&p), ["a s2"]);
}

/// The record and the report say how the jobs ran, as the pool reported it: the strategy of the
/// run's largest batch (not the serial one of a one-item loop after it), and `FANOUT_STRATEGY`
/// when it is set.
#[test]
fn the_strategy_that_ran_is_recorded() {
    let pipeline = r#"
[[stages]]
name = "first"
jobs = ["peek", "other"]
[[stages]]
name = "each"
loop = { over = "@run.peek.items", jobs = ["work"] }
[jobs.peek]
command = "printf '{\"items\": [1]}' > \"$LORCHESTRA_OUTPUT\""
[jobs.other]
command = "true"
[jobs.work]
command = "true"
"#;
    let p = Project::create(&[("pipelines/p.toml", pipeline)]);
    for (env, expected) in [(None, "threads"), (Some("serial"), "serial")] {
        let env: Vec<(&str, &str)> = env.map(|s| ("FANOUT_STRATEGY", s)).into_iter().collect();
        let out = p.run_env(&["pipeline", "p", "-j", "2", "--no-progress"], &env);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let r = p.last_record();
        assert_eq!(r["strategy"], expected, "{env:?}");
        let run_id = r["run_id"].as_str().unwrap();
        let report = p
            .path()
            .join(".lorchestra/runs")
            .join(run_id)
            .join("report.json");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
        assert_eq!(report["summary"]["strategy"], expected, "{env:?}");
    }
}
