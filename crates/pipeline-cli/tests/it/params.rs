//! Parameters (issue 33): `params = ["params.yaml:train.lr"]` in a job's up-to-date key, the
//! reason naming the value that changed, `--set` for one run, `lorchestra params diff`.

use serde_json::Value;

use super::Project;

/// prepare (tracks `data`) -> train (tracks `train.lr`, needs prepare) -> evaluate (reads the
/// model file train writes). `train.epochs` is in the file but tracked by no job.
const PIPELINE: &str = r#"
[[stages]]
name = "all"
jobs = ["prepare", "train", "evaluate"]

[jobs.prepare]
command = "echo prepare >> ran; mkdir -p out; echo data > out/data.txt"
params = ["params.yaml:data"]
outputs = ["out/data.txt"]

[jobs.train]
command = "echo train >> ran; printf '%s' \"$LORCHESTRA_PARAMS\" > out/train-params.json; echo model > out/model.txt"
params = ["params.yaml:train.lr"]
outputs = ["out/model.txt"]
needs = ["prepare"]

[jobs.evaluate]
command = "echo evaluate >> ran; cat out/model.txt > out/score.txt"
inputs = ["out/model.txt"]
needs = ["train"]
"#;

fn params(lr: &str, epochs: u32) -> String {
    format!("train:\n  lr: {lr}\n  epochs: {epochs}\ndata:\n  size: 10\n")
}

