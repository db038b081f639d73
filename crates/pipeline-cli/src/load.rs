//! Loading a pipeline: its file read (`raw.rs`), its stages and jobs checked into a
//! [`Pipeline`], nested pipelines loaded depth-first with a stack (so a cycle is reported as
//! `a -> b -> a` before anything runs), and every job a project defines. Every error about input
//! is raised here, naming the file, line, stage or job; nothing has run yet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::jobs::matrix_jobs;
use crate::model::{GRAPH_STAGE, Job, Loop, NESTED_PREFIX, Pipeline, Reference, Run, Stage};
use crate::project::Project;
use crate::raw::{RawJob, RawLoop, RawPipeline, line_of, read_pipeline};
use crate::waits::{after_needs, waits};

impl Project {
    /// Load and validate a pipeline and, through `pipeline.<name>` entries, every pipeline it
    /// runs; refuses cycles.
    pub(crate) fn load(&self, name_or_file: &str) -> Result<Pipeline> {
        let mut stack = Vec::new();
        let mut done = HashSet::new();
        self.load_inner(name_or_file, &mut stack, &mut done)
            .map(|p| p.expect("nothing is loaded before the first pipeline"))
    }

    /// The pipeline, or `None` if it was loaded and checked already (a nested pipeline run
    /// by several jobs: checked once).
    fn load_inner(
        &self,
        name_or_file: &str,
        stack: &mut Vec<String>,
        done: &mut HashSet<String>,
    ) -> Result<Option<Pipeline>> {
        let file = self.find(name_or_file)?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if done.contains(&name) {
            return Ok(None);
        }
        if let Some(pos) = stack.iter().position(|n| *n == name) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(name);
            bail!("nested pipelines form a cycle: {}", cycle.join(" -> "));
        }
        stack.push(name.clone());
        let raw = read_pipeline(&file)?;
        let pipeline = self.validate(name.clone(), &file, &raw)?;
        for stage in &pipeline.stages {
            for job in &stage.jobs {
                if let Run::Pipeline(nested) = &job.run {
                    self.load_inner(nested, stack, done).with_context(|| {
                        format!(
                            "{}: stage {:?} runs the pipeline {nested:?}",
                            file.display(),
                            stage.name
                        )
                    })?;
                }
            }
        }
        stack.pop();
        done.insert(name);
        Ok(Some(pipeline))
    }

    /// A pipeline file's raw tables, checked into a [`Pipeline`].
    fn validate(&self, name: String, file: &Path, raw: &RawPipeline) -> Result<Pipeline> {
        let at = file.display();
        let default_stop = raw.stop_on_failure.unwrap_or(true);
        let is_graph = raw.stages.is_empty();
        let graph_ids: Vec<String>;
        let mut preloaded: HashMap<String, Job> = HashMap::new();
        let layout: Vec<StageLayout<'_>> = if is_graph {
            if raw.jobs.is_empty() {
                bail!(
                    "{at}: the pipeline has no stages ([[stages]] with a name and jobs) and no \
                     jobs ([jobs.<ID>], run as a graph by their `needs`)"
                );
            }
            (graph_ids, preloaded) = self.graph_jobs(file, &raw.jobs)?;
            vec![(GRAPH_STAGE, default_stop, &graph_ids, None)]
        } else {
            raw.stages
                .iter()
                .map(|s| {
                    (
                        s.name.as_str(),
                        s.stop_on_failure.unwrap_or(default_stop),
                        s.jobs.as_slice(),
                        s.looping.as_ref(),
                    )
                })
                .collect()
        };
        let mut checking = Checking {
            project: self,
            file,
            raw,
            pipeline_slurm: raw.slurm.clone().unwrap_or_default().into(),
            preloaded,
            stage_of: stage_of(&layout),
            seen_stages: HashSet::new(),
            seen_jobs: HashMap::new(),
        };
        let stages = layout
            .iter()
            .enumerate()
            .map(|(si, stage)| checking.stage(si, stage))
            .collect::<Result<Vec<Stage>>>()?;
        let mut pipeline = Pipeline {
            name,
            file: file.to_path_buf(),
            description: raw.description.clone(),
            stages,
            waits: Vec::new(),
            is_graph,
            resources: crate::resources::from_file(&raw.resources)
                .map_err(|why| anyhow!("{at}: {why}"))?,
        };
        pipeline.waits = waits(&pipeline)?;
        Ok(pipeline)
    }

    /// The jobs of a pipeline without stages: its `[jobs]`, and the shared jobs they need
    /// (transitively), each after what it needs where the needs allow, else in name order;
    /// with the jobs, loaded (once).
    fn graph_jobs(
        &self,
        file: &Path,
        inline: &BTreeMap<String, RawJob>,
    ) -> Result<(Vec<String>, HashMap<String, Job>)> {
        let mut ids: Vec<String> = inline.keys().cloned().collect();
        let mut known: HashSet<String> = ids.iter().cloned().collect();
        let mut loaded: HashMap<String, Job> = HashMap::new();
        let mut i = 0;
        while i < ids.len() {
            let id = ids[i].clone();
            let job = self.job(&id, GRAPH_STAGE, file, inline)?;
            for n in &job.needs {
                if known.contains(n) {
                    continue;
                }
                let shared = self.jobs_dir().join(format!("{n}.toml"));
                if n.starts_with(NESTED_PREFIX) || !shared.is_file() {
                    bail!(
                        "{}: the job {id:?} needs {n:?}, which is defined neither in the \
                         pipeline's [jobs.{n}] table nor in {}",
                        file.display(),
                        shared.display()
                    );
                }
                known.insert(n.clone());
                ids.push(n.clone());
            }
            loaded.insert(id, job);
            i += 1;
        }
        let jobs: Vec<Job> = ids.iter().filter_map(|id| loaded.remove(id)).collect();
        let jobs = after_needs(jobs, |j| j.id.as_str(), |j| j.needs.as_slice());
        let ordered = jobs.iter().map(|j| j.id.clone()).collect();
        Ok((
            ordered,
            jobs.into_iter().map(|j| (j.id.clone(), j)).collect(),
        ))
    }

    /// Every job the project defines: `jobs/*.toml` and each pipeline's `[jobs]` tables.
    pub(crate) fn all_jobs(&self) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        let mut shared: Vec<PathBuf> = std::fs::read_dir(self.jobs_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        shared.sort();
        for path in shared {
            let id = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            jobs.push(self.job(&id, "-", &path, &BTreeMap::new())?);
        }
        for name in self.pipeline_names() {
            let file = self.find(&name)?;
            let raw = read_pipeline(&file)?;
            for id in raw.jobs.keys() {
                jobs.push(self.job(id, "-", &file, &raw.jobs)?);
            }
        }
        Ok(jobs)
    }
}

