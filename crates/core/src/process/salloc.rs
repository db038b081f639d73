//! Asking Slurm for the allocation of `--slurm-mode packed` ([`Allocation::acquire`]), or
//! taking the one this program runs in: `salloc` with the pool's slots, the `--slurm-arg`s
//! split between the allocation and its steps, a slot's memory per CPU.

use std::process::Stdio;
use std::sync::{Condvar, Mutex};

use super::allocation::{Allocation, Slots};
use super::slurm::{self, Slurm, SlurmError};

impl Allocation {
    /// An allocation of `slots` tasks of `cpus_per_task` CPUs: the one this program runs in
    /// (`SLURM_JOB_ID`; at most as many slots as it has CPUs for), else a new one asked of
    /// Slurm with `slurm`'s settings and `nodes` nodes if given. `slurm.mem` is each slot's
    /// memory. Of `slurm.args`, the allocation's options (`--time`, `--qos`, `--constraint`...)
    /// go to `salloc`, the others to each worker's `srun`. A worker is this program re-run with
    /// the arguments [`init`](super::init) was given (it serves tasks before it looks at them).
    ///
    /// # Errors
    /// Slurm refused the allocation, or cannot be asked; a memory size is not one.
    pub fn acquire(
        slots: usize,
        cpus_per_task: u32,
        nodes: Option<u32>,
        slurm: &Slurm,
    ) -> Result<Self, SlurmError> {
        let program = std::env::current_exe().map_err(|e| {
            SlurmError::Allocation(format!("cannot find this program to run as a worker: {e}"))
        })?;
        let cpus_per_task = cpus_per_task.max(1);
        let (alloc_args, step_args) = split_args(&slurm.args);
        let inherited = std::env::var("SLURM_JOB_ID")
            .ok()
            .and_then(|j| j.parse().ok());
        let ask = Ask {
            slots,
            cpus_per_task,
            nodes,
            args: alloc_args,
        };
        let (job_id, owned) = if let Some(id) = inherited {
            (id, false)
        } else {
            (salloc(&ask, slurm)?, true)
        };
        let mut allocation = Allocation {
            job_id,
            owned,
            nodes: Vec::new(),
            cpus_per_task,
            slots,
            step_args,
            program,
            args: super::guardian::reexec_args(),
            state: Mutex::new(Slots::default()),
            freed: Condvar::new(),
        };
        // Dropped on an error below: cancelled if ours.
        let (names, cpus) = allocation_shape(job_id);
        allocation.nodes = names;
        if allocation.nodes.is_empty() {
            return Err(SlurmError::Allocation(format!(
                "Slurm does not say which nodes allocation {job_id} has"
            )));
        }
        if !owned && let Some(cpus) = cpus {
            let fits = usize::try_from(cpus / u64::from(cpus_per_task)).unwrap_or(usize::MAX);
            allocation.slots = slots.min(fits.max(1));
        }
        Ok(allocation)
    }
}

/// What `salloc` is asked for.
struct Ask {
    slots: usize,
    cpus_per_task: u32,
    nodes: Option<u32>,
    args: Vec<String>,
}

/// `salloc --no-shell`: a new allocation; returns its job id. It is not revoked when one of
/// its nodes fails (`--no-kill`): the tasks on the others go on.
fn salloc(ask: &Ask, slurm: &Slurm) -> Result<u64, SlurmError> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the process module runs Slurm's own commands"
    )]
    let mut cmd = std::process::Command::new("salloc");
    // The session's mark: the second Ctrl-C and the guardian cancel what carries it.
    let session = super::tree::session();
    session.note_slurm();
    let cookie = session.next_cookie();
    cmd.args(["--no-shell", "--no-kill", "--job-name=fanout-alloc"])
        .arg(format!("--comment={}={}", cookie.name, cookie.value))
        .arg(format!("--ntasks={}", ask.slots))
        .arg(format!("--cpus-per-task={}", ask.cpus_per_task));
    if let Some(n) = ask.nodes {
        cmd.arg(format!("--nodes={n}"));
    }
    if let Some(p) = &slurm.partition {
        cmd.arg(format!("--partition={p}"));
    }
    if let Some(a) = &slurm.account {
        cmd.arg(format!("--account={a}"));
    }
    if let Some(m) = &slurm.mem {
        cmd.arg(format!(
            "--mem-per-cpu={}",
            mem_per_cpu(m, ask.cpus_per_task)?
        ));
    }
    cmd.args(&ask.args);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|_| SlurmError::NoSrun)?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = said
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok())
        .next_back();
    match (out.status.success(), id) {
        (true, Some(id)) => Ok(id),
        _ => Err(SlurmError::Allocation(format!(
            "salloc said: {}",
            said.trim()
        ))),
    }
}

