//! Slurm (issue 30), on the project's three-node test cluster (`cargo xtask slurm-up`): many
//! short tasks and one-second tasks through lorchestra's two Slurm modes, against the local
//! backend and against Slurm's own answer, a job array (`sbatch --array --wait`) whose tasks
//! run the same command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::Bench;
use crate::bench::measure::{Sample, measure, wall};
use crate::bench::report::Check;

/// Workers for the short tasks (more than the machine's cores: the steps wait on Slurm).
const SHORT_SLOTS: usize = 6;
/// Workers for the one-second tasks: the three nodes' 48 CPUs.
const LONG_SLOTS: usize = 48;

/// How the scenarios run lorchestra on the test cluster.
struct OnCluster {
    lorchestra: PathBuf,
    project: PathBuf,
    conf: String,
}

impl OnCluster {
    fn run(&self, name: &str, j: usize, extra: &[&str]) -> Result<Sample> {
        wall(
            Command::new(&self.lorchestra)
                .args(["pipeline", name, "-q", "-j", &j.to_string()])
                .args(extra)
                .current_dir(&self.project)
                .env("SLURM_CONF", &self.conf)
                .env_remove("LORCHESTRA_MAX_WORKERS"),
        )
    }

    /// `sbatch --array` of `n` tasks, `slots` at once, each running `command`, waited for.
    fn array(&self, n: usize, slots: usize, command: &str) -> String {
        format!(
            "SLURM_CONF={} sbatch --quiet --wait --array=1-{n}%{slots} --output=/dev/null \
             --job-name=bench-array --wrap='{command}'",
            self.conf
        )
    }
}

/// lorchestra's flags for the packed mode over the cluster's three nodes.
const PACKED: [&str; 6] = [
    "--backend",
    "slurm",
    "--slurm-mode",
    "packed",
    "--slurm-nodes",
    "3",
];

impl Bench {
    /// 8. lorchestra on Slurm: `n` x `true` packed and (a tenth of them) a Slurm job each, and
    ///    200 x `sleep 1` packed and a Slurm job each over three nodes, against the local
    ///    backend, the ideal and `sbatch --array`.
    pub(crate) fn slurm(&mut self) -> Result<()> {
        eprintln!("slurm (lorchestra on the three-node test cluster)");
        let conf = crate::slurm::ensure()?;
        let cluster = OnCluster {
            lorchestra: self.bin.join("lorchestra"),
            project: self.dir("slurm")?,
            conf: conf.to_str().unwrap_or_default().to_owned(),
        };
        self.slurm_short(&cluster)?;
        self.slurm_job_each(&cluster)?;
        self.slurm_long(&cluster)
    }

    /// `n` x `true` packed, against the local backend (the ideal) and a job array.
    fn slurm_short(&mut self, cluster: &OnCluster) -> Result<()> {
        let n = self.sizes.dispatch_jobs;
        write_matrix(&cluster.project, "short", n, "true")?;
        let local = measure(
            &format!("lorchestra local: {n} x true, -j{SHORT_SLOTS}"),
            self.plan(true),
            || cluster.run("short", SHORT_SLOTS, &[]),
        )?;
        let ours = measure(
            &format!("lorchestra packed: {n} x true, -j{SHORT_SLOTS}"),
            self.plan(true),
            || cluster.run("short", SHORT_SLOTS, &PACKED),
        )?;
        let per_task_ms = ours.seconds * 1e3 / n as f64;
        let mut row = Self::row(
            "slurm",
            format!("slurm {n} x true packed -j{SHORT_SLOTS} (3 nodes)"),
            format!("lorchestra --backend slurm --slurm-mode packed -j {SHORT_SLOTS}"),
            &ours,
            (n, SHORT_SLOTS),
        );
        row.per_job_us = Some(per_task_ms * 1e3);
        row.ideal_seconds = Some(local.seconds);
        row.note = Some(format!(
            "ideal = the local backend; one allocation, a worker step per slot; \
             {per_task_ms:.2} ms/task"
        ));
        self.checks.push(Check {
            name: "packed Slurm mode: at most 2 ms a task, amortized".to_owned(),
            passed: per_task_ms <= 2.0,
            detail: format!(
                "{per_task_ms:.2} ms ({:.2} s for {n} tasks; local {:.2} s)",
                ours.seconds, local.seconds
            ),
        });
        self.against_array(&row, cluster, (n, SHORT_SLOTS), "true")
    }

