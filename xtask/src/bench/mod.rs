//! `cargo xtask bench`: our tools and the tools people would use instead, side by side, on
//! this machine, in one run. See BENCHMARKS.md for how to read the output.

mod anchors;
mod instructions;
mod measure;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::tasks;
use report::{Machine, Report};
use scenarios::{Bench, Sizes};

const USAGE: &str = "\
Usage: cargo xtask bench [OPTIONS]

Measures the core, export-nb, lorchestra and parallamr against GNU parallel, xargs, a shell
loop, curl and marimushka on this machine, and prints a markdown table. Each figure is the
median of 3 runs (5 for in-process work) after a warm-up run.

Options:
  --quick                every scenario except notebook export, at smaller sizes (< 2 min)
  --only GROUP[,GROUP]   only these scenarios: dispatch, io, pipeline, sweep, export,
                         in-process, memory, slurm (on the project's three-node test
                         cluster, which it starts)
  --json FILE            where the JSON report goes [default: target/bench/latest.json];
                         the table (.md) and the speedup chart (speedup.svg) go beside it
  --baseline FILE        compare with a saved report: exit 1 if a scenario is more than 10%
                         slower (and more than 20 ms)
  --save-baseline FILE   also write the report to FILE, to compare later runs with
  --instructions         instead of timing: count the instructions of the hot paths under
                         callgrind (stable on a busy machine) and fail if one grew by more than
                         10% over xtask/instructions-baseline.json (CI runs this);
                         with --save-baseline (no FILE), write that baseline instead
  -h, --help             this text

Anchors missing from the machine are installed where a package exists (GNU parallel from
Debian, uv and marimushka from PyPI) or reported as skipped with the reason.";

const GROUPS: [&str; 8] = [
    "dispatch",
    "io",
    "pipeline",
    "sweep",
    "export",
    "in-process",
    "memory",
    "slurm",
];

#[derive(Debug, Default)]
struct Options {
    quick: bool,
    only: Option<Vec<String>>,
    json: Option<PathBuf>,
    baseline: Option<PathBuf>,
    save_baseline: Option<PathBuf>,
    instructions: bool,
    save_instructions: bool,
}

fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut o = Options::default();
    if args.iter().any(|a| a == "--instructions") {
        o.instructions = true;
        for a in args {
            match a.as_str() {
                "--instructions" => {}
                "--save-baseline" => o.save_instructions = true,
                "-h" | "--help" => {
                    eprintln!("{USAGE}");
                    return Ok(None);
                }
                other => bail!("`{other}` does not go with --instructions\n\n{USAGE}"),
            }
        }
        return Ok(Some(o));
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--only" => {
                let groups: Vec<String> = value("--only")?.split(',').map(str::to_owned).collect();
                if let Some(bad) = groups.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                    bail!(
                        "--only: unknown scenario `{bad}`; the scenarios are {}",
                        GROUPS.join(", ")
                    );
                }
                o.only = Some(groups);
            }
            "--json" => o.json = Some(value("--json")?.into()),
            "--baseline" => o.baseline = Some(value("--baseline")?.into()),
            "--save-baseline" => o.save_baseline = Some(value("--save-baseline")?.into()),
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown option `{other}`\n\n{USAGE}"),
        }
    }
    Ok(Some(o))
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let Some(opts) = parse(args)? else {
        return Ok(());
    };
    if opts.instructions {
        build_release()?;
        return instructions::run(opts.save_instructions);
    }
    // Read the baseline first: a typo in its path should not cost a whole bench run.
    let baseline: Option<Report> = match &opts.baseline {
        Some(path) => Some(read_report(path)?),
        None => None,
    };
    let wanted = |g: &str| {
        let selected = opts.only.as_ref().is_none_or(|o| o.iter().any(|x| x == g));
        selected && !(opts.quick && g == "export" && opts.only.is_none())
    };

    let root = tasks::root();
    build_release()?;
    let started = Instant::now();
    let sizes = if opts.quick {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    let anchors = anchors::Anchors::find(wanted("export"));
    let mut bench = Bench::new(
        sizes,
        root.join("target/release"),
        root.join("crates/export-cli/examples/notebooks"),
        anchors,
    )?;
    for group in GROUPS {
        if !wanted(group) {
            continue;
        }
        match group {
            "dispatch" => bench.dispatch(),
            "io" => bench.io(),
            "pipeline" => bench.pipeline(),
            "sweep" => bench.sweep(),
            "export" => bench.export(),
            "in-process" => bench.in_process(),
            "slurm" => bench.slurm(),
            _ => bench.memory(),
        }
        .with_context(|| format!("scenario {group}"))?;
    }

    let report = Report {
        machine: machine(bench.anchors.versions()),
        mode: if opts.quick { "quick" } else { "full" }.to_owned(),
        commit: git_commit(),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        scenarios: std::mem::take(&mut bench.scenarios),
        checks: std::mem::take(&mut bench.checks),
    };
    finish(&report, &opts, baseline, &root, started)
}

