//! The files, as written: serde's view of a pipeline file, a job file and their tables, and the
//! reading of a file with errors that name its line. `load.rs` and `jobs.rs` check
//! what is read here.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::model::Backend;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    /// The Python lorchestra's YAML names the pipeline here; the file name wins.
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted so existing YAML files load; the file name names it"
    )]
    pub(crate) pipeline_id: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) stop_on_failure: Option<bool>,
    pub(crate) backend: Option<Backend>,
    pub(crate) slurm: Option<RawSlurm>,
    /// `resources = { db = 1 }`: what the run has of named resources (see `resources.rs`).
    #[serde(default)]
    pub(crate) resources: BTreeMap<String, crate::resources::RawAmount>,
    #[serde(default)]
    pub(crate) stages: Vec<RawStage>,
    #[serde(default)]
    pub(crate) jobs: BTreeMap<String, RawJob>,
}

/// `slurm = { partition = "...", account = "...", cpus = 4, mem = "8G", args = ["--qos=x"] }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlurm {
    pub(crate) partition: Option<String>,
    pub(crate) account: Option<String>,
    pub(crate) cpus: Option<u32>,
    pub(crate) mem: Option<String>,
    #[serde(default)]
    pub(crate) args: Vec<String>,
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
pub(crate) struct RawStage {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) jobs: Vec<String>,
    pub(crate) stop_on_failure: Option<bool>,
    #[serde(rename = "loop")]
    pub(crate) looping: Option<RawLoop>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoop {
    pub(crate) over: String,
    #[serde(default)]
    pub(crate) payload: BTreeMap<String, serde_json::Value>,
    pub(crate) key: Option<String>,
    #[serde(default)]
    pub(crate) jobs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJob {
    pub(crate) command: CommandSpec,
    /// Seconds.
    pub(crate) timeout: Option<f64>,
    #[serde(default)]
    pub(crate) retries: u32,
    /// `retry_backoff = "5s"`: the wait before the first retry, doubling (with jitter) after.
    pub(crate) retry_backoff: Option<String>,
    /// What it needs while it runs: `cpus = 2`, `mem = "4G * attempt"`, `gpus = 1`,
    /// `resources = { db = 1 }` (see `resources.rs`).
    pub(crate) cpus: Option<crate::resources::RawAmount>,
    pub(crate) mem: Option<crate::resources::RawAmount>,
    pub(crate) gpus: Option<crate::resources::RawAmount>,
    #[serde(default)]
    pub(crate) resources: BTreeMap<String, crate::resources::RawAmount>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<PathBuf>,
    #[serde(default)]
    pub(crate) outside_project: bool,
    pub(crate) backend: Option<Backend>,
    pub(crate) slurm: Option<RawSlurm>,
    #[serde(default)]
    pub(crate) needs: Vec<String>,
    #[serde(default)]
    pub(crate) inputs: Vec<String>,
    #[serde(default)]
    pub(crate) outputs: Vec<String>,
    /// `params = ["params.yaml:train.lr"]`: values its up-to-date key tracks (`params.rs`).
    #[serde(default)]
    pub(crate) params: Vec<String>,
    /// `metrics = ["out/metrics.json"]`: numbers recorded after it succeeds (`metrics.rs`).
    #[serde(default)]
    pub(crate) metrics: Vec<String>,
    /// `output = "stdout"`: its value may be the last line of its log.
    #[serde(default)]
    pub(crate) output: crate::model::OutputFrom,
    /// `matrix = { account = [1, 2], region = ["eu", "us"] }`: one job per combination.
    pub(crate) matrix: Option<BTreeMap<String, Vec<serde_json::Value>>>,
    /// `matrix_from = { file = "accounts.txt" }` (one item per line) or `{ json = "x.json" }`.
    pub(crate) matrix_from: Option<RawMatrixFrom>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatrixFrom {
    pub(crate) file: Option<PathBuf>,
    pub(crate) json: Option<PathBuf>,
}

/// `command = "string"` or `command = ["argv", ...]`, with a clear error otherwise (not
/// `serde(untagged)`, whose message would name neither form).
#[derive(Debug, Clone)]
pub(crate) enum CommandSpec {
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

/// Parse a pipeline file; errors name the file, line and column.
pub(crate) fn read_pipeline(file: &Path) -> Result<RawPipeline> {
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

/// `, line N`: where `needle` first appears in `file` (nothing if it does not).
pub(crate) fn line_of(file: &Path, needle: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.lines().position(|l| l.contains(needle)))
        .map(|i| format!(", line {}", i + 1))
        .unwrap_or_default()
}
