//! The subprocess runner against real processes.

use std::path::Path;
use std::time::{Duration, Instant};

use fanout::process::{Captured, Ending};
use fanout::{
    CancelReason, CancelToken, Command, MaxWorkers, Pool, PoolConfig, ProcessRunner, Silent, Sink,
    Status, Strategy, Task, TaskError,
};
use testkit::{alive, read_pid};

fn run(cmd: &Command) -> fanout::ProcessOutput {
    ProcessRunner::new().run(cmd, &CancelToken::new()).unwrap()
}

fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command: state ppid pgrp session ...
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// A script whose grandchild starts its own session (like `uv run` and marimo's kernel), writes
/// its pid to `gc.pid`, and sleeps; the script then sleeps too.
fn escaping_grandchild(dir: &Path) -> Command {
    Command::shell(
        "setsid sh -c 'echo $$ > gc.pid.tmp && mv gc.pid.tmp gc.pid; exec sleep 300' & \
         while [ ! -s gc.pid ]; do sleep 0.01; done; sleep 300",
    )
    .current_dir(dir)
    .kill_grace(Duration::from_millis(300))
}

/// Run the job `with_limit(limit)` under growing time limits (1 s, 4 s, 16 s) until its
/// grandchild had written `gc.pid` when the limit struck, and return the output and that pid.
/// On a loaded machine a first limit may strike before the grandchild even started, and then
/// there is nothing to test; no fixed limit is assumed to be long enough.
fn run_until_the_grandchild_started(
    dir: &Path,
    with_limit: impl Fn(Duration) -> Command,
) -> (fanout::ProcessOutput, i32) {
    let pid_file = dir.join("gc.pid");
    for secs in [1, 4, 16] {
        let _ = std::fs::remove_file(&pid_file);
        let out = run(&with_limit(Duration::from_secs(secs)));
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        if let Some(pid) = pid {
            return (out, pid);
        }
    }
    panic!("the grandchild never wrote its pid within 16 s");
}

#[test]
fn exit_codes_and_output_are_data() {
    let out = run(&Command::shell("echo out; echo err >&2; exit 3"));
    assert_eq!(out.ending, Ending::Exited(3));
    assert_eq!(out.stdout.text(), "out\n");
    assert_eq!(out.stderr.text(), "err\n");
    assert!(out.stdout.complete && out.stderr.complete);
    assert!(!out.success());
    let err = out.into_result().unwrap_err();
    assert_eq!(err.to_string(), "exited with code 3");
    assert_eq!(err.detail(), Some("err"));

    let ok = run(&Command::new("true"));
    assert!(ok.success());
    assert!(ok.pid > 0);
}

#[test]
fn stdin_is_empty_and_env_and_folder_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&Command::shell("cat; echo \"$GREETING from $(pwd)\"")
        .env("GREETING", "hello")
        .current_dir(dir.path()));
    let expected = format!(
        "hello from {}\n",
        dir.path().canonicalize().unwrap().display()
    );
    assert_eq!(
        out.stdout.text(),
        expected,
        "cat read nothing: stdin is /dev/null"
    );
}

#[test]
fn a_timeout_kills_the_whole_tree_including_a_setsid_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let (out, grandchild) = run_until_the_grandchild_started(dir.path(), |limit| {
        escaping_grandchild(dir.path()).timeout(Some(limit))
    });
    assert!(
        matches!(out.ending, Ending::TimedOut(_)),
        "{:?}",
        out.ending
    );
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(
        !alive(grandchild),
        "setsid grandchild {grandchild} survived the timeout"
    );
    assert!(out.killed_processes >= 2, "{}", out.killed_processes);
    let err = out.into_result().unwrap_err();
    assert!(matches!(err, TaskError::TimedOut { .. }));
    assert_eq!(err.status(), Status::TimedOut);
}

