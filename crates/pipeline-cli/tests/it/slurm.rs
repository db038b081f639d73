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
    let _cluster = testkit::slurm::require_test_cluster();
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

    let run_dir = run_dir(&p, &record);
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

/// The folder of the run `record` describes.
fn run_dir(p: &Project, record: &Value) -> std::path::PathBuf {
    p.path()
        .join(".lorchestra/runs")
        .join(record["run_id"].as_str().unwrap())
}

/// Slurm job `id` ended in one of `states`, and no process running `line` is left on a node.
fn ended_leaving_nothing(id: u64, states: &[&str], line: &str) {
    let state = settled(id);
    assert!(states.contains(&state.as_str()), "job {id} ended {state}");
    assert_eq!(processes_with(line), Vec::<i32>::new(), "left on a node");
}

/// `fails` (exit 7) failed with its exit code, `hangs` (past its timeout) timed out.
fn failed_with_7_and_timed_out(fails: &Value, hangs: &Value) {
    assert_eq!(fails["status"], "failed", "{fails}");
    assert_eq!(fails["exit_code"], 7);
    assert_eq!(fails["error"], "exited with code 7");
    assert_eq!(hangs["status"], "timed_out", "{hangs}");
}

#[test]
fn exit_codes_and_timeouts_come_back_from_the_cluster() {
    let _cluster = testkit::slurm::require_test_cluster();
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
    failed_with_7_and_timed_out(&jobs[0], &jobs[1]);
    let id = jobs[1]["slurm_job_id"].as_u64().unwrap();
    ended_leaving_nothing(id, &["CANCELLED", "FAILED"], "sleep 63.75");
}

