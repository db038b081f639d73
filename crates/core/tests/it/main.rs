//! Integration tests of the fanout core: one test binary (as uv and nextest do).
#![expect(
    clippy::print_stderr,
    reason = "helper tests explain themselves on stderr"
)]
#![expect(
    clippy::disallowed_methods,
    reason = "tests start helper processes directly, to watch the runner from outside"
)]

mod forkserver;
mod graph;
mod layering;
mod map;
mod pool;
mod process;
mod reporting;
mod resources;
#[cfg(feature = "slurm-tests")]
mod slurm;

/// Not a test of its own: the entry point of child processes that other tests start from this
/// binary (`--exact helper` with `FANOUT_TEST_HELPER` set), to observe behaviour that needs a
/// separate process: being killed with SIGKILL, or reading its own environment at start-up.
#[test]
fn helper() {
    let Ok(role) = std::env::var("FANOUT_TEST_HELPER") else {
        return;
    };
    // The guardian of a helper is this test binary again, filtered to this entry point.
    fanout::process::init(&["--exact", "helper", "--nocapture"]);
    match role.as_str() {
        "hold-job-without-env" => {
            let dir = std::env::var_os("FANOUT_TEST_DIR").expect("FANOUT_TEST_DIR");
            // As hold-job, but the job drops its environment (and with it the cookie).
            let cmd = cookieless_holding_job(dir);
            let _ = fanout::ProcessRunner::new().run(&cmd, &fanout::CancelToken::new());
            eprintln!("helper: the job ended before the helper was killed");
        }
        "hold-job-after-the-guardian-died" => {
            let dir = std::path::PathBuf::from(std::env::var_os("FANOUT_TEST_DIR").expect("dir"));
            let runner = fanout::ProcessRunner::new();
            // A job without the cookie (env -i), started while the first guardian runs: only
            // its process group, in the tool's table, tells a later guardian about it.
            let job_dir = dir.clone();
            std::thread::spawn(move || {
                let cmd = cookieless_holding_job(job_dir);
                let _ = fanout::ProcessRunner::new().run(&cmd, &fanout::CancelToken::new());
            });
            while !dir.join("child.pid").exists() || !dir.join("grandchild.pid").exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::fs::write(dir.join("ready"), "").expect("write ready");
            while !dir.join("guardian-killed").exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // The tool looks at its guardian at most every 50 ms, before a job starts.
            std::thread::sleep(std::time::Duration::from_millis(100));
            let _ = runner.run(&fanout::Command::new("true"), &fanout::CancelToken::new());
            std::fs::write(dir.join("revived"), "").expect("write revived");
            std::thread::sleep(std::time::Duration::from_secs(300));
        }
        "tty-job" => {
            // A job that reads the terminal, run by a tool that has one.
            let out = fanout::ProcessRunner::new()
                .run(
                    &fanout::Command::shell("read line < /dev/tty")
                        .timeout(Some(std::time::Duration::from_secs(10))),
                    &fanout::CancelToken::new(),
                )
                .expect("the job runs");
            eprintln!("HELPER-RESULT {:?}", out.ending);
        }
        "hold-job" => {
            let dir = std::env::var_os("FANOUT_TEST_DIR").expect("FANOUT_TEST_DIR");
            // The job's main process (sh) and a grandchild (the background sleep).
            let cmd = fanout::Command::shell(
                "sleep 300 & echo $! > grandchild.pid.tmp && mv grandchild.pid.tmp grandchild.pid; \
                 echo $$ > child.pid.tmp && mv child.pid.tmp child.pid; wait",
            )
            .current_dir(dir);
            let _ = fanout::ProcessRunner::new().run(&cmd, &fanout::CancelToken::new());
            eprintln!("helper: the job ended before the helper was killed");
        }
        "strategy-from-env" => {
            let config = fanout::PoolConfig::new(fanout::MaxWorkers::one()).with_env_overrides();
            // The marker lets the parent find this line among the test harness's output.
            match config {
                Ok(c) => eprintln!("HELPER-RESULT ok {}", c.strategy.as_str()),
                Err(e) => eprintln!("HELPER-RESULT error {e}"),
            }
        }
        "chunking-from-env" => {
            let config = fanout::PoolConfig::new(fanout::MaxWorkers::one()).with_env_overrides();
            match config {
                Ok(c) => eprintln!(
                    "HELPER-RESULT ok {:?} {}",
                    c.chunking.chunk_size.map(std::num::NonZero::get),
                    c.chunking.min_batch_size
                ),
                Err(e) => eprintln!("HELPER-RESULT error {e}"),
            }
        }
        other => panic!("unknown helper role {other}"),
    }
}

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A counter that tasks can wait on, with a time limit so a broken pool fails the test instead of
/// hanging it.
#[derive(Debug, Default)]
pub struct Gauge {
    value: Mutex<usize>,
    changed: Condvar,
}

impl Gauge {
    pub fn add(&self, delta: isize) -> usize {
        let mut v = self.value.lock().unwrap();
        *v = v.checked_add_signed(delta).unwrap();
        self.changed.notify_all();
        *v
    }

    pub fn get(&self) -> usize {
        *self.value.lock().unwrap()
    }

    /// Wait until `pred(value)` holds; false if it did not within 20 s.
    pub fn wait_for(&self, pred: impl Fn(usize) -> bool) -> bool {
        self.wait_within(Duration::from_secs(20), pred)
    }

    /// Wait until `pred(value)` holds; false if it did not within `limit`.
    pub fn wait_within(&self, limit: Duration, pred: impl Fn(usize) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut v = self.value.lock().unwrap();
        while !pred(*v) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            v = self.changed.wait_timeout(v, deadline - now).unwrap().0;
        }
        true
    }
}

/// A job that drops its environment (and with it the cookie) and holds a grandchild: writes
/// `child.pid` and `grandchild.pid` in `dir`, then waits.
fn cookieless_holding_job(dir: impl Into<std::path::PathBuf>) -> fanout::Command {
    fanout::Command::new("env")
        .args([
            "-i",
            "/bin/sh",
            "-c",
            "sleep 300 & echo $! > grandchild.pid.tmp && mv grandchild.pid.tmp grandchild.pid; \
             echo $$ > child.pid.tmp && mv child.pid.tmp child.pid; wait",
        ])
        .current_dir(dir)
}

/// What the helper `role` printed as its result, run with `var=value` in its environment.
fn helper_result(role: &str, var: &str, value: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper", "--nocapture"])
        .env("FANOUT_TEST_HELPER", role)
        .env(var, value)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("HELPER-RESULT "))
        .unwrap_or_else(|| panic!("no result from the helper: {stderr}"))
        .to_owned()
}
