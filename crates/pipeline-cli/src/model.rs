//! The checked model of a pipeline: what the loading makes of the files, and what a run reads.
//! Nothing here reads a file or checks one: see `load.rs` and `jobs.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// Prefix of a stage entry that runs another pipeline as one job.
pub(crate) const NESTED_PREFIX: &str = "pipeline.";

/// A validated pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    pub(crate) description: Option<String>,
    pub(crate) stages: Vec<Stage>,
    /// What each job waits for, in job order (stage by stage): see [`Waits`].
    pub(crate) waits: Vec<Waits>,
    /// No `[[stages]]`: the jobs, ordered so that each comes after what it needs, form one
    /// stage named [`GRAPH_STAGE`].
    pub(crate) is_graph: bool,
    /// `resources = { db = 1 }`: what the run has of named resources, unless `--resources`
    /// says otherwise.
    pub(crate) resources: crate::resources::Amounts,
}

/// The one stage of a pipeline of jobs with `needs` and no stages.
pub(crate) const GRAPH_STAGE: &str = "graph";

/// What a job waits for, as positions in job order: the jobs it `needs` (they must succeed),
/// and, for a job without `needs` in a later stage, the jobs of the earlier stages it comes
/// `after` (they must have finished: a failure that stops the pipeline stops it through the
/// stage's failure policy, not through these).
#[derive(Debug, Clone, Default)]
pub(crate) struct Waits {
    pub(crate) needs: Vec<usize>,
    /// Shared by the jobs of a stage (so 10,000 jobs after 10,000 cost 20,000, not 10^8).
    pub(crate) after: Arc<[usize]>,
}

impl Pipeline {
    /// Every job with its stage and position in it, in job order.
    pub(crate) fn jobs(&self) -> impl Iterator<Item = (usize, usize, &Job)> {
        self.stages
            .iter()
            .enumerate()
            .flat_map(|(si, s)| s.jobs.iter().enumerate().map(move |(ji, j)| (si, ji, j)))
    }

    /// Whether any job (loop templates included) tracks inputs or params: only then does a
    /// job's state matter to those that wait for it (see `uptodate.rs`).
    pub(crate) fn tracks_any(&self) -> bool {
        self.stages
            .iter()
            .flat_map(|s| s.jobs.iter().chain(s.looping.iter().flat_map(|l| &l.jobs)))
            .any(Job::tracked)
    }

    pub(crate) fn job_count(&self) -> usize {
        self.stages.iter().map(|s| s.jobs.len()).sum()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Stage {
    pub(crate) name: String,
    pub(crate) stop_on_failure: bool,
    /// A loop stage's jobs are its iterations, known once it is expanded (see `looping.rs`).
    pub(crate) jobs: Vec<Job>,
    /// A loop stage: its jobs run once per item of a list an earlier job returned.
    pub(crate) looping: Option<Loop>,
}

/// `loop = { over = "@run.peek.items", payload = {...}, key = "@item.id", jobs = [...] }`.
#[derive(Debug, Clone)]
pub(crate) struct Loop {
    /// Where the list is: a job of an earlier stage, and a path into its output.
    pub(crate) over: Reference,
    /// Per item, the payload its jobs get (over the run's): values that are references
    /// (`@item...`, `@payload.KEY`, `@run.JOB...`) are resolved per item.
    pub(crate) payload: BTreeMap<String, serde_json::Value>,
    /// `key = "@item.session_id"`: iterations are named `job[<key>]`, else `job[<index>]`.
    pub(crate) key: Option<Reference>,
    /// The jobs run for each item, as defined (placeholders resolved per item).
    pub(crate) jobs: Vec<Job>,
    /// Set once expanded (the stage's jobs are then its iterations).
    pub(crate) expanded: bool,
}

/// `pipeline.<name>` as a job: this program run on that pipeline (see `job.rs`).
pub(crate) fn nested_job(id: &str, nested: &str, file: &Path) -> Job {
    Job {
        id: id.to_owned(),
        run: Run::Pipeline(nested.to_owned()),
        // The nested lorchestra runs here; its own jobs say where they run.
        backend: Some(Backend::Local),
        slurm: Arc::default(),
        launcher: fanout::Launcher::Local,
        timeout: None,
        retries: 0,
        retry_backoff: None,
        resources: crate::resources::Needs::new(),
        env: BTreeMap::new(),
        cwd: None,
        outside_project: false,
        defined_in: file.into(),
        needs: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        params: Vec::new(),
        metrics: Vec::new(),
        output: OutputFrom::File,
        iteration: None,
        matrix: Vec::new(),
    }
}

/// `@run.JOB.a.0.b`, `@item.a`, `@payload.KEY`: a value named by where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    /// A path into the output of a job.
    Run { job: String, path: Vec<String> },
    /// A path into the loop's item.
    Item(Vec<String>),
    /// A key of the run's payload.
    Payload(String),
}

impl Reference {
    /// `text` as a reference, if it starts with `@`; an error says what references look like.
    pub(crate) fn parse(text: &str) -> Option<Result<Reference, String>> {
        let rest = text.strip_prefix('@')?;
        let mut parts = rest.split('.').map(str::to_owned);
        let head = parts.next().unwrap_or_default();
        let path: Vec<String> = parts.collect();
        if path.iter().any(String::is_empty) {
            return Some(Err(format!("{text:?} has an empty part")));
        }
        Some(match head.as_str() {
            "item" => Ok(Reference::Item(path)),
            "payload" if path.len() == 1 => Ok(Reference::Payload(path[0].clone())),
            "run" if !path.is_empty() => Ok(Reference::Run {
                job: path[0].clone(),
                path: path[1..].to_vec(),
            }),
            _ => Err(format!(
                "{text:?} is not a reference: @run.JOB[.path], @item[.path] or @payload.KEY"
            )),
        })
    }
}

/// Where jobs run: here, or as Slurm job steps (see `fanout::Slurm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backend {
    /// On this machine.
    #[default]
    Local,
    /// On a Slurm cluster, each job as a job step started with `srun`.
    Slurm,
}

