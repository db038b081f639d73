//! Looking at the test cluster from outside: Slurm's view of a job, and the node's processes.
//! The cluster is the single-node Slurm `cargo xtask slurm-up` starts (CI runs it first).

use std::time::{Duration, Instant};

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
/// line contains `token`.
pub fn processes_with(token: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            crate::alive(pid)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(token))
        })
        .collect()
}
