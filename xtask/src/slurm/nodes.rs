//! The test cluster's nodes. One node is this machine at 127.0.0.1. Several nodes are
//! "hosts" on this machine, each slurmd in a network namespace of its own (`fanout-nI`, address
//! 10.231.0.1I), joined by a bridge (`fanout-br`, 10.231.0.1, where slurmctld and the clients
//! are). They share the file system and the process table with the host, as the nodes of a
//! cluster share a network file system; what separates them is the network, which is what
//! Slurm uses to tell nodes apart. Killing a node's slurmd and every process in its namespace
//! is a node failing.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The bridge the namespaces hang from; the controller's address is on it.
const BRIDGE: &str = "fanout-br";
/// The project's own private subnet: .1 is the bridge, .11 and up the nodes.
const SUBNET: &str = "10.231.0";
/// Prefix of the namespaces (and node names) of a multi-node cluster.
const PREFIX: &str = "fanout-n";
/// The most nodes `slurm-up --nodes` makes.
pub(crate) const MAX_NODES: usize = 8;

/// A node of the test cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) addr: String,
    /// Its network namespace; `None`: this machine's own network (a one-node cluster).
    pub(crate) netns: Option<String>,
}

/// The nodes of a cluster of `count`, and the controller's address.
pub(crate) fn layout(count: usize) -> (Vec<Node>, String) {
    if count <= 1 {
        let node = Node {
            name: super::hostname(),
            addr: "127.0.0.1".to_owned(),
            netns: None,
        };
        return (vec![node], "127.0.0.1".to_owned());
    }
    let nodes = (1..=count)
        .map(|i| Node {
            name: format!("{PREFIX}{i}"),
            addr: format!("{SUBNET}.{}", 10 + i),
            netns: Some(format!("{PREFIX}{i}")),
        })
        .collect();
    (nodes, format!("{SUBNET}.1"))
}

/// The bridge with the controller's address, and a namespace per node wired to it (a veth
/// pair: `fanout-vI` on the bridge, `fanout-eI` in the namespace). Idempotent.
pub(crate) fn up(nodes: &[Node], controller: &str) -> Result<()> {
    if nodes.iter().all(|n| n.netns.is_none()) {
        return Ok(());
    }
    if !exists_link(BRIDGE) {
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{controller}/24"), "dev", BRIDGE])?;
    }
    ip(&["link", "set", BRIDGE, "up"])?;
    for (i, node) in nodes.iter().enumerate() {
        let Some(ns) = &node.netns else { continue };
        let (host_end, node_end) = (format!("fanout-v{}", i + 1), format!("fanout-e{}", i + 1));
        if !Path::new("/run/netns").join(ns).exists() {
            // A host end left from a namespace removed without it would wire nothing.
            if exists_link(&host_end)
                && let Err(e) = ip(&["link", "del", &host_end])
                && exists_link(&host_end)
            {
                return Err(e);
            }
            ip(&["netns", "add", ns])?;
        }
        if !exists_link(&host_end) {
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &node_end,
            ])?;
            ip(&["link", "set", &node_end, "netns", ns])?;
            in_ns(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", node.addr),
                    "dev",
                    &node_end,
                ],
            )?;
        }
        ip(&["link", "set", &host_end, "master", BRIDGE])?;
        ip(&["link", "set", &host_end, "up"])?;
        in_ns(ns, &["link", "set", &node_end, "up"])?;
        in_ns(ns, &["link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Remove every namespace of ours (killing what still runs in it) and the bridge.
pub(crate) fn down() -> Result<()> {
    for ns in ours() {
        for pid in pids_in(&ns) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        ip(&["netns", "del", &ns])?;
    }
    // Removing a namespace does not always remove the host end of its veth pair (gVisor), or
    // removes it a moment later: one that vanished meanwhile is gone, as wanted.
    for link in links_named("fanout-v") {
        if let Err(e) = ip(&["link", "del", &link])
            && exists_link(&link)
        {
            return Err(e);
        }
    }
    if exists_link(BRIDGE) {
        ip(&["link", "del", BRIDGE])?;
    }
    Ok(())
}

/// The namespaces of ours that exist.
pub(crate) fn ours() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// The processes in namespace `ns` (`ip netns pids`).
pub(crate) fn pids_in(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `program` to run in `node`'s network (its namespace, or this machine's). Only the network
/// is entered (`nsenter --net`): `ip netns exec` would also mount a fresh /sys, hiding the
/// cgroup file system slurmd reads.
pub(crate) fn command_on(node: &Node, program: &str) -> Command {
    match &node.netns {
        None => crate::tasks::as_root(program),
        Some(ns) => {
            let mut cmd = crate::tasks::as_root("nsenter");
            cmd.arg(format!("--net=/run/netns/{ns}")).arg(program);
            cmd
        }
    }
}

/// This machine's network links whose names start with `prefix`.
fn links_named(prefix: &str) -> Vec<String> {
    Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    let name = l.split(':').nth(1)?.trim();
                    let name = name.split('@').next()?;
                    name.starts_with(prefix).then(|| name.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn exists_link(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

fn ip(args: &[&str]) -> Result<()> {
    let out = crate::tasks::as_root("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2); the multi-node cluster needs it")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}. The multi-node test cluster needs network namespaces and \
             bridges (root, CAP_NET_ADMIN); `cargo xtask slurm-up --nodes 1` needs neither",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
