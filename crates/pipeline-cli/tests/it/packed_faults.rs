//! `--slurm-mode packed` when things go wrong or are not as asked: a node dies, the allocation
//! ends under the run, the allocation lorchestra runs in is smaller than `-j`; and a nested
//! pipeline of a packed run.

use serde_json::Value;

use super::Project;

const VICTIM: &str = "fanout-n2";

#[test]
fn a_node_that_dies_fails_only_its_jobs_and_the_run_finishes_the_rest() {
    let _cluster = testkit::slurm::whole_test_cluster();
    let items: String = (1..=24).map(|i| i.to_string() + "\n").collect();
    let p = Project::create(&[
        ("items.txt", items.as_str()),
        (
            "pipelines/dies.toml",
            r#"
stop_on_failure = false

[[stages]]
name = "s"
jobs = ["work"]

[jobs.work]
command = "sleep 1.25; echo on $SLURMD_NODENAME"
matrix_from = { file = "items.txt" }
"#,
        ),
    ]);
    let child = testkit::command(super::BIN)
        .args(["pipeline", "dies", "-j", "6", "--backend", "slurm"])
        .args([
            "--slurm-mode",
            "packed",
            "--slurm-nodes",
            "3",
            "--no-progress",
        ])
        .current_dir(p.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    testkit::wait_for("a job running on the node to kill", || {
        testkit::slurm::runs_on_node(VICTIM, "sleep 1.25")
    });
    let killed = testkit::slurm::kill_node(VICTIM);
    let killed_at = now();
    let out = child.wait_with_output().unwrap();
    drop(killed);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "some jobs failed: {stderr}");

    let record = p.last_record();
    let jobs = record["stages"][0]["jobs"].as_array().unwrap();
    let failed: Vec<&Value> = jobs.iter().filter(|j| j["status"] != "succeeded").collect();
    assert!(!failed.is_empty(), "the jobs on {VICTIM} failed");
    for j in &failed {
        assert_eq!(j["status"], "failed", "{j}");
        assert_eq!(j["slurm_node"], VICTIM, "{j}");
        let error = j["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("node {VICTIM} of allocation"))
                && error.contains("stopped answering"),
            "the reason names the node: {error}"
        );
    }
    // The run went on: every other job succeeded, many of them started after the kill.
    assert_eq!(jobs.len(), 24);
    let after = (jobs.iter())
        .filter(|j| j["status"] == "succeeded")
        .filter(|j| j["started_at_unix"].as_f64().unwrap() > killed_at)
        .count();
    assert!(
        after >= 6,
        "{after} jobs started after the node died and succeeded"
    );
    let allocation = jobs[0]["slurm_job_id"].as_u64().unwrap();
    let state = testkit::slurm::settled(allocation);
    assert!(
        ["CANCELLED", "COMPLETED"].contains(&state.as_str()),
        "{state}"
    );
    testkit::wait_for("nothing left on the nodes", || {
        testkit::slurm::processes_with("sleep 1.25").is_empty()
    });
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `n` jobs running `command`, as a matrix, in `pipelines/NAME.toml`; failures do not stop it.
fn matrix(name: &str, n: usize, command: &str) -> Project {
    let items: String = (1..=n).map(|i| i.to_string() + "\n").collect();
    Project::create(&[
        ("items.txt", items.as_str()),
        (
            &format!("pipelines/{name}.toml"),
            &format!(
                "stop_on_failure = false\n[[stages]]\nname = \"s\"\njobs = [\"t\"]\n\n\
                 [jobs.t]\ncommand = \"{command}\"\nmatrix_from = {{ file = \"items.txt\" }}\n"
            ),
        ),
    ])
}

const PACKED: [&str; 5] = [
    "--backend",
    "slurm",
    "--slurm-mode",
    "packed",
    "--no-progress",
];

/// The allocation is cancelled under a running run (as its time limit would end it): the jobs
/// in flight and every later one fail at once, saying that Slurm ended the allocation.
#[test]
fn an_allocation_that_ends_fails_the_rest_saying_why() {
    let _cluster = testkit::slurm::require_test_cluster();
    let p = matrix("ends", 12, "sleep 1.75");
    let child = testkit::command(super::BIN)
        .args(["pipeline", "ends", "-j", "3"])
        .args(PACKED)
        .current_dir(p.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    testkit::wait_for("jobs running on the nodes", || {
        testkit::slurm::processes_running("sleep 1.75").len() >= 3
    });
    let mark = format!("{}{}_", fanout::process::JOB_ENV_PREFIX, child.id());
    let allocation = testkit::slurm::job_with_comment(&mark).expect("the run's allocation");
    testkit::slurm::cancel(allocation);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let record = p.last_record();
    let jobs = record["stages"][0]["jobs"].as_array().unwrap();
    let failed: Vec<&Value> = jobs.iter().filter(|j| j["status"] == "failed").collect();
    assert!(
        failed.len() >= 9,
        "the jobs in flight and all later ones: {jobs:?}"
    );
    for j in failed {
        let error = j["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("Slurm ended allocation {allocation} (")),
            "{error}"
        );
    }
    assert!(
        record["duration_seconds"].as_f64().unwrap() < 20.0,
        "failed at once"
    );
}

/// Inside an allocation (`SLURM_JOB_ID`, as in an sbatch script) with 2 CPUs, `-j 6` runs two
/// jobs at a time in it (and says so) instead of waiting forever for steps that cannot start;
/// the allocation is not lorchestra's to end.
#[test]
fn inside_an_allocation_smaller_than_j_the_jobs_share_its_slots() {
    let _cluster = testkit::slurm::require_test_cluster();
    let held = testkit::slurm::allocate(2, "test-outer");
    let outer = held.0;
    let p = matrix("inside", 6, "sleep 0.5; echo $SLURM_JOB_ID");
    let mut args = vec!["pipeline", "inside", "-j", "6"];
    args.extend(PACKED);
    let out = p.run_env(&args, &[("SLURM_JOB_ID", &outer.to_string())]);
    let state = testkit::slurm::job(outer).1;
    drop(held);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "Slurm allocation {outer} has room for 2 task(s) of 1 CPU(s) at once"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        state, "RUNNING",
        "the allocation lorchestra ran in is left running"
    );
    let record = p.last_record();
    let jobs = record["stages"][0]["jobs"].as_array().unwrap();
    let mut ends: Vec<f64> = jobs
        .iter()
        .map(|j| {
            assert_eq!(j["slurm_job_id"], outer, "{j}");
            j["finished_at_unix"].as_f64().unwrap()
        })
        .collect();
    ends.sort_by(f64::total_cmp);
    // Two at a time, half a second each: three waves (six at once would end together).
    assert!(ends[5] - ends[0] > 0.9, "{ends:?}");
}

/// lorchestra killed (SIGKILL: no cleanup of its own) in an allocation it runs in: the
/// allocation is not its to cancel, but its workers see their stdin close and kill the jobs
/// they run, so nothing is left running in the user's allocation.
#[test]
fn a_killed_lorchestra_leaves_nothing_running_in_the_allocation_it_ran_in() {
    let _cluster = testkit::slurm::require_test_cluster();
    let held = testkit::slurm::allocate(2, "test-outer");
    let outer = held.0;
    let p = matrix("killed", 2, "exec sleep 61.75");
    let mut child = testkit::command(super::BIN)
        .args(["pipeline", "killed", "-j", "2"])
        .args(PACKED)
        .env("SLURM_JOB_ID", outer.to_string())
        .current_dir(p.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    testkit::wait_for("both jobs running on the nodes", || {
        testkit::slurm::processes_running("sleep 61.75").len() == 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
    testkit::wait_for("the jobs killed by their workers", || {
        testkit::slurm::processes_with("sleep 61.75").is_empty()
    });
    let state = testkit::slurm::job(outer).1;
    drop(held);
    assert_eq!(state, "RUNNING", "the allocation is the user's");
}

/// A nested pipeline of a packed run is packed too, in an allocation of its own.
#[test]
fn a_nested_pipeline_of_a_packed_run_is_packed_too() {
    let _cluster = testkit::slurm::require_test_cluster();
    let p = Project::create(&[
        (
            "pipelines/outer.toml",
            "[[stages]]\nname = \"s\"\njobs = [\"here\", \"pipeline.inner\"]\n\n\
             [jobs.here]\ncommand = \"true\"\n",
        ),
        (
            "pipelines/inner.toml",
            "[[stages]]\nname = \"in\"\njobs = [\"a\", \"b\"]\n\n[jobs.a]\ncommand = \"true\"\n\
             [jobs.b]\ncommand = \"true\"\n",
        ),
    ]);
    let mut args = vec!["pipeline", "outer", "-j", "2"];
    args.extend(PACKED);
    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let runs = p.path().join(".lorchestra/runs");
    let records: Vec<Value> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| p.record(e.unwrap().file_name().to_str().unwrap()).unwrap())
        .collect();
    let allocation_of = |pipeline: &str| {
        let record = records.iter().find(|r| r["pipeline"] == pipeline).unwrap();
        let jobs = record["stages"][0]["jobs"].as_array().unwrap();
        let ids: Vec<&Value> = (jobs.iter())
            .filter(|j| j["backend"] == "slurm")
            .map(|j| &j["slurm_job_id"])
            .collect();
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "one allocation: {ids:?}"
        );
        ids[0].as_u64().expect("run in an allocation")
    };
    let (outer, inner) = (allocation_of("outer"), allocation_of("inner"));
    assert_ne!(outer, inner);
    assert_eq!(testkit::slurm::job(inner).0, "fanout-alloc");
    for id in [outer, inner] {
        let state = testkit::slurm::settled(id);
        assert!(
            ["CANCELLED", "COMPLETED"].contains(&state.as_str()),
            "{id}: {state}"
        );
    }
}
