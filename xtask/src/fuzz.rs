//! `cargo xtask fuzz`: every fuzz target in `fuzz/` (one per parser of user input), each for a
//! while, with cargo-fuzz and libFuzzer on the nightly toolchain.
//!
//! Each target starts from its seeds (`fuzz/seeds/<target>`, in the repository) and its
//! working corpus (`fuzz/corpus/<target>`, kept between runs, not in the repository). A crash
//! is written to `fuzz/artifacts/<target>/` and fails the task; reproduce it with the command
//! printed. Built without a sanitizer (the code under test is safe Rust: what we look for is
//! panics, including overflow checks, which stay on), so each second runs more inputs.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::tasks;

pub(crate) const USAGE: &str = "\
Usage: cargo xtask fuzz [--seconds N] [--only TARGET[,TARGET]]

Run each fuzz target for N seconds (default 60), from its seeds in fuzz/seeds/ and its corpus
in fuzz/corpus/. Installs cargo-fuzz and the nightly toolchain if they are missing. Prints
the executions per target; fails if a target crashed (the input is in fuzz/artifacts/).

Targets: pipeline_project, run_record (lorchestra); experiments, results_resume (parallamr);
pyproject, notebook, pep723, manifest (export-nb); shell_values (the core: a value in a shell script stays
data, with sh as the oracle).";

/// The targets, in `fuzz/fuzz_targets/`.
pub(crate) const TARGETS: [&str; 9] = [
    "pipeline_project",
    "run_record",
    "experiments",
    "results_resume",
    "pyproject",
    "notebook",
    "pep723",
    "manifest",
    "shell_values",
];

struct Args {
    seconds: u64,
    only: Vec<String>,
}

fn parse(args: &[String]) -> Result<Option<Args>> {
    let mut parsed = Args {
        seconds: 60,
        only: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--seconds" => {
                let v = it.next().context("--seconds needs a number")?;
                parsed.seconds = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .with_context(|| format!("--seconds {v}: not a whole number above 0"))?;
            }
            "--only" => {
                let v = it.next().context("--only needs target names")?;
                for t in v.split(',') {
                    if !TARGETS.contains(&t) {
                        bail!(
                            "--only {t}: no such target; the targets: {}",
                            TARGETS.join(", ")
                        );
                    }
                    parsed.only.push(t.to_owned());
                }
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(Some(parsed))
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let Some(args) = parse(args)? else {
        eprintln!("{USAGE}");
        return Ok(());
    };
    ensure_tools()?;
    let root = tasks::root();
    tasks::run(Command::new("cargo").args(["+nightly", "fuzz", "build", "-s", "none"]))?;
    let targets: Vec<&str> = if args.only.is_empty() {
        TARGETS.to_vec()
    } else {
        TARGETS
            .iter()
            .copied()
            .filter(|t| args.only.iter().any(|o| o == t))
            .collect()
    };
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for target in targets {
        let outcome = fuzz_one(&root, target, args.seconds)?;
        if !outcome.ok {
            failed.push(match &outcome.artifact {
                Some(input) => format!(
                    "{target} crashed on {input} (again: cargo +nightly fuzz run -s none {target} {input})"
                ),
                None => format!("{target} did not run (see its output above)"),
            });
        }
        rows.push((target, outcome));
    }
    eprintln!(
        "\n{:<18} {:>8} {:>12} {:>9} {:>7}",
        "target", "seconds", "executions", "per sec", "corpus"
    );
    for (target, o) in &rows {
        eprintln!(
            "{target:<18} {:>8} {:>12} {:>9} {:>7}{}",
            args.seconds,
            o.executions.map_or("?".to_owned(), |e| e.to_string()),
            o.executions
                .map_or("?".to_owned(), |e| (e / args.seconds.max(1)).to_string()),
            o.corpus,
            match (o.ok, &o.artifact) {
                (true, _) => "",
                (false, Some(_)) => "  CRASHED",
                (false, None) => "  FAILED",
            }
        );
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

struct Outcome {
    ok: bool,
    executions: Option<u64>,
    corpus: usize,
    /// The input that crashed it, if it crashed (a target can also fail to build).
    artifact: Option<String>,
}

fn fuzz_one(root: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = root.join("fuzz/seeds").join(target);
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let output = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", "-s", "none", target])
        .arg(&corpus)
        .arg(&seeds)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            // The code under test prints warnings (a manifest key it refuses, a changed job);
            // the fuzzer's own report goes to stderr regardless.
            "-close_fd_mask=3",
            "-print_final_stats=1",
        ])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("could not start cargo fuzz run {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let executions = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok());
    let ok = output.status.success();
    // libFuzzer: "Test unit written to fuzz/artifacts/<target>/crash-...".
    let artifact = log.lines().find_map(|l| {
        l.split_once("Test unit written to ")
            .map(|(_, p)| p.trim().to_owned())
    });
    if !ok {
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
    }
    let corpus = std::fs::read_dir(&corpus).map_or(0, Iterator::count);
    Ok(Outcome {
        ok,
        executions,
        corpus,
        artifact,
    })
}

/// cargo-fuzz and the nightly toolchain, installed if missing.
fn ensure_tools() -> Result<()> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !nightly {
        tasks::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !fuzz {
        tasks::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}
