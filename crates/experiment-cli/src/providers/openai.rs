//! OpenAI-compatible chat completions: `openai` (also vLLM, llama.cpp server, LM Studio... via
//! `OPENAI_BASE_URL`) and `openrouter`. `POST /chat/completions`, `GET /models`.

use std::sync::OnceLock;

use anyhow::{Result, bail};
use fanout::{CancelToken, TaskError};
use serde_json::json;

use crate::cost::Price;
use crate::settings::Settings;

use super::{Answer, Http, ModelInfo, Provider, Request, get_json, post_json_cancellable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    OpenAi,
    OpenRouter,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::OpenAi => "openai",
            Flavor::OpenRouter => "openrouter",
        }
    }

    fn vars(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Flavor::OpenAi => (
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
                "https://api.openai.com/v1",
            ),
            Flavor::OpenRouter => (
                "OPENROUTER_API_KEY",
                "OPENROUTER_BASE_URL",
                "https://openrouter.ai/api/v1",
            ),
        }
    }
}

#[derive(Debug)]
pub(crate) struct OpenAi {
    flavor: Flavor,
    base: String,
    key: Option<String>,
    /// Where `base` and `key` came from, for `parallamr providers`.
    base_origin: String,
    key_origin: Option<String>,
    http: Http,
    /// `/models`, fetched once.
    models: OnceLock<Result<Vec<ModelInfo>, TaskError>>,
}

impl OpenAi {
    /// From the settings (the environment, else `.env`). The public endpoints need a key; a
    /// local server usually not.
    pub(crate) fn from_env(flavor: Flavor, http: Http, settings: &Settings) -> Result<Self> {
        let (key_var, base_var, default_base) = flavor.vars();
        let (base, base_origin) = settings.get(base_var).map_or_else(
            || (default_base.to_owned(), "default".to_owned()),
            |(v, o)| (v, o.to_string()),
        );
        let key = settings.get(key_var);
        if key.is_none() && base == default_base {
            bail!(
                "the experiments use {}, but {key_var} is not set (set it, in the environment \
                 or a .env file, or point {base_var} at a server that needs no key)",
                flavor.name()
            );
        }
        Ok(OpenAi {
            flavor,
            base: base.trim_end_matches('/').to_owned(),
            base_origin,
            key_origin: key.as_ref().map(|(_, o)| o.to_string()),
            key: key.map(|(k, _)| k),
            http,
            models: OnceLock::new(),
        })
    }

    fn list(&self) -> Result<Vec<ModelInfo>, TaskError> {
        self.models
            .get_or_init(|| {
                let url = format!("{}/models", self.base);
                let v = get_json(&self.http, self.flavor.name(), &url, self.key.as_deref())?;
                Ok(v["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| ModelInfo {
                        name: m["id"].as_str().unwrap_or_default().to_owned(),
                        // OpenRouter says context_length; vLLM says max_model_len.
                        context_window: m["context_length"]
                            .as_u64()
                            .or_else(|| m["max_model_len"].as_u64()),
                        price: price_of(&m["pricing"]),
                    })
                    .collect())
            })
            .clone()
    }
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        self.flavor.name()
    }

    fn settings(&self) -> String {
        let (key_var, base_var, _) = self.flavor.vars();
        format!(
            "{base_var} = {} ({}), {key_var} {}",
            super::redact(&self.base),
            self.base_origin,
            self.key_origin
                .as_ref()
                .map_or_else(|| "not set".to_owned(), |o| format!("set ({o})"))
        )
    }

    fn generate(&self, req: &Request<'_>, cancel: &CancelToken) -> Result<Answer, TaskError> {
        let model = req.model;
        let url = format!("{}/chat/completions", self.base);
        let mut body =
            json!({ "model": model, "messages": [{ "role": "user", "content": req.prompt }] });
        for (k, v) in req.params {
            body[k] = v.clone();
        }
        let v = post_json_cancellable(
            &self.http,
            self.flavor.name(),
            &url,
            self.key.as_deref(),
            &body,
            cancel,
        )
            .map_err(|e| match &e {
                TaskError::Failed { message, .. } if message.contains("(404)") => {
                    TaskError::failed(format!(
                        "unknown model {model:?}: {} does not serve it (`parallamr models {}` lists them)",
                        self.flavor.name(),
                        self.flavor.name()
                    ))
                }
                _ => e,
            })?;
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| {
                TaskError::failed(format!(
                    "malformed answer from {}: no choices[0].message.content",
                    self.flavor.name()
                ))
                .with_detail(v.to_string().chars().take(500).collect::<String>())
            })?;
        Ok(Answer {
            text: text.to_owned(),
            input_tokens: v["usage"]["prompt_tokens"].as_u64(),
            output_tokens: v["usage"]["completion_tokens"].as_u64(),
        })
    }

    fn cache_endpoint(&self) -> Option<String> {
        Some(self.base.clone())
    }

    fn context_window(&self, model: &str) -> Result<Option<u64>, TaskError> {
        // A server that lists no models (or no windows) does not stop the run: no check then.
        Ok(self
            .list()
            .ok()
            .and_then(|l| l.into_iter().find(|m| m.name == model))
            .and_then(|m| m.context_window))
    }

    fn models(&self) -> Result<Vec<ModelInfo>, TaskError> {
        self.list()
    }

    fn price(&self, model: &str) -> Option<Price> {
        // A server that lists no models, or no prices, has none: --prices gives them.
        self.list()
            .ok()?
            .into_iter()
            .find(|m| m.name == model)?
            .price
    }
}

/// OpenRouter's `pricing`: USD per token as strings (`{"prompt": "0.000003", "completion":
/// "0.000015"}`), as USD per million tokens.
fn price_of(pricing: &serde_json::Value) -> Option<Price> {
    let per_token = |k: &str| -> Option<f64> {
        let v = &pricing[k];
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .or_else(|| v.as_f64())
            .filter(|x| x.is_finite() && *x >= 0.0)
    };
    Some(Price {
        input: per_token("prompt")? * 1_000_000.0,
        output: per_token("completion")? * 1_000_000.0,
    })
}
