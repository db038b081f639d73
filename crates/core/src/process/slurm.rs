//! The Slurm launcher: a task's command runs as a Slurm job step, started with `srun`.
//!
//! Why `srun` (and not `sbatch` plus polling): `srun` blocks until the step ends, forwards the
//! step's stdout and stderr, exits with its exit code, and cancels the step when it gets
//! SIGTERM. So a task on the cluster is, to the rest of the runner, a local process like any
//! other: the worker pool bounds how many steps run at once, the timeout and cancel paths kill
//! `srun` (which cancels the step), and output, exit codes, logs and retries work unchanged.
//! Where `srun` alone cannot cancel (it was killed with SIGKILL after the grace period), the
//! runner `scancel`s the job by id.
//!
//! Each step carries the job's cookie (`FANOUT_JOB_<session>=<n>`) as its Slurm comment, which
//! is how the runner finds its job id (`squeue --states=all`) to record it and to cancel it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

/// Where and how big a Slurm job step is. Fields left `None` use the cluster's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slurm {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// CPUs for the task (`--cpus-per-task`).
    pub cpus: Option<u32>,
    /// Memory for the job (`--mem`, e.g. `8G`).
    pub mem: Option<String>,
    /// More `srun` options, passed as given (`--gres=gpu:1`, `--qos=short`, ...).
    pub args: Vec<String>,
}

/// Why the Slurm launcher cannot be used here; found before any task starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "srun not found on PATH: run this on a Slurm login node, or install Slurm's client \
         commands (Debian: apt-get install slurm-client)"
    )]
    NoSrun,
    #[error("could not ask Slurm for its partitions (sinfo): {0}")]
    Sinfo(String),
    /// `--slurm-mode packed`: Slurm did not grant the run's allocation, or did not say where.
    #[error("Slurm did not give the allocation: {0}")]
    Allocation(String),
    /// `--slurm-mode packed`: an option it cannot honour, or a size that is not one.
    #[error("{0}")]
    PackedOption(String),
    #[error(
        "no partition given and the cluster has no default partition; name one, e.g. \
         partition = \"{example}\" (partitions here: {known})"
    )]
    NoPartition { example: String, known: String },
    #[error("unknown Slurm partition `{name}` (partitions here: {known})")]
    UnknownPartition { name: String, known: String },
    #[error("Slurm options ({0}) need the slurm backend, but the backend is local")]
    ArgsWithoutSlurm(String),
    #[error("unknown backend `{0}`; the backends are local and slurm")]
    UnknownBackend(String),
}

impl Slurm {
    /// `self` with every setting `over` has replacing ours; `over`'s extra arguments come
    /// after ours (so they win where srun takes the last value).
    #[must_use]
    pub fn merged_with(&self, over: &Slurm) -> Slurm {
        Slurm {
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            account: over.account.clone().or_else(|| self.account.clone()),
            cpus: over.cpus.or(self.cpus),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            args: self.args.iter().chain(&over.args).cloned().collect(),
        }
    }

    /// The partition the steps will use: the `partition` setting, else a `--partition` or `-p`
    /// in the extra arguments (the last one wins, as in srun).
    pub fn effective_partition(&self) -> Option<String> {
        let mut found = self.partition.clone();
        let mut args = self.args.iter();
        while let Some(a) = args.next() {
            if let Some(v) = a.strip_prefix("--partition=") {
                found = Some(v.to_owned());
            } else if a == "--partition" || a == "-p" {
                found = args.next().cloned().or(found);
            } else if let Some(v) = a.strip_prefix("-p").filter(|v| !v.is_empty()) {
                found = Some(v.to_owned());
            }
        }
        found
    }

    /// Check, before anything runs, that `srun` is here and the partition exists (or that the
    /// cluster has a default one).
    ///
    /// # Errors
    /// [`SlurmError`], naming what is missing and the partitions that exist.
    pub fn check(&self) -> Result<(), SlurmError> {
        if which::which("srun").is_err() {
            return Err(SlurmError::NoSrun);
        }
        let (partitions, default) = partitions()?;
        let known = || partitions.iter().cloned().collect::<Vec<_>>().join(", ");
        match self.effective_partition() {
            Some(name) if !partitions.contains(&name) => Err(SlurmError::UnknownPartition {
                name,
                known: known(),
            }),
            None if default.is_none() => Err(SlurmError::NoPartition {
                example: partitions.iter().next().cloned().unwrap_or_default(),
                known: known(),
            }),
            _ => Ok(()),
        }
    }