/// Run the pipeline; the jobs that ran, and each job's reason.
fn run(p: &Project, extra: &[&str]) -> (Vec<String>, Vec<(String, String)>) {
    let _ = std::fs::remove_file(p.path().join("ran"));
    let mut args = vec!["pipeline", "p", "--no-progress"];
    args.extend(extra);
    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let ran = std::fs::read_to_string(p.path().join("ran"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let record = p.last_record();
    let reasons = record["stages"][0]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["job_id"].as_str().unwrap().to_owned(),
                j["reason"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    (ran, reasons)
}

fn reason<'a>(reasons: &'a [(String, String)], job: &str) -> &'a str {
    &reasons.iter().find(|(j, _)| j == job).unwrap().1
}

#[test]
fn a_tracked_value_reruns_its_job_and_dependents_and_an_untracked_one_nothing() {
    let p = Project::create(&[
        ("pipelines/p.toml", PIPELINE),
        ("params.yaml", &params("0.01", 3)),
    ]);
    assert_eq!(run(&p, &[]).0, ["prepare", "train", "evaluate"]);
    assert_eq!(run(&p, &[]).0, Vec::<String>::new(), "nothing changed");

    // Another key of the same file: no job tracks it.
    p.write("params.yaml", &params("0.01", 30));
    assert_eq!(
        run(&p, &[]).0,
        Vec::<String>::new(),
        "train.epochs is not tracked"
    );

    // The tracked one: train runs, saying which value changed, and evaluate after it.
    p.write("params.yaml", &params("0.02", 30));
    let (ran, reasons) = run(&p, &[]);
    assert_eq!(ran, ["train", "evaluate"]);
    assert_eq!(
        reason(&reasons, "train"),
        "params.yaml:train.lr 0.01 -> 0.02"
    );
    assert_eq!(reason(&reasons, "prepare"), "up to date");
    assert!(
        reason(&reasons, "evaluate").contains("train"),
        "{reasons:?}"
    );
    let record = p.last_record();
    assert_eq!(record["params"]["params.yaml:train.lr"], 0.02);
    assert_eq!(record["params"]["params.yaml:data"]["size"], 10);

    // --set, for one run: the job sees it, the record keeps it, the file is untouched.
    let (ran, reasons) = run(&p, &["--set", "train.lr=0.05"]);
    assert_eq!(ran, ["train", "evaluate"]);
    assert_eq!(
        reason(&reasons, "train"),
        "params.yaml:train.lr 0.02 -> 0.05"
    );
    let seen: Value =
        serde_json::from_slice(&std::fs::read(p.path().join("out/train-params.json")).unwrap())
            .unwrap();
    assert_eq!(seen, serde_json::json!({ "params.yaml:train.lr": 0.05 }));
    let record = p.last_record();
    assert_eq!(record["params_set"]["train.lr"], 0.05);
    assert_eq!(record["params"]["params.yaml:train.lr"], 0.05);
    assert!(
        std::fs::read_to_string(p.path().join("params.yaml"))
            .unwrap()
            .contains("lr: 0.02")
    );

    // A value a job earlier in the chain tracks: it runs, and everything after it.
    p.write(
        "params.yaml",
        &params("0.02", 30).replace("size: 10", "size: 20"),
    );
    let (ran, reasons) = run(&p, &[]);
    assert_eq!(ran, ["prepare", "train", "evaluate"]);
    assert_eq!(
        reason(&reasons, "prepare"),
        "params.yaml:data {\"size\":10} -> {\"size\":20}"
    );
    assert_eq!(reason(&reasons, "train"), "depends on prepare, which ran");
    let explained = p.run(&["pipeline", "p", "--explain"]);
    assert!(
        explained.stdout.contains("0 of 3 jobs would run"),
        "{}",
        explained.stdout
    );
    run(&p, &["--set", "train.lr=0.05"]);

    // The last two runs, compared.
    let out = p.run(&["params", "diff"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("PARAM"), "{}", out.stdout);
    assert!(
        lines[1].starts_with("params.yaml:train.lr")
            && lines[1].contains("0.02")
            && lines[1].trim_end().ends_with("0.05"),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines.len(),
        3,
        "one changed value and the --set line: {}",
        out.stdout
    );
    assert!(
        lines[2].ends_with("ran with --set train.lr=0.05"),
        "{}",
        out.stdout
    );
    let out = p.run(&["params", "diff", "--all"]);
    assert!(out.stdout.contains("params.yaml:data"), "{}", out.stdout);
}

#[test]
fn bad_params_are_named() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[jobs.a]\ncommand = \"true\"\nparams = [\"params.ini:x\"]\n",
    )]);
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the job \"a\" has params \"params.ini:x\": the file must be"),
        "{}",
        out.stderr
    );

    // A key the file does not have fails the job, naming it.
    let p = Project::create(&[
        (
            "pipelines/p.toml",
            "[jobs.a]\ncommand = \"true\"\nparams = [\"params.yaml:train.momentum\"]\n",
        ),
        ("params.yaml", "train:\n  lr: 0.1\n"),
    ]);
    let out = p.run(&["pipeline", "p", "--no-progress"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("params.yaml has no key \"train.momentum\""),
        "{}",
        out.stderr
    );
    let out = p.run(&["pipeline", "p", "--set", "lr"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("--set lr: expected KEY=VALUE"),
        "{}",
        out.stderr
    );
}

#[test]
fn set_is_checked_reused_by_resume_and_a_params_file_may_come_from_an_earlier_job() {
    // `make` writes config.json; `use` tracks a key of it: read when use's turn comes.
    let p = Project::create(&[(
        "pipelines/p.toml",
        r#"
[[stages]]
name = "first"
jobs = ["make"]
[[stages]]
name = "then"
jobs = ["use"]

[jobs.make]
command = "echo '{\"lr\": 0.1}' > config.json"

[jobs.use]
command = "printf '%s' \"$LORCHESTRA_PARAMS\" > seen.json; test -e ok"
params = ["config.json:lr"]
"#,
    )]);
    let out = p.run(&["pipeline", "p", "--no-progress", "--set", "lr=0.5"]);
    assert_eq!(
        out.code,
        Some(1),
        "use fails until `ok` exists: {}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("seen.json")).unwrap(),
        r#"{"config.json:lr":0.5}"#
    );
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();

    // --resume keeps the run's --set, and refuses another.
    let out = p.run(&["pipeline", "p", "--resume", &run_id, "--set", "lr=0.9"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("reuses the --set values of that run"),
        "{}",
        out.stderr
    );
    p.write("ok", "");
    std::fs::remove_file(p.path().join("seen.json")).unwrap();
    let out = p.run(&["pipeline", "p", "--no-progress", "--resume", &run_id]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(p.path().join("seen.json")).unwrap(),
        r#"{"config.json:lr":0.5}"#
    );
    assert_eq!(p.last_record()["params"]["config.json:lr"], 0.5);

    // A key no job tracks: refused before anything runs, naming what is tracked.
    let out = p.run(&["pipeline", "p", "--set", "lr=1", "--set", "momentum=0.9"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--set momentum: no job of p tracks it (tracked: config.json:lr)"),
        "{}",
        out.stderr
    );
}