    /// `row` against Slurm's own answer: a job array of `n` tasks, `slots` at once, running
    /// `command`.
    fn against_array(
        &mut self,
        row: &crate::bench::report::Scenario,
        cluster: &OnCluster,
        (n, slots): (usize, usize),
        command: &str,
    ) -> Result<()> {
        let script = cluster.array(n, slots, command);
        self.with_anchor(
            row,
            "sbatch --array",
            &Ok(String::new()),
            self.plan(false),
            &script,
            &cluster.project,
        )
    }

    /// A tenth as many `true` tasks, a Slurm job each (the default mode).
    fn slurm_job_each(&mut self, cluster: &OnCluster) -> Result<()> {
        let n = self.sizes.dispatch_jobs / 10;
        write_matrix(&cluster.project, "fewer", n, "true")?;
        let jobs = measure(
            &format!("lorchestra jobs mode: {n} x true, -j{SHORT_SLOTS}"),
            self.plan(false),
            || cluster.run("fewer", SHORT_SLOTS, &["--backend", "slurm"]),
        )?;
        let mut row = Self::row(
            "slurm",
            format!("slurm {n} x true a job each -j{SHORT_SLOTS}"),
            format!("lorchestra --backend slurm (--slurm-mode jobs) -j {SHORT_SLOTS}"),
            &jobs,
            (n, SHORT_SLOTS),
        );
        row.per_job_us = Some(jobs.seconds * 1e6 / n as f64);
        row.note = Some(format!(
            "one srun and one scheduler job per task; {:.1} ms/task",
            jobs.seconds * 1e3 / n as f64
        ));
        self.scenarios.push(row);
        Ok(())
    }

    /// One-second tasks packed over the three nodes' 48 slots, against the ideal and an array.
    fn slurm_long(&mut self, cluster: &OnCluster) -> Result<()> {
        let long = if self.sizes.dispatch_jobs >= 2000 {
            200
        } else {
            LONG_SLOTS * 2
        };
        write_matrix(&cluster.project, "long", long, "sleep 1")?;
        let ideal = long.div_ceil(LONG_SLOTS) as f64;
        let ours = measure(
            &format!("lorchestra packed: {long} x sleep 1, -j{LONG_SLOTS}"),
            self.plan(false),
            || cluster.run("long", LONG_SLOTS, &PACKED),
        )?;
        let mut row = Self::row(
            "slurm",
            format!("slurm {long} x sleep 1 packed -j{LONG_SLOTS} (3 nodes)"),
            format!("lorchestra --backend slurm --slurm-mode packed -j {LONG_SLOTS}"),
            &ours,
            (long, LONG_SLOTS),
        );
        row.ideal_seconds = Some(ideal);
        row.note = Some(format!("ideal = {long} / {LONG_SLOTS} slots x 1 s"));
        self.checks.push(Check {
            name: format!("packed Slurm mode: {long} one-second tasks within 15% of the ideal"),
            passed: ours.seconds <= ideal * 1.15,
            detail: format!("{:.2} s vs {ideal:.0} s", ours.seconds),
        });
        self.against_array(&row, cluster, (long, LONG_SLOTS), "sleep 1")?;
        let jobs = measure(
            &format!("lorchestra jobs mode: {long} x sleep 1, -j{LONG_SLOTS}"),
            self.plan(false),
            || cluster.run("long", LONG_SLOTS, &["--backend", "slurm"]),
        )?;
        let mut row = Self::row(
            "slurm",
            format!("slurm {long} x sleep 1 a job each -j{LONG_SLOTS} (3 nodes)"),
            format!("lorchestra --backend slurm (--slurm-mode jobs) -j {LONG_SLOTS}"),
            &jobs,
            (long, LONG_SLOTS),
        );
        row.ideal_seconds = Some(ideal);
        row.note = Some(format!(
            "ideal = {long} / {LONG_SLOTS} slots x 1 s; one scheduler job per task"
        ));
        self.scenarios.push(row);
        Ok(())
    }
}

/// `pipelines/NAME.toml`: one stage of `n` jobs running `command`, as a matrix over a file.
fn write_matrix(project: &Path, name: &str, n: usize, command: &str) -> Result<()> {
    std::fs::create_dir_all(project.join("pipelines"))?;
    let items: String = (0..n).map(|i| i.to_string() + "\n").collect();
    std::fs::write(project.join(format!("{name}.items")), items)?;
    std::fs::write(
        project.join(format!("pipelines/{name}.toml")),
        format!(
            "[[stages]]\nname = \"all\"\njobs = [\"t\"]\n\n[jobs.t]\ncommand = \"{command}\"\n\
             matrix_from = {{ file = \"{name}.items\" }}\n"
        ),
    )?;
    Ok(())
}
