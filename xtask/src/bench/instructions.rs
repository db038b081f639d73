//! `cargo xtask bench --instructions`: instruction counts of the hot paths, under callgrind,
//! against a committed baseline. A gate that can run on a shared, noisy machine: the count of
//! a binary on an input does not depend on what else the machine does (wall time does).
//!
//! Only deterministic work is measured: serial strategies and the parent process (callgrind
//! does not follow children), so a count moves only when the code does: runs differ by under
//! 0.2%, except the lorchestra stage, whose record writer flushes its journal (and, before the
//! journal, rewrote `run.json`) as often as updates arrive apart (gathering those that come
//! together), so timing changes how often: its runs differed by up to 20% (542-650 M). That one runs twice, keeps the smaller count, and has
//! [`LIMIT_PACED`]; the others fail when a count grows by more than [`LIMIT`] over the
//! baseline (`xtask/instructions-baseline.json`). `--save-baseline` writes the baseline from
//! this run: commit it with the reason for the change. Each workload runs with only `PATH` and
//! `HOME` set, so a count does not depend on the caller's environment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::tasks;

/// A count may grow by this factor before the gate fails.
const LIMIT: f64 = 1.10;
/// The same, for a workload whose count depends on timing (see the module docs).
const LIMIT_PACED: f64 = 1.25;
/// The workload paced by the clock.
const PACED: &str = "lorchestra: a stage of 1,000 jobs, one worker (parent process)";

/// The baseline, in the repository.
fn baseline_path() -> PathBuf {
    tasks::root().join("xtask/instructions-baseline.json")
}

/// The workloads: a name and the command (binary in `target/release`, arguments).
fn workloads(release: &Path, fixtures: &Path) -> Vec<(&'static str, PathBuf, Vec<String>)> {
    let probe = release.join("examples/probe");
    let lorchestra = release.join("lorchestra");
    let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    vec![
        (
            "dispatch 200 x true, serial (parent process)",
            probe.clone(),
            s(&["dispatch", "200", "1"]),
        ),
        (
            "100,000 tiny items, Pool::map serial",
            probe.clone(),
            s(&["cpu", "tiny", "100000", "map-serial"]),
        ),
        (
            "100,000 tiny tasks, Pool::run serial",
            probe,
            s(&["cpu", "tiny", "100000", "serial"]),
        ),
        (
            "lorchestra: a stage of 1,000 jobs, one worker (parent process)",
            lorchestra.clone(),
            vec![
                "--dir".to_owned(),
                fixtures.join("stage").display().to_string(),
                "pipeline".to_owned(),
                "stage".to_owned(),
                "--max-workers".to_owned(),
                "1".to_owned(),
                "--quiet".to_owned(),
            ],
        ),
        (
            "lorchestra: parse and plan a 10,000-job pipeline (--dry-run)",
            lorchestra,
            vec![
                "--dir".to_owned(),
                fixtures.join("big").display().to_string(),
                "pipeline".to_owned(),
                "big".to_owned(),
                "--dry-run".to_owned(),
            ],
        ),
    ]
}

/// The lorchestra projects the workloads run.
fn write_fixtures(dir: &Path) -> Result<()> {
    let pipeline = |jobs: usize, command: &str| {
        let mut toml = String::from("[[stages]]\nname = \"only\"\njobs = [");
        for j in 0..jobs {
            let _ = write!(toml, "{}\"j{j}\"", if j == 0 { "" } else { ", " });
        }
        toml.push_str("]\n");
        for j in 0..jobs {
            let _ = write!(toml, "\n[jobs.j{j}]\ncommand = {command}\n");
        }
        toml
    };
    for (project, name, jobs, command) in [
        ("stage", "stage", 1_000, "[\"true\"]"),
        ("big", "big", 10_000, "\"echo big && true\""),
    ] {
        let pipelines = dir.join(project).join("pipelines");
        std::fs::create_dir_all(&pipelines)
            .with_context(|| format!("creating {}", pipelines.display()))?;
        std::fs::write(
            pipelines.join(format!("{name}.toml")),
            pipeline(jobs, command),
        )?;
        // Each run starts from no earlier runs.
        let _ = std::fs::remove_dir_all(dir.join(project).join(".lorchestra"));
    }
    Ok(())
}

/// The instructions the command executed in its own process, by callgrind.
fn count(exe: &Path, args: &[String], cwd: &Path) -> Result<u64> {
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--trace-children=no",
        ])
        .arg(exe)
        .args(args)
        .current_dir(cwd)
        // The same environment everywhere: every job copies its parent's environment, so the
        // count of a dispatch grows with the number of variables (CI sets more than a shell).
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .output()
        .context("could not run valgrind (apt-get install valgrind)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "{} {} failed under callgrind ({}):\n{stderr}",
            exe.display(),
            args.join(" "),
            out.status
        );
    }
    stderr
        .lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().to_owned())
        })
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no instruction count in callgrind's output:\n{stderr}"))
}

pub(crate) fn run(save: bool) -> Result<()> {
    if !tasks::available("valgrind") {
        tasks::apt_install("valgrind")?;
    }
    let root = tasks::root();
    let release = root.join("target/release");
    let fixtures = root.join("target/bench/instructions");
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (name, exe, args) in workloads(&release, &fixtures) {
        let runs = if name == PACED { 2 } else { 1 };
        let mut n = u64::MAX;
        for _ in 0..runs {
            write_fixtures(&fixtures)?;
            n = n.min(count(&exe, &args, &fixtures)?);
        }
        eprintln!("  {name:<66} {n:>14}");
        counts.insert(name.to_owned(), n);
    }
    let path = baseline_path();
    if save {
        let mut json = serde_json::to_string_pretty(&counts).expect("counts serialize");
        json.push('\n');
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: wrote the baseline {}", path.display());
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the baseline {} (make one with --instructions --save-baseline)",
            path.display()
        )
    })?;
    let baseline: BTreeMap<String, u64> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a baseline", path.display()))?;
    let mut grown = Vec::new();
    eprintln!(
        "\n{:<66} {:>14} {:>14} {:>7}",
        "workload", "baseline", "now", "ratio"
    );
    for (name, now) in &counts {
        let Some(&then) = baseline.get(name) else {
            eprintln!("{name:<66} {:>14} {now:>14}   (new)", "-");
            continue;
        };
        let ratio = *now as f64 / then.max(1) as f64;
        let limit = if name == PACED { LIMIT_PACED } else { LIMIT };
        eprintln!("{name:<66} {then:>14} {now:>14} {ratio:>6.3}x");
        if ratio > limit {
            grown.push(format!(
                "{name}: {then} -> {now} ({ratio:.3}x, more than {:.0}%)",
                (limit - 1.0) * 100.0
            ));
        }
    }
    if !grown.is_empty() {
        bail!(
            "instruction counts grew:\n  {}\nIf the change is deliberate, accept it with \
             `cargo xtask bench --instructions --save-baseline` and say why in the commit.",
            grown.join("\n  ")
        );
    }
    eprintln!(
        "xtask: every count within {:.0}% of the baseline",
        (LIMIT - 1.0) * 100.0
    );
    Ok(())
}