/// The options that shape the allocation as a whole, given to `salloc`; every other
/// `--slurm-arg` is a step's, given to each worker's `srun`. `-n`/`--ntasks` and
/// `-c`/`--cpus-per-task` would change the slots `-j` asked for, and are not passed on.
const ALLOCATION_OPTIONS: &[&str] = &[
    "--time",
    "-t",
    "--time-min",
    "--qos",
    "-q",
    "--constraint",
    "-C",
    "--exclusive",
    "--nodelist",
    "-w",
    "--exclude",
    "-x",
    "--reservation",
    "--licenses",
    "-L",
    "--begin",
    "--deadline",
    "--mail-type",
    "--mail-user",
    "--wckey",
    "--switches",
    "--tmp",
    "--gres",
    "--gpus",
    "-G",
    "--gpus-per-node",
    "--gpus-per-task",
    "--mem-per-gpu",
    "--partition",
    "-p",
    "--account",
    "-A",
    "--cluster-constraint",
    "--nice",
    "--priority",
];

const SLOT_OPTIONS: &[&str] = &[
    "--ntasks",
    "-n",
    "--cpus-per-task",
    "-c",
    "--ntasks-per-node",
];

/// `args` (each `--opt=value`, `--opt value` or `-o value`) as (the allocation's, the steps').
fn split_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut alloc, mut step) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        // `--opt value` and `-o value`: the value is the next argument.
        let takes_next = !arg.contains('=')
            && args.get(i + 1).is_some_and(|v| !v.starts_with('-'))
            && name != "--exclusive";
        let group = &args[i..=if takes_next { i + 1 } else { i }];
        if ALLOCATION_OPTIONS.contains(&name) {
            alloc.extend_from_slice(group);
        } else if !SLOT_OPTIONS.contains(&name) {
            step.extend_from_slice(group);
        }
        i += group.len();
    }
    (alloc, step)
}

/// A slot's memory (`8G`, `512M`, `1T`, `4096`: megabytes) as `--mem-per-cpu` for
/// `cpus` CPUs, in megabytes, rounded up.
fn mem_per_cpu(mem: &str, cpus: u32) -> Result<String, SlurmError> {
    let text = mem.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" => 1,
        "K" | "KB" => 0,
        "G" | "GB" => 1024,
        "T" | "TB" => 1024 * 1024,
        _ => u64::MAX,
    };
    let megabytes = number.parse::<u64>().ok().filter(|_| scale != u64::MAX);
    let Some(n) = megabytes else {
        return Err(SlurmError::Allocation(format!(
            "memory `{mem}` is not a size (e.g. 8G, 512M)"
        )));
    };
    let megabytes = if scale == 0 {
        n.div_ceil(1024)
    } else {
        n.saturating_mul(scale)
    };
    Ok(format!(
        "{}M",
        megabytes.div_ceil(u64::from(cpus.max(1))).max(1)
    ))
}

/// The nodes of allocation `job_id`, one name each, and its CPUs (`squeue`, then `scontrol
/// show hostnames`).
fn allocation_shape(job_id: u64) -> (Vec<String>, Option<u64>) {
    let listing = slurm::query(&[
        "squeue",
        "--noheader",
        "--format=%N|%C",
        "--jobs",
        &job_id.to_string(),
    ])
    .unwrap_or_default();
    let (list, cpus) = listing.trim().split_once('|').unwrap_or(("", ""));
    if list.is_empty() {
        return (Vec::new(), None);
    }
    let names = slurm::query(&["scontrol", "show", "hostnames", list]).unwrap_or_default();
    (
        names.split_whitespace().map(str::to_owned).collect(),
        cpus.trim().parse().ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| (*a).to_owned()).collect()
    }

    /// The allocation's options go to salloc, the rest to the steps, each with its value;
    /// the slot-shaping ones to neither.
    #[test]
    fn slurm_args_split_between_the_allocation_and_its_steps() {
        let (alloc, step) = split_args(&strings(&[
            "--time=1:00:00",
            "--qos",
            "short",
            "--cpu-bind=cores",
            "--exclusive",
            "-n",
            "8",
            "--export",
            "ALL",
            "-C",
            "skylake",
            "--ntasks=4",
        ]));
        assert_eq!(
            alloc,
            strings(&[
                "--time=1:00:00",
                "--qos",
                "short",
                "--exclusive",
                "-C",
                "skylake"
            ])
        );
        assert_eq!(step, strings(&["--cpu-bind=cores", "--export", "ALL"]));
    }

    /// A slot's memory is shared by its CPUs, in megabytes rounded up; a bad size says so.
    #[test]
    fn a_slots_memory_becomes_memory_per_cpu() {
        assert_eq!(mem_per_cpu("8G", 4).unwrap(), "2048M");
        assert_eq!(mem_per_cpu("1000", 3).unwrap(), "334M");
        assert_eq!(mem_per_cpu("512M", 1).unwrap(), "512M");
        assert_eq!(mem_per_cpu("1T", 2).unwrap(), "524288M");
        assert_eq!(mem_per_cpu("2048K", 1).unwrap(), "2M");
        let err = mem_per_cpu("lots", 1).unwrap_err().to_string();
        assert!(err.contains("`lots` is not a size"), "{err}");
    }
}
