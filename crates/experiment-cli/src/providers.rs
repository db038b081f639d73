//! Providers: where a rendered prompt goes. All HTTP goes through one shared `ureq` agent
//! (connection pooling); errors are mapped once, here, to what a user can act on and to whether
//! the core's retry policy should try again.

mod anthropic;
mod command;
mod gemini;
mod http;
mod mock;
mod ollama;
mod openai;

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Result, bail};
use fanout::{CancelToken, TaskError};

pub(crate) use command::CommandProvider;
pub(crate) use http::{
    Endpoint, Headers, Http, bearer, get_json, get_text, post_file, post_json,
    post_json_cancellable, redact,
};

use crate::settings::Settings;

/// The provider names, as written in the experiments file.
pub(crate) const KNOWN: &[&str] = &[
    "mock",
    "ollama",
    "openrouter",
    "openai",
    "anthropic",
    "gemini",
    "command",
];

/// Whether a provider's server may tell its rate limits in its answers' headers (hosted APIs
/// and the servers that imitate them): its first request then goes alone.
pub(crate) fn tells_rate_limits(provider: &str) -> bool {
    matches!(provider, "openai" | "openrouter" | "anthropic")
}

/// Default limit of requests in flight per provider (`--provider-limit NAME=N` overrides).
pub(crate) fn default_limit(provider: &str, max_workers: usize) -> usize {
    match provider {
        "openrouter" | "openai" | "anthropic" | "gemini" => 10,
        "ollama" => 1,
        "mock" => 50,
        _ => max_workers,
    }
}

/// What a model answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) text: String,
    /// Token counts as the provider reported them, if it did.
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
}

/// A model served by a provider.
#[derive(Debug, Clone)]
pub(crate) struct ModelInfo {
    pub(crate) name: String,
    pub(crate) context_window: Option<u64>,
    /// USD per million tokens, when the provider says (OpenRouter).
    pub(crate) price: Option<crate::cost::Price>,
}

/// What is sent for one experiment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) model: &'a str,
    /// The rendered prompt (empty for the command provider, which renders its own).
    pub(crate) prompt: &'a str,
    /// The row's variables.
    pub(crate) vars: &'a [(String, String)],
    /// Request parameters (`temperature`...), sent as the provider's API names them.
    pub(crate) params: &'a [(String, serde_json::Value)],
    /// With `--repeat`: which send of the same request this is (1 to N); its answer is kept
    /// apart from the others' in the cache.
    pub(crate) repeat: u32,
    /// `--schema`: the JSON Schema the answer must follow, sent in the provider's own
    /// structured-output form (its name, from the file's, and the schema).
    pub(crate) schema: Option<&'a Schema>,
}

/// A JSON Schema for structured output: a name the APIs accept (letters, digits, `_`, `-`; at
/// most 64) and the schema.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    pub(crate) name: String,
    pub(crate) value: serde_json::Value,
}

impl Schema {
    pub(crate) fn new(file_stem: &str, value: serde_json::Value) -> Self {
        let name: String = file_stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        Schema {
            name: if name.is_empty() {
                "answer".to_owned()
            } else {
                name
            },
            value,
        }
    }
}

pub(crate) trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    /// Settings shown by `parallamr providers`.
    fn settings(&self) -> String;
    fn generate(&self, req: &Request<'_>, cancel: &CancelToken) -> Result<Answer, TaskError>;
    /// What `--dry-run` shows of a request: the prompt (the command provider: its command).
    fn preview(&self, req: &Request<'_>) -> Result<String, String> {
        Ok(req.prompt.to_owned())
    }
    /// The model's context window in tokens, when the provider says.
    fn context_window(&self, model: &str) -> Result<Option<u64>, TaskError>;
    /// Where requests go, as part of the response cache's key; `None`: answers are not cached
    /// (a command's output may depend on more than its inputs, and running it may be the point).
    fn cache_endpoint(&self) -> Option<String>;
    fn models(&self) -> Result<Vec<ModelInfo>, TaskError>;
    /// The model's price, when the provider publishes it (OpenRouter's `/models`).
    fn price(&self, _model: &str) -> Option<crate::cost::Price> {
        None
    }
    /// The provider's batch API (`--batch`), if it has one.
    fn batch(&self) -> Option<&dyn BatchApi> {
        None
    }
}

