//! `cargo xtask slurm-check`: slurm-up's own checks.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{
    CLUSTER, EXISTING_ENV, TEST_NODES, conf_path, daemon_pids, down, ensure, home, node_states,
    slurm_output, start, write_as_root,
};

/// `cargo xtask slurm-check`: the test cluster's own checks, run by `.ci/run` before the test
/// suite (they stop and start the cluster, so they cannot run among the tests). Ends with the
/// cluster up.
pub(crate) fn check(extra: &[String]) -> Result<()> {
    if !extra.is_empty() {
        bail!("`cargo xtask slurm-check` takes no arguments");
    }
    if std::env::var_os(EXISTING_ENV).is_some() {
        bail!("slurm-check checks the project's own cluster: unset {EXISTING_ENV}");
    }
    let conf = conf_path();
    let step = |what: &str| eprintln!("xtask: slurm-check: {what}");

    step("down, then up");
    down(&[])?;
    ensure_up_and_ours(&conf)?;

    step("up again changes nothing (same daemons)");
    let pids = daemon_pids();
    let began = Instant::now();
    ensure()?;
    if daemon_pids() != pids {
        bail!(
            "a second slurm-up restarted the daemons: {pids:?} then {:?}",
            daemon_pids()
        );
    }
    eprintln!("xtask: slurm-check:   took {:?}", began.elapsed());

    step("a daemon that fails says why (its log's fatal line)");
    down(&[])?;
    write_clustername("another-cluster")?;
    let err = match start("slurmctld", None, &conf) {
        Ok(()) => bail!("slurmctld started on another cluster's state"),
        Err(e) => format!("{e:#}"),
    };
    if !err.contains("fatal:") || !err.to_ascii_uppercase().contains("CLUSTER NAME MISMATCH") {
        bail!("the failure did not name the daemon's fatal line:\n{err}");
    }
    eprintln!(
        "xtask: slurm-check:   said: {}",
        err.lines().find(|l| l.contains("fatal:")).unwrap_or("")
    );

    step("a stale state folder of another cluster does not stop a start");
    down(&[])?;
    write_clustername("local")?;
    ensure_up_and_ours(&conf)?;

    step("the clients reach this cluster through SLURM_CONF, whatever else runs here");
    let name = slurm_output(&conf, "scontrol", &["show", "config"])?
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "ClusterName").then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    if name != CLUSTER {
        bail!("SLURM_CONF={} reaches cluster {name:?}", conf.display());
    }
    let out = Command::new("srun")
        .args([
            "--ntasks=1",
            "--job-name=slurm-check",
            "printenv",
            "SLURM_CLUSTER_NAME",
        ])
        .env("SLURM_CONF", &conf)
        .output()
        .context("running srun")?;
    let ran_on = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || ran_on != CLUSTER {
        bail!(
            "a step ran on {ran_on:?}, not {CLUSTER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    step("a step of one task per node runs on every node, each in its own network");
    let out = Command::new("srun")
        .args([
            &format!("--nodes={TEST_NODES}"),
            &format!("--ntasks={TEST_NODES}"),
            "--job-name=slurm-check",
            "sh",
            "-c",
            "echo $SLURMD_NODENAME $(ip -o -4 addr show scope global | wc -l)",
        ])
        .env("SLURM_CONF", &conf)
        .output()
        .context("running srun")?;
    let mut seen: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    seen.sort();
    let names: Vec<String> = node_states(&conf).into_iter().map(|(n, _)| n).collect();
    let expected: Vec<String> = names.iter().map(|n| format!("{n} 1")).collect();
    if !out.status.success() || seen != expected {
        bail!(
            "a step over {TEST_NODES} nodes printed {seen:?}, not {expected:?} (each node's name \
             and one address of its own): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("xtask: slurm-check: all good; the cluster is up");
    Ok(())
}

fn ensure_up_and_ours(conf: &Path) -> Result<()> {
    ensure()?;
    if daemon_pids().len() != TEST_NODES + 1 {
        bail!(
            "slurm-up returned, but not all its daemons run: {:?}",
            daemon_pids()
        );
    }
    let name = std::fs::read_to_string(home().join("state/clustername")).unwrap_or_default();
    if name.trim() != CLUSTER {
        bail!("the state folder belongs to {name:?}, not {CLUSTER}");
    }
    if node_states(conf).len() != TEST_NODES {
        bail!(
            "sinfo shows {:?}, not {TEST_NODES} nodes",
            node_states(conf)
        );
    }
    Ok(())
}

fn write_clustername(name: &str) -> Result<()> {
    let path = home().join("state/clustername");
    write_as_root(&path, &format!("{name}\n"))
}
