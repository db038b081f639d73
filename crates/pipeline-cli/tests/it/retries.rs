//! Retries that wait longer each time (issue 33): `retry_backoff`, doubling with jitter.

use super::Project;

#[test]
fn retries_wait_the_backoff_then_twice_as_long() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        r#"
[jobs.flaky]
command = "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; date +%s.%N >> times; [ $n -ge 3 ]"
retries = 2
retry_backoff = "1s"
"#,
    )]);
    let dry = p.run(&["pipeline", "p", "--dry-run"]);
    assert!(
        dry.stdout.contains("retries 2 (backoff 1.0s, doubling)"),
        "{}",
        dry.stdout
    );
    let out = p.run(&["pipeline", "p", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let record = p.last_record();
    assert_eq!(record["stages"][0]["jobs"][0]["attempts"], 3);
    let times: Vec<f64> = std::fs::read_to_string(p.path().join("times"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(times.len(), 3);
    // 1 s, then 2 s, each give or take 20%: at least 0.8 s and 1.6 s apart.
    assert!(times[1] - times[0] >= 0.8, "{times:?}");
    assert!(times[2] - times[1] >= 1.6, "{times:?}");

    let p = Project::create(&[(
        "pipelines/p.toml",
        "[jobs.a]\ncommand = \"true\"\nretries = 1\nretry_backoff = \"soon\"\n",
    )]);
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("the job \"a\" has retry_backoff = \"soon\""),
        "{}",
        out.stderr
    );
}
