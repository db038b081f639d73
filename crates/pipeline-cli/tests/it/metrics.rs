//! Metrics (issue 33): `metrics = ["out/metrics.json"]` recorded after a job succeeds (or is up
//! to date), `lorchestra metrics show|diff`, `lorchestra runs --metrics`.

use super::Project;

const PIPELINE: &str = r#"
[jobs.train]
command = "mkdir -p out; printf '{\"acc\": %s, \"eval\": {\"loss\": 0.5}}' \"$(cat acc.txt)\" > out/metrics.json"
params = ["params.yaml:train.lr"]
inputs = ["acc.txt"]
metrics = ["out/metrics.json"]
outputs = ["out/metrics.json"]
"#;

fn run(p: &Project) {
    let out = p.run(&["pipeline", "p", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

fn stdout(p: &Project, args: &[&str]) -> String {
    let out = p.run(args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout
}

/// The cells of the line of `text` that starts with `first`.
fn row(text: &str, first: &str) -> Vec<String> {
    text.lines()
        .find(|l| l.starts_with(first))
        .unwrap_or_else(|| panic!("no line {first:?} in\n{text}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn metrics_are_recorded_shown_and_compared_across_runs() {
    let p = Project::create(&[
        ("pipelines/p.toml", PIPELINE),
        ("params.yaml", "train:\n  lr: 0.01\n"),
        ("acc.txt", "0.8"),
    ]);
    run(&p);
    let record = p.last_record();
    assert_eq!(record["stages"][0]["jobs"][0]["metrics"]["acc"], 0.8);
    assert_eq!(record["stages"][0]["jobs"][0]["metrics"]["eval.loss"], 0.5);

    p.write("params.yaml", "train:\n  lr: 0.02\n");
    p.write("acc.txt", "0.9");
    run(&p);
    let shown = stdout(&p, &["metrics", "show"]);
    assert_eq!(row(&shown, "train  acc")[2], "0.9", "{shown}");
    assert_eq!(row(&shown, "train  eval.loss")[2], "0.5", "{shown}");

    // The change, absolute and relative, from the numbers in the files: 0.9 - 0.8 = 0.1, +12.5%.
    let diff = stdout(&p, &["metrics", "diff"]);
    assert_eq!(
        row(&diff, "train")[2..],
        ["0.8", "0.9", "+0.1", "+12.5%"],
        "{diff}"
    );
    assert!(
        !diff.contains("eval.loss"),
        "unchanged: shown with --all only\n{diff}"
    );
    let all = stdout(&p, &["metrics", "diff", "--all"]);
    assert!(all.contains("eval.loss"), "{all}");

    // Up to date: its metrics are recorded from its files all the same.
    run(&p);
    let record = p.last_record();
    assert_eq!(record["stages"][0]["jobs"][0]["status"], "up_to_date");
    assert_eq!(record["stages"][0]["jobs"][0]["metrics"]["acc"], 0.9);

    // Runs with the parameter that differs among them and the metrics asked for.
    let table = stdout(&p, &["runs", "--metrics", "acc,eval.loss"]);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "RUN_ID",
            "PIPELINE",
            "STATUS",
            "params.yaml:train.lr",
            "acc",
            "eval.loss"
        ]
    );
    let cells: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(cells.len(), 3);
    assert_eq!(
        cells[0][3..],
        ["0.02", "0.9", "0.5"],
        "newest first\n{table}"
    );
    assert_eq!(cells[2][3..], ["0.01", "0.8", "0.5"], "{table}");
}

#[test]
fn a_metrics_file_the_job_did_not_write_fails_it() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[jobs.a]\ncommand = \"true\"\nmetrics = [\"m.json\"]\n",
    )]);
    let out = p.run(&["pipeline", "p", "--no-progress"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("metrics file m.json: "),
        "{}",
        out.stderr
    );
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[jobs.a]\ncommand = \"true\"\nmetrics = [\"m.txt\"]\n",
    )]);
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("a metrics file is .json, .yaml, .yml, .toml or .csv"),
        "{}",
        out.stderr
    );
    let out = p.run(&["metrics", "show"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("no runs yet"), "{}", out.stderr);
}

#[test]
fn the_compare_page_needs_two_runs_and_draws_what_they_recorded() {
    let p = Project::create(&[
        ("pipelines/p.toml", PIPELINE),
        ("params.yaml", "train:\n  lr: 0.01\n"),
        ("acc.txt", "0.8"),
    ]);
    let out = p.run(&["report", "--compare", "-o", "c.html"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("no runs yet"), "{}", out.stderr);
    run(&p);
    let out = p.run(&["report", "--compare", "-o", "c.html"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("--compare needs two runs or more"),
        "{}",
        out.stderr
    );
    let first = p.last_record()["run_id"].as_str().unwrap().to_owned();
    p.write("params.yaml", "train:\n  lr: 0.02\n");
    p.write("acc.txt", "0.9");
    run(&p);
    let second = p.last_record()["run_id"].as_str().unwrap().to_owned();
    let out = p.run(&["report", "--compare", &second, &first, "-o", "c.html"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let html = p.read("c.html");
    // Oldest first whatever the order named; the change is the files' numbers.
    assert!(html.find(&first).unwrap() < html.find(&second).unwrap());
    assert!(html.contains("train &#x2f; acc"), "{html}");
    assert!(html.contains("0.8 \u{2192} 0.9 (+0.1, +12.5%)"), "{html}");
    assert!(html.contains("params.yaml:train.lr"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    // A run id and --compare together is a usage error.
    let out = p.run(&["report", &first, "--compare", &second, "-o", "c.html"]);
    assert_eq!(out.code, Some(2));
}