/// What checking a pipeline file's stages needs as it goes: the file, its raw tables, the jobs
/// loaded ahead (a graph's), where each job is, and the stage names and jobs seen so far.
struct Checking<'a> {
    project: &'a Project,
    file: &'a Path,
    raw: &'a RawPipeline,
    pipeline_slurm: fanout::Slurm,
    preloaded: HashMap<String, Job>,
    stage_of: HashMap<&'a str, usize>,
    seen_stages: HashSet<&'a str>,
    /// Job id -> the stage it appeared in.
    seen_jobs: HashMap<&'a str, &'a str>,
}

impl<'a> Checking<'a> {
    /// Stage `si`, as written in `layout`, checked: its jobs loaded (a matrix's expanded),
    /// ordered by their needs, or its loop checked.
    fn stage(&mut self, si: usize, layout: &StageLayout<'a>) -> Result<Stage> {
        let at = self.file.display();
        let &(stage_name, stop_on_failure, ids, raw_loop) = layout;
        if !self.seen_stages.insert(stage_name) {
            bail!("{at}: two stages are named {stage_name:?}; stage names must differ");
        }
        if raw_loop.is_some() && !ids.is_empty() {
            bail!(
                "{at}: stage {stage_name:?} has both jobs and a loop; a loop stage lists its \
                 jobs in loop.jobs"
            );
        }
        if ids.is_empty() && raw_loop.is_none() {
            bail!("{at}: stage {stage_name:?} has no jobs");
        }
        let loop_ids: &[String] = raw_loop.map_or(&[], |l| l.jobs.as_slice());
        let mut jobs = Vec::new();
        for id in ids.iter().chain(loop_ids) {
            let job = self.job(id, stage_name)?;
            if job.matrix.is_empty() {
                jobs.push(job);
            } else if raw_loop.is_some() {
                bail!(
                    "{at}: stage {stage_name:?}: the loop's job {id:?} has a matrix; a loop runs \
                     its jobs once per item already"
                );
            } else {
                jobs.extend(matrix_jobs(&at, &job)?);
            }
        }
        let (jobs, looping) = match raw_loop {
            Some(l) => {
                let l = check_loop(&at, self.file, stage_name, si, l, &self.stage_of, jobs)?;
                (Vec::new(), Some(l))
            }
            None => (
                after_needs(jobs, |j| j.id.as_str(), |j| j.needs.as_slice()),
                None,
            ),
        };
        Ok(Stage {
            name: stage_name.to_owned(),
            stop_on_failure,
            jobs,
            looping,
        })
    }

