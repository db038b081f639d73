//! Jobs scheduled by the resources they need (issue 33): `cpus`, `mem`, `gpus`, named ones,
//! `--resources`, amounts that grow per attempt, the wait in the record and the timeline.

use serde_json::Value;

use super::Project;

/// Each job's (start, end) from the record, in seconds.
fn spans(record: &Value) -> Vec<(String, f64, f64)> {
    record["stages"][0]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["job_id"].as_str().unwrap().to_owned(),
                j["started_at_unix"].as_f64().unwrap(),
                j["finished_at_unix"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The most of `spans` (those `of` selects) that ran at one instant.
fn most_at_once(spans: &[(String, f64, f64)], of: impl Fn(&str) -> bool) -> usize {
    let chosen: Vec<_> = spans.iter().filter(|(id, _, _)| of(id)).collect();
    chosen
        .iter()
        .map(|(_, start, _)| {
            chosen
                .iter()
                .filter(|(_, s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn four_jobs_of_six_gigabytes_on_twelve_run_two_at_a_time_and_a_group_of_one_never_overlaps() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        r#"
resources = { db = 1 }
[[stages]]
name = "train"
jobs = ["m1", "m2", "m3", "m4", "q1", "q2", "q3"]

[jobs.m1]
command = "sleep 0.6; echo mem=$LORCHESTRA_MEM_MB"
mem = "6G"
[jobs.m2]
command = "sleep 0.6"
mem = "6G"
[jobs.m3]
command = "sleep 0.6"
mem = "6G"
[jobs.m4]
command = "sleep 0.6"
mem = "6144"
[jobs.q1]
command = "sleep 0.3"
resources = { db = 1 }
[jobs.q2]
command = "sleep 0.3"
resources = { db = 1 }
[jobs.q3]
command = "sleep 0.3"
resources = { db = 1 }
"#,
    )]);
    let out = p.run(&[
        "pipeline",
        "p",
        "-j",
        "7",
        "--resources",
        "mem=12G",
        "--no-progress",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let record = p.last_record();
    let spans = spans(&record);
    assert_eq!(
        most_at_once(&spans, |id| id.starts_with('m')),
        2,
        "{spans:?}"
    );
    assert_eq!(
        most_at_once(&spans, |id| id.starts_with('q')),
        1,
        "{spans:?}"
    );
    // Seven workers: the database jobs ran beside the memory-hungry ones.
    assert!(most_at_once(&spans, |_| true) >= 3, "{spans:?}");
    let jobs = record["stages"][0]["jobs"].as_array().unwrap();
    // Two of the four waited for memory, with a worker free: the record says how long.
    let waited: Vec<&Value> = jobs
        .iter()
        .filter(|j| j["job_id"].as_str().unwrap().starts_with('m'))
        .filter(|j| j["resource_wait_seconds"].as_f64().is_some_and(|w| w > 0.3))
        .collect();
    assert_eq!(waited.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0]["tries"][0]["resources"]["mem"], 6144);
    let log = p.read(&format!(
        ".lorchestra/runs/{}/logs/m1.log",
        record["run_id"].as_str().unwrap()
    ));
    assert!(log.contains("mem=6144"), "{log}");
    // The timeline draws the wait before the bar, and says so in the legend and tooltip.
    let html = p.run(&["report", record["run_id"].as_str().unwrap(), "-o", "t.html"]);
    assert_eq!(html.code, Some(0), "{}", html.stderr);
    let html = p.read("t.html");
    assert_eq!(
        html.matches("class=\"waiting\"").count(),
        2 + 3 - 1,
        "{html}"
    );
    assert!(html.contains("waited for resources"));
}

#[test]
fn a_job_that_can_never_fit_is_refused_before_anything_runs() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        r#"
[jobs.small]
command = "touch ran"
[jobs.huge]
command = "true"
cpus = 64
needs = ["small"]
"#,
    )]);
    let out = p.run(&["pipeline", "p", "--resources", "cpus=8"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "the job \"huge\" needs cpus=64, more than the run has (cpus=8); change it with \
             --resources cpus=AMOUNT"
        ),
        "{}",
        out.stderr
    );
    assert!(!p.path().join("ran").exists());
    assert!(!p.path().join(".lorchestra/runs").exists());
    // GPUs: none unless the run is given some.
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[jobs.g]\ncommand = \"echo $LORCHESTRA_GPUS\"\ngpus = 1\nresources = { licence = 1 }\n",
    )]);
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("needs gpus=1, more than the run has (gpus=0)"),
        "{}",
        out.stderr
    );
    let out = p.run(&["pipeline", "p", "--resources", "gpus=2"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains(
            "needs licence=1, but the run has no \"licence\": give it with resources = { \
             licence = N } in the pipeline, or --resources licence=N"
        ),
        "{}",
        out.stderr
    );
    let out = p.run(&[
        "pipeline",
        "p",
        "--resources",
        "gpus=2,licence=1",
        "--no-progress",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Bad amounts name the job, or the flag, and say what is expected.
    let out = p.run(&["pipeline", "p", "--resources", "gpus"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("\"gpus\" is not NAME=AMOUNT"),
        "{}",
        out.stderr
    );
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[jobs.a]\ncommand = \"true\"\nmem = \"lots\"\n",
    )]);
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("the job \"a\" has mem = \"lots\" is not an amount of memory"),
        "{}",
        out.stderr
    );
}

