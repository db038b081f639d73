//! lorchestra's scenarios: stages of sleeping and of `true` jobs against GNU parallel, and
//! the up-to-date check of a large project.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::Bench;
use crate::bench::measure::{Sample, measure, shell, wall};
use crate::bench::report::Check;

impl Bench {
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
        self.pipeline_large_stage()?;
        self.pipeline_up_to_date()
    }

    /// 3a. A stage of 30,000 `true` jobs (a matrix over a file of items, as such a stage is
    ///     written) at -j2 with its record, side by side with bare `xargs -P 2`: the record's
    ///     cost per job must not grow with the stage (issue 33: within 1.15x, at most 64 MiB).
    fn pipeline_large_stage(&mut self) -> Result<()> {
        let n = self.sizes.large_stage_jobs;
        let project = self.dir("large-stage")?;
        std::fs::create_dir_all(project.join("pipelines"))?;
        let mut items = String::new();
        for i in 0..n {
            let _ = writeln!(items, "{i}");
        }
        std::fs::write(project.join("items.txt"), items)?;
        std::fs::write(
            project.join("pipelines/large.toml"),
            "[[stages]]\nname = \"all\"\njobs = [\"t\"]\n\n[jobs.t]\ncommand = [\"true\"]\n\
             matrix_from = { file = \"items.txt\" }\n",
        )?;
        let lorchestra = self.bin.join("lorchestra");
        let f = measure(
            &format!("lorchestra: {n} x true (matrix), -j2"),
            self.plan(false),
            || {
                peak_rss(
                    Command::new(&lorchestra)
                        .args(["pipeline", "large", "-q", "-j", "2"])
                        .current_dir(&project)
                        .env_remove("LORCHESTRA_MAX_WORKERS"),
                )
            },
        )?;
        let mut base = Self::row(
            "pipeline",
            format!("pipeline stage {n} x true -j2 (record)"),
            "lorchestra pipeline large -j 2 (matrix_from a file of items)".to_owned(),
            &f,
            (n, 2),
        );
        base.per_job_us = Some(f.seconds * 1e6 / n as f64);
        base.note = Some("a log per job, the record's journal, the report".to_owned());
        let xargs = self.anchors.xargs.clone();
        let script = format!("seq {n} | xargs -P 2 -n 1 true");
        if xargs.is_err() {
            return self.with_anchor(
                &base,
                "xargs -P 2",
                &xargs,
                self.plan(false),
                &script,
                &project,
            );
        }
        let anchor = measure(&format!("xargs -P 2: {n} x true"), self.plan(false), || {
            shell(&script, &project)
        })?;
        let ratio = f.seconds / anchor.seconds;
        let mib = f.peak_rss_kib.map(|k| k as f64 / 1024.0);
        self.checks.push(Check {
            name: format!(
                "lorchestra runs a {n}-job stage within 1.15x of xargs -P 2, in at most 64 MiB"
            ),
            passed: ratio <= 1.15 && mib.is_none_or(|m| m <= 64.0),
            detail: format!(
                "{ratio:.2}x ({:.2} s vs {:.2} s), peak {}",
                f.seconds,
                anchor.seconds,
                mib.map_or_else(|| "not measured".to_owned(), |m| format!("{m:.0} MiB"))
            ),
        });
        base.set_anchor("xargs -P 2", anchor.seconds, anchor.runs);
        self.scenarios.push(base);
        Ok(())
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
}

/// A command's wall time and peak resident set, through GNU time (`/usr/bin/time -f %M`) when
/// the machine has it.
fn peak_rss(cmd: &mut Command) -> Result<Sample> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        return wall(cmd);
    }
    let out = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new(time);
    timed
        .args(["-f", "%M", "-o"])
        .arg(out.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let mut sample = wall(&mut timed)?;
    sample.peak_rss_kib = std::fs::read_to_string(out.path())?.trim().parse().ok();
    Ok(sample)
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
