//! Looking at the test cluster from outside: Slurm's view of a job, and the node's processes.
//! The cluster is the three-node Slurm `cargo xtask slurm-up` starts (CI runs it first).

use std::time::{Duration, Instant};

/// The config of the project's test cluster (`cargo xtask slurm-up`).
pub const PROJECT_CONF: &str = "/var/lib/fanout-test-slurm/slurm.conf";

/// Check that the Slurm commands of this test process reach the cluster meant for the tests:
/// `SLURM_CONF` names the project's cluster, or the one `FANOUT_TEST_SLURM_CONF` chose on
/// purpose. Anything else (no `SLURM_CONF`: Slurm's default config, maybe a real cluster)
/// would send the tests' jobs elsewhere. Returns the cluster held for this test, shared with
/// the other Slurm tests (not with one that breaks a node: [`whole_test_cluster`]).
///
/// # Panics
/// When it does not, saying how to run the Slurm tests.
pub fn require_test_cluster() -> ClusterHold {
    check_cluster();
    ClusterHold::take(false)
}

/// [`require_test_cluster`], the cluster held for this test alone: it breaks a node.
///
/// # Panics
/// As [`require_test_cluster`].
pub fn whole_test_cluster() -> ClusterHold {
    check_cluster();
    ClusterHold::take(true)
}

