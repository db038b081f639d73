//! The scenarios: each measures our tool (or the core) and, where one exists here, the anchor
//! people would use instead, on the same machine in the same run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::anchors::{Anchors, Availability};
use super::measure::{Clock, Figure, Plan, measure, probe, shell};
use super::report::{Check, Scenario};

mod export;
mod pipeline;
mod slurm;
mod sweep;

/// Sizes: the issue's, or smaller for `--quick`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) dispatch_jobs: usize,
    pub(crate) sleep_seconds: f64,
    pub(crate) stage_job_seconds: f64,
    pub(crate) stage_jobs: usize,
    /// The large stage whose record must stay linear (issue 33).
    pub(crate) large_stage_jobs: usize,
    pub(crate) experiments: usize,
    pub(crate) memory_jobs: usize,
    pub(crate) heavy_tasks: usize,
    pub(crate) runs: usize,
}

impl Sizes {
    pub(crate) const FULL: Sizes = Sizes {
        dispatch_jobs: 2000,
        sleep_seconds: 0.5,
        stage_job_seconds: 1.0,
        stage_jobs: 10_000,
        large_stage_jobs: 30_000,
        experiments: 200,
        memory_jobs: 100_000,
        heavy_tasks: 64,
        runs: 3,
    };
    pub(crate) const QUICK: Sizes = Sizes {
        dispatch_jobs: 500,
        sleep_seconds: 0.1,
        stage_job_seconds: 0.25,
        stage_jobs: 1000,
        large_stage_jobs: 3000,
        experiments: 50,
        memory_jobs: 10_000,
        heavy_tasks: 16,
        runs: 3,
    };
}

/// Everything a scenario needs, and what they produce.
pub(crate) struct Bench {
    pub(crate) sizes: Sizes,
    /// `target/release`: the tools and `examples/probe`.
    pub(crate) bin: PathBuf,
    pub(crate) notebooks: PathBuf,
    pub(crate) work: tempfile::TempDir,
    pub(crate) anchors: Anchors,
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) checks: Vec<Check>,
    /// The floor's time per job at 2 workers, once the dispatch scenario has measured it.
    floor_per_job_j2: Option<f64>,
    /// Peak RSS of a small dispatch run, the memory scenario's reference.
    small_rss_kib: Option<u64>,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn args(words: &[&dyn std::fmt::Display]) -> Vec<String> {
    words.iter().map(ToString::to_string).collect()
}

impl Bench {
    pub(crate) fn new(
        sizes: Sizes,
        bin: PathBuf,
        notebooks: PathBuf,
        anchors: Anchors,
    ) -> Result<Self> {
        Ok(Bench {
            sizes,
            bin,
            notebooks,
            work: tempfile::Builder::new()
                .prefix("fanout-bench-")
                .tempdir()
                .context("creating the bench's work folder")?,
            anchors,
            scenarios: Vec::new(),
            checks: Vec::new(),
            floor_per_job_j2: None,
            small_rss_kib: None,
        })
    }

    fn probe_exe(&self) -> PathBuf {
        self.bin.join("examples/probe")
    }

    fn plan(&self, warmup: bool) -> Plan {
        Plan::new(warmup, self.sizes.runs)
    }

    fn dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.work.path().join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// Measure an anchor's shell command into a copy of `base` per anchor, or note why not.
    fn with_anchor(
        &mut self,
        base: &Scenario,
        name: &str,
        availability: &Availability,
        plan: Plan,
        script: &str,
        dir: &Path,
    ) -> Result<()> {
        let mut row = base.clone();
        if base.anchor.is_some() || self.scenarios.iter().any(|s| s.name == row.name) {
            row.name = format!("{} vs {name}", base.name);
        }
        match availability {
            Ok(_) => {
                let f = measure(name, plan, || shell(script, dir))?;
                row.set_anchor(name, f.seconds, f.runs);
            }
            Err(why) => {
                eprintln!("  {name:<48} skipped: {why}");
                row.skip_anchor(name, why);
            }
        }
        self.scenarios.push(row);
        Ok(())
    }

    /// A row for our figure `f` of `jobs` jobs at `workers` workers.
    fn row(
        group: &str,
        name: String,
        ours: String,
        f: &Figure,
        (jobs, workers): (usize, usize),
    ) -> Scenario {
        Scenario {
            name,
            group: group.to_owned(),
            ours,
            jobs: Some(jobs),
            workers: Some(workers),
            ours_seconds: f.seconds,
            ours_runs: f.runs.clone(),
            peak_rss_mib: f.peak_rss_kib.map(|k| k as f64 / 1024.0),
            ..Scenario::default()
        }
    }

