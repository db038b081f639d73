//! Up-to-date jobs (`inputs`, `outputs`, `.lorchestra/cache.json`, `--force`, `--explain`) and
//! jobs that start when what they `needs` is done (`lorchestra graph`).

use std::time::SystemTime;

use serde_json::Value;
use testkit::wait_for;

use super::{BIN, Project, job, statuses};

/// first -> second -> third, each reading a file of its own in `raw/` and the output of the job
/// before it, appending its name to `ran` and writing `out/<name>.txt`.
const CHAIN: &str = r#"
[[stages]]
name = "prepare"
jobs = ["first"]
[[stages]]
name = "build"
jobs = ["second", "third"]

[jobs.first]
command = "echo first >> ran; mkdir -p out; cat raw/first.txt > out/first.txt"
inputs = ["raw/first.txt"]
outputs = ["out/first.txt"]

[jobs.second]
command = "echo second >> ran; cat raw/second.txt out/first.txt > out/second.txt"
inputs = ["raw/second.txt", "out/first.txt"]
outputs = ["out/second.txt"]

[jobs.third]
command = "echo third >> ran; cat raw/*.txt out/second.txt > out/third.txt"
inputs = ["raw/*.txt", "out/second.txt"]
outputs = ["out/third.txt"]
needs = ["second"]
"#;

fn chain() -> Project {
    Project::create(&[
        ("pipelines/chain.toml", CHAIN),
        ("raw/first.txt", "1\n"),
        ("raw/second.txt", "2\n"),
    ])
}