#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) run: Run,
    /// The job's `backend`, else its pipeline's; `None`: the command line decides.
    pub(crate) backend: Option<Backend>,
    /// The pipeline's `slurm` table with the job's over it.
    pub(crate) slurm: Arc<fanout::Slurm>,
    /// Where it runs, settled with the command line by `run::settle` before anything runs
    /// (local until then).
    pub(crate) launcher: fanout::Launcher,
    /// Its own `timeout`; after `run::settle`, else the command line's.
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
    /// The wait before its first retry (`retry_backoff`), doubling after; else the core's
    /// (500 ms).
    pub(crate) retry_backoff: Option<Duration>,
    /// What it takes of the run's resources while it runs (see `resources.rs`); on Slurm,
    /// `cpus`, `mem` and `gpus` are asked of Slurm instead.
    pub(crate) resources: crate::resources::Needs,
    pub(crate) env: BTreeMap<String, String>,
    /// Relative to the project folder.
    pub(crate) cwd: Option<PathBuf>,
    /// `outside_project = true`: a payload value may make `cwd` a folder outside the project.
    pub(crate) outside_project: bool,
    /// Where it was defined, for `lorchestra jobs`.
    pub(crate) defined_in: Arc<Path>,
    /// The jobs it needs, as written.
    pub(crate) needs: Vec<String>,
    /// Globs of the files it reads, relative to its folder: with them, a job whose inputs,
    /// definition and the jobs it depends on did not change since it last succeeded (and whose
    /// outputs exist) is up to date and does not run.
    pub(crate) inputs: Vec<String>,
    /// Globs of the files it writes, relative to its folder; each must match a file for the
    /// job to be up to date.
    pub(crate) outputs: Vec<String>,
    /// The parameters its up-to-date key tracks (see `params.rs`).
    pub(crate) params: Vec<crate::params::ParamRef>,
    /// Files of numbers recorded after it succeeds (see `metrics.rs`), relative to its folder.
    pub(crate) metrics: Vec<String>,
    /// Where the JSON value it returns comes from (see `output.rs`).
    pub(crate) output: OutputFrom,
    /// An iteration of a loop's or a matrix's job: the job as defined, and the payload of its
    /// item (over the run's).
    pub(crate) iteration: Option<Iteration>,
    /// `matrix`/`matrix_from`: the payload of each of the jobs it stands for (empty: none).
    pub(crate) matrix: Vec<crate::payload::Payload>,
}

/// What makes a job an iteration of a loop's job.
#[derive(Debug, Clone)]
pub(crate) struct Iteration {
    /// The id of the job as defined (`llm_extract` for `llm_extract[s1]`).
    pub(crate) of: String,
    pub(crate) payload: crate::payload::Payload,
}

impl Job {
    /// Whether it declares what it depends on (`inputs` or `params`): only such a job can be up
    /// to date; one that declares neither always runs.
    pub(crate) fn tracked(&self) -> bool {
        !self.inputs.is_empty() || !self.params.is_empty()
    }

    /// A hash of what the job does: its command, environment and folder (not its timeout,
    /// retries or where it runs). `--resume` runs a job again when this changed since it
    /// succeeded.
    pub(crate) fn definition_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut field = |tag: &str, value: &str| {
            h.update(tag.as_bytes());
            h.update([0]);
            h.update(value.as_bytes());
            h.update([0]);
        };
        match &self.run {
            Run::Shell(s) => field("shell", s),
            Run::Argv(a) => {
                for arg in a {
                    field("arg", arg);
                }
            }
            Run::Pipeline(p) => field("pipeline", p),
        }
        for (k, v) in &self.env {
            field("env", &format!("{k}={v}"));
        }
        if let Some(cwd) = &self.cwd {
            field("cwd", &cwd.to_string_lossy());
        }
        // A command reads its values from the environment: an iteration's item is part of
        // what it does.
        if let Some(it) = &self.iteration {
            field(
                "payload",
                &serde_json::to_string(&it.payload).expect("a payload serializes"),
            );
        }
        h.finalize()[..12].iter().fold(String::new(), |mut hex, b| {
            use std::fmt::Write;
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Run {
    /// A string: run with `sh -c`.
    Shell(String),
    /// An array: run directly.
    Argv(Vec<String>),
    /// `pipeline.<name>`: another pipeline, as one job.
    Pipeline(String),
}

impl Run {
    pub(crate) fn display(&self) -> String {
        match self {
            Run::Shell(s) => s.clone(),
            Run::Argv(a) => fanout::Command::new(&a[0]).args(&a[1..]).display(),
            Run::Pipeline(name) => format!("lorchestra pipeline {name}"),
        }
    }
}

/// Where a job's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OutputFrom {
    /// The file named by `$LORCHESTRA_OUTPUT`, if the job wrote it.
    #[default]
    File,
    /// The file if written, else the last line of the job's log, which must then be JSON.
    Stdout,
}
