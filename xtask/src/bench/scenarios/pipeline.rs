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