    /// 1. Jobs of `true` through the core pool against GNU parallel, xargs, a shell loop, and
    ///    the floor (a bare spawn-and-wait loop on as many threads).
    pub(crate) fn dispatch(&mut self) -> Result<()> {
        eprintln!("dispatch overhead");
        let n = self.sizes.dispatch_jobs;
        let dir = self.dir("dispatch")?;
        let exe = self.probe_exe();
        for j in [1, 2, 8, 32] {
            let floor = measure(
                &format!("floor: {n} x true on {j} threads"),
                self.plan(true),
                || probe(&exe, &args(&[&"floor", &n, &j]), Clock::Wall),
            )?;
            let ours = measure(
                &format!("fanout pool: {n} x true, -j{j}"),
                self.plan(true),
                || probe(&exe, &args(&[&"dispatch", &n, &j]), Clock::Wall),
            )?;
            if j == 1 {
                self.small_rss_kib = ours.peak_rss_kib;
            }
            if j == 2 {
                self.floor_per_job_j2 = Some(floor.seconds / n as f64);
            }
            let mut base = Self::row(
                "dispatch",
                format!("dispatch {n} x true -j{j}"),
                format!("fanout pool + process runner, {j} workers"),
                &ours,
                (n, j),
            );
            base.ideal_seconds = Some(floor.seconds);
            base.per_job_us = Some(ours.seconds * 1e6 / n as f64);
            base.note = Some(format!(
                "ideal = the floor, {:.0} µs/job",
                floor.seconds * 1e6 / n as f64
            ));
            let anchors = self.anchors_for_dispatch(n, j);
            for (name, availability, script) in anchors {
                self.with_anchor(&base, &name, &availability, self.plan(true), &script, &dir)?;
            }
        }
        Ok(())
    }

    fn anchors_for_dispatch(&self, n: usize, j: usize) -> Vec<(String, Availability, String)> {
        if j == 1 {
            return vec![(
                "sh loop".to_owned(),
                Ok("sh".to_owned()),
                format!("for i in $(seq {n}); do /bin/true; done"),
            )];
        }
        vec![
            (
                format!("GNU parallel -j {j}"),
                self.anchors.parallel.clone(),
                format!("seq {n} | parallel --will-cite -j {j} true"),
            ),
            (
                format!("xargs -P {j}"),
                self.anchors.xargs.clone(),
                format!("seq {n} | xargs -P {j} -n 1 true"),
            ),
        ]
    }

    /// 2. Sixteen `sleep` jobs at 1..16 workers against `ceil(16/j) x t`, and xargs -P.
    pub(crate) fn io(&mut self) -> Result<()> {
        eprintln!("I/O-bound speedup");
        let n = 16;
        let t = self.sizes.sleep_seconds;
        let dir = self.dir("io")?;
        let exe = self.probe_exe();
        let plan = self.plan(false);
        for j in [1, 2, 4, 8, 16] {
            let ours = measure(
                &format!("fanout pool: {n} x sleep {t}, -j{j}"),
                plan,
                || probe(&exe, &args(&[&"sleep", &n, &j, &t]), Clock::Wall),
            )?;
            let mut base = Self::row(
                "io",
                format!("io {n} x sleep {t} -j{j}"),
                format!("fanout pool, {j} workers"),
                &ours,
                (n, j),
            );
            base.ideal_seconds = Some(n.div_ceil(j) as f64 * t);
            let xargs = self.anchors.xargs.clone();
            self.with_anchor(
                &base,
                &format!("xargs -P {j}"),
                &xargs,
                plan,
                &format!("yes {t} | head -n {n} | xargs -P {j} -n 1 sleep"),
                &dir,
            )?;
        }
        Ok(())
    }

    /// 6. In-process CPU work under each strategy, against a bare rayon `par_iter`; Auto must be
    ///    within 10% of the best strategy.
    pub(crate) fn in_process(&mut self) -> Result<()> {
        eprintln!("in-process strategies");
        let exe = self.probe_exe();
        let plan = Plan::new(true, 5);
        for (kind, n) in [("tiny", 100_000), ("heavy", self.sizes.heavy_tasks)] {
            let anchor = measure(&format!("rayon par_iter: {n} {kind} tasks"), plan, || {
                probe(
                    &exe,
                    &args(&[&"cpu", &kind, &n, &"rayon-iter"]),
                    Clock::Inside,
                )
            })?;
            let mut best: Option<(&str, f64)> = None;
            let mut auto = f64::NAN;
            for strategy in ["serial", "threads", "rayon", "auto"] {
                let f = measure(&format!("{strategy}: {n} {kind} tasks"), plan, || {
                    probe(&exe, &args(&[&"cpu", &kind, &n, &strategy]), Clock::Inside)
                })?;
                let mut row = Self::row(
                    "in-process",
                    format!("in-process {n} {kind} tasks, {strategy}"),
                    format!("Pool, Strategy::{strategy}, {} workers", cores()),
                    &f,
                    (n, cores()),
                );
                row.peak_rss_mib = None;
                row.per_job_us = Some(f.seconds * 1e6 / n as f64);
                row.set_anchor("rayon par_iter", anchor.seconds, anchor.runs.clone());
                self.scenarios.push(row);
                if strategy == "auto" {
                    auto = f.seconds;
                } else if best.is_none_or(|(_, b)| f.seconds < b) {
                    best = Some((strategy, f.seconds));
                }
            }
            self.in_process_map(kind, n, plan, &anchor)?;
            if let Some((name, b)) = best {
                self.checks.push(Check {
                    name: format!("Auto within 10% of the best strategy, {n} {kind} tasks"),
                    passed: auto <= b * 1.10,
                    detail: format!(
                        "auto {:.1} ms, best {name} {:.1} ms ({:+.0}%)",
                        auto * 1e3,
                        b * 1e3,
                        (auto / b - 1.0) * 100.0
                    ),
                });
            }
        }
        Ok(())
    }

