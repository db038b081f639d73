//! lorchestra on a real Slurm of three nodes (`cargo xtask slurm-up`; CI starts it first).

use serde_json::Value;
use testkit::slurm::{job, job_named, processes_running, processes_with, settled};

use super::Project;

/// Four jobs that say where they ran, one stage.
const FOUR: &str = r#"
[[stages]]
name = "fan"
jobs = ["a", "b", "c", "d"]

[jobs.a]
command = "sleep 1; echo ran in ${SLURM_JOB_ID:-no job}"
[jobs.b]
command = "sleep 1; echo ran in ${SLURM_JOB_ID:-no job}"
[jobs.c]
command = "sleep 1; echo ran in ${SLURM_JOB_ID:-no job}"
[jobs.d]
command = "sleep 1; echo ran in ${SLURM_JOB_ID:-no job}"
"#;

/// A job's record without its times and where it ran: id, status, attempts, exit code, error,
/// and the record's field names.
type JobShape = (String, String, u64, Option<i64>, Option<String>, String);

/// The parts of a run record that do not depend on time or on where jobs ran (the node a Slurm
/// job ran on is the one field a Slurm record has more).
fn shape(record: &Value) -> Vec<JobShape> {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["jobs"].as_array().unwrap())
        .map(|j| {
            // Plus, on Slurm, the node it ran on.
            let mut keys: Vec<&String> = j
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "slurm_node")
                .collect();
            keys.sort();
            (
                j["job_id"].as_str().unwrap().to_owned(),
                j["status"].as_str().unwrap().to_owned(),
                j["attempts"].as_u64().unwrap(),
                j["exit_code"].as_i64(),
                j["error"].as_str().map(str::to_owned),
                format!("{keys:?}"),
            )
        })
        .collect()
}

#[test]
fn a_stage_runs_on_slurm_with_the_same_run_record_as_a_local_run() {
    testkit::slurm::require_test_cluster();
    let p = Project::create(&[("pipelines/four.toml", FOUR)]);
    let local = p.run(&["pipeline", "four", "-j", "4", "-q"]);
    assert_eq!(local.code, Some(0), "{}", local.stderr);
    let local_record = p.last_record();

    let slurm = p.run(&["pipeline", "four", "-j", "4", "-q", "--backend", "slurm"]);
    assert_eq!(slurm.code, Some(0), "{}", slurm.stderr);
    let record = p.last_record();
    // The four steps ran at the same time: every one started before any finished.
    let jobs = record["stages"][0]["jobs"].as_array().unwrap();
    let time = |j: &Value, key: &str| j[key].as_f64().unwrap();
    let last_start = jobs
        .iter()
        .map(|j| time(j, "started_at_unix"))
        .fold(f64::MIN, f64::max);
    let first_end = jobs
        .iter()
        .map(|j| time(j, "finished_at_unix"))
        .fold(f64::MAX, f64::min);
    assert!(
        last_start < first_end,
        "the steps did not overlap: {jobs:?}"
    );
    assert_eq!(
        shape(&record),
        shape(&local_record),
        "same record either way"
    );

    let run_dir = p
        .path()
        .join(".lorchestra/runs")
        .join(record["run_id"].as_str().unwrap());
    for j in record["stages"][0]["jobs"].as_array().unwrap() {
        assert_eq!(j["backend"], "slurm");
        assert!(
            j["slurm_node"].as_str().is_some_and(|n| !n.is_empty()),
            "the node is recorded: {j}"
        );
        let id = j["slurm_job_id"]
            .as_u64()
            .expect("the Slurm job id is recorded");
        assert_eq!(
            job(id).0,
            j["job_id"].as_str().unwrap(),
            "the step is named after the job"
        );
        let log = std::fs::read_to_string(run_dir.join(j["log"].as_str().unwrap())).unwrap();
        assert!(log.contains(&format!("ran in {id}\n")), "{log}");
    }
    for j in local_record["stages"][0]["jobs"].as_array().unwrap() {
        assert_eq!(j["backend"], "local");
        assert_eq!(j["slurm_job_id"], Value::Null);
    }
}

