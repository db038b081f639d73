//! Timing: a warm-up, then the median of several runs, of a process or of the probe.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// One measured figure: the median and every run behind it.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) seconds: f64,
    pub(crate) runs: Vec<f64>,
    /// The largest peak resident set of the runs, in KiB, when the program reports it.
    pub(crate) peak_rss_kib: Option<u64>,
    /// The median CPU seconds of the runs, where they were measured.
    pub(crate) cpu_seconds: Option<f64>,
}

/// How often to run a workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) warmup: bool,
    pub(crate) runs: usize,
}

impl Plan {
    pub(crate) const fn new(warmup: bool, runs: usize) -> Self {
        Plan { warmup, runs }
    }
}

/// What one run gave.
pub(crate) struct Sample {
    pub(crate) seconds: f64,
    pub(crate) peak_rss_kib: Option<u64>,
    /// CPU time (user + system) of the command and every process it waited for.
    pub(crate) cpu_seconds: Option<f64>,
}

/// CPU time of our waited-for children so far (user + system), in seconds: `cutime` and
/// `cstime` of `/proc/self/stat`, in Linux's user-visible clock ticks (100 a second).
pub(crate) fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, so cutime (16) and cstime (17) are at 13, 14.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(13) + ticks(14)) / 100.0
}

/// Run `once` per `plan` and keep the median. Progress goes to stderr.
pub(crate) fn measure(
    label: &str,
    plan: Plan,
    mut once: impl FnMut() -> Result<Sample>,
) -> Result<Figure> {
    eprint!("  {label:<48}");
    if plan.warmup {
        once().with_context(|| format!("{label} (warm-up)"))?;
    }
    let mut runs = Vec::with_capacity(plan.runs);
    let mut cpu = Vec::new();
    let mut peak = None;
    for _ in 0..plan.runs.max(1) {
        let s = once().with_context(|| label.to_owned())?;
        eprint!(" {:.3}", s.seconds);
        runs.push(s.seconds);
        cpu.extend(s.cpu_seconds);
        peak = peak.max(s.peak_rss_kib);
    }
    let seconds = median(&runs);
    eprintln!("  -> {seconds:.3} s");
    Ok(Figure {
        seconds,
        runs,
        peak_rss_kib: peak,
        cpu_seconds: (!cpu.is_empty()).then(|| median(&cpu)),
    })
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// Wall time of a command run to completion, its output discarded. A failure is an error
/// carrying the end of its stderr: a benchmark of a failing command measures nothing.
pub(crate) fn wall(cmd: &mut Command) -> Result<Sample> {
    let start = Instant::now();
    let cpu_before = children_cpu();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("could not start {}", cmd.get_program().display()))?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        bail!(
            "{} failed ({}):\n{}",
            cmd.get_program().display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Sample {
        seconds,
        peak_rss_kib: None,
        cpu_seconds: Some(children_cpu() - cpu_before),
    })
}

/// `sh -c SCRIPT`, timed.
pub(crate) fn shell(script: &str, dir: &Path) -> Result<Sample> {
    wall(Command::new("sh").arg("-c").arg(script).current_dir(dir))
}

#[derive(Deserialize)]
struct ProbeLine {
    seconds: f64,
    peak_rss_kib: u64,
}

/// How a probe run is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// The whole process from outside, as the anchors are timed.
    Wall,
    /// The probe's own timing of the in-process work.
    Inside,
}

/// Run the probe with `args`; its peak RSS comes with the sample.
pub(crate) fn probe(exe: &Path, args: &[String], clock: Clock) -> Result<Sample> {
    let start = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {}", exe.display()))?;
    let outside = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("probe {} failed ({})", args.join(" "), out.status);
    }
    let line: ProbeLine = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("probe {} printed no result", args.join(" ")))?;
    Ok(Sample {
        seconds: match clock {
            Clock::Wall => outside,
            Clock::Inside => line.seconds,
        },
        peak_rss_kib: Some(line.peak_rss_kib),
        cpu_seconds: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < 1e-12);
        assert!(median(&[]).is_nan());
    }
}