    /// Job `id` of stage `stage_name`, once per pipeline, with the pipeline's backend and Slurm
    /// settings under its own.
    fn job(&mut self, id: &'a str, stage_name: &'a str) -> Result<Job> {
        if let Some(other) = self.seen_jobs.insert(id, stage_name) {
            bail!(
                "{}: the job {id:?} appears twice (stage {other:?} and stage {stage_name:?}); a \
                 job runs once per pipeline",
                self.file.display()
            );
        }
        let mut job = match self.preloaded.remove(id) {
            Some(job) => job,
            None => self
                .project
                .job(id, stage_name, self.file, &self.raw.jobs)?,
        };
        if !matches!(job.run, Run::Pipeline(_)) {
            job.backend = job.backend.or(self.raw.backend);
            job.slurm = self.pipeline_slurm.merged_with(&job.slurm).into();
        }
        Ok(job)
    }
}

/// A stage as written: its name, `stop_on_failure`, jobs and loop.
type StageLayout<'a> = (&'a str, bool, &'a [String], Option<&'a RawLoop>);

/// Where each job is, for `over` and references, which must point to earlier stages.
fn stage_of<'a>(layout: &[StageLayout<'a>]) -> HashMap<&'a str, usize> {
    layout
        .iter()
        .enumerate()
        .flat_map(|(si, (_, _, ids, l))| {
            ids.iter()
                .chain(l.iter().flat_map(|l| &l.jobs))
                .map(move |id| (id.as_str(), si))
        })
        .collect()
}

