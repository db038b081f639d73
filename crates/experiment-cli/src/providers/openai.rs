//! OpenAI-compatible chat completions: `openai` (also vLLM, llama.cpp server, LM Studio... via
//! `OPENAI_BASE_URL`) and `openrouter`. `POST /chat/completions`, `GET /models`.

use std::sync::OnceLock;

use anyhow::Result;
use fanout::{CancelToken, TaskError};
use serde_json::json;

use crate::cost::Price;
use crate::settings::Settings;

use super::{
    Answer, Endpoint, Http, ModelInfo, Provider, Request, bearer, get_json, listed_window,
    post_json_cancellable, split_system, unknown_model,
};

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
    endpoint: Endpoint,
    http: Http,
    /// `/models`, fetched once.
    models: OnceLock<Result<Vec<ModelInfo>, TaskError>>,
}

impl OpenAi {
    /// From the settings (the environment, else `.env`). The public endpoints need a key; a
    /// local server usually not.
    pub(crate) fn from_env(flavor: Flavor, http: Http, settings: &Settings) -> Result<Self> {
        Ok(OpenAi {
            flavor,
            endpoint: Endpoint::from_settings(flavor.name(), flavor.vars(), settings)?,
            http,
            models: OnceLock::new(),
        })
    }

    fn list(&self) -> Result<Vec<ModelInfo>, TaskError> {
        self.models
            .get_or_init(|| {
                let url = format!("{}/models", self.endpoint.base);
                let v = get_json(
                    &self.http,
                    self.flavor.name(),
                    &url,
                    &bearer(self.endpoint.key.as_deref()),
                )?;
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
        self.endpoint.describe()
    }

    fn generate(&self, req: &Request<'_>, cancel: &CancelToken) -> Result<Answer, TaskError> {
        let model = req.model;
        let url = format!("{}/chat/completions", self.endpoint.base);
        let (system, params) = split_system(req.params);
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(json!({ "role": "system", "content": s }));
        }
        messages.push(json!({ "role": "user", "content": req.prompt }));
        let mut body = json!({ "model": model, "messages": messages });
        for (k, v) in params {
            body[k] = v.clone();
        }
        if let Some(s) = req.schema {
            // Not `strict`: strict mode refuses schemas that leave a property optional or
            // allow others; the answer is checked against the schema either way.
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": { "name": s.name, "schema": s.value },
            });
        }
        let v = post_json_cancellable(
            &self.http,
            self.flavor.name(),
            &url,
            &bearer(self.endpoint.key.as_deref()),
            &body,
            cancel,
        )
        .map_err(|e| unknown_model(e, self.flavor.name(), model))?;
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
        Some(self.endpoint.base.clone())
    }

    fn context_window(&self, model: &str) -> Result<Option<u64>, TaskError> {
        Ok(listed_window(self.list(), model))
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