    /// The step's name, one task, `marker` as the job's comment, the time limit from the
    /// command's `timeout` (a minute more: our own timer acts first, the cluster's is a
    /// backstop), then the settings and the extra arguments.
    pub(super) fn srun_options(
        &self,
        job_name: &str,
        timeout: Option<Duration>,
        marker: Option<&str>,
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            format!("--job-name={job_name}").into(),
            "--ntasks=1".into(),
            "--quit-on-interrupt".into(),
        ];
        if let Some(m) = marker {
            args.push(format!("--comment={m}").into());
        }
        if let Some(limit) = timeout {
            args.push(format!("--time={}", minutes(limit) + 1).into());
        }
        let settings = [
            ("--partition", self.partition.clone()),
            ("--account", self.account.clone()),
            ("--cpus-per-task", self.cpus.map(|c| c.to_string())),
            ("--mem", self.mem.clone()),
        ];
        for (flag, value) in settings {
            if let Some(v) = value {
                args.push(format!("{flag}={v}").into());
            }
        }
        args.extend(self.args.iter().map(OsString::from));
        args
    }
}

fn minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

/// The cluster's partitions, and the default one (sinfo marks it with `*`).
#[expect(
    clippy::disallowed_methods,
    reason = "the process module runs Slurm's own commands"
)]
fn partitions() -> Result<(BTreeSet<String>, Option<String>), SlurmError> {
    let out = std::process::Command::new("sinfo")
        .args(["--noheader", "--format=%P"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| SlurmError::Sinfo(e.to_string()))?;
    if !out.status.success() {
        return Err(SlurmError::Sinfo(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let mut all = BTreeSet::new();
    let mut default = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.trim();
        if let Some(d) = name.strip_suffix('*') {
            default = Some(d.to_owned());
            all.insert(d.to_owned());
        } else if !name.is_empty() {
            all.insert(name.to_owned());
        }
    }
    Ok((all, default))
}

/// The id of our job named `name` whose comment is `marker`, and the node(s) it ran on (`%N`,
/// e.g. `node2` or `node[1-3]`), if Slurm knows it. The query is
/// narrowed to our own jobs of that name: on a shared cluster `--states=all` alone would list
/// everyone's recent jobs. Asked up to 5 times, 100 ms apart: under load squeue sometimes
/// answers without a job that has just ended (seen on the test cluster with 4 steps ending at
/// once).
pub(crate) fn job(name: &str, marker: &str) -> Option<(u64, String)> {
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(job) = query_job(name, marker) {
            return Some(job);
        }
    }
    None
}

#[expect(
    clippy::disallowed_methods,
    reason = "the process module runs Slurm's own commands"
)]
fn query_job(name: &str, marker: &str) -> Option<(u64, String)> {
    // `--name` takes a comma-separated list: a name with a comma would never match. Names
    // without one narrow the query; the comment (our cookie) decides either way.
    let mut cmd = std::process::Command::new("squeue");
    cmd.args(["--noheader", "--states=all", "--me", "--format=%i|%k|%N"]);
    if !name.contains(',') {
        cmd.arg(format!("--name={name}"));
    }
    let listing = output_within(&mut cmd, HELPER_LIMIT)?;
    listing.lines().find_map(|l| {
        let mut fields = l.trim().splitn(3, '|');
        let (id, comment) = (fields.next()?, fields.next()?);
        let nodes = fields.next().unwrap_or_default().trim().to_owned();
        (comment == marker)
            .then(|| Some((id.parse().ok()?, nodes)))
            .flatten()
    })
}

/// How long a Slurm helper command (squeue, scancel, sinfo) may take.
const HELPER_LIMIT: Duration = Duration::from_secs(15);

/// Cancel every active Slurm job of the session whose cookie variable is `var` (their comment
/// is `var=<seq>`). For the paths that SIGKILL `srun` (the second Ctrl-C, the guardian): a
/// killed `srun` (SIGKILL) cannot cancel its job, which would run on until its time limit. Each
/// command is given `HELPER_LIMIT` at most: a dying tool must not hang on a slow controller.
#[expect(
    clippy::disallowed_methods,
    reason = "the process module runs Slurm's own commands"
)]
pub(crate) fn cancel_session(var: &str) {
    let prefix = format!("{var}=");
    let Some(listing) = output_within(
        std::process::Command::new("squeue").args([
            "--noheader",
            "--me",
            "--states=PENDING,RUNNING,CONFIGURING,SUSPENDED,REQUEUED,RESIZING",
            "--format=%i|%k",
        ]),
        HELPER_LIMIT,
    ) else {
        return;
    };
    let ids: Vec<String> = listing
        .lines()
        .filter_map(|l| {
            let (id, comment) = l.trim().split_once('|')?;
            comment.starts_with(&prefix).then(|| id.to_owned())
        })
        .collect();
    if !ids.is_empty() {
        let _ = output_within(
            std::process::Command::new("scancel")
                .arg("--quiet")
                .args(&ids),
            Duration::from_secs(10),
        );
    }
}

