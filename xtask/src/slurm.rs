//! `cargo xtask slurm-up` / `slurm-down`: the project's own Slurm, for the Slurm tests: three
//! nodes by default (see `slurm/nodes.rs`), or one (`--nodes 1`).
//!
//! The cluster is the project's and nobody else's: its own name (`fanout-test`), its own ports
//! (6917/6918, not Slurm's 6817/6818), and everything else under [`HOME`]: the config file
//! (passed to the daemons with `-f` and to the tests' `srun`/`squeue`/`scancel` through
//! `SLURM_CONF`), the state, spool and log folders, the pid files. So it runs beside another
//! Slurm on the same machine (a distribution's default one, a site's), never reuses it and
//! never sends the tests' jobs to it. Debian's packages (slurmctld, slurmd, slurm-client,
//! munge), no systemd and no cgroups: munged runs as the munge user (shared with any other
//! cluster here: it only vouches for users), slurmctld and the slurmds as root, nodes with more
//! CPUs than the machine has (so tests can run several steps at once) and a scheduler that
//! starts jobs at once. Idempotent: idle nodes of ours mean nothing to do.
//!
//! `FANOUT_TEST_SLURM_CONF=/path/to/slurm.conf` points the tests at an existing cluster
//! instead, on purpose; its shape is checked first (a default partition, enough CPUs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::tasks;

mod check;
mod nodes;

pub(crate) use check::check;
use nodes::Node;

/// Everything of the project's test cluster lives here.
pub(crate) const HOME: &str = "/var/lib/fanout-test-slurm";
pub(crate) const CLUSTER: &str = "fanout-test";
const CTLD_PORT: u16 = 6917;
const SLURMD_PORT: u16 = 6918;
/// Names an existing cluster's config to run the tests on instead of the project's.
pub(crate) const EXISTING_ENV: &str = "FANOUT_TEST_SLURM_CONF";
/// How many steps the tests run at once, at most (the cancel test runs three, a stage four).
const CPUS_NEEDED: u32 = 4;
/// The nodes of the cluster the tests run on: work must be seen to spread over machines.
pub(crate) const TEST_NODES: usize = 3;

pub(crate) fn home() -> PathBuf {
    PathBuf::from(HOME)
}

/// The config file of the project's cluster.
pub(crate) fn conf_path() -> PathBuf {
    home().join("slurm.conf")
}

/// A daemon's log; `key` is `slurmctld` or `slurmd-NODE`.
fn log_path(key: &str) -> PathBuf {
    home().join("log").join(format!("{key}.log"))
}

fn pid_path(key: &str) -> PathBuf {
    home().join("run").join(format!("{key}.pid"))
}

fn slurmd_key(node: &Node) -> String {
    format!("slurmd-{}", node.name)
}

pub(crate) fn up(extra: &[String]) -> Result<()> {
    let count = match extra {
        [] => TEST_NODES,
        [flag, n] if flag == "--nodes" => n
            .parse()
            .ok()
            .filter(|n| (1..=nodes::MAX_NODES).contains(n))
            .with_context(|| {
                format!(
                    "--nodes {n}: give a number of nodes from 1 to {}",
                    nodes::MAX_NODES
                )
            })?,
        _ => bail!("`cargo xtask slurm-up` takes only --nodes N (default {TEST_NODES})"),
    };
    let conf = ensure_nodes(count)?;
    eprintln!("xtask: the tests use SLURM_CONF={}", conf.display());
    Ok(())
}

pub(crate) fn down(extra: &[String]) -> Result<()> {
    if !extra.is_empty() {
        bail!("`cargo xtask slurm-down` takes no arguments");
    }
    stop_all()?;
    nodes::down()?;
    eprintln!(
        "xtask: the test cluster is stopped and its network namespaces removed (other Slurm \
         installations were left alone)"
    );
    Ok(())
}

/// Make sure a cluster for the tests is up ([`TEST_NODES`] nodes); returns the config the tests
/// must use (their `SLURM_CONF`).
pub(crate) fn ensure() -> Result<PathBuf> {
    if let Some(existing) = std::env::var_os(EXISTING_ENV) {
        let conf = PathBuf::from(existing);
        check_existing(&conf)?;
        return Ok(conf);
    }
    ensure_nodes(TEST_NODES)
}

