//! The scenarios: each measures our tool (or the core) and, where one exists here, the anchor
//! people would use instead, on the same machine in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::anchors::{Anchors, Availability, MARIMUSHKA};
use super::measure::{Clock, Figure, Plan, Sample, measure, probe, shell, wall};
use super::report::{Check, Scenario};

/// Sizes: the issue's, or smaller for `--quick`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) dispatch_jobs: usize,
    pub(crate) sleep_seconds: f64,
    pub(crate) stage_job_seconds: f64,
    pub(crate) stage_jobs: usize,
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
        for j in [1, 2, 8] {
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

    /// 3. lorchestra: a stage of four sleeping jobs, and a stage of many `true` jobs (with the
    ///    run record and a log per job), against GNU parallel with its job log.
    pub(crate) fn pipeline(&mut self) -> Result<()> {
        eprintln!("pipeline (lorchestra)");
        let t = self.sizes.stage_job_seconds;
        let n = self.sizes.stage_jobs;
        let project = self.dir("pipeline")?;
        write_pipeline(&project, "four", 4, &["sleep", &t.to_string()])?;
        write_pipeline(&project, "many", n, &["true"])?;
        let lorchestra = self.bin.join("lorchestra");
        let run = |name: &str, j: usize| -> Result<Sample> {
            wall(
                Command::new(&lorchestra)
                    .args(["pipeline", name, "-q", "-j", &j.to_string()])
                    .current_dir(&project)
                    .env_remove("LORCHESTRA_MAX_WORKERS"),
            )
        };

        let four = measure(
            &format!("lorchestra: 4 x sleep {t}, -j4"),
            self.plan(true),
            || run("four", 4),
        )?;
        let mut base = Self::row(
            "pipeline",
            format!("pipeline stage 4 x sleep {t} -j4"),
            "lorchestra pipeline four -j 4".to_owned(),
            &four,
            (4, 4),
        );
        base.ideal_seconds = Some(t);
        let parallel = self.anchors.parallel.clone();
        self.with_anchor(
            &base,
            "GNU parallel --joblog -j 4",
            &parallel,
            self.plan(true),
            &format!("parallel --will-cite --joblog four.log -j 4 sleep ::: {t} {t} {t} {t}"),
            &project,
        )?;

        // Long runs: no warm-up (the short scenarios above warmed the same binaries).
        let many = measure(
            &format!("lorchestra: {n} x true, -j2"),
            self.plan(false),
            || run("many", 2),
        )?;
        let mut base = Self::row(
            "pipeline",
            format!("pipeline stage {n} x true -j2"),
            "lorchestra pipeline many -j 2".to_owned(),
            &many,
            (n, 2),
        );
        base.per_job_us = Some(many.seconds * 1e6 / n as f64);
        base.ideal_seconds = self.floor_per_job_j2.map(|f| f * n as f64);
        base.note =
            Some("a log file per job and the run record; ideal = the dispatch floor".to_owned());
        self.with_anchor(
            &base,
            "GNU parallel --joblog -j 2",
            &parallel,
            self.plan(false),
            &format!("seq {n} | parallel --will-cite --joblog many.log -j 2 true"),
            &project,
        )?;
        self.pipeline_up_to_date()
    }

    /// 3b. lorchestra deciding that 1,000 jobs, each with an input file and an output, are up
    ///     to date (nothing changed since they ran), against GNU make with the same rules.
    fn pipeline_up_to_date(&mut self) -> Result<()> {
        const JOBS: usize = 1000;
        let project = self.dir("uptodate")?;
        let mut toml = String::from("[[stages]]\nname = \"copy\"\njobs = [");
        let mut makefile = String::from("all:");
        for i in 0..JOBS {
            let _ = write!(toml, "{}\"j{i}\"", if i == 0 { "" } else { ", " });
            let _ = write!(makefile, " out/{i}.txt");
        }
        toml.push_str("]\n");
        makefile.push_str("\n\nout/%.txt: data/%.txt\n\t@mkdir -p out && cp $< $@\n");
        std::fs::create_dir_all(project.join("data"))?;
        std::fs::create_dir_all(project.join("pipelines"))?;
        // Inputs last written an hour ago: settled, so their hashes are kept by size and time.
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for i in 0..JOBS {
            let _ = write!(
                toml,
                "\n[jobs.j{i}]\ncommand = [\"cp\", \"data/{i}.txt\", \"out/{i}.txt\"]\n\
                 inputs = [\"data/{i}.txt\"]\noutputs = [\"out/{i}.txt\"]\n"
            );
            let input = project.join(format!("data/{i}.txt"));
            std::fs::write(&input, format!("row {i}\n"))?;
            std::fs::File::options()
                .append(true)
                .open(&input)?
                .set_modified(an_hour_ago)?;
        }
        std::fs::create_dir_all(project.join("out"))?;
        std::fs::write(project.join("pipelines/copy.toml"), toml)?;
        std::fs::write(project.join("Makefile"), makefile)?;
        let lorchestra = self.bin.join("lorchestra");
        let run = || -> Result<Sample> {
            wall(
                Command::new(&lorchestra)
                    .args(["pipeline", "copy", "-q", "-j", "2"])
                    .current_dir(&project)
                    .env_remove("LORCHESTRA_MAX_WORKERS"),
            )
        };
        // The first run copies everything and records the keys; what is measured decides.
        run()?;
        let f = measure(
            &format!("lorchestra: {JOBS} jobs up to date, -j2"),
            self.plan(true),
            run,
        )?;
        let mut base = Self::row(
            "pipeline",
            format!("pipeline {JOBS} jobs up to date -j2"),
            "lorchestra pipeline copy -j 2 (inputs, outputs; nothing changed)".to_owned(),
            &f,
            (JOBS, 2),
        );
        base.per_job_us = Some(f.seconds * 1e6 / JOBS as f64);
        base.note = Some(
            "each job: its input's stamp, its key, its output; the run record and report"
                .to_owned(),
        );
        self.checks.push(Check {
            name: format!("lorchestra decides {JOBS} up-to-date jobs in under 100 ms"),
            passed: f.seconds < 0.1,
            detail: format!("{:.1} ms", f.seconds * 1e3),
        });
        let make = self.anchors.make.clone();
        if make.is_ok() {
            shell("make -s -j 2", &project)?;
        }
        self.with_anchor(
            &base,
            "GNU make -j 2",
            &make,
            self.plan(true),
            "make -s -j 2",
            &project,
        )
    }

    /// 4. parallamr against a loopback OpenAI-compatible server answering after 50 ms, at one
    ///    and 32 experiments in flight; the anchor is the same requests by curl under xargs -P.
    pub(crate) fn sweep(&mut self) -> Result<()> {
        eprintln!("sweeps (parallamr)");
        let n = self.sizes.experiments;
        let latency = 0.05;
        let server = testkit::llm_server::LlmServer::start(Duration::from_secs_f64(latency));
        let dir = self.dir("sweep")?;
        std::fs::write(dir.join("prompt.txt"), "Tell me about {{ topic }}.\n")?;
        let mut csv = String::from("provider,model,topic\n");
        let bodies = dir.join("bodies");
        std::fs::create_dir_all(&bodies)?;
        for i in 0..n {
            let _ = writeln!(csv, "openai,llama-test,topic{i}");
            std::fs::write(
                bodies.join(format!("{i}.json")),
                serde_json::json!({
                    "model": "llama-test",
                    "messages": [{ "role": "user", "content": format!("Tell me about topic{i}.") }]
                })
                .to_string(),
            )?;
        }
        std::fs::write(dir.join("experiments.csv"), csv)?;
        let parallamr = self.bin.join("parallamr");
        for j in [1, 32] {
            let out = dir.join(format!("results-{j}.csv"));
            let ours = measure(
                &format!("parallamr: {n} experiments, -j{j}"),
                self.plan(true),
                || {
                    let _ = std::fs::remove_file(&out);
                    wall(
                        Command::new(&parallamr)
                            // Every repetition sends every request (the response cache
                            // would answer all but the first).
                            .args(["run", "-p", "prompt.txt", "-e", "experiments.csv", "-q"])
                            .arg("--no-cache")
                            .arg("-o")
                            .arg(&out)
                            .args([
                                "-j",
                                &j.to_string(),
                                "--provider-limit",
                                &format!("openai={j}"),
                            ])
                            .current_dir(&dir)
                            .env("OPENAI_BASE_URL", &server.url)
                            .env_remove("OPENAI_API_KEY"),
                    )
                },
            )?;
            let mut base = Self::row(
                "sweep",
                format!("sweep {n} experiments, 50 ms server, -j{j}"),
                format!("parallamr run -j {j} --provider-limit openai={j}"),
                &ours,
                (n, j),
            );
            base.ideal_seconds = Some(n.div_ceil(j) as f64 * latency);
            let curl = self.anchors.curl.clone();
            let script = format!(
                "ls bodies | xargs -P {j} -I{{}} curl -sf -o /dev/null \
                 -H 'Content-Type: application/json' --data @bodies/{{}} {}/chat/completions",
                server.url
            );
            self.with_anchor(
                &base,
                &format!("curl under xargs -P {j}"),
                &curl,
                self.plan(true),
                &script,
                &dir,
            )?;
        }
        Ok(())
    }

    /// 5. export-nb against marimushka on the bundled notebooks, same workers: a full export
    ///    with a warm uv cache (each tool warmed up first), a full export with an empty uv cache
    ///    per run (`UV_CACHE_DIR`, so export-nb's environments and marimushka's sandboxes start
    ///    from nothing), and an unchanged re-run. CPU seconds per notebook for both, and the
    ///    pages compared.
    #[expect(
        clippy::too_many_lines,
        reason = "one scenario, read top to bottom: three measurements of ours, two of the anchor"
    )]
    pub(crate) fn export(&mut self) -> Result<()> {
        eprintln!("notebook export (export-nb vs marimushka)");
        crate::tasks::ensure_uv()?;
        let dir = self.dir("export")?;
        let notebooks = dir.join("notebooks");
        copy_notebooks(&self.notebooks, &notebooks)?;
        let count = std::fs::read_dir(&notebooks)?.count();
        let j = cores();
        let export_nb = self.bin.join("export-nb");
        let cold_caches = self.dir("export-cold-caches")?;
        let fresh_cache = || -> Result<PathBuf> {
            let d = tempfile::Builder::new()
                .prefix("uv-cache-")
                .tempdir_in(&cold_caches)?
                .keep();
            Ok(d)
        };
        let run_ours = |force: bool, cache: Option<&Path>| {
            let mut cmd = Command::new(&export_nb);
            cmd.args(["notebooks", "-o", "nb_site", "-q", "-j", &j.to_string()])
                .current_dir(&dir);
            if force {
                cmd.arg("--force");
            }
            if let Some(c) = cache {
                cmd.env("UV_CACHE_DIR", c.join("uv"))
                    .env("EXPORT_NB_ENV_DIR", c.join("envs"));
            }
            wall(&mut cmd)
        };
        let marimushka = |cache: Option<&Path>| {
            let mut cmd = Command::new("uvx");
            cmd.args([
                MARIMUSHKA,
                "export",
                "-n",
                "notebooks",
                "-o",
                "mm_site",
                "-w",
            ])
            .arg(j.to_string())
            .current_dir(&dir);
            if let Some(c) = cache {
                cmd.env("UV_CACHE_DIR", c.join("uv"));
            }
            wall(&mut cmd)
        };
        let per_notebook = |f: &Figure| f.cpu_seconds.map(|c| c / count as f64);

        let warm = measure(
            &format!("export-nb: {count} notebooks, -j{j}, --force, warm"),
            self.plan(true),
            || run_ours(true, None),
        )?;
        let cold = measure(
            &format!("export-nb: {count} notebooks, -j{j}, empty uv cache"),
            self.plan(false),
            || run_ours(true, Some(&fresh_cache()?)),
        )?;
        let rerun = measure("export-nb: unchanged re-run", self.plan(true), || {
            run_ours(false, None)
        })?;

        let mut warm_row = Self::row(
            "export",
            format!("export {count} notebooks -j{j}, warm uv cache"),
            format!("export-nb -j {j} --force (sandbox)"),
            &warm,
            (count, j),
        );
        let mut cold_row = Self::row(
            "export",
            format!("export {count} notebooks -j{j}, empty uv cache"),
            format!("export-nb -j {j} --force (sandbox), empty UV_CACHE_DIR and env dir"),
            &cold,
            (count, j),
        );
        let mut rerun_row = Self::row(
            "export",
            format!("export {count} notebooks, unchanged re-run"),
            format!("export-nb -j {j}"),
            &rerun,
            (count, j),
        );

        let availability = self
            .anchors
            .marimushka
            .clone()
            .unwrap_or_else(|| Err("not looked for".to_owned()));
        let name = format!("marimushka -w {j}");
        let cpu_note = |ours: &Figure, theirs: Option<&Figure>| {
            let fmt = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |c| format!("{c:.2} s"));
            format!(
                "CPU per notebook: ours {}, marimushka {}",
                fmt(per_notebook(ours)),
                fmt(theirs.and_then(per_notebook))
            )
        };
        match &availability {
            Ok(_) => {
                let theirs_warm = measure(&format!("{name}, warm"), self.plan(true), || {
                    marimushka(None)
                })?;
                let theirs_cold =
                    measure(&format!("{name}, empty uv cache"), self.plan(false), || {
                        marimushka(Some(&fresh_cache()?))
                    })?;
                warm_row.set_anchor(&name, theirs_warm.seconds, theirs_warm.runs.clone());
                warm_row.note = Some(format!(
                    "{}; {}",
                    cpu_note(&warm, Some(&theirs_warm)),
                    compare_pages(&dir.join("nb_site"), &dir.join("mm_site"), &notebooks)
                ));
                cold_row.set_anchor(&name, theirs_cold.seconds, theirs_cold.runs.clone());
                cold_row.note = Some(cpu_note(&cold, Some(&theirs_cold)));
                rerun_row.set_anchor(&name, theirs_warm.seconds, theirs_warm.runs);
                rerun_row.note = Some(
                    "marimushka has no incremental mode: its re-run exports everything again \
                     (its figure is the warm full export)"
                        .to_owned(),
                );
            }
            Err(why) => {
                eprintln!("  {name:<48} skipped: {why}");
                warm_row.note = Some(cpu_note(&warm, None));
                cold_row.note = Some(cpu_note(&cold, None));
                warm_row.skip_anchor(&name, why);
                cold_row.skip_anchor(&name, why);
                rerun_row.skip_anchor(&name, why);
            }
        }
        let _ = std::fs::remove_dir_all(&cold_caches);
        self.scenarios.push(warm_row);
        self.scenarios.push(cold_row);
        self.scenarios.push(rerun_row);
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