    /// The same work through `Pool::map` (chunked): serially against a bare loop (within
    /// 1.2x), and Auto against the bare `par_iter` (within 2x).
    fn in_process_map(
        &mut self,
        kind: &str,
        n: usize,
        plan: Plan,
        par_iter: &Figure,
    ) -> Result<()> {
        let exe = self.probe_exe();
        let bare_loop = measure(&format!("bare loop: {n} {kind} tasks"), plan, || {
            probe(&exe, &args(&[&"cpu", &kind, &n, &"loop"]), Clock::Inside)
        })?;
        for (how, anchor_name, anchor, bound) in [
            ("map-serial", "bare loop", &bare_loop, 1.2),
            ("map-auto", "rayon par_iter", par_iter, 2.0),
        ] {
            let f = measure(&format!("{how}: {n} {kind} items"), plan, || {
                probe(&exe, &args(&[&"cpu", &kind, &n, &how]), Clock::Inside)
            })?;
            let strategy = how.trim_start_matches("map-");
            let mut row = Self::row(
                "in-process",
                format!("in-process {n} {kind} items, map {strategy}"),
                format!(
                    "Pool::map (chunked), Strategy::{strategy}, {} workers",
                    cores()
                ),
                &f,
                (n, cores()),
            );
            row.peak_rss_mib = None;
            row.per_job_us = Some(f.seconds * 1e6 / n as f64);
            row.set_anchor(anchor_name, anchor.seconds, anchor.runs.clone());
            self.scenarios.push(row);
            if kind == "tiny" && how == "map-auto" {
                // Auto is at least as good as staying serial would be.
                self.checks.push(Check {
                    name: format!("map auto within 1.2x of a bare loop, {n} {kind} items"),
                    passed: f.seconds <= bare_loop.seconds * 1.2,
                    detail: format!(
                        "map auto {:.1} ms, bare loop {:.1} ms ({:.2}x)",
                        f.seconds * 1e3,
                        bare_loop.seconds * 1e3,
                        f.seconds / bare_loop.seconds
                    ),
                });
            }
            if kind == "tiny" {
                self.checks.push(Check {
                    name: format!(
                        "map {strategy} within {bound}x of a {anchor_name}, {n} {kind} items"
                    ),
                    passed: f.seconds <= anchor.seconds * bound,
                    detail: format!(
                        "map {strategy} {:.1} ms, {anchor_name} {:.1} ms ({:.2}x)",
                        f.seconds * 1e3,
                        anchor.seconds * 1e3,
                        f.seconds / anchor.seconds
                    ),
                });
            }
        }
        Ok(())
    }

    /// 7. Peak RSS of the pool running many `true` jobs.
    pub(crate) fn memory(&mut self) -> Result<()> {
        eprintln!("memory");
        let n = self.sizes.memory_jobs;
        let exe = self.probe_exe();
        let f = measure(
            &format!("fanout pool: {n} x true, -j2 (peak RSS)"),
            Plan::new(false, 1),
            || probe(&exe, &args(&[&"dispatch", &n, &2]), Clock::Wall),
        )?;
        let mut row = Self::row(
            "memory",
            format!("memory {n} x true -j2"),
            "fanout pool + process runner, 2 workers".to_owned(),
            &f,
            (n, 2),
        );
        row.per_job_us = Some(f.seconds * 1e6 / n as f64);
        if let (Some(peak), Some(small)) = (f.peak_rss_kib, self.small_rss_kib) {
            row.note = Some(format!(
                "{:.0} bytes per job above the {}-job run's {:.1} MiB",
                (peak.saturating_sub(small) * 1024) as f64 / n as f64,
                self.sizes.dispatch_jobs,
                small as f64 / 1024.0
            ));
        }
        self.scenarios.push(row);
        Ok(())
    }
}