#[test]
fn cancelling_kills_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let token = CancelToken::new();
    let cmd = escaping_grandchild(dir.path());
    let pid_file = dir.path().join("gc.pid");
    let out = std::thread::scope(|s| {
        let job = s.spawn(|| ProcessRunner::new().run(&cmd, &token));
        let grandchild = read_pid(&pid_file);
        // The grandchild really left the job's session: the test is about that case.
        assert_ne!(
            session_of(grandchild),
            session_of(std::process::id().cast_signed())
        );
        token.cancel(CancelReason::Interrupted);
        let out = job.join().unwrap().unwrap();
        assert!(
            !alive(grandchild),
            "grandchild {grandchild} survived the cancel"
        );
        out
    });
    assert_eq!(out.ending, Ending::Cancelled);
    assert_eq!(out.into_result().unwrap_err(), TaskError::Cancelled);
}

#[test]
fn leftovers_holding_the_pipe_are_killed_when_the_job_exits() {
    // The background `sleep` keeps stdout open: without tree ownership, reading the output
    // would wait 300 s.
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = run(&Command::shell(
        "setsid sh -c 'echo $$ > bg.pid; exec sleep 300' & \
         while [ ! -s bg.pid ]; do sleep 0.01; done; echo done",
    )
    .current_dir(dir.path()));
    assert_eq!(out.ending, Ending::Exited(0));
    assert_eq!(out.stdout.text(), "done\n");
    assert!(out.stdout.complete);
    assert!(out.killed_processes >= 1);
    assert!(start.elapsed() < Duration::from_secs(60));
    let bg = read_pid(&dir.path().join("bg.pid"));
    assert!(!alive(bg), "leftover {bg} survived its job");
}

#[test]
fn a_process_that_escapes_the_tree_does_not_hang_the_runner() {
    // `env -i` drops the cookie and `setsid` leaves the group: this one cannot be found. The
    // runner must still return, with the output it has, marked incomplete.
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = run(&Command::shell(
        "env -i setsid sh -c 'echo $$ > esc.pid; exec sleep 30' & \
         while [ ! -s esc.pid ]; do sleep 0.01; done; echo partial",
    )
    .current_dir(dir.path()));
    let escaped = read_pid(&dir.path().join("esc.pid"));
    let _ = std::process::Command::new("kill")
        .arg(escaped.to_string())
        .status();
    assert_eq!(out.ending, Ending::Exited(0));
    assert_eq!(out.stdout.text(), "partial\n");
    assert!(
        !out.stdout.complete,
        "the escaped process still held the pipe"
    );
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn output_can_go_to_a_log_file_with_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("job.log");
    let out = run(&Command::shell("echo one; echo two >&2; echo three")
        .stdout(Sink::File(log.clone()))
        .stderr_to_stdout());
    assert!(out.success());
    assert_eq!(out.stdout, Captured::default());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\nthree\n");

    // Appending keeps the earlier attempt's log.
    run(&Command::shell("echo four").stdout(Sink::AppendFile(log.clone())));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "one\ntwo\nthree\nfour\n"
    );
}

#[test]
fn captured_output_is_a_bounded_tail() {
    let out = run(
        &Command::shell("head -c 1000000 /dev/zero | tr '\\0' a; printf END")
            .stdout(Sink::Capture { max_bytes: 1000 }),
    );
    assert_eq!(out.stdout.bytes.len(), 1000);
    assert!(out.stdout.text().ends_with("aaaEND"));
    assert_eq!(out.stdout.dropped_bytes, 1_000_003 - 1000);
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let err = ProcessRunner::new()
        .run(&Command::new("no-such-program-xyz"), &CancelToken::new())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`no-such-program-xyz`"), "{msg}");
    assert!(msg.contains("no such program"), "{msg}");
}