/// Run `cmd` (stdin and stderr closed) and return its stdout, killing it past `limit`.
fn output_within(cmd: &mut std::process::Command, limit: Duration) -> Option<String> {
    run_within(cmd, limit).map(|(_, out)| out)
}

/// [`output_within`], with how the command exited.
fn run_within(
    cmd: &mut std::process::Command,
    limit: Duration,
) -> Option<(std::process::ExitStatus, String)> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    // Its own process group: the terminal's Ctrl-C is ours to handle, not the helper's.
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    Some((status, out))
}

/// Whether a [`failure`] message says the job was refused (so it never had an id).
pub(crate) fn refused(message: &str) -> bool {
    message.starts_with("Slurm rejected the job")
}

/// Cancel job (or step, `JOB.STEP`) `id` on the cluster (quietly: it may have ended already).
#[expect(
    clippy::disallowed_methods,
    reason = "the process module runs Slurm's own commands"
)]
pub(crate) fn cancel(id: &str) {
    let _ = output_within(
        std::process::Command::new("scancel").args(["--quiet", id]),
        HELPER_LIMIT,
    );
}

/// What Slurm command `command_line` prints (within the helpers' time limit), if it runs and
/// succeeds.
#[expect(
    clippy::disallowed_methods,
    reason = "the process module runs Slurm's own commands"
)]
pub(crate) fn query(command_line: &[&str]) -> Option<String> {
    let (program, args) = command_line.split_first()?;
    run_within(std::process::Command::new(program).args(args), HELPER_LIMIT)
        .filter(|(status, _)| status.success())
        .map(|(_, out)| out)
}

/// Why srun itself failed, from its stderr: the scheduler's refusal or a node failure, as a
/// message for the task. `None` when the step ran and the program's own exit code stands.
pub(crate) fn failure(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        let l = l.trim();
        if let Some(why) = l.strip_prefix("srun: error: Unable to allocate resources: ") {
            Some(format!("Slurm rejected the job: {why}"))
        } else if l.starts_with("srun: ") && (l.contains("Node failure") || l.contains("NODE_FAIL"))
        {
            Some(format!("Slurm node failure: {l}"))
        } else if l.starts_with("srun: error: ") && l.contains("invalid") {
            Some(format!(
                "Slurm rejected the job: {}",
                &l["srun: error: ".len()..]
            ))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_comes_from_the_setting_or_the_extra_arguments() {
        let s = |p: Option<&str>, args: &[&str]| Slurm {
            partition: p.map(str::to_owned),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Slurm::default()
        };
        assert_eq!(s(None, &[]).effective_partition(), None);
        assert_eq!(
            s(Some("cpu"), &[]).effective_partition().as_deref(),
            Some("cpu")
        );
        assert_eq!(
            s(Some("cpu"), &["--partition=gpu"])
                .effective_partition()
                .as_deref(),
            Some("gpu")
        );
        assert_eq!(
            s(None, &["-p", "short"]).effective_partition().as_deref(),
            Some("short")
        );
        assert_eq!(
            s(None, &["-plong", "--qos=x"])
                .effective_partition()
                .as_deref(),
            Some("long")
        );
    }

    #[test]
    fn merged_settings_take_the_override_and_keep_both_argument_lists() {
        let base = Slurm {
            partition: Some("cpu".into()),
            mem: Some("1G".into()),
            args: vec!["--qos=a".into()],
            ..Slurm::default()
        };
        let over = Slurm {
            mem: Some("8G".into()),
            cpus: Some(4),
            args: vec!["--qos=b".into()],
            ..Slurm::default()
        };
        let m = base.merged_with(&over);
        assert_eq!(m.partition.as_deref(), Some("cpu"));
        assert_eq!(m.mem.as_deref(), Some("8G"));
        assert_eq!(m.cpus, Some(4));
        assert_eq!(m.args, ["--qos=a", "--qos=b"]);
    }

    #[test]
    fn srun_refusals_and_node_failures_become_the_message() {
        assert_eq!(
            failure("srun: error: Memory specification can not be satisfied\nsrun: error: Unable to allocate resources: Requested node configuration is not available\n").as_deref(),
            Some("Slurm rejected the job: Requested node configuration is not available")
        );
        assert!(
            failure("srun: error: Node failure on node7\n")
                .unwrap()
                .contains("node failure")
        );
        assert_eq!(
            failure("srun: error: vm: task 0: Exited with exit code 3\n"),
            None
        );
        assert_eq!(
            failure("Traceback ...\nValueError: invalid literal\n"),
            None
        );
        assert_eq!(
            failure("simulating: Node failure on node7 (the program's own words)\n"),
            None,
            "only srun's own lines count"
        );
    }
}
