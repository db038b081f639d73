//! Pipeline files → a validated [`Pipeline`]. Every error about input is raised here, naming the
//! file, line, stage or job; nothing has run yet.
//!
//! Layout of a project folder:
//! - `pipelines/<NAME>.toml` (or `.yaml`/`.yml`, the Python lorchestra's layout),
//! - `jobs/<JOB_ID>.toml`: jobs shared by several pipelines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

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

/// `pipeline.<name>` as a job: this program run on that pipeline (see `run.rs`).
pub(crate) fn nested_job(id: &str, nested: &str, file: &Path) -> Job {
    Job {
        id: id.to_owned(),
        run: Run::Pipeline(nested.to_owned()),
        // The nested lorchestra runs here; its own jobs say where they run.
        backend: Some(Backend::Local),
        slurm: fanout::Slurm::default(),
        launcher: fanout::Launcher::Local,
        timeout: None,
        retries: 0,
        env: BTreeMap::new(),
        cwd: None,
        outside_project: false,
        defined_in: file.to_path_buf(),
        needs: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        output: crate::output::OutputFrom::File,
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
    pub(crate) slurm: fanout::Slurm,
    /// Where it runs, settled with the command line by `run::settle` before anything runs
    /// (local until then).
    pub(crate) launcher: fanout::Launcher,
    /// Its own `timeout`; after `run::settle`, else the command line's.
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) env: BTreeMap<String, String>,
    /// Relative to the project folder.
    pub(crate) cwd: Option<PathBuf>,
    /// `outside_project = true`: a payload value may make `cwd` a folder outside the project.
    pub(crate) outside_project: bool,
    /// Where it was defined, for `lorchestra jobs`.
    pub(crate) defined_in: PathBuf,
    /// The jobs it needs, as written.
    pub(crate) needs: Vec<String>,
    /// Globs of the files it reads, relative to its folder: with them, a job whose inputs,
    /// definition and the jobs it depends on did not change since it last succeeded (and whose
    /// outputs exist) is up to date and does not run.
    pub(crate) inputs: Vec<String>,
    /// Globs of the files it writes, relative to its folder; each must match a file for the
    /// job to be up to date.
    pub(crate) outputs: Vec<String>,
    /// Where the JSON value it returns comes from (see `output.rs`).
    pub(crate) output: crate::output::OutputFrom,
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

// ---- the files, as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    /// The Python lorchestra's YAML names the pipeline here; the file name wins.
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted so existing YAML files load; the file name names it"
    )]
    pipeline_id: Option<String>,
    description: Option<String>,
    stop_on_failure: Option<bool>,
    backend: Option<Backend>,
    slurm: Option<RawSlurm>,
    #[serde(default)]
    stages: Vec<RawStage>,
    #[serde(default)]
    jobs: BTreeMap<String, RawJob>,
}

/// `slurm = { partition = "...", account = "...", cpus = 4, mem = "8G", args = ["--qos=x"] }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlurm {
    partition: Option<String>,
    account: Option<String>,
    cpus: Option<u32>,
    mem: Option<String>,
    #[serde(default)]
    args: Vec<String>,
}

