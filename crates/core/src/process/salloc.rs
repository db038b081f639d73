//! Asking Slurm for the allocation of `--slurm-mode packed` ([`Allocation::acquire`]), or
//! taking the one this program runs in: `salloc` with the pool's slots, the `--slurm-arg`s
//! split between the allocation and its steps, a slot's memory per CPU.

use std::process::Stdio;
use std::sync::{Condvar, Mutex};

use super::allocation::{Allocation, Slots};
use super::slurm::{self, Slurm, SlurmError};

impl Allocation {
    /// Whether `args` (`--slurm-arg`s) can shape an allocation of packed mode: not `-n` (the
    /// slots are the pool's), no GPUs (not shared out between slots yet). For the user's
    /// error before anything runs.
    ///
    /// # Errors
    /// The option that cannot, and why.
    pub fn check_options(args: &[String]) -> Result<(), SlurmError> {
        split_args(args).map(|_| ())
    }

    /// An allocation of `slots` tasks of `slurm.cpus` CPUs (one if not given): the one this
    /// program runs in (`SLURM_JOB_ID`; at most as many slots as it has CPUs for), else a new
    /// one asked of Slurm with `slurm`'s settings and `nodes` nodes if given. `slurm.mem` is
    /// each slot's memory. Of `slurm.args`, the allocation's options (`--time`, `--qos`,
    /// `--constraint`...) go to `salloc`, the others to each worker's `srun`. A worker is this
    /// program started with `--fanout-slurm-worker` (see `serve.rs`).
    ///
    /// # Errors
    /// Slurm refused the allocation, or cannot be asked; a memory size is not one.
    pub fn acquire(slots: usize, nodes: Option<u32>, slurm: &Slurm) -> Result<Self, SlurmError> {
        let program = std::env::current_exe().map_err(|e| {
            SlurmError::Allocation(format!("cannot find this program to run as a worker: {e}"))
        })?;
        let split = split_args(&slurm.args)?;
        // `-c N` among the options sizes the slots too.
        let cpus_per_task = slurm.cpus.unwrap_or(1).max(split.cpus.unwrap_or(1)).max(1);
        let inherited = std::env::var("SLURM_JOB_ID")
            .ok()
            .and_then(|j| j.parse().ok());
        let ask = Ask {
            slots,
            cpus_per_task,
            nodes: nodes.or(split.nodes),
            mem: slurm.mem.clone().or(split.mem),
            args: split.allocation,
        };
        let step_args = split.step;
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
    /// A slot's memory.
    mem: Option<String>,
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
    if let Some(m) = &ask.mem {
        cmd.arg(mem_per_cpu(m, ask.cpus_per_task)?);
    }
    cmd.args(&ask.args);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|_| SlurmError::NoSrun)?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = said.lines().find_map(|l| {
        let (_, id) = l.split_once("Granted job allocation ")?;
        id.trim().parse::<u64>().ok()
    });
    match (out.status.success(), id) {
        (true, Some(id)) => Ok(id),
        _ => Err(SlurmError::Allocation(format!(
            "salloc said: {}",
            said.trim()
        ))),
    }
}

/// The options that shape the allocation as a whole, given to `salloc`; every other
/// `--slurm-arg` is a step's, given to each worker's `srun` (see [`split_args`]).
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
    "--mem-per-cpu",
    "--partition",
    "-p",
    "--account",
    "-A",
    "--cluster-constraint",
    "--nice",
    "--priority",
];

/// Options without a value.
const FLAGS: &[&str] = &[
    "--exclusive",
    "--overcommit",
    "-O",
    "--contiguous",
    "--label",
    "-l",
    "--pty",
];

/// Options that change the workers' standard input or output, which carry the tasks.
const WIRE_OPTIONS: &[&str] = &["--label", "-l", "--output", "-o", "--input", "-i", "--pty"];

/// Options that would change the slots `-j` asks for.
const SLOT_OPTIONS: &[&str] = &["--ntasks", "-n", "--ntasks-per-node"];

/// Options that give GPUs: the slots of packed mode do not share them out.
const GPU_OPTIONS: &[&str] = &[
    "--gres",
    "--gpus",
    "-G",
    "--gpus-per-node",
    "--gpus-per-task",
    "--gpus-per-socket",
    "--mem-per-gpu",
    "--cpus-per-gpu",
];

/// `--slurm-arg`s sorted for packed mode (see [`split_args`]).
#[derive(Debug, Default, PartialEq)]
struct Split {
    /// For `salloc`.
    allocation: Vec<String>,
    /// For each worker's `srun`.
    step: Vec<String>,
    /// `-c N`: a slot's CPUs.
    cpus: Option<u32>,
    /// `--mem X`: a slot's memory.
    mem: Option<String>,
    /// `-N N`: the allocation's nodes.
    nodes: Option<u32>,
}