/// Make sure the project's cluster of `count` nodes is up.
pub(crate) fn ensure_nodes(count: usize) -> Result<PathBuf> {
    let (nodes, controller) = nodes::layout(count);
    let conf = conf_path();
    let text = config(&nodes, &controller);
    let all_usable = |conf: &Path| {
        let states = node_states(conf);
        states.len() == nodes.len() && states.iter().all(|(_, s)| usable(s))
    };
    if std::fs::read_to_string(&conf).is_ok_and(|t| t == text)
        && running("slurmctld")
        && nodes.iter().all(|n| running(&slurmd_key(n)))
        && all_usable(&conf)
    {
        return Ok(conf);
    }
    eprintln!("xtask: starting the project's Slurm of {count} node(s) ({HOME})");
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
    let dirs = ["state", "spool", "log", "run"].map(|d| home().join(d));
    let mut mkdir = vec!["mkdir", "-p"];
    mkdir.extend(dirs.iter().map(|d| d.to_str().expect("a UTF-8 path")));
    privileged(&mkdir)?;
    if std::fs::read_to_string(&conf).ok().as_deref() != Some(text.as_str()) {
        // Daemons started with another configuration must read this one.
        stop_all()?;
        if count == 1 {
            nodes::down()?;
        }
        write_as_root(&conf, &text)?;
    }
    nodes::up(&nodes, &controller)?;
    forget_other_clusters_state()?;
    if !running("slurmctld") {
        start("slurmctld", None, &conf)?;
    }
    for node in &nodes {
        if !running(&slurmd_key(node)) {
            start(&slurmd_key(node), Some(node), &conf)?;
        }
    }
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    wait_until("the Slurm nodes to register", || {
        node_states(&conf).len() == nodes.len()
    })?;
    if node_states(&conf)
        .iter()
        .any(|(_, s)| s.starts_with("down") || s.starts_with("drain"))
    {
        run_slurm(
            &conf,
            "scontrol",
            &[
                "update",
                &format!("nodename={}", names.join(",")),
                "state=resume",
            ],
        )?;
    }
    wait_until("the Slurm nodes to be idle", || all_usable(&conf))?;
    eprintln!(
        "xtask: Slurm is up: cluster {CLUSTER}, nodes {}, partition debug",
        names.join(" ")
    );
    Ok(conf)
}

/// An existing cluster the tests were pointed at: it must answer, have a default partition
/// and enough CPUs for the tests' steps to run side by side.
fn check_existing(conf: &Path) -> Result<()> {
    let refuse = |why: String| {
        anyhow::anyhow!(
            "{EXISTING_ENV}={}: {why}; unset {EXISTING_ENV} to use the project's own test \
             cluster (cargo xtask slurm-up)",
            conf.display()
        )
    };
    if !conf.is_file() {
        return Err(refuse("no such file".to_owned()));
    }
    let partitions = slurm_output(conf, "sinfo", &["--noheader", "--format=%P %c"])
        .map_err(|e| refuse(format!("sinfo does not answer: {e:#}")))?;
    let default = partitions
        .lines()
        .find_map(|l| {
            let (name, cpus) = l.split_once(' ')?;
            name.ends_with('*').then(|| cpus.trim().to_owned())
        })
        .ok_or_else(|| refuse(format!("it has no default partition ({partitions:?})")))?;
    let cpus: u32 = default
        .trim_end_matches('+')
        .parse()
        .map_err(|_| refuse(format!("cannot read the CPUs of its nodes ({default:?})")))?;
    if cpus < CPUS_NEEDED {
        return Err(refuse(format!(
            "its default partition's nodes have {cpus} CPUs; the tests run up to {CPUS_NEEDED} \
             steps at once"
        )));
    }
    eprintln!(
        "xtask: the tests use the existing cluster of {} ({cpus} CPUs a node)",
        conf.display()
    );
    Ok(())
}

/// A state folder written by a cluster of another name makes slurmctld refuse to start
/// ("CLUSTER NAME MISMATCH"). The folder is ours alone, so a foreign state is dropped.
fn forget_other_clusters_state() -> Result<()> {
    let state = home().join("state");
    let name = std::fs::read_to_string(state.join("clustername")).unwrap_or_default();
    if !name.trim().is_empty() && name.trim() != CLUSTER {
        eprintln!(
            "xtask: {} holds the state of a cluster named {:?}; starting afresh",
            state.display(),
            name.trim()
        );
        let s = state.to_str().expect("a UTF-8 path");
        privileged(&["sh", "-c", &format!("rm -rf {s}/* {s}/.[!.]*")])?;
    }
    Ok(())
}