impl From<RawSlurm> for fanout::Slurm {
    fn from(r: RawSlurm) -> Self {
        fanout::Slurm {
            partition: r.partition,
            account: r.account,
            cpus: r.cpus,
            mem: r.mem,
            args: r.args,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: String,
    #[serde(default)]
    jobs: Vec<String>,
    stop_on_failure: Option<bool>,
    #[serde(rename = "loop")]
    looping: Option<RawLoop>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoop {
    over: String,
    #[serde(default)]
    payload: BTreeMap<String, serde_json::Value>,
    key: Option<String>,
    #[serde(default)]
    jobs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    command: CommandSpec,
    /// Seconds.
    timeout: Option<f64>,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    #[serde(default)]
    outside_project: bool,
    backend: Option<Backend>,
    slurm: Option<RawSlurm>,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default)]
    outputs: Vec<String>,
    /// `output = "stdout"`: its value may be the last line of its log.
    #[serde(default)]
    output: crate::output::OutputFrom,
    /// `matrix = { account = [1, 2], region = ["eu", "us"] }`: one job per combination.
    matrix: Option<BTreeMap<String, Vec<serde_json::Value>>>,
    /// `matrix_from = { file = "accounts.txt" }` (one item per line) or `{ json = "x.json" }`.
    matrix_from: Option<RawMatrixFrom>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrixFrom {
    file: Option<PathBuf>,
    json: Option<PathBuf>,
}

/// `command = "string"` or `command = ["argv", ...]`, with a clear error otherwise (not
/// `serde(untagged)`, whose message would name neither form).
#[derive(Debug, Clone)]
enum CommandSpec {
    Shell(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command: a string (run with sh -c) or an array of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandSpec, E> {
                Ok(CommandSpec::Shell(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandSpec, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(CommandSpec::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

// ---- loading ----

/// A project folder: where pipelines, jobs and runs live.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub(crate) dir: PathBuf,
}

impl Project {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Project { dir }
    }

    /// `rel` inside the project (without a leading `./` for the current folder, so messages
    /// show the paths people type).
    pub(crate) fn at(&self, rel: impl AsRef<Path>) -> PathBuf {
        if self.dir == Path::new(".") {
            rel.as_ref().to_path_buf()
        } else {
            self.dir.join(rel)
        }
    }

    pub(crate) fn pipelines_dir(&self) -> PathBuf {
        self.at("pipelines")
    }

    pub(crate) fn jobs_dir(&self) -> PathBuf {
        self.at("jobs")
    }

    /// Names of the pipelines in `pipelines/`, sorted.
    pub(crate) fn pipeline_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.pipelines_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let ext = p.extension()?.to_str()?;
                matches!(ext, "toml" | "yaml" | "yml")
                    .then(|| p.file_stem()?.to_str().map(str::to_owned))?
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The file of pipeline `name_or_file`: a path to a file, or a name in `pipelines/`.
    pub(crate) fn find(&self, name_or_file: &str) -> Result<PathBuf> {
        let as_path = Path::new(name_or_file);
        if as_path
            .extension()
            .is_some_and(|e| e == "toml" || e == "yaml" || e == "yml")
            || name_or_file.contains('/')
        {
            if as_path.is_file() {
                return Ok(as_path.to_path_buf());
            }
            bail!("the pipeline file {name_or_file} does not exist");
        }
        for ext in ["toml", "yaml", "yml"] {
            let p = self.pipelines_dir().join(format!("{name_or_file}.{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
        let names = self.pipeline_names();
        if names.is_empty() {
            bail!(
                "no pipeline named {name_or_file:?}: {} has no pipelines (pipelines/<NAME>.toml)",
                self.dir.display()
            );
        }
        bail!(
            "no pipeline named {name_or_file:?} in {}; the pipelines there: {}",
            self.pipelines_dir().display(),
            names.join(", ")
        )
    }

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
        let pipeline = self.validate(name.clone(), &file, raw)?;
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

    fn validate(&self, name: String, file: &Path, raw: RawPipeline) -> Result<Pipeline> {
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
        let stage_of = stage_of(&layout);
        let pipeline_slurm: fanout::Slurm = raw.slurm.clone().unwrap_or_default().into();
        let mut seen_stages = HashSet::new();
        let mut seen_jobs: HashMap<&str, &str> = HashMap::new();
        let mut stages = Vec::new();
        for (si, (stage_name, stop_on_failure, ids, raw_loop)) in layout.iter().enumerate() {
            let (stage_name, stop_on_failure) = (*stage_name, *stop_on_failure);
            if !seen_stages.insert(stage_name) {
                bail!("{at}: two stages are named {stage_name:?}; stage names must differ");
            }
            if raw_loop.is_some() && !ids.is_empty() {
                bail!(
                    "{at}: stage {stage_name:?} has both jobs and a loop; a loop stage lists \
                     its jobs in loop.jobs"
                );
            }
            if ids.is_empty() && raw_loop.is_none() {
                bail!("{at}: stage {stage_name:?} has no jobs");
            }
            let loop_ids: &[String] = raw_loop.map_or(&[], |l| l.jobs.as_slice());
            let mut jobs = Vec::new();
            for id in ids.iter().chain(loop_ids) {
                if let Some(other) = seen_jobs.insert(id, stage_name) {
                    bail!(
                        "{at}: the job {id:?} appears twice (stage {other:?} and stage \
                         {stage_name:?}); a job runs once per pipeline"
                    );
                }
                let loaded = preloaded.remove(id.as_str());
                let mut job =
                    loaded.map_or_else(|| self.job(id, stage_name, file, &raw.jobs), Ok)?;
                if !matches!(job.run, Run::Pipeline(_)) {
                    job.backend = job.backend.or(raw.backend);
                    job.slurm = pipeline_slurm.merged_with(&job.slurm);
                }
                if job.matrix.is_empty() {
                    jobs.push(job);
                } else if raw_loop.is_some() {
                    bail!(
                        "{at}: stage {stage_name:?}: the loop's job {id:?} has a matrix; a loop \
                         runs its jobs once per item already"
                    );
                } else {
                    jobs.extend(matrix_jobs(&at, &job)?);
                }
            }
            let (jobs, looping) = match raw_loop {
                Some(l) => (
                    Vec::new(),
                    Some(check_loop(&at, file, stage_name, si, l, &stage_of, jobs)?),
                ),
                None => (
                    after_needs(jobs, |j| j.id.as_str(), |j| j.needs.as_slice()),
                    None,
                ),
            };
            stages.push(Stage {
                name: stage_name.to_owned(),
                stop_on_failure,
                jobs,
                looping,
            });
        }
        let mut pipeline = Pipeline {
            name,
            file: file.to_path_buf(),
            description: raw.description,
            stages,
            waits: Vec::new(),
            is_graph,
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

    fn job(
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
            (raw, shared)
        };
        let matrix = self
            .matrix(&raw)
            .map_err(|why| anyhow!("{}: the job {id:?} {why}", defined_in.display()))?;
        let run = match raw.command {
            CommandSpec::Shell(s) if s.trim().is_empty() => {
                bail!(
                    "{}: the job {id:?} has an empty command",
                    defined_in.display()
                )
            }
            CommandSpec::Argv(a) if a.is_empty() => {
                bail!(
                    "{}: the job {id:?} has an empty command",
                    defined_in.display()
                )
            }
            CommandSpec::Shell(s) => Run::Shell(s),
            CommandSpec::Argv(a) => Run::Argv(a),
        };
        let timeout = match raw.timeout {
            Some(t) => Some(fanout::timeout_from_secs(t).map_err(|why| {
                anyhow::anyhow!(
                    "{}: the job {id:?} has timeout = {t}: {why}",
                    defined_in.display()
                )
            })?),
            None => None,
        };
        for (what, patterns) in [("inputs", &raw.inputs), ("outputs", &raw.outputs)] {
            for pattern in patterns {
                crate::cache::check_pattern(pattern).map_err(|why| {
                    anyhow!(
                        "{}: the job {id:?} has {what} pattern {pattern:?}: {why}",
                        defined_in.display()
                    )
                })?;
            }
        }
        Ok(Job {
            id: id.to_owned(),
            run,
            backend: raw.backend,
            slurm: raw.slurm.unwrap_or_default().into(),
            launcher: fanout::Launcher::Local,
            timeout,
            retries: raw.retries,
            env: raw.env,
            cwd: raw.cwd,
            outside_project: raw.outside_project,
            defined_in,
            needs: raw.needs,
            inputs: raw.inputs,
            outputs: raw.outputs,
            output: raw.output,
            iteration: None,
            matrix,
        })
    }

    /// The combinations of a job's `matrix` (the cross product, in key order) or the items of
    /// its `matrix_from` (relative to the project folder); empty without either.
    fn matrix(&self, raw: &RawJob) -> Result<Vec<crate::payload::Payload>, String> {
        use crate::payload::Payload;
        use serde_json::Value;
        match (&raw.matrix, &raw.matrix_from) {
            (None, None) => Ok(Vec::new()),
            (Some(_), Some(_)) => Err("has both matrix and matrix_from; use one".to_owned()),
            (Some(m), None) => {
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
            (None, Some(from)) => {
                let item = |v: Value| -> Payload {
                    match v {
                        Value::Object(map) => map.into_iter().collect(),
                        other => [("item".to_owned(), other)].into(),
                    }
                };
                let items: Vec<Payload> = match (&from.file, &from.json) {
                    (Some(file), None) => {
                        let path = self.at(file);
                        std::fs::read_to_string(&path)
                            .map_err(|e| format!("matrix_from.file {}: {e}", path.display()))?
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(|l| item(Value::String(l.to_owned())))
                            .collect()
                    }
                    (None, Some(json)) => {
                        let path = self.at(json);
                        let text = std::fs::read_to_string(&path)
                            .map_err(|e| format!("matrix_from.json {}: {e}", path.display()))?;
                        match serde_json::from_str::<Value>(&text) {
                            Ok(Value::Array(list)) => list.into_iter().map(item).collect(),
                            Ok(other) => {
                                return Err(format!(
                                    "matrix_from.json {} is {}, not a list",
                                    path.display(),
                                    crate::payload::kind(&other)
                                ));
                            }
                            Err(e) => {
                                return Err(format!(
                                    "matrix_from.json {}: not JSON at line {}, column {}: {e}",
                                    path.display(),
                                    e.line(),
                                    e.column()
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(
                            "matrix_from takes one of file = \"lines.txt\" or json = \"list.json\""
                                .to_owned(),
                        );
                    }
                };
                if items.is_empty() {
                    return Err("matrix_from has no items".to_owned());
                }
                for p in &items {
                    for key in p.keys() {
                        crate::payload::check_key(key)
                            .map_err(|why| format!("matrix_from: {why}"))?;
                    }
                }
                Ok(items)
            }
        }
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

/// The jobs a matrix job stands for: `job[v1,v2]`, each with its combination as payload.
fn matrix_jobs(at: &std::path::Display<'_>, job: &Job) -> Result<Vec<Job>> {
    let mut names = HashSet::new();
    let mut jobs = Vec::with_capacity(job.matrix.len());
    for combination in &job.matrix {
        let values: Vec<String> = combination.values().map(crate::payload::text).collect();
        let name = format!("{}[{}]", job.id, values.join(","));
        if !names.insert(name.clone()) {
            bail!(
                "{at}: the job {:?}: its matrix has {name:?} twice; each combination runs once",
                job.id
            );
        }
        let mut one = job.clone();
        one.matrix = Vec::new();
        one.id = name;
        one.iteration = Some(Iteration {
            of: job.id.clone(),
            payload: combination.clone(),
        });
        jobs.push(one);
    }
    Ok(jobs)
}

/// `, line N`: where `needle` first appears in `file` (nothing if it does not).
pub(crate) fn line_of(file: &Path, needle: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.lines().position(|l| l.contains(needle)))
        .map(|i| format!(", line {}", i + 1))
        .unwrap_or_default()
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

/// `items` reordered so that each comes after the items it needs, otherwise in their order.
/// Needs naming no item are ignored; items in a cycle keep their order at the end (the cycle
/// is reported by [`waits`], with names).
fn after_needs<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    needs: impl Fn(&T) -> &[String],
) -> Vec<T> {
    if items.iter().all(|t| needs(t).is_empty()) {
        return items;
    }
    let ids: HashSet<String> = items.iter().map(|t| id(t).to_owned()).collect();
    let mut placed: HashSet<String> = HashSet::new();
    let mut rest: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(rest.len());
    loop {
        let before = ordered.len();
        for slot in &mut rest {
            let ready = slot.as_ref().is_some_and(|t| {
                needs(t)
                    .iter()
                    .all(|n| placed.contains(n) || !ids.contains(n) || n == id(t))
            });
            if ready && let Some(t) = slot.take() {
                placed.insert(id(&t).to_owned());
                ordered.push(t);
            }
        }
        if ordered.len() == before {
            break;
        }
    }
    ordered.extend(rest.into_iter().flatten());
    ordered
}

/// What each job of `pipeline` waits for (see [`Waits`]); an error names a job that needs an
/// unknown job, a job of a later stage, or the jobs of a cycle.
pub(crate) fn waits(pipeline: &Pipeline) -> Result<Vec<Waits>> {
    let at = pipeline.file.display();
    let any_needs = pipeline.jobs().any(|(_, _, j)| !j.needs.is_empty());
    // Only `needs` name jobs (and can form cycles): without them, no lookups to prepare. A
    // loop's job stands for all its iterations (none before the loop is expanded).
    let mut position: HashMap<&str, (Vec<usize>, usize)> = HashMap::new();
    if any_needs {
        for (fi, (si, _, j)) in pipeline.jobs().enumerate() {
            position.insert(j.id.as_str(), (vec![fi], si));
            if let Some(it) = &j.iteration {
                position
                    .entry(it.of.as_str())
                    .or_insert((Vec::new(), si))
                    .0
                    .push(fi);
            }
        }
        for (si, stage) in pipeline.stages.iter().enumerate() {
            for t in stage.looping.iter().flat_map(|l| &l.jobs) {
                position.entry(t.id.as_str()).or_insert((Vec::new(), si));
            }
        }
    }
    let mut waits = Vec::with_capacity(pipeline.job_count());
    // The jobs of the stages so far that no later job waits for: a job without `needs`
    // comes after them (and so after every earlier stage).
    let mut frontier: Vec<usize> = Vec::new();
    let mut first = 0;
    for (si, stage) in pipeline.stages.iter().enumerate() {
        let mut waited_for: HashSet<usize> = HashSet::new();
        let after: Arc<[usize]> = frontier.as_slice().into();
        let none: Arc<[usize]> = Arc::from([]);
        let mut any_after = false;
        for job in &stage.jobs {
            // Clones of two lists per stage: no allocation per job.
            let mut w = Waits {
                needs: Vec::new(),
                after: none.clone(),
            };
            if job.needs.is_empty() {
                w.after = after.clone();
                any_after = true;
            }
            for need in &job.needs {
                let Some((indices, need_stage)) = position.get(need.as_str()) else {
                    let mut names: Vec<&str> = position.keys().copied().collect();
                    names.sort_unstable();
                    bail!(
                        "{at}: the job {:?} needs {need:?}, which is not a job of this \
                         pipeline (its jobs: {})",
                        job.id,
                        names.join(", ")
                    );
                };
                let need_stage = *need_stage;
                if need_stage > si {
                    bail!(
                        "{at}: the job {:?} (stage {:?}) needs {need:?}, which runs in the \
                         later stage {:?}; `needs` may point only to a job of the same or an \
                         earlier stage",
                        job.id,
                        stage.name,
                        pipeline.stages[need_stage].name
                    );
                }
                if need == &job.id {
                    bail!("{at}: the job {:?} needs itself", job.id);
                }
                for &fi in indices {
                    if !w.needs.contains(&fi) {
                        w.needs.push(fi);
                    }
                }
            }
            waited_for.extend(w.needs.iter().copied());
            waits.push(w);
        }
        if any_after {
            frontier.clear();
        }
        frontier.retain(|fi| !waited_for.contains(fi));
        frontier.extend(first..first + stage.jobs.len());
        first += stage.jobs.len();
    }
    if !any_needs {
        return Ok(waits);
    }
    let tasks: Vec<fanout::Task<()>> = pipeline
        .jobs()
        .zip(&waits)
        .map(|((_, _, j), w)| {
            fanout::Task::new(j.id.clone(), ())
                .needs(w.needs.iter().copied())
                .after_shared(w.after.clone())
        })
        .collect();
    fanout::check_waits(&tasks).map_err(|e| {
        anyhow!(
            "{at}: {}",
            e.to_string().replace(
                "the tasks wait for each other in a cycle (-> reads \"waits for\")",
                "the jobs need each other in a cycle (-> reads \"needs\")"
            )
        )
    })?;
    Ok(waits)
}

/// Parse a pipeline file; errors name the file, line and column.
fn read_pipeline(file: &Path) -> Result<RawPipeline> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let is_yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
    if is_yaml {
        serde_saphyr::from_str(&text).map_err(|e| {
            let place = e
                .location()
                .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
                .unwrap_or_default();
            anyhow!("{}{place}: {}", file.display(), first_line(&e.to_string()))
        })
    } else {
        toml::from_str(&text)
            .map_err(|e| anyhow!("{}: {}", file.display(), e.to_string().trim_end()))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
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