/// Run the pipeline; returns the jobs that ran (from `ran`, which is emptied).
fn run_chain(p: &Project, extra: &[&str]) -> Vec<String> {
    let _ = std::fs::remove_file(p.path().join("ran"));
    let mut args = vec!["pipeline", "chain", "--no-progress"];
    args.extend(extra);
    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    std::fs::read_to_string(p.path().join("ran"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn reasons(record: &Value) -> Vec<(String, String)> {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["jobs"].as_array().unwrap())
        .map(|j| {
            (
                j["job_id"].as_str().unwrap().to_owned(),
                j["reason"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

fn explain(p: &Project, extra: &[&str]) -> String {
    let mut args = vec!["pipeline", "chain", "--explain"];
    args.extend(extra);
    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout
}

#[test]
fn a_job_runs_only_when_what_it_depends_on_changed_and_says_why() {
    let p = chain();
    assert_eq!(run_chain(&p, &[]), ["first", "second", "third"]);
    assert!(
        reasons(&p.last_record())
            .iter()
            .all(|(_, r)| r == "new job")
    );
    assert!(p.path().join(".lorchestra/cache.json").is_file());

    // Nothing changed: nothing runs, and the record says so.
    let out = p.run(&["pipeline", "chain", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!p.path().join("ran").exists() || run_chain(&p, &[]).is_empty());
    assert!(
        out.stderr
            .contains("3 jobs up to date, not run: first, second, third"),
        "{}",
        out.stderr
    );
    let r = p.last_record();
    assert!(statuses(&r).iter().all(|s| s.2 == "up_to_date"), "{r}");
    assert!(reasons(&r).iter().all(|(_, why)| why == "up to date"));
    assert!(explain(&p, &[]).contains("0 of 3 jobs would run, 3 are up to date"));

    // A touched input with the same content: still up to date.
    let later = SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .append(true)
        .open(p.path().join("raw/second.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(run_chain(&p, &[]), Vec::<String>::new());

    // New content in second's input: second and what depends on it run, first does not.
    p.write("raw/second.txt", "2 changed\n");
    let plan = explain(&p, &[]);
    assert!(
        plan.contains("  first: ") && plan.contains("    up to date"),
        "{plan}"
    );
    assert!(
        plan.contains("would run: input raw/second.txt changed"),
        "{plan}"
    );
    assert!(
        plan.contains("would run: depends on second, which will run"),
        "{plan}"
    );
    assert!(
        plan.contains("2 of 3 jobs would run, 1 is up to date"),
        "{plan}"
    );
    assert_eq!(run_chain(&p, &[]), ["second", "third"]);
    let why = reasons(&p.last_record());
    assert_eq!(
        why,
        [
            ("first".to_owned(), "up to date".to_owned()),
            (
                "second".to_owned(),
                "input raw/second.txt changed".to_owned()
            ),
            (
                "third".to_owned(),
                "depends on second, which ran".to_owned()
            ),
        ]
    );

    // A deleted output: only its job runs.
    std::fs::remove_file(p.path().join("out/third.txt")).unwrap();
    assert!(explain(&p, &[]).contains("would run: output out/third.txt is missing"));
    assert_eq!(run_chain(&p, &[]), ["third"]);

    // A changed command: that job and its dependents.
    p.write(
        "pipelines/chain.toml",
        &CHAIN.replace("echo second >> ran;", "echo second >>ran;"),
    );
    assert!(explain(&p, &[]).contains("would run: command changed"));
    assert_eq!(run_chain(&p, &[]), ["second", "third"]);

    // --force runs everything; --force=JOB that job and its dependents.
    assert!(explain(&p, &["--force"]).contains("3 of 3 jobs would run"));
    assert_eq!(run_chain(&p, &["--force=second"]), ["second", "third"]);
    assert_eq!(
        reasons(&p.last_record())[1].1,
        "forced (--force)",
        "the record says why"
    );
    assert_eq!(run_chain(&p, &["--force"]), ["first", "second", "third"]);

    // `status` shows why a job ran.
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    let status = p.run(&["status", &run_id]);
    assert!(
        status.stdout.contains("ran because: forced (--force)"),
        "{}",
        status.stdout
    );
}

#[test]
fn a_missing_input_fails_its_job_naming_the_file() {
    let p = chain();
    std::fs::remove_file(p.path().join("raw/second.txt")).unwrap();
    let out = p.run(&["pipeline", "chain", "--no-progress"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("input raw/second.txt does not exist"),
        "{}",
        out.stderr
    );
    let st = statuses(&p.last_record());
    assert_eq!(st[0].2, "succeeded");
    assert_eq!(st[1].2, "failed");
    assert_eq!(st[2].2, "skipped");
}

#[test]
fn a_run_killed_after_a_job_succeeded_keeps_that_job_up_to_date() {
    let pipeline = r#"
[[stages]]
name = "s"
jobs = ["quick", "hangs"]
[jobs.quick]
command = "echo quick >> ran; cat in.txt > quick.out"
inputs = ["in.txt"]
outputs = ["quick.out"]
[jobs.hangs]
command = "echo hangs >> ran; while [ ! -f go ]; do sleep 0.05; done"
inputs = ["in.txt"]
needs = ["quick"]
"#;
    let p = Project::create(&[("pipelines/p.toml", pipeline), ("in.txt", "x\n")]);
    let mut child = testkit::command(BIN)
        .args(["pipeline", "p", "--no-progress"])
        .current_dir(p.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // quick's success is in the cache (not only the mark of its start) and hangs runs.
    wait_for("quick's success in the cache", || {
        let cache: Option<Value> = std::fs::read(p.path().join(".lorchestra/cache.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let quick_done = cache.is_some_and(|c| {
            c["jobs"]["p/quick"].is_object() && c["jobs"]["p/quick"]["incomplete"].is_null()
        });
        quick_done
            && std::fs::read_to_string(p.path().join("ran")).is_ok_and(|r| r.contains("hangs"))
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::fs::write(p.path().join("ran"), "").unwrap();
    std::fs::write(p.path().join("go"), "").unwrap();
    let out = p.run(&["pipeline", "p", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(p.path().join("ran")).unwrap(),
        "hangs\n",
        "quick's success survived the kill"
    );
}

/// a -> b, c -> d, as a graph (no stages). b waits until c has finished (or 20 s), so c's and
/// d's start times show whether c waited for b and d for both.
const DIAMOND: &str = r#"
stop_on_failure = false
[jobs.a]
command = "true"
[jobs.b]
command = "i=0; while [ ! -f c.done ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; test -f c.done && test ! -f fail-b"
needs = ["a"]
[jobs.c]
command = "touch c.done"
needs = ["a"]
[jobs.d]
command = "echo d > d.done"
needs = ["b", "c"]
"#;

fn times(record: &Value, id: &str) -> (f64, f64) {
    let j = job(record, id);
    (
        j["started_at_unix"].as_f64().unwrap(),
        j["finished_at_unix"].as_f64().unwrap(),
    )
}

#[test]
fn in_a_graph_a_job_starts_once_what_it_needs_is_done() {
    let p = Project::create(&[("pipelines/diamond.toml", DIAMOND)]);
    let out = p.run(&["pipeline", "diamond", "-j", "2", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("(4 jobs, up to 2 at once)"),
        "{}",
        out.stderr
    );
    let record = p.last_record();
    assert_eq!(record["stages"][0]["name"], "graph");
    let [(_, a_end), (b_start, b_end), (c_start, c_end), (d_start, _)] =
        ["a", "b", "c", "d"].map(|j| times(&record, j));
    assert!(
        b_start >= a_end && c_start >= a_end,
        "b and c waited for a: {record}"
    );
    // b ends only once c has written c.done: c started before b ended (c's own end may be
    // recorded a moment after b's, as its process is reaped).
    assert!(c_start <= b_end, "c did not wait for b: {record}");
    assert!(
        d_start >= b_end && d_start >= c_end,
        "d waited for both: {record}"
    );

    // b fails: d is skipped naming it; c is not affected.
    std::fs::remove_file(p.path().join("c.done")).unwrap();
    std::fs::remove_file(p.path().join("d.done")).unwrap();
    p.write("fail-b", "");
    let out = p.run(&["pipeline", "diamond", "-j", "2", "--no-progress"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let r = p.last_record();
    let st: Vec<(String, String)> = statuses(&r).into_iter().map(|s| (s.1, s.2)).collect();
    assert!(st.contains(&("c".into(), "succeeded".into())), "{st:?}");
    assert!(st.contains(&("b".into(), "failed".into())), "{st:?}");
    assert!(st.contains(&("d".into(), "skipped".into())), "{st:?}");
    assert!(!p.path().join("d.done").exists());
    assert_eq!(job(&r, "d")["error"], "not started: needs b, which failed");
    assert!(
        out.stderr.contains("skipped   d") && out.stderr.contains("needs b, which failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn graph_prints_what_each_job_waits_for_as_text_and_dot() {
    let p = Project::create(&[("pipelines/diamond.toml", DIAMOND)]);
    let out = p.run(&["graph", "diamond"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("4 jobs, run as a graph by their needs"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("  d  needs b, c"), "{}", out.stdout);
    let dot = p.run(&["graph", "diamond", "--dot"]).stdout;
    assert!(dot.starts_with("digraph \"diamond\" {"), "{dot}");
    for edge in [
        "\"a\" -> \"b\";",
        "\"a\" -> \"c\";",
        "\"b\" -> \"d\";",
        "\"c\" -> \"d\";",
    ] {
        assert!(dot.contains(edge), "{edge} in {dot}");
    }
    // Stages: a job without needs comes after the earlier stage, drawn dashed.
    let p = chain();
    let dot = p.run(&["graph", "chain", "--dot"]).stdout;
    assert!(
        dot.contains("\"first\" -> \"second\" [style=dashed];"),
        "{dot}"
    );
    assert!(dot.contains("\"second\" -> \"third\";"), "{dot}");
    assert!(dot.contains("label=\"stage build\";"), "{dot}");
}

#[test]
fn needs_that_cannot_be_met_are_refused_before_anything_runs() {
    let cases = [
        (
            "[jobs.a]\ncommand = \"echo a >> ran\"\nneeds = [\"b\"]\n\
             [jobs.b]\ncommand = \"echo b >> ran\"\nneeds = [\"c\"]\n\
             [jobs.c]\ncommand = \"echo c >> ran\"\nneeds = [\"a\"]\n",
            "the jobs need each other in a cycle (-> reads \"needs\"): a -> b -> c -> a",
        ),
        (
            "[jobs.a]\ncommand = \"true\"\nneeds = [\"nope\"]\n",
            "the job \"a\" needs \"nope\", which is defined neither in the pipeline's [jobs.nope] table nor in",
        ),
        (
            "[[stages]]\nname = \"one\"\njobs = [\"a\"]\n[[stages]]\nname = \"two\"\njobs = [\"b\"]\n\
             [jobs.a]\ncommand = \"true\"\nneeds = [\"b\"]\n[jobs.b]\ncommand = \"true\"\n",
            "the job \"a\" (stage \"one\") needs \"b\", which runs in the later stage \"two\"",
        ),
        (
            "[[stages]]\nname = \"one\"\njobs = [\"a\"]\n[jobs.a]\ncommand = \"true\"\nneeds = [\"zz\"]\n",
            "the job \"a\" needs \"zz\", which is not a job of this pipeline (its jobs: a)",
        ),
        (
            "[[stages]]\nname = \"one\"\njobs = [\"a\"]\n[jobs.a]\ncommand = \"true\"\nneeds = [\"a\"]\n",
            "the job \"a\" needs itself",
        ),
    ];
    for (text, expected) in cases {
        let p = Project::create(&[("pipelines/p.toml", text)]);
        for args in [
            &["pipeline", "p"][..],
            &["validate", "p"],
            &["graph", "p"],
            &["pipeline", "p", "--explain"],
        ] {
            let out = p.run(args);
            assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
            assert!(
                out.stderr.contains(expected),
                "{args:?}: expected {expected:?} in {}",
                out.stderr
            );
            assert!(out.stderr.contains("pipelines/p.toml"), "{}", out.stderr);
        }
        assert!(!p.path().join("ran").exists());
        assert!(!p.path().join(".lorchestra/runs").exists());
    }
    let p = chain();
    let out = p.run(&["pipeline", "chain", "--force=nope"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "--force nope: not a job of the pipeline chain (its jobs: first, second, third)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn the_timeline_shows_why_each_job_ran() {
    let p = chain();
    run_chain(&p, &[]);
    p.write("raw/first.txt", "1 changed\n");
    run_chain(&p, &[]);
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    let out = p.run(&["report", &run_id, "-o", "t.html"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let html = std::fs::read_to_string(p.path().join("t.html")).unwrap();
    assert!(html.contains("<th scope=\"col\">Why it ran</th>"));
    // minijinja's HTML escaping writes / as &#x2f;.
    assert!(
        html.contains("<td>input raw&#x2f;first.txt changed</td>"),
        "{html}"
    );
}

#[test]
fn a_job_that_failed_is_not_up_to_date_even_when_its_inputs_are_back_as_they_were() {
    // The job writes its output, then may fail: a failed run leaves an output of the new input.
    let pipeline = r#"
[jobs.w]
command = "cat in.txt > out.txt; test ! -f fail"
inputs = ["in.txt"]
outputs = ["out.txt"]
"#;
    let p = Project::create(&[("pipelines/p.toml", pipeline), ("in.txt", "old\n")]);
    let run = |p: &Project| p.run(&["pipeline", "p", "--no-progress"]);
    assert_eq!(run(&p).code, Some(0));
    p.write("in.txt", "new\n");
    p.write("fail", "");
    assert_eq!(run(&p).code, Some(1));
    // Back to the input of the last success: the output is still the failed run's.
    p.write("in.txt", "old\n");
    std::fs::remove_file(p.path().join("fail")).unwrap();
    let plan = p.run(&["pipeline", "p", "--explain"]).stdout;
    assert!(
        plan.contains("would run: its last run did not succeed"),
        "{plan}"
    );
    assert_eq!(run(&p).code, Some(0));
    assert_eq!(
        std::fs::read_to_string(p.path().join("out.txt")).unwrap(),
        "old\n"
    );
    assert!(
        p.run(&["pipeline", "p", "--explain"])
            .stdout
            .contains("up to date")
    );
}

/// A job whose input is missing fails without running, also when it has retries: a retry
/// decides again (the input may have appeared) and never runs the job without a decision.
#[test]
fn a_missing_input_fails_the_job_without_running_it_on_any_attempt() {
    let pipeline = "[jobs.j]\ncommand = \"touch ran\"\ninputs = [\"missing.txt\"]\nretries = 1\n";
    let p = Project::create(&[("pipelines/p.toml", pipeline)]);
    let out = p.run(&["pipeline", "p", "--no-progress"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("input missing.txt does not exist"),
        "{}",
        out.stderr
    );
    assert!(
        !p.path().join("ran").exists(),
        "the job ran without its input"
    );
    let r = p.last_record();
    assert_eq!(job(&r, "j")["status"], "failed");
    assert_eq!(job(&r, "j")["attempts"], 2);
}