#[test]
fn exit_codes_and_timeouts_come_back_from_the_cluster() {
    testkit::slurm::require_test_cluster();
    let p = Project::create(&[(
        "pipelines/mixed.toml",
        r#"
backend = "slurm"
stop_on_failure = false

[[stages]]
name = "s"
jobs = ["fails", "hangs"]

[jobs.fails]
command = "echo 'bad input' >&2; exit 7"
[jobs.hangs]
command = "exec sleep 63.75"
timeout = 1
"#,
    )]);
    let out = p.run(&["pipeline", "mixed", "-j", "2", "--no-progress"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("bad input"),
        "the failed job's log tail: {}",
        out.stderr
    );
    let record = p.last_record();
    let jobs = record["stages"][0]["jobs"].as_array().unwrap();
    assert_eq!(jobs[0]["status"], "failed");
    assert_eq!(jobs[0]["exit_code"], 7);
    assert_eq!(jobs[0]["error"], "exited with code 7");
    assert_eq!(jobs[1]["status"], "timed_out");
    let id = jobs[1]["slurm_job_id"].as_u64().unwrap();
    let state = settled(id);
    assert!(
        ["CANCELLED", "FAILED"].contains(&state.as_str()),
        "job {id} ended {state}"
    );
    assert_eq!(
        processes_with("sleep 63.75"),
        Vec::<i32>::new(),
        "left on the node"
    );
}

#[test]
fn ctrl_c_cancels_the_steps_in_flight() {
    testkit::slurm::require_test_cluster();
    let p = Project::create(&[(
        "pipelines/long.toml",
        r#"
[[stages]]
name = "s"
jobs = ["x", "y", "z"]

[jobs.x]
command = "exec sleep 64.5"
[jobs.y]
command = "exec sleep 64.5"
[jobs.z]
command = "exec sleep 64.5"
"#,
    )]);
    let child = testkit::command(super::BIN)
        .args([
            "pipeline",
            "long",
            "-j",
            "3",
            "--backend",
            "slurm",
            "--no-progress",
        ])
        .current_dir(p.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    testkit::wait_for("three steps running on the node", || {
        processes_running("sleep 64.5").len() >= 3
    });
    testkit::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = p.last_record();
    assert_eq!(record["status"], "cancelled");
    for j in record["stages"][0]["jobs"].as_array().unwrap() {
        assert_eq!(j["status"], "cancelled", "{j}");
        let id = j["slurm_job_id"].as_u64().expect("the job id is recorded");
        let state = settled(id);
        assert!(
            ["CANCELLED", "FAILED"].contains(&state.as_str()),
            "job {id} ended {state}"
        );
    }
    assert_eq!(
        processes_with("sleep 64.5"),
        Vec::<i32>::new(),
        "left on the node"
    );
}

#[test]
fn a_killed_lorchestra_cancels_its_slurm_jobs() {
    // SIGKILL: no handler runs; the guardian must cancel the job on the cluster, since the
    // SIGKILLed srun cannot. The step drops its environment, so nothing but Slurm can end it.
    testkit::slurm::require_test_cluster();
    let p = Project::create(&[(
        "pipelines/long.toml",
        "[[stages]]\nname = \"s\"\njobs = [\"orphan_candidate\"]\n\
         [jobs.orphan_candidate]\ncommand = \"exec env -i sleep 63.5\"\n",
    )]);
    let mut child = testkit::command(super::BIN)
        .args(["pipeline", "long", "--backend", "slurm", "--no-progress"])
        .current_dir(p.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    testkit::wait_for("the step running on the node", || {
        !processes_running("sleep 63.5").is_empty()
    });
    let id = job_named("orphan_candidate").expect("Slurm knows the job");
    child.kill().unwrap();
    child.wait().unwrap();
    let state = settled(id);
    assert_eq!(state, "CANCELLED", "job {id}");
    testkit::wait_for("the step's process to end", || {
        processes_running("sleep 63.5").is_empty()
    });
}

#[test]
fn slurm_problems_are_clear_errors_before_anything_runs() {
    testkit::slurm::require_test_cluster();
    let p = Project::create(&[
        (
            "pipelines/nopart.toml",
            "[[stages]]\nname = \"s\"\njobs = [\"a\"]\n[jobs.a]\ncommand = \"true\"\nbackend = \"slurm\"\nslurm = { partition = \"gpu-h100\" }\n",
        ),
        (
            "pipelines/plain.toml",
            "[[stages]]\nname = \"s\"\njobs = [\"a\"]\n[jobs.a]\ncommand = \"touch ran\"\n",
        ),
    ]);
    let out = p.run(&["pipeline", "nopart"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("the job \"a\" runs on Slurm")
            && out
                .stderr
                .contains("unknown Slurm partition `gpu-h100` (partitions here: "),
        "{}",
        out.stderr
    );
    assert!(
        !p.path().join(".lorchestra/runs").exists(),
        "no run was recorded"
    );

    // No srun on PATH.
    let bin = p.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "touch", "true"] {
        std::os::unix::fs::symlink(testkit::which(tool).unwrap(), bin.join(tool)).unwrap();
    }
    let out = p.run_env(
        &["pipeline", "plain", "--backend", "slurm"],
        &[("PATH", bin.to_str().unwrap())],
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("srun not found on PATH"),
        "{}",
        out.stderr
    );
    assert!(!p.path().join("ran").exists());

    // A job the scheduler refuses fails with the scheduler's reason.
    let out = p.run(&[
        "pipeline",
        "plain",
        "--backend",
        "slurm",
        "--slurm-arg=--mem=100000000G",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let record = p.last_record();
    let error = record["stages"][0]["jobs"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("Slurm rejected the job: "), "{error}");
}

/// Three jobs that each take a whole node (`--exclusive`) run at once on the three nodes of the
/// test cluster: each says where it ran, and the record names the same node.
#[test]
fn jobs_spread_over_the_clusters_nodes_and_the_record_names_each_node() {
    testkit::slurm::require_test_cluster();
    let job =
        "command = \"sleep 2; echo on $SLURMD_NODENAME\"\nslurm = { args = [\"--exclusive\"] }\n";
    let p = Project::create(&[(
        "pipelines/spread.toml",
        &format!(
            "[[stages]]\nname = \"fan\"\njobs = [\"a\", \"b\", \"c\"]\n\n[jobs.a]\n{job}\n\
             [jobs.b]\n{job}\n[jobs.c]\n{job}"
        ),
    )]);
    let out = p.run(&["pipeline", "spread", "-j", "3", "-q", "--backend", "slurm"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let record = p.last_record();
    let run_dir = p
        .path()
        .join(".lorchestra/runs")
        .join(record["run_id"].as_str().unwrap());
    let jobs = record["stages"][0]["jobs"].as_array().unwrap();
    let mut nodes: Vec<String> = jobs
        .iter()
        .map(|j| {
            let node = j["slurm_node"].as_str().expect("the record names the node");
            let log = std::fs::read_to_string(run_dir.join(j["log"].as_str().unwrap())).unwrap();
            assert!(
                log.contains(&format!("on {node}\n")),
                "the job says it ran on another node than its record: {log:?} vs {node}"
            );
            node.to_owned()
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        nodes,
        testkit::slurm::nodes(),
        "three whole-node jobs at once take the cluster's three nodes: {jobs:?}"
    );
    let report = std::fs::read_to_string(run_dir.join("report.json")).unwrap();
    assert!(report.contains("\"slurm_node\": \"fanout-n"), "{report}");
}
