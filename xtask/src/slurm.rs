//! `cargo xtask slurm-up`: a single-node Slurm on this machine, for the Slurm tests.
//!
//! Debian's packages (slurmctld, slurmd, slurm-client, munge), no systemd and no cgroups: munged
//! runs as the munge user, slurmctld and slurmd as root, one node at 127.0.0.1 with more CPUs
//! than the machine has (so tests can run several steps at once) and a scheduler that starts
//! jobs at once. Idempotent: an idle node means there is nothing to do.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::tasks;

const CONF: &str = "/etc/slurm/slurm.conf";

pub(crate) fn run(extra: &[String]) -> Result<()> {
    if !extra.is_empty() {
        bail!("`cargo xtask slurm-up` takes no arguments");
    }
    ensure()
}

/// Make sure the test cluster is up (install, configure and start what is missing).
pub(crate) fn ensure() -> Result<()> {
    if node_state().is_some_and(|s| usable(&s)) && Path::new(CONF).is_file() {
        return Ok(());
    }
    eprintln!("xtask: starting a single-node Slurm for the Slurm tests");
    for (program, package) in [
        ("munged", "munge"),
        ("slurmctld", "slurmctld"),
        ("slurmd", "slurmd"),
        ("srun", "slurm-client"),
    ] {
        if which(program).is_none() {
            tasks::apt_install(package)
                .with_context(|| format!("installing {package} (the Slurm tests need it)"))?;
        }
    }
    start_munge()?;
    let conf = config();
    privileged(&[
        "mkdir",
        "-p",
        "/etc/slurm",
        "/var/spool/slurmctld",
        "/var/spool/slurmd",
        "/var/log/slurm",
    ])?;
    if std::fs::read_to_string(CONF).unwrap_or_default() != conf {
        write_as_root(CONF, &conf)?;
        // Daemons started with another configuration must read this one.
        for daemon in ["slurmctld", "slurmd"] {
            if running(daemon) {
                privileged(&["pkill", "-x", daemon])?;
                wait_until(&format!("{daemon} to stop"), || !running(daemon))?;
            }
        }
    }
    for daemon in ["slurmctld", "slurmd"] {
        if !running(daemon) {
            privileged(&[&format!("/usr/sbin/{daemon}")]).with_context(|| {
                format!("starting {daemon} (its log: /var/log/slurm/{daemon}.log)")
            })?;
        }
    }
    let node = hostname();
    wait_until("the Slurm node to register", || node_state().is_some())?;
    if node_state().is_some_and(|s| s.starts_with("down") || s.starts_with("drain")) {
        privileged(&[
            "scontrol",
            "update",
            &format!("nodename={node}"),
            "state=resume",
        ])?;
    }
    wait_until("the Slurm node to be idle", || {
        node_state().is_some_and(|s| usable(&s))
    })?;
    eprintln!("xtask: Slurm is up: node {node}, partition debug (sinfo shows it)");
    Ok(())
}

/// A node state in which jobs start.
fn usable(state: &str) -> bool {
    ["idle", "mixed", "allocated", "completing"]
        .iter()
        .any(|s| state.trim_end_matches(['*', '~', '#', '$', '@', '+', '-', '^', '!', '%']) == *s)
}

/// The first node's state as sinfo shows it (`idle`, `down*`, ...), if Slurm answers.
fn node_state() -> Option<String> {
    let out = Command::new("sinfo")
        .args(["--noheader", "--Node", "--format=%T"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let state = text.lines().next()?.trim().to_owned();
    (out.status.success() && !state.is_empty()).then_some(state)
}

fn start_munge() -> Result<()> {
    if !Path::new("/etc/munge/munge.key").is_file() {
        privileged(&[
            "sh",
            "-c",
            "mkdir -p /etc/munge && dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null && chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key",
        ])?;
    }
    if running("munged") {
        return Ok(());
    }
    // Its runtime folders: systemd would create them.
    privileged(&[
        "sh",
        "-c",
        "mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge && chmod 0755 /run/munge",
    ])?;
    privileged(&["runuser", "-u", "munge", "--", "/usr/sbin/munged"])?;
    wait_until("munged to answer", || {
        Command::new("sh")
            .args(["-c", "munge -n | unmunge"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The slurm.conf of the test cluster: this machine as its only node.
fn config() -> String {
    let node = hostname();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kib| kib / 1024 / 2);
    format!(
        "# Written by `cargo xtask slurm-up`: a single-node test cluster, no systemd, no cgroups.
ClusterName=fanout-test
SlurmctldHost={node}(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=bf_interval=1,sched_min_interval=0,batch_sched_delay=0
# More CPUs than the machine has, so tests can run several steps at once.
SlurmdParameters=config_overrides
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=300
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mib} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
",
        cpus = cores.max(16)
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(
        |_| "localhost".to_owned(),
        |h| h.trim().split('.').next().unwrap_or("localhost").to_owned(),
    )
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn running(daemon: &str) -> bool {
    Command::new("pgrep")
        .args(["-x", daemon])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run a command as root: directly when we are root, else through `sudo -n`.
fn privileged(argv: &[&str]) -> Result<()> {
    tasks::run(tasks::as_root(argv[0]).args(&argv[1..]))
        .context("the test cluster needs root (or sudo without a password)")
}

fn write_as_root(path: &str, text: &str) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        return std::fs::write(path, text).with_context(|| format!("writing {path}"));
    }
    let tmp = std::env::temp_dir().join("fanout-slurm.conf");
    std::fs::write(&tmp, text)?;
    privileged(&["cp", tmp.to_str().context("a UTF-8 temp path")?, path])
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {what}; see /var/log/slurm/slurmctld.log and \
                 /var/log/slurm/slurmd.log"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}