/// Three jobs of `sleep SECONDS` on Slurm with `extra` options, interrupted (Ctrl-C) once all
/// three run; `before` sees lorchestra's pid first. Checks that lorchestra exits 130, that the
/// record says cancelled, and that nothing is left on the nodes; returns the record and what
/// `before` returned.
fn interrupted<T>(extra: &[&str], seconds: &str, before: impl FnOnce(u32) -> T) -> (Value, T) {
    let p = Project::create(&[(
        "pipelines/long.toml",
        &format!(
            "[[stages]]\nname = \"s\"\njobs = [\"x\", \"y\", \"z\"]\n\n[jobs.x]\n\
             command = \"exec sleep {seconds}\"\n[jobs.y]\ncommand = \"exec sleep {seconds}\"\n\
             [jobs.z]\ncommand = \"exec sleep {seconds}\"\n"
        ),
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
        .args(extra)
        .current_dir(p.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = format!("sleep {seconds}");
    testkit::wait_for("three jobs running on the nodes", || {
        processes_running(&line).len() >= 3
    });
    let seen = before(child.id());
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
    }
    testkit::wait_for("nothing left on the nodes", || {
        processes_with(&line).is_empty()
    });
    (record, seen)
}

#[test]
fn ctrl_c_cancels_the_steps_in_flight() {
    let _cluster = testkit::slurm::require_test_cluster();
    let (record, ()) = interrupted(&[], "64.5", |_| ());
    for j in record["stages"][0]["jobs"].as_array().unwrap() {
        let id = j["slurm_job_id"].as_u64().expect("the job id is recorded");
        let state = settled(id);
        assert!(
            ["CANCELLED", "FAILED"].contains(&state.as_str()),
            "job {id} ended {state}"
        );
    }
}

/// lorchestra killed (SIGKILL) while its one job runs on Slurm with `extra` options: no handler
/// runs; the guardian must cancel what it submitted (`find` names it from lorchestra's pid),
/// since the killed srun cannot. The job drops its environment, so nothing but Slurm can end it.
fn killed(extra: &[&str], seconds: &str, find: impl FnOnce(u32) -> Option<u64>) {
    let p = Project::create(&[(
        "pipelines/long.toml",
        &format!(
            "[[stages]]\nname = \"s\"\njobs = [\"orphan_candidate\"]\n\
             [jobs.orphan_candidate]\ncommand = \"exec env -i sleep {seconds}\"\n"
        ),
    )]);
    let mut child = testkit::command(super::BIN)
        .args(["pipeline", "long", "--backend", "slurm", "--no-progress"])
        .args(extra)
        .current_dir(p.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let line = format!("sleep {seconds}");
    testkit::wait_for("the job running on a node", || {
        !processes_running(&line).is_empty()
    });
    let id = find(child.id()).expect("Slurm knows what lorchestra submitted");
    child.kill().unwrap();
    child.wait().unwrap();
    let state = settled(id);
    assert_eq!(state, "CANCELLED", "job {id}");
    testkit::wait_for("the job's process to end", || {
        processes_running(&line).is_empty()
    });
}

#[test]
fn a_killed_lorchestra_cancels_its_slurm_jobs() {
    let _cluster = testkit::slurm::require_test_cluster();
    killed(&[], "63.5", |_| job_named("orphan_candidate"));
}

#[test]
fn a_killed_lorchestra_lets_its_allocation_go() {
    let _cluster = testkit::slurm::require_test_cluster();
    killed(&["--slurm-mode", "packed"], "63.25", |pid| {
        testkit::slurm::job_with_comment(&format!("{}{pid}_", fanout::process::JOB_ENV_PREFIX))
    });
}

#[test]
fn slurm_problems_are_clear_errors_before_anything_runs() {
    let _cluster = testkit::slurm::require_test_cluster();
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
    let _cluster = testkit::slurm::require_test_cluster();
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
    let run_dir = run_dir(&p, &record);
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

/// `--slurm-mode packed`: one allocation for the whole run (3 nodes, a slot per worker); every
/// job runs on a worker in it, the jobs spread over its nodes, exit codes and timeouts come
/// back as with a Slurm job per job, and the allocation is let go at the end.
#[test]
fn packed_jobs_run_in_one_allocation_over_its_nodes_which_is_let_go() {
    let _cluster = testkit::slurm::require_test_cluster();
    let items = (1..=24)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let p = Project::create(&[
        ("items.txt", items.as_str()),
        (
            "pipelines/packed.toml",
            r#"
stop_on_failure = false

[[stages]]
name = "s"
jobs = ["many", "fails", "hangs"]

[jobs.many]
command = "sleep 0.3; echo on $SLURMD_NODENAME; echo worker=${FANOUT_SLURM_WORKER:-none}"
matrix_from = { file = "items.txt" }
[jobs.fails]
command = "echo 'bad input' >&2; exit 7"
[jobs.hangs]
command = "exec sleep 62.25"
timeout = 1
"#,
        ),
    ]);
    // A site's task prolog may print into every task's output before it starts (here through
    // srun's own option, which goes to the workers' steps, not to salloc).
    let prolog = p.path().join("prolog.sh");
    std::fs::write(&prolog, "#!/bin/sh\necho 'print Welcome to the cluster.'\n").unwrap();
    std::fs::set_permissions(&prolog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = p.run(&[
        "pipeline",
        "packed",
        "-j",
        "6",
        "--backend",
        "slurm",
        "--slurm-mode",
        "packed",
        "--slurm-nodes",
        "3",
        &format!("--slurm-arg=--task-prolog={}", prolog.display()),
        "--no-progress",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("bad input"), "{}", out.stderr);
    let record = p.last_record();
    let run_dir = run_dir(&p, &record);
    let jobs = record["stages"][0]["jobs"].as_array().unwrap();
    let allocation = jobs[0]["slurm_job_id"].as_u64().expect("the allocation");
    let mut nodes = Vec::new();
    for j in jobs {
        assert_eq!(j["slurm_job_id"], allocation, "one allocation for all: {j}");
        assert_eq!(j["backend"], "slurm");
        let id = j["job_id"].as_str().unwrap();
        if id.starts_with("many[") {
            assert_eq!(j["status"], "succeeded", "{j}");
            let node = j["slurm_node"].as_str().expect("the node is recorded");
            let log = std::fs::read_to_string(run_dir.join(j["log"].as_str().unwrap())).unwrap();
            assert!(log.contains(&format!("on {node}\n")), "{log} vs {node}");
            // A job that runs one of the tools runs it, not a worker.
            assert!(log.contains("worker=none\n"), "{log}");
            nodes.push(node.to_owned());
        }
    }
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, testkit::slurm::nodes(), "six workers on three nodes");
    let by_id = |id: &str| jobs.iter().find(|j| j["job_id"] == id).unwrap();
    failed_with_7_and_timed_out(by_id("fails"), by_id("hangs"));
    ended_leaving_nothing(allocation, &["CANCELLED", "COMPLETED"], "sleep 62.25");
}

/// Ctrl-C in packed mode: the jobs in flight are cancelled, nothing is left on the nodes, and
/// the allocation is let go.
#[test]
fn ctrl_c_in_packed_mode_cancels_the_jobs_and_lets_the_allocation_go() {
    let _cluster = testkit::slurm::require_test_cluster();
    let (_, allocation) = interrupted(&["--slurm-mode", "packed"], "61.5", |pid| {
        let mark = format!("{}{pid}_", fanout::process::JOB_ENV_PREFIX);
        testkit::slurm::job_with_comment(&mark).expect("the run's allocation carries its mark")
    });
    assert_eq!(
        settled(allocation),
        "CANCELLED",
        "the allocation {allocation}"
    );
}

/// `--slurm-mode packed` asks Slurm for an allocation only when some job would run: a rerun
/// with every job up to date asks for none (nor waits in the queue); a changed input asks again.
#[test]
fn packed_asks_for_no_allocation_when_every_job_is_up_to_date() {
    let _cluster = testkit::slurm::require_test_cluster();
    let p = Project::create(&[
        (
            "pipelines/up.toml",
            r#"
[[stages]]
name = "s"
jobs = ["copy"]

[jobs.copy]
command = "echo ran >> ran; cp in.txt out.txt"
inputs = ["in.txt"]
outputs = ["out.txt"]
"#,
        ),
        ("in.txt", "1\n"),
    ]);
    let args = [
        "pipeline",
        "up",
        "--backend",
        "slurm",
        "--slurm-mode",
        "packed",
        "--no-progress",
    ];
    let ran = || std::fs::read_to_string(p.path().join("ran")).unwrap_or_default();
    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(ran(), "ran\n");
    assert_eq!(
        testkit::slurm::allocations_from(p.path()).len(),
        1,
        "the first run's"
    );

    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(ran(), "ran\n", "up to date: {}", out.stderr);
    assert_eq!(
        testkit::slurm::allocations_from(p.path()).len(),
        1,
        "none for an up-to-date run"
    );

    std::fs::write(p.path().join("in.txt"), "2\n").unwrap();
    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(ran(), "ran\nran\n");
    assert_eq!(
        testkit::slurm::allocations_from(p.path()).len(),
        2,
        "a job runs: an allocation"
    );
}
