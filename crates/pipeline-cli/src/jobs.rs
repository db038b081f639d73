//! A job's definition: its raw table (inline in a pipeline, or `jobs/<ID>.toml`) made a checked
//! [`Job`], and a matrix job's combinations (`matrix`, `matrix_from`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::model::{Iteration, Job, NESTED_PREFIX, Run, nested_job};
use crate::payload::Payload;
use crate::project::Project;
use crate::raw::{CommandSpec, RawJob, RawMatrixFrom};

impl Project {
    /// The job `id` named by stage `stage` of pipeline `file` (whose inline jobs are `inline`),
    /// checked.
    pub(crate) fn job(
        &self,
        id: &str,
        stage: &str,
        file: &Path,
        inline: &BTreeMap<String, RawJob>,
    ) -> Result<Job> {
        if let Some(nested) = id.strip_prefix(NESTED_PREFIX) {
            if nested.is_empty() {
                bail!(
                    "{}: stage {stage:?} names {id:?}: which pipeline?",
                    file.display()
                );
            }
            return Ok(nested_job(id, nested, file));
        }
        let (raw, defined_in) = if let Some(raw) = inline.get(id) {
            (raw.clone(), file.to_path_buf())
        } else {
            self.shared_job(id, stage, file)?
        };
        let matrix = self
            .matrix(&raw)
            .map_err(|why| anyhow!("{}: the job {id:?} {why}", defined_in.display()))?;
        checked(id, raw, defined_in, matrix)
    }

    /// The raw job `jobs/<id>.toml`, and its path.
    fn shared_job(&self, id: &str, stage: &str, file: &Path) -> Result<(RawJob, PathBuf)> {
        let shared = self.jobs_dir().join(format!("{id}.toml"));
        if !shared.is_file() {
            bail!(
                "{}: stage {stage:?} names the job {id:?}, which is defined neither in the \
                 pipeline's [jobs.{id}] table nor in {}",
                file.display(),
                shared.display()
            );
        }
        let text = std::fs::read_to_string(&shared)
            .with_context(|| format!("reading {}", shared.display()))?;
        let raw: RawJob = toml::from_str(&text)
            .map_err(|e| anyhow!("{}: {}", shared.display(), e.to_string().trim_end()))?;
        Ok((raw, shared))
    }

    /// The combinations of a job's `matrix` (the cross product, in key order) or the items of
    /// its `matrix_from` (relative to the project folder); empty without either.
    fn matrix(&self, raw: &RawJob) -> Result<Vec<Payload>, String> {
        let items = match (&raw.matrix, &raw.matrix_from) {
            (None, None) => return Ok(Vec::new()),
            (Some(_), Some(_)) => return Err("has both matrix and matrix_from; use one".to_owned()),
            (Some(m), None) => return cross_product(m),
            (None, Some(from)) => self.matrix_from(from)?,
        };
        if items.is_empty() {
            return Err("matrix_from has no items".to_owned());
        }
        for p in &items {
            for key in p.keys() {
                crate::payload::check_key(key).map_err(|why| format!("matrix_from: {why}"))?;
            }
        }
        Ok(items)
    }

    /// The items of `matrix_from`: a file's lines, or a JSON file's list (an object's keys are
    /// an item's values; anything else is its `item`).
    fn matrix_from(&self, from: &RawMatrixFrom) -> Result<Vec<Payload>, String> {
        let item = |v: Value| -> Payload {
            match v {
                Value::Object(map) => map.into_iter().collect(),
                other => std::iter::once(("item".to_owned(), other)).collect(),
            }
        };
        match (&from.file, &from.json) {
            (Some(file), None) => {
                let path = self.at(file);
                Ok(std::fs::read_to_string(&path)
                    .map_err(|e| format!("matrix_from.file {}: {e}", path.display()))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| item(Value::String(l.to_owned())))
                    .collect())
            }
            (None, Some(json)) => {
                let path = self.at(json);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("matrix_from.json {}: {e}", path.display()))?;
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(list)) => Ok(list.into_iter().map(item).collect()),
                    Ok(other) => Err(format!(
                        "matrix_from.json {} is {}, not a list",
                        path.display(),
                        crate::payload::kind(&other)
                    )),
                    Err(e) => Err(format!(
                        "matrix_from.json {}: not JSON at line {}, column {}: {e}",
                        path.display(),
                        e.line(),
                        e.column()
                    )),
                }
            }
            _ => Err(
                "matrix_from takes one of file = \"lines.txt\" or json = \"list.json\"".to_owned(),
            ),
        }
    }
}

