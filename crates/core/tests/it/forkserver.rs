//! The fork server, with a real Python server built on `FORK_SERVER_PY`.

use std::path::Path;
use std::time::{Duration, Instant};

use fanout::process::{Ending, FORK_SERVER_PY, ForkJob, ForkServer, ForkServerError};
use fanout::{CancelToken, Command};
use testkit::{alive, read_pid};

/// Jobs by their first argument: `echo WORDS...` prints them and exits with code len(WORDS);
/// `cookie` prints the job's cookie; `hang DIR` leaves a `setsid` grandchild, a forked process
/// that ignores SIGTERM, writes their pids into DIR and sleeps.
const JOBS: &str = r#"
import os, signal, subprocess, sys, time

def run(args):
    if args[0] == "echo":
        print(" ".join(args[1:]))
        sys.stderr.write("to stderr\n")
        return len(args) - 1
    if args[0] == "cookie":
        print(" ".join(f"{k}={v}" for k, v in os.environ.items() if k.startswith("FANOUT_JOB_")))
        return 0
    if args[0] == "hang":
        d = args[1]
        subprocess.Popen(["sh", "-c", f"echo $$ > {d}/gc.tmp && mv {d}/gc.tmp {d}/gc.pid; exec sleep 300"],
                         start_new_session=True)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.setsid()
            while True:
                time.sleep(1)
        with open(f"{d}/forked.tmp", "w") as f:
            f.write(str(pid))
        os.rename(f"{d}/forked.tmp", f"{d}/forked.pid")
        with open(f"{d}/main.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(f"{d}/main.tmp", f"{d}/main.pid")
        time.sleep(300)
    return 2

serve(run, {"ready": True, "pid": os.getpid()})
"#;

fn server(dir: &Path) -> ForkServer {
    let script = dir.join("server.py");
    std::fs::write(&script, format!("{FORK_SERVER_PY}\n{JOBS}")).unwrap();
    ForkServer::start(
        &Command::new("python3").arg(&script),
        Duration::from_secs(30),
    )
    .expect("the server starts")
}

fn job(dir: &Path, name: &str, args: &[&str]) -> ForkJob {
    ForkJob::new(
        args.iter().map(|a| (*a).to_owned()).collect(),
        dir.join(format!("{name}.out")),
        dir.join(format!("{name}.err")),
    )
}

#[test]
fn forked_jobs_run_with_their_output_exit_code_and_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    assert_eq!(server.hello()["ready"], true);
    let out = server
        .run(
            &job(dir.path(), "a", &["echo", "x", "y"]),
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(out.ending, Ending::Exited(2));
    assert_eq!(out.stdout.text().trim(), "x y");
    assert_eq!(out.stderr.text().trim(), "to stderr");
    assert_ne!(out.pid, server.pid(), "a process of its own");

    // Each job carries a cookie of its own (the server's, with another value), so what it
    // executes can be found.
    let cookie = |name: &str| {
        let out = server
            .run(&job(dir.path(), name, &["cookie"]), &CancelToken::new())
            .unwrap();
        assert_eq!(out.ending, Ending::Exited(0));
        out.stdout.text().trim().to_owned()
    };
    let (first, second) = (cookie("b"), cookie("c"));
    assert!(first.starts_with("FANOUT_JOB_"), "{first}");
    assert_ne!(first, second);
}

#[test]
fn jobs_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let start = Instant::now();
    std::thread::scope(|s| {
        for i in 0..4 {
            let (server, dir) = (&server, dir.path());
            s.spawn(move || {
                let name = format!("job{i}");
                let out = server
                    .run(&job(dir, &name, &["echo", &name]), &CancelToken::new())
                    .unwrap();
                assert_eq!(out.stdout.text().trim(), name);
            });
        }
    });
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// After a forced end, none of the job's processes may be left: the main one, the `setsid`
/// grandchild and the SIGTERM-proof forked one.
fn assert_tree_gone(dir: &Path) {
    for name in ["main.pid", "gc.pid", "forked.pid"] {
        let pid = read_pid(&dir.join(name));
        assert!(!alive(pid), "{name}: {pid} survived");
    }
}

#[test]
fn a_timeout_kills_the_forked_tree_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let d = dir.path().to_str().unwrap();
    let mut hang = job(dir.path(), "hang", &["hang", d]);
    hang.timeout = Some(Duration::from_secs(2));
    hang.grace = Duration::from_millis(300);
    let start = Instant::now();
    let out = server.run(&hang, &CancelToken::new()).unwrap();
    assert!(
        matches!(out.ending, Ending::TimedOut(_)),
        "{:?}",
        out.ending
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert!(out.killed_processes >= 3, "{}", out.killed_processes);
    assert_tree_gone(dir.path());
    let next = server
        .run(
            &job(dir.path(), "next", &["echo", "again"]),
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(next.stdout.text().trim(), "again");
}

#[test]
fn cancelling_kills_the_forked_tree() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let d = dir.path().to_str().unwrap().to_owned();
    let cancel = CancelToken::new();
    let out = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mut hang = job(dir.path(), "hang", &["hang", &d]);
            hang.grace = Duration::from_millis(300);
            server.run(&hang, &cancel)
        });
        read_pid(&dir.path().join("main.pid"));
        cancel.cancel(fanout::CancelReason::Interrupted);
        waiter.join().unwrap().unwrap()
    });
    assert_eq!(out.ending, Ending::Cancelled);
    assert_tree_gone(dir.path());
}

#[test]
fn ending_the_server_ends_everything_it_forked() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let server_pid = server.pid().cast_signed();
    let d = dir.path().to_str().unwrap().to_owned();
    let cancel = CancelToken::new();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let hang = job(dir.path(), "hang", &["hang", &d]);
            server.run(&hang, &cancel)
        });
        read_pid(&dir.path().join("main.pid"));
        cancel.cancel(fanout::CancelReason::Interrupted);
        let _ = waiter.join().unwrap();
    });
    drop(server);
    assert!(!alive(server_pid), "the server outlived its handle");
    assert_tree_gone(dir.path());
}

#[test]
fn a_server_that_fails_to_start_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("broken.py");
    std::fs::write(&script, "import no_such_module_here\n").unwrap();
    let err = ForkServer::start(
        &Command::new("python3").arg(&script),
        Duration::from_secs(30),
    )
    .unwrap_err();
    assert!(matches!(err, ForkServerError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("no_such_module_here"), "{err}");
}