/// `pipelines/NAME.toml`: one stage of `n` jobs running `command` directly.
fn write_pipeline(project: &Path, name: &str, n: usize, command: &[&str]) -> Result<()> {
    let mut toml =
        format!("description = \"bench: {n} jobs\"\n\n[[stages]]\nname = \"all\"\njobs = [");
    for i in 0..n {
        let _ = write!(toml, "{}\"j{i}\"", if i == 0 { "" } else { ", " });
    }
    toml.push_str("]\n");
    let argv: Vec<String> = command.iter().map(|w| format!("{w:?}")).collect();
    for i in 0..n {
        let _ = write!(toml, "\n[jobs.j{i}]\ncommand = [{}]\n", argv.join(", "));
    }
    let dir = project.join("pipelines");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.toml")), toml)?;
    Ok(())
}

/// The bundled notebooks (the `.py` files only: not marimo's caches).
/// The two sites' pages, compared: the same notebooks exported, and each page carrying its
/// cells' outputs (marimo embeds them in the page; a page without them renders blank cells).
fn compare_pages(ours: &Path, theirs: &Path, notebooks: &Path) -> String {
    let mut both = 0;
    let mut differ = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(notebooks)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let p = e.path();
                    if p.extension()? != "py" {
                        return None;
                    }
                    Some(p.file_stem()?.to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for name in &names {
        let page =
            |site: &Path| std::fs::read_to_string(site.join(format!("notebooks/{name}.html")));
        match (page(ours), page(theirs)) {
            (Ok(a), Ok(b)) => {
                // marimo embeds each cell's outputs as `"outputs": [{"data": {MIME: ...}}]`:
                // count the cells with outputs, and the rich (markdown, HTML) ones.
                let outputs = |html: &str| {
                    (
                        html.matches("\"outputs\": [{\"data\"").count(),
                        html.matches("\"text/markdown\"").count()
                            + html.matches("\"text/html\"").count(),
                    )
                };
                let (ours, theirs) = (outputs(&a), outputs(&b));
                if ours.0 > 0 && ours == theirs {
                    both += 1;
                } else {
                    differ.push(format!(
                        "{name} ({}/{} vs {}/{} outputs/rich)",
                        ours.0, ours.1, theirs.0, theirs.1
                    ));
                }
            }
            _ => differ.push(format!("{name} (missing)")),
        }
    }
    if differ.is_empty() {
        format!(
            "pages: {both} of {} in both sites, the same cells with outputs in each",
            names.len()
        )
    } else {
        format!("pages differ: {}", differ.join(", "))
    }
}

fn copy_notebooks(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, to.join(path.file_name().expect("a file name")))?;
        }
    }
    Ok(())
}
