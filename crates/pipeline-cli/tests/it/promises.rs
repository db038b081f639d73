//! Issue 27's promises for lorchestra: two runs of one project never eat each other's data.

use std::process::Stdio;

use super::{BIN, Project};

/// A pipeline whose one job waits until the file `go` exists.
const WAITS_FOR_GO: &str = "[[stages]]\nname = \"s\"\njobs = [\"j\"]\n[jobs.j]\n\
    command = \"touch started; while [ ! -f go ]; do sleep 0.05; done; echo done >> ran\"\n";

#[test]
fn a_second_run_of_a_project_is_refused_naming_the_first_or_waits_with_wait() {
    let p = Project::create(&[("pipelines/p.toml", WAITS_FOR_GO)]);
    let mut first = testkit::command(BIN)
        .args(["pipeline", "p", "--no-progress"])
        .current_dir(p.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    testkit::wait_for("the first run's job", || p.path().join("started").exists());
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    let expected = format!(
        "another lorchestra run is using the project .: pid {} (lorchestra pipeline), started",
        first.id()
    );
    for args in [
        vec!["pipeline", "p", "--no-progress"],
        vec!["pipeline", "p", "--no-progress", "--resume", &run_id],
    ] {
        let out = p.run(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(&expected), "{args:?}: {}", out.stderr);
    }
    // Reading is not running: status and dry runs go on.
    assert_eq!(p.run(&["status", &run_id]).code, Some(0));
    assert_eq!(p.run(&["pipeline", "p", "--dry-run"]).code, Some(0));

    let waiting = testkit::command(BIN)
        .args(["pipeline", "p", "--no-progress", "--wait"])
        .current_dir(p.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    testkit::wait_for("the second run to wait", || {
        std::fs::read_to_string(format!("/proc/{}/wchan", waiting.id()))
            .is_ok_and(|c| c.starts_with("locks_") || c.contains("flock"))
    });
    p.write("go", "");
    assert!(first.wait().unwrap().success());
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = std::fs::read_to_string(p.path().join("ran")).unwrap();
    assert_eq!(ran, "done\ndone\n", "one after the other");
    assert!(!p.path().join(".lorchestra/lock").exists());
}

/// A loop whose job is a nested pipeline: each iteration's nested run gets its item's payload
/// (not the run's), and an item key made of `../` keeps every file in the run's folder.
#[test]
fn a_nested_pipeline_in_a_loop_gets_its_items_payload_and_hostile_keys_stay_in_the_run() {
    let outer = r#"
[[stages]]
name = "peek"
jobs = ["peek"]
[[stages]]
name = "each"
loop = { over = "@run.peek.items", key = "@item.id", payload = { item = "@item.id" }, jobs = ["pipeline.sub"] }
[jobs.peek]
command = "cat items.json > \"$LORCHESTRA_OUTPUT\""
"#;
    let sub = "[[stages]]\nname = \"s\"\njobs = [\"w\"]\n[jobs.w]\n\
        command = \"printf '%s\\\\n' \\\"$LORCHESTRA_PAYLOAD_ITEM\\\" >> sub.out\"\n";
    let items = r#"{"items": [{"id": "a"}, {"id": "../../../../../escape"}]}"#;
    let p = Project::create(&[
        ("pipelines/outer.toml", outer),
        ("pipelines/sub.toml", sub),
        ("items.json", items),
    ]);
    let out = p.run(&[
        "pipeline",
        "outer",
        "--no-progress",
        "--payload",
        "item=RUN",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut seen: Vec<String> = std::fs::read_to_string(p.path().join("sub.out"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        ["../../../../../escape", "a"],
        "each its item's value"
    );
    // The runs' folders (the outer run's and the nested ones').
    let run_dir = p.path().join(".lorchestra/runs");
    for entry in walkdir::WalkDir::new(p.path()).into_iter().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains("escape") {
            assert!(
                entry.path().starts_with(&run_dir) && name.contains("%2F"),
                "a file of the hostile key outside its run's folders: {}",
                entry.path().display()
            );
        }
    }
}

/// A resumed job's first attempt does not see the value the killed run's attempt wrote.
#[test]
fn a_resumed_job_starts_without_the_value_its_killed_attempt_left() {
    let text = r#"
[[stages]]
name = "peek"
jobs = ["peek"]
[[stages]]
name = "each"
loop = { over = "@run.peek.items", jobs = ["x"] }
[jobs.peek]
command = "test -f second && exit 0; echo '{\"items\": [1, 2]}' > \"$LORCHESTRA_OUTPUT\"; touch wrote; while :; do sleep 0.05; done"
[jobs.x]
command = "echo x >> ran"
"#;
    let p = Project::create(&[("pipelines/p.toml", text)]);
    let mut first = testkit::command(BIN)
        .args(["pipeline", "p", "--no-progress"])
        .current_dir(p.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    testkit::wait_for("peek to write its value", || {
        p.path().join("wrote").exists()
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    p.write("second", "");
    let out = p.run(&["pipeline", "p", "--no-progress", "--resume", &run_id]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("peek returned no value"),
        "{}",
        out.stderr
    );
    assert!(
        !p.path().join("ran").exists(),
        "no iteration from a stale value"
    );
}

/// Inputs behind symbolic links (git-annex, DVC, DataLad) count: a job runs again when the
/// file a link points to changes, or the link points elsewhere.
#[test]
fn inputs_behind_symbolic_links_are_followed() {
    let text = "[[stages]]\nname = \"s\"\njobs = [\"j\"]\n[jobs.j]\n\
        command = \"cat data.csv data/*.csv >> ran\"\ninputs = [\"data.csv\", \"data/*.csv\"]\n";
    let p = Project::create(&[
        ("pipelines/p.toml", text),
        ("store/v1.csv", "one\n"),
        ("store/v2.csv", "two\n"),
        ("store/part.csv", "part\n"),
    ]);
    std::os::unix::fs::symlink("store/v1.csv", p.path().join("data.csv")).unwrap();
    std::fs::create_dir(p.path().join("data")).unwrap();
    std::os::unix::fs::symlink("../store/part.csv", p.path().join("data/a.csv")).unwrap();
    let run = || p.run(&["pipeline", "p", "--no-progress"]);
    let ran = || std::fs::read_to_string(p.path().join("ran")).unwrap();
    assert_eq!(run().code, Some(0));
    assert_eq!(run().code, Some(0));
    assert_eq!(ran(), "one\npart\n", "unchanged: up to date");
    // The link points elsewhere (same size, older file).
    std::fs::remove_file(p.path().join("data.csv")).unwrap();
    std::os::unix::fs::symlink("store/v2.csv", p.path().join("data.csv")).unwrap();
    let plan = p.run(&["pipeline", "p", "--explain"]).stdout;
    assert!(plan.contains("would run: input data.csv changed"), "{plan}");
    assert_eq!(run().code, Some(0));
    // The file behind a link in a globbed folder changes.
    std::fs::write(p.path().join("store/part.csv"), "PART\n").unwrap();
    let plan = p.run(&["pipeline", "p", "--explain"]).stdout;
    assert!(
        plan.contains("would run: input data/a.csv changed"),
        "{plan}"
    );
    assert_eq!(run().code, Some(0));
    assert_eq!(ran(), "one\npart\ntwo\npart\ntwo\nPART\n");
}

/// The cache keeps what a run can use again: a loop's old items and removed jobs go, so it
/// does not grow with every item ever seen.
#[test]
fn the_cache_forgets_jobs_and_items_that_no_longer_exist() {
    let text = r#"
[[stages]]
name = "peek"
jobs = ["peek"]
[[stages]]
name = "each"
loop = { over = "@run.peek", jobs = ["x"] }
[jobs.peek]
command = "cat items.json > \"$LORCHESTRA_OUTPUT\""
inputs = ["items.json"]
[jobs.x]
command = "true"
inputs = ["in.txt"]
"#;
    let p = Project::create(&[
        ("pipelines/p.toml", text),
        ("items.json", "[1, 2, 3]"),
        ("in.txt", "x"),
    ]);
    let keys = || -> Vec<String> {
        let cache: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(p.path().join(".lorchestra/cache.json")).unwrap(),
        )
        .unwrap();
        cache["jobs"].as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(p.run(&["pipeline", "p", "--no-progress"]).code, Some(0));
    assert_eq!(keys(), ["p/peek", "p/x[0]", "p/x[1]", "p/x[2]"]);
    p.write("items.json", "[7]");
    let out = p.run(&["pipeline", "p", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(keys(), ["p/peek", "p/x[0]"]);
    assert!(
        out.stderr
            .contains("cache: 2 entries of jobs that no longer exist"),
        "{}",
        out.stderr
    );
}