/// `args` (each `--opt=value`, `--opt value`, `-o value` or `-ovalue`) sorted: the
/// allocation's options go to `salloc`, every other one to each worker's `srun`; `-c`, `--mem`
/// and `-N` size the slots and the allocation.
///
/// # Errors
/// `-n`/`--ntasks` (the slots are `-j`'s), and GPU options (not shared out between slots).
fn split_args(args: &[String]) -> Result<Split, SlurmError> {
    let mut split = Split::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let (name, attached) = if let Some((n, v)) = arg.split_once('=') {
            (n, Some(v))
        } else if !arg.starts_with("--") && arg.starts_with('-') && arg.len() > 2 {
            (&arg[..2], Some(&arg[2..]))
        } else {
            (arg.as_str(), None)
        };
        let next = args.get(i + 1).filter(|v| !v.starts_with('-'));
        let value = match attached {
            Some(v) => Some(v),
            None if !FLAGS.contains(&name) => next.map(String::as_str),
            None => None,
        };
        let group = &args[i..=if attached.is_none() && value.is_some() {
            i + 1
        } else {
            i
        }];
        i += group.len();
        let bad = |why: &str| {
            Err(SlurmError::PackedOption(format!(
                "--slurm-arg {}: {why}",
                group.join(" ")
            )))
        };
        let number = |v: Option<&str>| v.and_then(|v| v.parse::<u32>().ok());
        match name {
            _ if SLOT_OPTIONS.contains(&name) => {
                return bad(
                    "in --slurm-mode packed the tasks at once are -j (and --slurm-nodes \
                     spreads them)",
                );
            }
            _ if GPU_OPTIONS.contains(&name) => {
                return bad(
                    "--slurm-mode packed does not share GPUs out between its slots yet; run \
                     GPU tasks with --slurm-mode jobs",
                );
            }
            _ if WIRE_OPTIONS.contains(&name) => {
                return bad(
                    "in --slurm-mode packed the workers take their tasks over srun's standard \
                     input and output; each task's output is captured on its own already",
                );
            }
            "-c" | "--cpus-per-task" => match number(value) {
                Some(n) => split.cpus = Some(n),
                None => return bad("not a number of CPUs"),
            },
            "-N" | "--nodes" => match number(value) {
                Some(n) => split.nodes = Some(n),
                None => return bad("not a number of nodes (give --slurm-nodes N)"),
            },
            "--mem" => split.mem = value.map(str::to_owned),
            _ if ALLOCATION_OPTIONS.contains(&name) => split.allocation.extend_from_slice(group),
            _ => split.step.extend_from_slice(group),
        }
    }
    Ok(split)
}

/// A slot's memory (`8G`, `512M`, `1T`, `4096`: megabytes) as the salloc option for a slot of
/// `cpus` CPUs: `--mem-per-cpu` in megabytes, rounded up; `0` (all of it) as `--mem=0`.
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
        return Err(SlurmError::PackedOption(format!(
            "memory `{mem}` is not a size (e.g. 8G, 512M)"
        )));
    };
    let megabytes = if scale == 0 {
        n.div_ceil(1024)
    } else {
        n.saturating_mul(scale)
    };
    if megabytes == 0 {
        return Ok("--mem=0".to_owned());
    }
    Ok(format!(
        "--mem-per-cpu={}M",
        megabytes.div_ceil(u64::from(cpus.max(1)))
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

    /// The allocation's options go to salloc, the rest to the steps, each with its value
    /// (separate or attached); `-c`, `--mem` and `-N` size the slots.
    #[test]
    fn slurm_args_split_between_the_allocation_and_its_steps() {
        let split = split_args(&strings(&[
            "--time=1:00:00",
            "--qos",
            "short",
            "--cpu-bind=cores",
            "--exclusive",
            "--export",
            "ALL",
            "-Cskylake",
            "-t",
            "60",
            "-c4",
            "--mem",
            "8G",
            "-N",
            "2",
        ]))
        .unwrap();
        assert_eq!(
            split.allocation,
            strings(&[
                "--time=1:00:00",
                "--qos",
                "short",
                "--exclusive",
                "-Cskylake",
                "-t",
                "60"
            ])
        );
        assert_eq!(
            split.step,
            strings(&["--cpu-bind=cores", "--export", "ALL"])
        );
        assert_eq!(
            (split.cpus, split.mem.as_deref(), split.nodes),
            (Some(4), Some("8G"), Some(2))
        );
    }

    /// What packed mode cannot honour is refused, naming the option.
    #[test]
    fn slot_counts_gpus_and_the_workers_stdio_are_refused() {
        for (args, says) in [
            (
                &["-n", "8"][..],
                "--slurm-arg -n 8: in --slurm-mode packed the tasks at once are -j",
            ),
            (&["--ntasks=8"][..], "--slurm-arg --ntasks=8"),
            (&["--gres=gpu:1"][..], "does not share GPUs out"),
            (
                &["-G2"][..],
                "--slurm-arg -G2: --slurm-mode packed does not share GPUs",
            ),
            (&["-c", "x"][..], "not a number of CPUs"),
            (
                &["--label"][..],
                "--slurm-arg --label: in --slurm-mode packed the workers take their tasks \
                 over srun's standard input and output",
            ),
            (&["-o", "out.txt"][..], "--slurm-arg -o out.txt: in"),
            (&["--input=none"][..], "--slurm-arg --input=none: in"),
        ] {
            let err = split_args(&strings(args)).unwrap_err().to_string();
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }

    /// A slot's memory is shared by its CPUs, in megabytes rounded up; a bad size says so.
    #[test]
    fn a_slots_memory_becomes_memory_per_cpu() {
        assert_eq!(mem_per_cpu("8G", 4).unwrap(), "--mem-per-cpu=2048M");
        assert_eq!(mem_per_cpu("1000", 3).unwrap(), "--mem-per-cpu=334M");
        assert_eq!(mem_per_cpu("512M", 1).unwrap(), "--mem-per-cpu=512M");
        assert_eq!(mem_per_cpu("1T", 2).unwrap(), "--mem-per-cpu=524288M");
        assert_eq!(mem_per_cpu("2048K", 1).unwrap(), "--mem-per-cpu=2M");
        assert_eq!(
            mem_per_cpu("0", 4).unwrap(),
            "--mem=0",
            "all of each node's"
        );
        let err = mem_per_cpu("lots", 1).unwrap_err().to_string();
        assert!(err.contains("`lots` is not a size"), "{err}");
    }
}