/// A stage's loop, checked: `over` and the references name jobs of earlier stages, `key` is a
/// path into the item, the jobs are there and need nothing. `jobs`: the loop's jobs, loaded.
fn check_loop(
    at: &std::path::Display<'_>,
    file: &Path,
    stage: &str,
    si: usize,
    raw: &RawLoop,
    stage_of: &HashMap<&str, usize>,
    jobs: Vec<Job>,
) -> Result<Loop> {
    // The file, and the line where `needle` first appears in it (for a loop's errors).
    let at_line = |needle: &str| format!("{at}{}", line_of(file, needle));
    let earlier = |what: &str, job: &str| -> Result<()> {
        let at = at_line(&format!("@run.{job}"));
        match stage_of.get(job) {
            Some(&s) if s < si => Ok(()),
            Some(_) => bail!(
                "{at}: stage {stage:?}: {what} names the job {job:?}, which does not run \
                 before the loop (it is in this or a later stage): a loop reads the output of \
                 a job of an earlier stage"
            ),
            None => bail!(
                "{at}: stage {stage:?}: {what} names the job {job:?}, which is not a job of \
                 this pipeline"
            ),
        }
    };
    let over = match Reference::parse(&raw.over) {
        Some(Ok(r @ Reference::Run { .. })) => r,
        Some(Err(why)) => bail!("{}: stage {stage:?}: loop.over: {why}", at_line(&raw.over)),
        _ => bail!(
            "{}: stage {stage:?}: loop.over = {:?}: expected @run.JOB[.path], the output of a \
             job of an earlier stage",
            at_line(&raw.over),
            raw.over
        ),
    };
    if let Reference::Run { job, .. } = &over {
        earlier("loop.over", job)?;
    }
    for (k, v) in &raw.payload {
        crate::payload::check_key(k)
            .map_err(|why| anyhow!("{at}: stage {stage:?}: loop.payload: {why}"))?;
        if let Some(parsed) = v.as_str().and_then(Reference::parse) {
            match parsed {
                Ok(Reference::Run { job, .. }) => earlier(&format!("loop.payload.{k}"), &job)?,
                Ok(_) => {}
                Err(why) => bail!(
                    "{}: stage {stage:?}: loop.payload.{k}: {why}",
                    at_line(v.as_str().unwrap_or_default())
                ),
            }
        }
    }
    let key = match raw.key.as_deref().map(Reference::parse) {
        None => None,
        Some(Some(Ok(r @ Reference::Item(_)))) => Some(r),
        Some(_) => bail!(
            "{}: stage {stage:?}: loop.key = {:?}: expected @item[.path]",
            at_line(raw.key.as_deref().unwrap_or_default()),
            raw.key.as_deref().unwrap_or_default()
        ),
    };
    if jobs.is_empty() {
        bail!("{at}: stage {stage:?}: the loop has no jobs (loop.jobs)");
    }
    if let Some(j) = jobs.iter().find(|j| !j.needs.is_empty()) {
        bail!(
            "{at}: stage {stage:?}: the loop's job {:?} has `needs`; a loop's jobs run after the \
             earlier stages, once per item",
            j.id
        );
    }
    Ok(Loop {
        over,
        payload: raw.payload.clone(),
        key,
        jobs,
        expanded: false,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, Project) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let project = Project::new(dir.path().to_path_buf());
        (dir, project)
    }

    fn err(files: &[(&str, &str)], name: &str) -> String {
        let (_d, p) = project(files);
        format!("{:#}", p.load(name).unwrap_err())
    }

    const OK: &str = r#"
description = "Ingest all accounts"
[[stages]]
name = "ingest"
jobs = ["a", "b"]
[[stages]]
name = "canonize"
jobs = ["shared"]
stop_on_failure = false
[jobs.a]
command = "echo a"
timeout = 600
retries = 2
env = { ACCOUNT = "1" }
cwd = "scripts"
[jobs.b]
command = ["echo", "b"]
"#;

    #[test]
    fn a_pipeline_with_inline_and_shared_jobs_loads() {
        let (_d, p) = project(&[
            ("pipelines/ingest.toml", OK),
            ("jobs/shared.toml", "command = \"true\"\n"),
        ]);
        let pl = p.load("ingest").unwrap();
        assert_eq!(pl.stages.len(), 2);
        assert!(pl.stages[0].stop_on_failure, "true by default");
        assert!(!pl.stages[1].stop_on_failure, "a stage may override it");
        let a = &pl.stages[0].jobs[0];
        assert_eq!(a.timeout, Some(Duration::from_secs(600)));
        assert_eq!(a.retries, 2);
        assert_eq!(a.env["ACCOUNT"], "1");
        assert!(matches!(&pl.stages[0].jobs[1].run, Run::Argv(v) if v == &["echo", "b"]));
        assert!(
            pl.stages[1].jobs[0]
                .defined_in
                .ends_with("jobs/shared.toml")
        );
    }

    #[test]
    fn the_python_yaml_layout_is_read() {
        let (_d, p) = project(&[
            (
                "pipelines/daily.yaml",
                "pipeline_id: pipeline.daily\nstop_on_failure: false\nstages:\n  - name: one\n    jobs: [x]\n",
            ),
            ("jobs/x.toml", "command = \"true\"\n"),
        ]);
        let pl = p.load("daily").unwrap();
        assert_eq!(pl.name, "daily");
        assert!(!pl.stages[0].stop_on_failure);
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let e = err(
            &[(
                "pipelines/p.toml",
                "[[stages]]\nname = \"x\"\njobs = [\"a\"\n",
            )],
            "p",
        );
        assert!(
            e.contains("pipelines/p.toml") && e.contains("line 3"),
            "{e}"
        );
        assert!(e.contains("column"), "{e}");
        let e = err(
            &[("pipelines/y.yaml", "stages:\n  - name: one\n    jobs: [x\n")],
            "y",
        );
        assert!(e.contains("pipelines/y.yaml at line"), "{e}");
        assert!(e.contains("column"), "{e}");
    }

    #[test]
    fn bad_definitions_are_refused_with_the_culprit_named() {
        let stage = |body: &str| format!("[[stages]]\nname = \"s\"\njobs = [\"a\"]\n{body}");
        let cases = [
            (
                stage(""),
                "stage \"s\" names the job \"a\", which is defined neither",
            ),
            (
                format!(
                    "{}[jobs.a]\ncommand = \"x\"\n[[stages]]\nname = \"s\"\njobs = [\"b\"]\n[jobs.b]\ncommand = \"y\"\n",
                    stage("")
                ),
                "two stages are named \"s\"",
            ),
            (
                "[[stages]]\nname = \"s\"\njobs = []\n".to_owned(),
                "stage \"s\" has no jobs",
            ),
            (
                "description = \"x\"\n".to_owned(),
                "the pipeline has no stages",
            ),
            (
                stage("[jobs.a]\ncommand = \"\"\n"),
                "the job \"a\" has an empty command",
            ),
            (
                stage("[jobs.a]\ncommand = 3\n"),
                "a string (run with sh -c) or an array",
            ),
            (
                stage("[jobs.a]\ncommand = \"x\"\ntimeout = 0\n"),
                "0 is not a positive number of seconds",
            ),
            (
                stage("[jobs.a]\ncommand = \"x\"\nretry = 2\n"),
                "unknown field `retry`",
            ),
            (
                stage("[jobs.a]\ncommand = \"x\"\ninputs = [\"raw/[.csv\"]\n"),
                "the job \"a\" has inputs pattern \"raw/[.csv\": unclosed character class",
            ),
        ];
        for (text, expected) in cases {
            let e = err(&[("pipelines/p.toml", &text)], "p");
            assert!(e.contains(expected), "expected {expected:?} in: {e}");
            assert!(e.contains("pipelines/p.toml"), "{e}");
        }
    }

    #[test]
    fn a_missing_pipeline_lists_the_ones_that_exist() {
        let e = err(
            &[("pipelines/alpha.toml", "x"), ("pipelines/beta.yaml", "x")],
            "gamma",
        );
        assert!(e.contains("no pipeline named \"gamma\""), "{e}");
        assert!(e.contains("the pipelines there: alpha, beta"), "{e}");
    }

    #[test]
    fn nested_pipeline_cycles_are_found_before_anything_runs() {
        let nest =
            |other: &str| format!("[[stages]]\nname = \"s\"\njobs = [\"pipeline.{other}\"]\n");
        let e = err(
            &[
                ("pipelines/a.toml", &nest("b")),
                ("pipelines/b.toml", &nest("c")),
                ("pipelines/c.toml", &nest("a")),
            ],
            "a",
        );
        assert!(
            e.contains("nested pipelines form a cycle: a -> b -> c -> a"),
            "{e}"
        );
        let e = err(&[("pipelines/a.toml", &nest("missing"))], "a");
        assert!(
            e.contains("runs the pipeline \"missing\"") && e.contains("no pipeline named"),
            "{e}"
        );
    }
}
