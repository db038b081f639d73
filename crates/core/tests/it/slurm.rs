//! The Slurm launcher against a real Slurm of three nodes (`cargo xtask slurm-up` starts it; CI
//! runs it first). These tests need the cluster: without `srun` they fail, never skip.

use std::time::{Duration, Instant};

use fanout::{
    CancelToken, Command, Launcher, MaxWorkers, Pool, PoolConfig, ProcessRunner, Silent, Slurm,
    SlurmError, Status, Task, TaskError,
};

fn slurm() -> Launcher {
    Launcher::Slurm(Slurm::default().into())
}

use testkit::slurm::{job, processes_running, processes_with, settled};

#[test]
fn a_step_runs_with_its_name_output_and_exit_code_and_its_job_id_is_known() {
    let _cluster = testkit::slurm::require_test_cluster();
    let out = ProcessRunner::new()
        .run(
            &Command::shell("echo out; echo err >&2; echo $SLURM_JOB_ID; exit 3")
                .job_name("fanout-test step")
                .launcher(slurm()),
            &CancelToken::new(),
        )
        .unwrap();
    let id = out.slurm_job_id.expect("the job id is recorded");
    let node = out
        .slurm_nodes
        .clone()
        .expect("the node it ran on is known");
    assert!(
        testkit::slurm::nodes().contains(&node),
        "{node:?} is one of the cluster's nodes {:?}",
        testkit::slurm::nodes()
    );
    let stdout = out.stdout.text().into_owned();
    assert_eq!(
        stdout,
        format!("out\n{id}\n"),
        "the step's own stdout, and it ran as job {id}"
    );
    // The step's stderr, and srun's own note about the exit, in either order.
    assert!(
        out.stderr.text().lines().any(|l| l == "err"),
        "{}",
        out.stderr.text()
    );
    assert_eq!(job(id).0, "fanout-test step");
    let e = out.into_result().unwrap_err();
    assert_eq!(e.to_string(), "exited with code 3");

    let ok = ProcessRunner::new()
        .run(&Command::new("true").launcher(slurm()), &CancelToken::new())
        .unwrap();
    assert!(ok.success());
    assert_eq!(job(ok.slurm_job_id.unwrap()).0, "true");

    // squeue's --name takes a list: a name with a comma is found by its comment alone.
    let comma = ProcessRunner::new()
        .run(
            &Command::new("true").job_name("a,b").launcher(slurm()),
            &CancelToken::new(),
        )
        .unwrap();
    let id = comma.slurm_job_id.expect("a job named a,b is found");
    assert_eq!(job(id).0, "a,b");
}