/// Write the report, table and chart, print the table, and compare with the baseline.
fn finish(
    report: &Report,
    opts: &Options,
    baseline: Option<Report>,
    root: &Path,
    started: Instant,
) -> Result<()> {
    let json_path = opts
        .json
        .clone()
        .unwrap_or_else(|| root.join("target/bench/latest.json"));
    let table = report::markdown(report);
    write(&json_path, &serde_json::to_string_pretty(report)?)?;
    write(&json_path.with_extension("md"), &table)?;
    let chart = report::speedup_svg(report)
        .map(|svg| {
            let path = json_path.with_file_name("speedup.svg");
            write(&path, &svg).map(|()| path)
        })
        .transpose()?;
    if let Some(path) = &opts.save_baseline {
        write(path, &serde_json::to_string_pretty(report)?)?;
    }

    println!("\n{table}");
    eprintln!(
        "xtask: bench took {:.0} s; report {}{}",
        started.elapsed().as_secs_f64(),
        json_path.display(),
        chart
            .map(|c| format!(", chart {}", c.display()))
            .unwrap_or_default()
    );
    for c in report.checks.iter().filter(|c| !c.passed) {
        eprintln!("xtask: check failed: {} ({})", c.name, c.detail);
    }
    if let Some(base) = baseline {
        if base.mode != report.mode {
            eprintln!(
                "xtask: the baseline is a {} run and this a {} run: only scenarios of the same \
                 name and size are compared",
                base.mode, report.mode
            );
        }
        let regressions = report::regressions(&base, report);
        if !regressions.is_empty() {
            for r in &regressions {
                eprintln!(
                    "xtask: slower than the baseline: {}: {:.3} s -> {:.3} s ({:+.0}%)",
                    r.name,
                    r.baseline,
                    r.now,
                    (r.now / r.baseline - 1.0) * 100.0
                );
            }
            bail!(
                "{} scenario(s) more than {:.0}% slower than the baseline {}",
                regressions.len(),
                (report::THRESHOLD - 1.0) * 100.0,
                opts.baseline.as_deref().unwrap_or(Path::new("")).display()
            );
        }
        eprintln!("xtask: no scenario is more than 10% slower than the baseline");
    }
    Ok(())
}

fn read_report(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the baseline {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a bench report (write one with --save-baseline)",
            path.display()
        )
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn machine(anchors: Vec<(String, String)>) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or_else(
            || "unknown OS".to_owned(),
            |v| v.trim_matches('"').to_owned(),
        );
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        cpu,
        memory_gib,
        os,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        rustc,
        anchors,
    }
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(tasks::root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

/// The tools and the probe, in release mode.
fn build_release() -> Result<()> {
    tasks::run(Command::new(env!("CARGO")).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "fanout",
        "--example",
        "probe",
        "-p",
        "export-nb",
        "-p",
        "lorchestra",
        "-p",
        "parallamr",
        // With a target named (--example), cargo builds only the named targets: the tools'
        // binaries must be asked for too.
        "--bins",
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_parse_and_bad_ones_say_what_is_wrong() {
        let o = parse(&strings(&[
            "--quick",
            "--only",
            "io,memory",
            "--json",
            "x.json",
        ]))
        .unwrap()
        .unwrap();
        assert!(o.quick);
        assert_eq!(o.only.unwrap(), ["io", "memory"]);
        assert_eq!(o.json.unwrap(), PathBuf::from("x.json"));
        let e = parse(&strings(&["--only", "disk"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown scenario `disk`"), "{e}");
        let e = parse(&strings(&["--baseline"])).unwrap_err().to_string();
        assert!(e.contains("--baseline needs a value"), "{e}");
    }
}