/// The raw job `id` (defined in `defined_in`) checked: a command, a valid timeout and valid
/// patterns.
fn checked(id: &str, raw: RawJob, defined_in: PathBuf, matrix: Vec<Payload>) -> Result<Job> {
    let at = defined_in.display();
    let run = match raw.command {
        CommandSpec::Shell(s) if s.trim().is_empty() => {
            bail!("{at}: the job {id:?} has an empty command")
        }
        CommandSpec::Argv(a) if a.is_empty() => {
            bail!("{at}: the job {id:?} has an empty command")
        }
        CommandSpec::Shell(s) => Run::Shell(s),
        CommandSpec::Argv(a) => Run::Argv(a),
    };
    let timeout = match raw.timeout {
        Some(t) => Some(
            fanout::timeout_from_secs(t)
                .map_err(|why| anyhow!("{at}: the job {id:?} has timeout = {t}: {why}"))?,
        ),
        None => None,
    };
    for (what, patterns) in [("inputs", &raw.inputs), ("outputs", &raw.outputs)] {
        for pattern in patterns {
            crate::patterns::check_pattern(pattern).map_err(|why| {
                anyhow!("{at}: the job {id:?} has {what} pattern {pattern:?}: {why}")
            })?;
        }
    }
    let params = raw
        .params
        .iter()
        .map(|p| {
            crate::params::ParamRef::parse(p)
                .map_err(|why| anyhow!("{at}: the job {id:?} has params {why}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let retry_backoff = raw
        .retry_backoff
        .as_deref()
        .map(|b| {
            let d = humantime::parse_duration(b.trim()).map_err(|e| {
                anyhow!("{at}: the job {id:?} has retry_backoff = {b:?}: {e} (e.g. \"5s\", \"1m\")")
            })?;
            if d > MAX_BACKOFF {
                bail!("{at}: the job {id:?} has retry_backoff = {b:?}: at most a day");
            }
            Ok(d)
        })
        .transpose()?;
    let resources = crate::resources::needs(
        raw.cpus.as_ref(),
        raw.mem.as_ref(),
        raw.gpus.as_ref(),
        &raw.resources,
    )
    .map_err(|why| anyhow!("{at}: the job {id:?} has {why}"))?;
    for file in &raw.metrics {
        crate::metrics::check(file)
            .map_err(|why| anyhow!("{at}: the job {id:?} has metrics {why}"))?;
    }
    Ok(Job {
        id: id.to_owned(),
        run,
        backend: raw.backend,
        slurm: std::sync::Arc::new(raw.slurm.unwrap_or_default().into()),
        launcher: fanout::Launcher::Local,
        timeout,
        retries: raw.retries,
        retry_backoff,
        resources,
        env: raw.env,
        cwd: raw.cwd,
        outside_project: raw.outside_project,
        defined_in: defined_in.into(),
        needs: raw.needs,
        inputs: raw.inputs,
        outputs: raw.outputs,
        params,
        metrics: raw.metrics,
        output: raw.output,
        iteration: None,
        matrix,
    })
}

/// The longest first wait before a retry (`retry_backoff`).
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Every combination of a `matrix`'s values, in key order.
fn cross_product(m: &BTreeMap<String, Vec<Value>>) -> Result<Vec<Payload>, String> {
    let mut combos: Vec<Payload> = vec![Payload::new()];
    for (key, values) in m {
        crate::payload::check_key(key).map_err(|why| format!("matrix: {why}"))?;
        if values.is_empty() {
            return Err(format!("matrix.{key} is an empty list"));
        }
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(key.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    Ok(combos)
}

/// The jobs a matrix job stands for: `job[v1,v2]`, each with its combination as payload.
pub(crate) fn matrix_jobs(at: &std::path::Display<'_>, job: &Job) -> Result<Vec<Job>> {
    let mut names = HashSet::new();
    let mut jobs = Vec::with_capacity(job.matrix.len());
    // Each iteration is the job without its matrix: cloning the matrix per iteration would
    // cost the square of its size.
    let template = Job {
        matrix: Vec::new(),
        ..job.clone()
    };
    for combination in &job.matrix {
        let values: Vec<String> = combination.values().map(crate::payload::text).collect();
        let name = format!("{}[{}]", job.id, values.join(","));
        if !names.insert(name.clone()) {
            bail!(
                "{at}: the job {:?}: its matrix has {name:?} twice; each combination runs once",
                job.id
            );
        }
        let mut one = template.clone();
        one.id = name;
        one.iteration = Some(Iteration {
            of: job.id.clone(),
            payload: combination.clone(),
        });
        jobs.push(one);
    }
    Ok(jobs)
}