#[test]
fn an_unwritable_log_names_the_file() {
    let err = ProcessRunner::new()
        .run(
            &Command::new("true").stdout(Sink::File("/nonexistent-dir/x.log".into())),
            &CancelToken::new(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent-dir/x.log"), "{err}");
}

#[test]
fn a_signal_death_is_reported_by_name() {
    let out = run(&Command::shell("kill -SEGV $$"));
    assert_eq!(out.ending, Ending::Signaled(11));
    assert_eq!(
        out.into_result().unwrap_err().to_string(),
        "killed by signal 11 (SIGSEGV)"
    );
}

#[test]
fn pooled_processes_respect_max_workers() {
    // Each job appends "+" when it starts and "-" when it ends; the running count never
    // exceeds the worker count and reaches it.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events");
    let tasks: Vec<_> = (0..6).map(|i| Task::new(format!("job{i}"), i)).collect();
    let pool =
        Pool::new(PoolConfig::new(MaxWorkers::new(2, 16).unwrap()).strategy(Strategy::Threads));
    let runner = ProcessRunner::new();
    let result = pool
        .run(&tasks, &CancelToken::new(), &mut Silent, |_, ctx| {
            let cmd = Command::shell(format!(
                "echo + >> '{0}'; sleep 0.3; echo - >> '{0}'",
                log.display()
            ));
            runner
                .run(&cmd, ctx.cancel_token())?
                .into_result()
                .map(|_| ())
        })
        .unwrap();
    assert_eq!(result.summary.succeeded, 6);
    let events = std::fs::read_to_string(&log).unwrap();
    let (mut running, mut peak) = (0i32, 0i32);
    for line in events.lines() {
        running += if line == "+" { 1 } else { -1 };
        peak = peak.max(running);
    }
    assert_eq!(peak, 2, "{events}");
}

#[test]
fn the_whole_job_dies_with_the_tool() {
    job_dies_with_the_tool("hold-job");
}

#[test]
fn a_job_without_its_environment_dies_with_the_tool() {
    // No cookie to find it by: the guardian knows its process group.
    job_dies_with_the_tool("hold-job-without-env");
}

#[test]
fn the_guardian_has_a_name_of_its_own() {
    // `pkill -9 <tool>` and `killall -9 <tool>` match the process name: the guardian must not
    // die with the tool it guards.
    let dir = tempfile::tempdir().unwrap();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper", "--nocapture"])
        .env("FANOUT_TEST_HELPER", "hold-job")
        .env("FANOUT_TEST_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    read_pid(&dir.path().join("child.pid"));
    let helper_pid = helper.id().cast_signed();
    let guardians = children_named(helper_pid, "fanout-guardian");
    let own = std::fs::read_to_string(format!("/proc/{}/comm", std::process::id())).unwrap();
    let namesakes = children_named(helper_pid, own.trim());
    // `pkill -f <tool>` matches the command line: the guardian's names no tool.
    let cmdline = guardians
        .first()
        .map(|g| std::fs::read(format!("/proc/{g}/cmdline")).unwrap_or_default())
        .unwrap_or_default();
    let exe = std::env::current_exe().unwrap();
    let exe_name = exe.file_name().unwrap().to_string_lossy().into_owned();
    helper.kill().unwrap();
    // Another test's runner may reap it first (this process is a subreaper): ECHILD is fine.
    let _ = helper.wait();
    assert_eq!(guardians.len(), 1, "one child named fanout-guardian");
    assert!(
        namesakes.is_empty(),
        "a child named like the tool: {namesakes:?}"
    );
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(
        cmdline.starts_with("fanout-guardian\0") && !cmdline.contains(&exe_name),
        "the guardian's command line names the tool: {cmdline:?}"
    );
}

/// The pids of `pid`'s children named `name`.
fn children_named(pid: i32, name: &str) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|n| n.trim() == name)
        })
        .collect()
}

#[test]
fn a_killed_guardian_is_replaced_before_the_next_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper", "--nocapture"])
        .env("FANOUT_TEST_HELPER", "hold-job-after-the-guardian-died")
        .env("FANOUT_TEST_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    testkit::wait_for("the helper to be ready", || {
        dir.path().join("ready").exists()
    });
    let helper_pid = helper.id().cast_signed();
    let guardians = children_named(helper_pid, "fanout-guardian");
    assert_eq!(guardians.len(), 1, "{guardians:?}");
    std::process::Command::new("kill")
        .args(["-KILL", &guardians[0].to_string()])
        .status()
        .unwrap();
    testkit::wait_for("the guardian to die", || !alive(guardians[0]));
    std::fs::write(dir.path().join("guardian-killed"), "").unwrap();
    testkit::wait_for("the next job to start", || {
        dir.path().join("revived").exists()
    });
    let replacements = children_named(helper_pid, "fanout-guardian");
    assert_eq!(replacements.len(), 1, "{replacements:?}");
    assert_ne!(replacements[0], guardians[0]);
    let child = read_pid(&dir.path().join("child.pid"));
    let grandchild = read_pid(&dir.path().join("grandchild.pid"));
    helper.kill().unwrap();
    // Another test's runner may reap it first (this process is a subreaper): ECHILD is fine.
    let _ = helper.wait();
    testkit::wait_for("the job to die with the tool", || {
        !alive(child) && !alive(grandchild)
    });
}

