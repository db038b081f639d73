//! Looking at the test cluster from outside: Slurm's view of a job, and the node's processes.
//! The cluster is the three-node Slurm `cargo xtask slurm-up` starts (CI runs it first).

use std::time::{Duration, Instant};

/// The config of the project's test cluster (`cargo xtask slurm-up`).
pub const PROJECT_CONF: &str = "/var/lib/fanout-test-slurm/slurm.conf";

/// Check that the Slurm commands of this test process reach the cluster meant for the tests:
/// `SLURM_CONF` names the project's cluster, or the one `FANOUT_TEST_SLURM_CONF` chose on
/// purpose. Anything else (no `SLURM_CONF`: Slurm's default config, maybe a real cluster)
/// would send the tests' jobs elsewhere.
///
/// # Panics
/// When it does not, saying how to run the Slurm tests.
pub fn require_test_cluster() {
    let conf = std::env::var_os("SLURM_CONF");
    let chosen = std::env::var_os("FANOUT_TEST_SLURM_CONF");
    let ok = conf
        .as_deref()
        .is_some_and(|c| c == std::ffi::OsStr::new(PROJECT_CONF) || chosen.as_deref() == Some(c));
    assert!(
        ok,
        "the Slurm tests run on the project's test cluster only: run them with `cargo xtask \
         test` (it starts the cluster and sets SLURM_CONF), or start it with `cargo xtask \
         slurm-up` and set SLURM_CONF={PROJECT_CONF}; SLURM_CONF is {conf:?}"
    );
}

/// The names of the cluster's nodes (`sinfo`).
///
/// # Panics
/// When sinfo does not run.
pub fn nodes() -> Vec<String> {
    let out = std::process::Command::new("sinfo")
        .args(["--noheader", "--Node", "--format=%N"])
        .output()
        .expect("sinfo runs (is the test cluster up? cargo xtask slurm-up)");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    names.dedup();
    names
}

/// `(name, state)` of Slurm job `id`, from `squeue --states=all`.
///
/// # Panics
/// When squeue does not run or does not know the job.
pub fn job(id: u64) -> (String, String) {
    let out = std::process::Command::new("squeue")
        .args(["--noheader", "--states=all", "--format=%j|%T", "--jobs"])
        .arg(id.to_string())
        .output()
        .expect("squeue runs (is the test cluster up? cargo xtask slurm-up)");
    let text = String::from_utf8_lossy(&out.stdout);
    let (name, state) = text
        .trim()
        .split_once('|')
        .unwrap_or_else(|| panic!("Slurm does not know job {id}: {text:?}"));
    (name.to_owned(), state.to_owned())
}

/// The id of our newest job named `name` (any state), if Slurm knows one.
///
/// # Panics
/// When squeue does not run.
pub fn job_named(name: &str) -> Option<u64> {
    let out = std::process::Command::new("squeue")
        .args(["--noheader", "--me", "--states=all", "--format=%i"])
        .arg(format!("--name={name}"))
        .output()
        .expect("squeue runs (is the test cluster up? cargo xtask slurm-up)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
}

/// The id of the job of ours whose comment starts with `prefix` (any state), if Slurm knows
/// one: the jobs a fanout program submits carry its session's mark (`FANOUT_JOB_<pid>_...=N`).
///
/// # Panics
/// When squeue does not run.
pub fn job_with_comment(prefix: &str) -> Option<u64> {
    let out = std::process::Command::new("squeue")
        .args(["--noheader", "--me", "--states=all", "--format=%i|%k"])
        .output()
        .expect("squeue runs (is the test cluster up? cargo xtask slurm-up)");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (id, comment) = l.trim().split_once('|')?;
        comment
            .starts_with(prefix)
            .then(|| id.parse().ok())
            .flatten()
    })
}

/// Wait until job `id` has ended on the cluster (not pending, running or completing); returns
/// its final state.
///
/// # Panics
/// When it is still active after 30 s.
pub fn settled(id: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = job(id).1;
        if ![
            "PENDING",
            "RUNNING",
            "COMPLETING",
            "CONFIGURING",
            "SUSPENDED",
        ]
        .contains(&state.as_str())
        {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {state} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of the live processes on this machine (the test cluster's only node) whose command
/// line, arguments joined by spaces, contains `token`: the step's own process, and the `srun`
/// and shells whose arguments mention it.
pub fn processes_with(token: &str) -> Vec<i32> {
    command_lines()
        .filter(|(_, line)| line.contains(token))
        .map(|(pid, _)| pid)
        .collect()
}

/// Pids of the live processes whose command line *starts* with `line`: a step's program once it
/// runs on the node (`sleep 62.5`), not the `srun` that asked for it.
pub fn processes_running(line: &str) -> Vec<i32> {
    command_lines()
        .filter(|(_, l)| l.starts_with(line))
        .map(|(pid, _)| pid)
        .collect()
}

fn command_lines() -> impl Iterator<Item = (i32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| crate::alive(pid))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            Some((pid, line.trim_end().to_owned()))
        })
}
