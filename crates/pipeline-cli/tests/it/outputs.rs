//! Job outputs: a JSON value returned through `$LORCHESTRA_OUTPUT` (or, opted into, the last
//! line of the job's log), kept in the run record and shown by `lorchestra status`.

use super::{Project, job, statuses};

#[test]
fn a_job_returns_a_json_value_that_the_record_keeps() {
    let pipeline = r#"
[jobs.peek]
command = "printf '{\"items\": [{\"session_id\": \"s1\"}, {\"session_id\": \"s2\"}]}' > \"$LORCHESTRA_OUTPUT\""
[jobs.printer]
command = "echo working; echo '{\"n\": 2}'"
output = "stdout"
[jobs.quiet]
command = "echo no value"
"#;
    let p = Project::create(&[("pipelines/p.toml", pipeline)]);
    let out = p.run(&["pipeline", "p", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = p.last_record();
    assert_eq!(job(&r, "peek")["output"]["items"][1]["session_id"], "s2");
    assert_eq!(job(&r, "printer")["output"]["n"], 2);
    assert!(
        job(&r, "quiet").get("output").is_none(),
        "no value, no field"
    );
    let status = p.run(&["status", r["run_id"].as_str().unwrap()]).stdout;
    assert!(
        status.contains(r#"output: {"items":[{"session_id":"s1"},{"session_id":"s2"}]}"#),
        "{status}"
    );
}

#[test]
fn a_value_that_is_not_json_or_too_large_fails_its_job() {
    // `bad` fails only once `huge` has started (up to 10 s): were it to fail first, the graph
    // would stop and `huge` would be skipped, not failed, on a slow machine.
    let pipeline = r#"
[jobs.bad]
command = "for i in $(seq 100); do [ -e huge-started ] && break; sleep 0.1; done; echo '{not json' > \"$LORCHESTRA_OUTPUT\""
[jobs.huge]
command = "touch huge-started; head -c 1048577 /dev/zero | tr '\\0' ' ' > \"$LORCHESTRA_OUTPUT\""
[jobs.after]
command = "true"
needs = ["bad"]
"#;
    let p = Project::create(&[("pipelines/p.toml", pipeline)]);
    let out = p.run(&["pipeline", "p", "--no-progress", "-j", "2"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let r = p.last_record();
    assert_eq!(job(&r, "bad")["status"], "failed");
    let why = job(&r, "bad")["error"].as_str().unwrap();
    assert!(
        why.starts_with("its output ($LORCHESTRA_OUTPUT) is not JSON: line 1, column 2"),
        "{why}"
    );
    assert_eq!(job(&r, "huge")["status"], "failed");
    assert!(
        job(&r, "huge")["error"]
            .as_str()
            .unwrap()
            .contains("is 1048577 bytes; at most 1048576 are kept")
    );
    assert!(statuses(&r).contains(&("graph".into(), "after".into(), "skipped".into())));
}

/// `--dir` relative to where lorchestra runs, while jobs run in the project folder: the paths a
/// job is given (`$LORCHESTRA_OUTPUT`, a nested pipeline's project and files) work from there.
#[test]
fn a_project_named_by_a_relative_dir_gives_its_jobs_paths_that_work_in_their_folder() {
    let outer = r#"
[[stages]]
name = "peek"
jobs = ["peek"]
[[stages]]
name = "each"
loop = { over = "@run.peek.items", key = "@item.id", payload = { id = "@item.id" }, jobs = ["pipeline.inner"] }
[jobs.peek]
command = "printf '{\"items\": [{\"id\": \"x\"}, {\"id\": \"y\"}]}' > \"$LORCHESTRA_OUTPUT\""
"#;
    let inner = r#"
[jobs.mark]
command = "echo \"$LORCHESTRA_PAYLOAD_ID\" > \"mark-$LORCHESTRA_PAYLOAD_ID\""
"#;
    let p = Project::create(&[
        ("proj/pipelines/outer.toml", outer),
        ("proj/pipelines/inner.toml", inner),
    ]);
    let out = p.run(&["--dir", "proj", "pipeline", "outer", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for id in ["x", "y"] {
        let mark = std::fs::read_to_string(p.path().join(format!("proj/mark-{id}"))).unwrap();
        assert_eq!(mark.trim(), id);
    }
    assert!(
        !p.path().join("proj/proj").exists(),
        "the nested runs found the project"
    );
}