/// Start a daemon with our config (a slurmd: on `node`, in its network), and say why if it
/// does not come up. `key` is `slurmctld` or `slurmd-NODE`.
pub(crate) fn start(key: &str, node: Option<&Node>, conf: &Path) -> Result<()> {
    let daemon = if node.is_some() {
        "slurmd"
    } else {
        "slurmctld"
    };
    let port = if node.is_some() {
        SLURMD_PORT
    } else {
        CTLD_PORT
    };
    // A node in a namespace of its own has its own ports.
    if node.is_none_or(|n| n.netns.is_none())
        && let Some(holder) = port_holder(port)
    {
        bail!(
            "{daemon} cannot start: port {port} is taken by {holder}. Another Slurm with this \
             project's ports? Stop it (cargo xtask slurm-down stops only the project's), or run \
             the tests on a cluster of your choice with {EXISTING_ENV}=/path/to/its/slurm.conf"
        );
    }
    let log = log_path(key);
    let log_len = std::fs::metadata(&log).map_or(0, |m| m.len());
    let binary = format!("/usr/sbin/{daemon}");
    let mut cmd = match node {
        Some(node) => {
            let mut cmd = nodes::command_on(node, &binary);
            cmd.args(["-N", &node.name]);
            cmd
        }
        None => tasks::as_root(&binary),
    };
    let status = cmd
        .arg("-f")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {binary}"))?;
    let failed = |what: String| {
        let said = String::from_utf8_lossy(&status.stderr).trim().to_owned();
        anyhow::anyhow!(
            "{key} did not start: {what}\n{}{}\n(its log: {})",
            if said.is_empty() {
                String::new()
            } else {
                format!("{said}\n")
            },
            log_problems(&log, log_len),
            log.display()
        )
    };
    if !status.status.success() {
        return Err(failed(format!("it exited with {}", status.status)));
    }
    // It forks into the background; a fatal error (a bad state folder, say) ends it a moment
    // later, possibly after it wrote its pid file. Up = running for a second and, for the
    // controller, answering.
    let launched = Instant::now();
    let mut up_since: Option<Instant> = None;
    while launched.elapsed() < Duration::from_secs(20) {
        if running(key) {
            let since = *up_since.get_or_insert_with(Instant::now);
            let answers = node.is_some() || slurm_output(conf, "scontrol", &["ping"]).is_ok();
            if answers && since.elapsed() >= Duration::from_secs(1) {
                return Ok(());
            }
        } else if up_since.is_some() || launched.elapsed() > Duration::from_secs(3) {
            return Err(failed("it exited right after starting".to_owned()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(failed("it runs but does not answer".to_owned()))
}

/// The `error:` and `fatal:` lines a daemon logged since `from` (a byte offset), or a note that
/// there were none.
fn log_problems(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let new = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = new
        .lines()
        .filter(|l| l.contains("error:") || l.contains("fatal:"))
        .collect();
    if lines.is_empty() {
        format!("{} has no error or fatal line", log.display())
    } else {
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// Who listens on a TCP port of this machine (`ss`'s words), if anyone.
fn port_holder(port: u16) -> Option<String> {
    let out = Command::new("ss")
        .args(["-Hltnp", &format!("sport = :{port}")])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then(|| {
        text.split("users:")
            .nth(1)
            .map_or_else(|| text.clone(), |u| u.trim().to_owned())
    })
}

/// Stop every daemon of ours: the slurmds of whatever layout ran last, then slurmctld.
fn stop_all() -> Result<()> {
    let mut keys: Vec<String> = daemon_keys()
        .into_iter()
        .filter(|k| k != "slurmctld")
        .collect();
    keys.push("slurmctld".to_owned());
    for key in keys {
        stop(&key)?;
    }
    Ok(())
}

/// The daemons with a pid file in our run folder: `slurmctld`, `slurmd-NODE`.
fn daemon_keys() -> Vec<String> {
    std::fs::read_dir(home().join("run"))
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".pid").map(str::to_owned)
            })
            .collect()
        })
        .unwrap_or_default()
}

/// The pids of our running daemons, by key (to tell whether they were restarted).
pub(crate) fn daemon_pids() -> Vec<(String, i32)> {
    let mut pids: Vec<(String, i32)> = daemon_keys()
        .into_iter()
        .filter_map(|k| our_pid(&k).map(|p| (k, p)))
        .collect();
    pids.sort();
    pids
}

/// Stop one of our daemons (found by its pid file and its command line naming our config).
fn stop(key: &str) -> Result<()> {
    let Some(pid) = our_pid(key) else {
        return Ok(());
    };
    privileged(&["kill", "-TERM", &pid.to_string()])?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while our_pid(key).is_some() {
        if Instant::now() > deadline {
            privileged(&["kill", "-KILL", &pid.to_string()])?;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The pid of our daemon `key`, when it runs: the pid file's process, if its command line is
/// the daemon's with our config.
fn our_pid(key: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_path(key))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let daemon = if key == "slurmctld" {
        "slurmctld"
    } else {
        "slurmd"
    };
    let conf = conf_path();
    (line.contains(daemon) && line.contains(conf.to_str()?)).then_some(pid)
}

fn running(key: &str) -> bool {
    our_pid(key).is_some()
}

/// A node state in which jobs start.
fn usable(state: &str) -> bool {
    ["idle", "mixed", "allocated", "completing"]
        .iter()
        .any(|s| state.trim_end_matches(['*', '~', '#', '$', '@', '+', '-', '^', '!', '%']) == *s)
}

/// Each node's name and state as the cluster of `conf` shows them (`idle`, `down*`, ...).
pub(crate) fn node_states(conf: &Path) -> Vec<(String, String)> {
    let Ok(text) = slurm_output(conf, "sinfo", &["--noheader", "--Node", "--format=%N %T"]) else {
        return Vec::new();
    };
    let mut states: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let (name, state) = l.trim().split_once(' ')?;
            Some((name.to_owned(), state.trim().to_owned()))
        })
        .collect();
    states.dedup();
    states
}

/// What a Slurm client command printed, run against the cluster of `conf`.
pub(crate) fn slurm_output(conf: &Path, program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("SLURM_CONF", conf)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_slurm(conf: &Path, program: &str, args: &[&str]) -> Result<()> {
    tasks::run(tasks::as_root(program).args(args).env("SLURM_CONF", conf))
}

fn start_munge() -> Result<()> {
    if !Path::new("/etc/munge/munge.key").is_file() {
        privileged(&[
            "sh",
            "-c",
            "mkdir -p /etc/munge && dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null && chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key",
        ])?;
    }
    let answers = || {
        Command::new("sh")
            .args(["-c", "munge -n | unmunge"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if answers() {
        return Ok(());
    }
    // Its runtime folders: systemd would create them.
    privileged(&[
        "sh",
        "-c",
        "mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge && chmod 0755 /run/munge",
    ])?;
    privileged(&["runuser", "-u", "munge", "--", "/usr/sbin/munged"])?;
    wait_until("munged to answer", answers)
}

/// The slurm.conf of the test cluster: its nodes, the controller at `controller`, everything
/// under HOME.
fn config(nodes: &[Node], controller: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let cpus = cores.max(16);
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kib| kib / 1024 / 2);
    let node_lines = nodes.iter().fold(String::new(), |mut lines, n| {
        let _ = writeln!(
            lines,
            "NodeName={} NodeAddr={} CPUs={cpus} RealMemory={mem_mib} State=UNKNOWN",
            n.name, n.addr
        );
        lines
    });
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    format!(
        "# Written by `cargo xtask slurm-up`: the project's test cluster of {count} node(s), no
# systemd, no cgroups, its own ports and folders so that it runs beside any other Slurm here.
ClusterName={CLUSTER}
SlurmctldHost={host}({controller})
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
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
StateSaveLocation={HOME}/state
SlurmdSpoolDir={HOME}/spool/%n
SlurmctldPidFile={HOME}/run/slurmctld.pid
SlurmdPidFile={HOME}/run/slurmd-%n.pid
SlurmctldLogFile={HOME}/log/slurmctld.log
SlurmdLogFile={HOME}/log/slurmd-%n.log
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=300
# The bench's job arrays (sbatch --array) have 2,000 tasks.
MaxArraySize=10001
{node_lines}PartitionName=debug Nodes={list} Default=YES MaxTime=INFINITE State=UP
",
        count = nodes.len(),
        host = hostname(),
        list = names.join(","),
    )
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(
        |_| "localhost".to_owned(),
        |h| h.trim().split('.').next().unwrap_or("localhost").to_owned(),
    )
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Run a command as root: directly when we are root, else through `sudo -n`.
fn privileged(argv: &[&str]) -> Result<()> {
    let root = rustix::process::geteuid().is_root();
    tasks::run(tasks::as_root(argv[0]).args(&argv[1..])).with_context(|| {
        if root {
            format!("running {}", argv.join(" "))
        } else {
            "the test cluster needs root (or sudo without a password)".to_owned()
        }
    })
}

pub(crate) fn write_as_root(path: &Path, text: &str) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        return std::fs::write(path, text).with_context(|| format!("writing {}", path.display()));
    }
    let tmp = std::env::temp_dir().join("fanout-slurm.conf");
    std::fs::write(&tmp, text)?;
    privileged(&[
        "cp",
        tmp.to_str().context("a UTF-8 temp path")?,
        path.to_str().context("a UTF-8 path")?,
    ])
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        if Instant::now() > deadline {
            let logs: Vec<String> = daemon_keys()
                .iter()
                .map(|k| log_problems(&log_path(k), 0))
                .collect();
            bail!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}