fn check_cluster() {
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

/// The test cluster, held by a test while this lives: shared by the Slurm tests (of every test
/// process), or whole for one that breaks a node.
#[must_use = "the cluster is held while this lives"]
#[derive(Debug)]
pub struct ClusterHold {
    /// Locked: the lock lasts as long as the file is open.
    _lock: std::fs::File,
}

impl ClusterHold {
    fn take(whole: bool) -> Self {
        let path = std::env::temp_dir().join("fanout-test-slurm.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        let held = if whole {
            file.lock()
        } else {
            file.lock_shared()
        };
        held.unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
        ClusterHold { _lock: file }
    }
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

/// What `squeue --noheader ARGS` prints.
///
/// # Panics
/// When squeue does not run.
fn squeue(args: &[&str]) -> String {
    let out = std::process::Command::new("squeue")
        .arg("--noheader")
        .args(args)
        .output()
        .expect("squeue runs (is the test cluster up? cargo xtask slurm-up)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(name, state)` of Slurm job `id`, from `squeue --states=all`.
///
/// # Panics
/// When squeue does not run or does not know the job.
pub fn job(id: u64) -> (String, String) {
    let text = squeue(&["--states=all", "--format=%j|%T", "--jobs", &id.to_string()]);
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
    squeue(&[
        "--me",
        "--states=all",
        "--format=%i",
        &format!("--name={name}"),
    ])
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .max()
}

/// The packed allocations asked for from `dir` (each allocation's working folder is where the
/// tool ran), by their ids, in any state.
///
/// # Panics
/// When squeue does not run.
pub fn allocations_from(dir: &std::path::Path) -> Vec<u64> {
    let dir = dir.canonicalize().unwrap();
    squeue(&[
        "--me",
        "--states=all",
        "--name=fanout-alloc",
        "--format=%i %Z",
    ])
    .lines()
    .filter_map(|l| l.trim().split_once(' '))
    .filter(|(_, at)| std::path::Path::new(at.trim()) == dir)
    .filter_map(|(id, _)| id.parse().ok())
    .collect()
}

/// The id of the job of ours whose comment starts with `prefix` (any state), if Slurm knows
/// one: the jobs a fanout program submits carry its session's mark (`FANOUT_JOB_<pid>_...=N`).
///
/// # Panics
/// When squeue does not run.
pub fn job_with_comment(prefix: &str) -> Option<u64> {
    squeue(&["--me", "--states=all", "--format=%i|%k"])
        .lines()
        .find_map(|l| {
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

/// A node of the test cluster, killed: its slurmd and every process in its network namespace
/// (its steps, their tasks), as if the machine had died. Started again when dropped.
#[derive(Debug)]
pub struct KilledNode {
    name: String,
    netns: String,
    slurmd: Vec<String>,
}

/// The network namespace of node `name` of the test cluster and its slurmd's command line.
/// slurmd forks a child per request, with the same command line, that may be gone by the time
/// its namespace is asked: the first process that still answers counts.
fn node_daemon(name: &str) -> (String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = slurmd_processes(name).into_iter().find_map(|(pid, argv)| {
            let out = std::process::Command::new("ip")
                .args(["netns", "identify", &pid.to_string()])
                .output()
                .expect("ip runs");
            let netns = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (!netns.is_empty()).then_some((netns, argv))
        }) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no slurmd of node {name} runs in a named namespace (cargo xtask slurm-up)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The processes running node `name`'s slurmd, with their command lines.
fn slurmd_processes(name: &str) -> Vec<(i32, Vec<String>)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = String::from_utf8_lossy(&raw)
                .split('\0')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
            let is_slurmd = argv.first().is_some_and(|a| a.ends_with("/slurmd"));
            let names = argv.windows(2).any(|w| w[0] == "-N" && w[1] == name);
            (is_slurmd && names).then_some((pid, argv))
        })
        .collect()
}

/// The pids of the processes in network namespace `netns`.
fn netns_pids(netns: &str) -> Vec<i32> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether a process whose command line starts with `line` runs on node `name`.
pub fn runs_on_node(name: &str, line: &str) -> bool {
    let (netns, _) = node_daemon(name);
    let on_node = netns_pids(&netns);
    command_lines().any(|(pid, l)| on_node.contains(&pid) && l.starts_with(line))
}

/// Kill node `name`: SIGKILL to its slurmd and every process on it, until none is left.
///
/// # Panics
/// When the node's processes cannot be found or do not die.
pub fn kill_node(name: &str) -> KilledNode {
    let (netns, slurmd) = node_daemon(name);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = netns_pids(&netns);
        if pids.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {name}: {pids:?} do not die"
        );
        for pid in pids {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    KilledNode {
        name: name.to_owned(),
        netns,
        slurmd,
    }
}

impl Drop for KilledNode {
    /// Start the node's slurmd again, and wait until Slurm has the node back.
    fn drop(&mut self) {
        let started = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(&self.slurmd)
            .status();
        if !started.is_ok_and(|s| s.success()) {
            return give_up(&format!("node {}: slurmd did not start again", self.name));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::process::Command::new("sinfo")
                .args(["--noheader", "--Node", "--format=%T", "--nodes", &self.name])
                .output()
                .expect("sinfo runs");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if ["idle", "mixed", "allocated"].contains(&state.as_str()) {
                return;
            }
            if state.starts_with("down") || state.starts_with("drain") {
                let _ = std::process::Command::new("scontrol")
                    .args(["update", &format!("nodename={}", self.name), "state=resume"])
                    .status();
            }
            if Instant::now() > deadline {
                return give_up(&format!(
                    "node {} is {state} 60 s after its slurmd started again",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A failure while a node is brought back: a panic, unless the test is failing already.
fn give_up(why: &str) {
    assert!(std::thread::panicking(), "{why}");
    eprintln!("{why}");
}

/// An allocation a test asked for (as a user's `sbatch` would hold one): cancelled when
/// dropped, whatever the test's outcome.
#[derive(Debug)]
pub struct TestAllocation(pub u64);

impl Drop for TestAllocation {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scancel")
            .arg(self.0.to_string())
            .status();
    }
}

/// A new allocation of `ntasks` one-CPU tasks (`salloc --no-shell`), named `name`.
///
/// # Panics
/// When Slurm does not give it.
pub fn allocate(ntasks: u32, name: &str) -> TestAllocation {
    let out = std::process::Command::new("salloc")
        .args([
            "--no-shell",
            &format!("--ntasks={ntasks}"),
            &format!("--job-name={name}"),
        ])
        .output()
        .expect("salloc runs");
    let said = String::from_utf8_lossy(&out.stderr);
    TestAllocation(
        said.split_whitespace()
            .filter_map(|w| w.parse().ok())
            .next_back()
            .unwrap_or_else(|| panic!("salloc gave no allocation: {said}")),
    )
}

/// `scancel` job `id`.
///
/// # Panics
/// When scancel fails.
pub fn cancel(id: u64) {
    let status = std::process::Command::new("scancel")
        .arg(id.to_string())
        .status()
        .expect("scancel runs");
    assert!(status.success(), "scancel {id}: {status}");
}