/// A provider's batch API (`--batch`): many requests sent as one job, answered within a day at
/// half the price (OpenAI's Batch API, Anthropic's Message Batches).
pub(crate) trait BatchApi: Send + Sync {
    /// At most this many requests, and this many bytes of them, in one batch.
    fn limits(&self) -> (usize, usize);
    /// The line of a batch that asks `req`, named `id` (its answer comes back under the name).
    fn line(&self, id: &str, req: &Request<'_>) -> serde_json::Value;
    /// Send `lines` as one batch: its id.
    fn submit(&self, lines: &[serde_json::Value]) -> Result<String, TaskError>;
    /// Where the batch `id` is.
    fn poll(&self, id: &str) -> Result<BatchState, TaskError>;
    /// The answers of a finished batch, by line name (a line that failed: why). With
    /// `schema`, the structured answer's name (Anthropic's forced tool).
    fn results(&self, state: &BatchState, schema: Option<&str>) -> Result<Vec<Line>, TaskError>;
    /// Ask the provider to stop the batch `id` (the answers so far can still be fetched).
    fn cancel(&self, id: &str) -> Result<BatchState, TaskError>;
}

/// One line of a batch's results: its name and the answer, or why there is none.
pub(crate) type Line = (String, Result<Answer, String>);

/// A batch as its provider describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BatchState {
    pub(crate) id: String,
    /// The provider's word (`validating`, `in_progress`, `ended`...).
    pub(crate) status: String,
    /// It will change no more: its results can be fetched.
    pub(crate) finished: bool,
    pub(crate) total: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    /// Where its results are (OpenAI: the output and error files).
    pub(crate) files: Vec<String>,
    /// Why the whole batch failed (OpenAI: a batch that did not validate).
    pub(crate) error: Option<String>,
}

/// A 404 to a generation request: the provider does not serve the model.
pub(crate) fn unknown_model(e: TaskError, provider: &str, model: &str) -> TaskError {
    match &e {
        TaskError::Failed { message, .. } if message.contains("(404)") => {
            TaskError::failed(format!(
                "unknown model {model:?}: {provider} does not serve it (`parallamr models \
                 {provider}` lists them)"
            ))
        }
        _ => e,
    }
}

/// Make every provider the experiments need. Missing API keys for public endpoints are
/// configuration errors, raised before anything runs.
pub(crate) fn build(
    names: &[&str],
    http: &Http,
    command: Option<&CommandProvider>,
    settings: &Settings,
) -> Result<HashMap<String, Box<dyn Provider>>> {
    let mut out: HashMap<String, Box<dyn Provider>> = HashMap::new();
    for &name in names {
        let provider: Box<dyn Provider> = match name {
            "mock" => Box::new(mock::Mock),
            "ollama" => Box::new(ollama::Ollama::from_env(http.clone(), settings)),
            "openai" => Box::new(openai::OpenAi::from_env(
                openai::Flavor::OpenAi,
                http.clone(),
                settings,
            )?),
            "openrouter" => Box::new(openai::OpenAi::from_env(
                openai::Flavor::OpenRouter,
                http.clone(),
                settings,
            )?),
            "anthropic" => Box::new(anthropic::Anthropic::from_env(http.clone(), settings)?),
            "gemini" => Box::new(gemini::Gemini::from_env(http.clone(), settings)?),
            "command" => match command {
                Some(c) => Box::new(c.clone()),
                None => bail!(
                    "the experiments use the command provider, but no --command was given \
                     (e.g. --command 'python train.py --lr {{{{lr}}}}')"
                ),
            },
            other => bail!(
                "unknown provider {other:?}; the known providers: {}",
                KNOWN.join(", ")
            ),
        };
        out.insert(name.to_owned(), provider);
    }
    Ok(out)
}

/// One provider by name, for `parallamr models`.
pub(crate) fn one(name: &str, http: &Http, settings: &Settings) -> Result<Box<dyn Provider>> {
    if name == "command" {
        bail!("the command provider runs programs; it serves no models");
    }
    let mut all = build(&[name], http, None, settings)?;
    Ok(all.remove(name).expect("built"))
}

/// `model`'s context window in a server's model list; none when the list failed or does not
/// say (a server that lists no models does not stop the run: no check then).
pub(crate) fn listed_window(list: Result<Vec<ModelInfo>, TaskError>, model: &str) -> Option<u64> {
    list.ok()?
        .into_iter()
        .find(|m| m.name == model)?
        .context_window
}

/// A per-model cache of context windows (looked up once per run).
#[derive(Debug, Default)]
pub(crate) struct WindowCache(Mutex<HashMap<String, Option<u64>>>);

impl WindowCache {
    pub(crate) fn get_or(
        &self,
        model: &str,
        lookup: impl FnOnce() -> Result<Option<u64>, TaskError>,
    ) -> Result<Option<u64>, TaskError> {
        if let Some(w) = self.0.lock().expect("cache").get(model) {
            return Ok(*w);
        }
        let w = lookup()?;
        self.0.lock().expect("cache").insert(model.to_owned(), w);
        Ok(w)
    }
}

/// The `system` parameter (a column sent with `--param-columns system`): each API takes a system
/// prompt in a place of its own. The text, and the other parameters.
pub(crate) fn split_system(
    params: &[(String, serde_json::Value)],
) -> (
    Option<String>,
    impl Iterator<Item = &(String, serde_json::Value)>,
) {
    let system = params
        .iter()
        .find(|(k, _)| k == "system")
        .map(|(_, v)| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    (system, params.iter().filter(|(k, _)| k != "system"))
}

/// Characters / 4: the usual estimate when a provider gives no count.
pub(crate) fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}