#[test]
fn a_refusal_is_read_from_this_attempts_lines_of_an_appended_log() {
    let _cluster = testkit::slurm::require_test_cluster();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("job.log");
    // An earlier attempt was refused; this one runs and fails on its own.
    std::fs::write(
        &log,
        "srun: error: Unable to allocate resources: Requested node configuration is not available\n",
    )
    .unwrap();
    let out = ProcessRunner::new()
        .run(
            &Command::shell("exit 4")
                .launcher(slurm())
                .stdout(fanout::Sink::AppendFile(log.clone()))
                .stderr_to_stdout(),
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(
        out.slurm_failure, None,
        "the earlier attempt's refusal is not this one's"
    );
    assert_eq!(
        out.into_result().unwrap_err().to_string(),
        "exited with code 4"
    );
}

#[test]
fn a_timeout_cancels_the_step_on_the_cluster() {
    let _cluster = testkit::slurm::require_test_cluster();
    let token = "fanout-slurm-timeout-61.25";
    let out = ProcessRunner::new()
        .run(
            &Command::shell(format!("exec sleep 61.25 # {token}"))
                .launcher(slurm())
                .timeout(Some(Duration::from_secs(1))),
            &CancelToken::new(),
        )
        .unwrap();
    assert!(matches!(
        out.clone().into_result(),
        Err(TaskError::TimedOut { .. })
    ));
    let id = out.slurm_job_id.expect("the job id is recorded");
    let state = settled(id);
    assert!(
        ["CANCELLED", "FAILED"].contains(&state.as_str()),
        "job {id} ended {state}"
    );
    assert_eq!(
        processes_with("sleep 61.25"),
        Vec::<i32>::new(),
        "a process is left on the node"
    );
}

#[test]
fn a_timeout_counts_the_time_in_the_queue_and_cancels_the_waiting_job() {
    // The documented choice (README, "Running on a Slurm cluster"): a job's timeout counts
    // from the moment srun starts, queue included. A job held in the queue (--begin) for
    // longer than its timeout times out there, and its queued job is cancelled.
    let _cluster = testkit::slurm::require_test_cluster();
    let name = "fanout-slurm-queued-63.75";
    let start = Instant::now();
    let out = ProcessRunner::new()
        .run(
            &Command::shell("exec sleep 63.75")
                .job_name(name)
                .launcher(Launcher::Slurm(
                    Slurm {
                        args: vec!["--begin=now+600".to_owned()],
                        ..Slurm::default()
                    }
                    .into(),
                ))
                .timeout(Some(Duration::from_secs(2))),
            &CancelToken::new(),
        )
        .unwrap();
    assert!(
        matches!(out.clone().into_result(), Err(TaskError::TimedOut { .. })),
        "{:?}",
        out.ending
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the timeout held while the job waited in the queue ({:?})",
        start.elapsed()
    );
    let id = testkit::slurm::job_named(name).expect("Slurm knows the queued job");
    let state = settled(id);
    assert_eq!(state, "CANCELLED", "job {id} ended {state}");
    assert_eq!(
        processes_with("sleep 63.75"),
        Vec::<i32>::new(),
        "the job ran after all"
    );
}

#[test]
fn cancelling_the_batch_cancels_steps_in_flight() {
    let _cluster = testkit::slurm::require_test_cluster();
    let pool = Pool::new(PoolConfig::new(MaxWorkers::new(3, 8).unwrap()));
    let tasks: Vec<_> = (0..3).map(|i| Task::new(format!("t{i}"), i)).collect();
    let cancel = CancelToken::new();
    let runner = ProcessRunner::new();
    let ids = std::sync::Mutex::new(Vec::new());
    let stopper = cancel.clone();
    let watcher = std::thread::spawn(move || {
        // Cancel once all three steps are running on the node.
        let deadline = Instant::now() + Duration::from_secs(30);
        while processes_running("sleep 62.5").len() < 3 {
            assert!(Instant::now() < deadline, "the steps did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        stopper.cancel(fanout::CancelReason::Interrupted);
    });
    let result = pool
        .run(&tasks, &cancel, &mut Silent, |i, ctx| {
            let out = runner.run(
                &Command::shell(format!("exec sleep 62.5{i}"))
                    .job_name(format!("cancel-{i}"))
                    .launcher(slurm()),
                ctx.cancel_token(),
            )?;
            ids.lock().unwrap().extend(out.slurm_job_id);
            out.into_result().map(drop)
        })
        .unwrap();
    watcher.join().unwrap();
    assert!(
        result
            .outcomes
            .iter()
            .all(|o| o.status == Status::Cancelled)
    );
    let ids = ids.into_inner().unwrap();
    assert_eq!(ids.len(), 3, "every job id recorded");
    for id in ids {
        let state = settled(id);
        assert!(
            ["CANCELLED", "FAILED"].contains(&state.as_str()),
            "job {id} ended {state}"
        );
    }
    assert_eq!(processes_with("sleep 62.5"), Vec::<i32>::new());
}

#[test]
fn a_job_the_scheduler_rejects_fails_with_its_reason() {
    let _cluster = testkit::slurm::require_test_cluster();
    let slurm = Slurm {
        mem: Some("100000000G".into()),
        ..Slurm::default()
    };
    let e = ProcessRunner::new()
        .run(
            &Command::new("true").launcher(Launcher::Slurm(slurm.into())),
            &CancelToken::new(),
        )
        .unwrap()
        .into_result()
        .unwrap_err();
    assert!(e.to_string().starts_with("Slurm rejected the job: "), "{e}");
}

#[test]
fn the_check_finds_srun_and_names_the_partitions() {
    let _cluster = testkit::slurm::require_test_cluster();
    Slurm::default()
        .check()
        .expect("the test cluster has srun and a default partition");
    let bad = Slurm {
        partition: Some("no-such-partition".into()),
        ..Slurm::default()
    };
    match bad.check() {
        Err(SlurmError::UnknownPartition { name, known }) => {
            assert_eq!(name, "no-such-partition");
            assert!(!known.is_empty());
        }
        other => panic!("{other:?}"),
    }
}