fn job_dies_with_the_tool(role: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper", "--nocapture"])
        .env("FANOUT_TEST_HELPER", role)
        .env("FANOUT_TEST_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = read_pid(&dir.path().join("child.pid"));
    let grandchild = read_pid(&dir.path().join("grandchild.pid"));
    assert!(alive(child) && alive(grandchild));
    helper.kill().unwrap(); // SIGKILL: no handler, no cleanup code runs in the helper
    // Another test's runner may reap it first (this process is a subreaper): ECHILD is fine.
    let _ = helper.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (alive(child) || alive(grandchild)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !alive(child),
        "the job's process {child} outlived its killed parent"
    );
    assert!(
        !alive(grandchild),
        "the job's grandchild {grandchild} outlived its killed parent (the guardian's job)"
    );
}

#[test]
fn a_tree_that_obeys_sigterm_is_not_held_for_the_whole_grace_period() {
    // Regression: liveness was once judged by signal 0 to the process group, which the job's
    // unreaped main process satisfies, so every kill waited out the full grace period.
    let start = Instant::now();
    let out = run(&Command::shell("sleep 600")
        .timeout(Some(Duration::from_millis(300)))
        .kill_grace(Duration::from_secs(60)));
    assert!(matches!(out.ending, Ending::TimedOut(_)));
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_timeout_holds_for_a_job_that_dropped_its_environment_and_ignores_sigterm() {
    // No cookie (env -i) and SIGTERM ignored: only its process group tells it is alive.
    let start = Instant::now();
    let out = run(&Command::new("env")
        .args(["-i", "/bin/sh", "-c", "trap '' TERM; sleep 30"])
        .timeout(Some(Duration::from_millis(500)))
        .kill_grace(Duration::from_millis(200)));
    assert!(
        matches!(out.ending, Ending::TimedOut(_)),
        "{:?}",
        out.ending
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the timeout did not hold: {:?}",
        start.elapsed()
    );
}

#[test]
fn a_job_that_opens_the_terminal_fails_instead_of_waiting_forever() {
    // The helper runs under `script`, which gives it a controlling terminal, as a person's
    // shell would. Its job reads /dev/tty: in the tool's session it would be stopped by
    // SIGTTIN (a background group) and time out; in a session of its own it has no terminal.
    let helper = std::env::current_exe().unwrap();
    let line = format!("{} --exact helper --nocapture", helper.display());
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("FANOUT_TEST_HELPER", "tty-job")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let result = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("HELPER-RESULT "))
        .unwrap_or_else(|| panic!("no result from the helper: {text}"));
    assert!(
        result.starts_with("Exited("),
        "the job hung on the terminal: {result}"
    );
    assert_ne!(result, "Exited(0)");
}

#[test]
fn a_tree_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let (out, grandchild) = run_until_the_grandchild_started(dir.path(), |limit| {
        Command::shell(
            "trap '' TERM; setsid sh -c 'trap \"\" TERM; echo $$ > gc.pid.tmp && mv gc.pid.tmp gc.pid; \
             while :; do sleep 1; done' & \
             while [ ! -s gc.pid ]; do sleep 0.01; done; while :; do sleep 1; done",
        )
        .current_dir(dir.path())
        .timeout(Some(limit))
        .kill_grace(Duration::from_millis(200))
    });
    assert!(matches!(out.ending, Ending::TimedOut(_)));
    assert!(
        !alive(grandchild),
        "SIGTERM-proof grandchild {grandchild} survived"
    );
}