#[test]
fn memory_that_grows_per_attempt_is_recorded_per_attempt() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        r#"
[jobs.oom]
command = "echo $LORCHESTRA_MEM_MB >> mems; [ $LORCHESTRA_MEM_MB -ge 3072 ]"
mem = "1G * attempt"
retries = 3
retry_backoff = "10ms"
"#,
    )]);
    let dry = p.run(&["pipeline", "p", "--dry-run"]);
    assert!(
        dry.stdout.contains("needs mem=1G * attempt"),
        "{}",
        dry.stdout
    );
    let out = p.run(&["pipeline", "p", "--resources", "mem=8G", "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(p.read("mems"), "1024\n2048\n3072\n");
    let record = p.last_record();
    let tries = record["stages"][0]["jobs"][0]["tries"].as_array().unwrap();
    let mems: Vec<&Value> = tries.iter().map(|t| &t["resources"]["mem"]).collect();
    assert_eq!(mems, [1024, 2048, 3072]);
    let attempts: Vec<&Value> = tries.iter().map(|t| &t["attempt"]).collect();
    assert_eq!(attempts, [1, 2, 3]);
    // Capped at what the run has: a fourth attempt of 4G on 2G gets 2G.
    let out = p.run(&[
        "pipeline",
        "p",
        "--resources",
        "mem=2G",
        "--no-progress",
        "--force",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(p.read("mems"), "1024\n2048\n3072\n1024\n2048\n2048\n2048\n");
}

#[test]
fn on_slurm_the_needs_become_srun_options_and_only_named_ones_are_counted_here() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        r#"
[jobs.t]
command = "true"
cpus = 2
mem = "4G * attempt"
gpus = 1
resources = { db = 1 }
"#,
    )]);
    // No GPUs here, and 2 cpus are fine: Slurm gives them, not this machine.
    let out = p.run(&[
        "pipeline",
        "p",
        "--backend",
        "slurm",
        "--dry-run",
        "--resources",
        "cpus=1,db=1",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("--cpus-per-task=2 --mem=4096M --gres=gpu:1"),
        "{}",
        out.stdout
    );
    // The named one still needs the run to have it.
    let out = p.run(&["pipeline", "p", "--backend", "slurm", "--dry-run"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("the run has no \"db\""),
        "{}",
        out.stderr
    );
    // What the job declares wins over the pipeline's slurm table; a --gres there is kept.
    let p = Project::create(&[(
        "pipelines/p.toml",
        r#"
slurm = { mem = "1G", cpus = 1, args = ["--gres=gpu:a100:2"] }
[jobs.t]
command = "true"
cpus = 4
mem = "4G"
gpus = 2
"#,
    )]);
    let out = p.run(&["pipeline", "p", "--backend", "slurm", "--dry-run"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("--cpus-per-task=4 --mem=4096M --gres=gpu:a100:2]"),
        "{}",
        out.stdout
    );
}
