//! OpenAI-compatible chat completions: `openai` (also vLLM, llama.cpp server, LM Studio... via
//! `OPENAI_BASE_URL`) and `openrouter`. `POST /chat/completions`, `GET /models`.

use std::sync::OnceLock;

use anyhow::Result;
use fanout::{CancelToken, TaskError};
use serde_json::{Value, json};

use crate::cost::Price;
use crate::settings::Settings;

use super::{
    Answer, BatchApi, BatchState, Endpoint, Http, Line, ModelInfo, Provider, Request, bearer,
    get_json, listed_window, post_json_cancellable, split_system, unknown_model,
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
        let url = format!("{}/chat/completions", self.endpoint.base);
        let v = post_json_cancellable(
            &self.http,
            self.flavor.name(),
            &url,
            &bearer(self.endpoint.key.as_deref()),
            &body(req),
            cancel,
        )
        .map_err(|e| unknown_model(e, self.flavor.name(), req.model))?;
        answer(self.flavor.name(), &v)
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

    fn batch(&self) -> Option<&dyn BatchApi> {
        // OpenRouter has no batch API.
        (self.flavor == Flavor::OpenAi).then_some(self as &dyn BatchApi)
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

/// The chat completions body for `req`.
fn body(req: &Request<'_>) -> Value {
    let (system, params) = split_system(req.params);
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(json!({ "role": "system", "content": s }));
    }
    messages.push(json!({ "role": "user", "content": req.prompt }));
    let mut body = json!({ "model": req.model, "messages": messages });
    for (k, v) in params {
        body[k] = v.clone();
    }
    if let Some(s) = req.schema {
        // Not `strict`: strict mode refuses schemas that leave a property optional or allow
        // others; the answer is checked against the schema either way.
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": { "name": s.name, "schema": s.value },
        });
    }
    body
}

/// The answer in a chat completion.
fn answer(provider: &str, v: &Value) -> Result<Answer, TaskError> {
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| {
            TaskError::failed(format!(
                "malformed answer from {provider}: no choices[0].message.content"
            ))
            .with_detail(v.to_string().chars().take(500).collect::<String>())
        })?;
    Ok(Answer {
        text: text.to_owned(),
        input_tokens: v["usage"]["prompt_tokens"].as_u64(),
        output_tokens: v["usage"]["completion_tokens"].as_u64(),
    })
}

/// OpenAI's Batch API: the requests as a JSON Lines file uploaded to `/files`, a batch made of
/// it on `/v1/chat/completions`, polled at `/batches/ID`; the answers and the errors in two
/// files. At most 50,000 requests and 200 MB per batch.
impl BatchApi for OpenAi {
    fn limits(&self) -> (usize, usize) {
        (50_000, 200 * 1000 * 1000)
    }

    fn line(&self, id: &str, req: &Request<'_>) -> Value {
        json!({ "custom_id": id, "method": "POST", "url": "/v1/chat/completions", "body": body(req) })
    }

    fn submit(&self, lines: &[Value]) -> Result<String, TaskError> {
        let mut jsonl = String::new();
        for l in lines {
            jsonl.push_str(&l.to_string());
            jsonl.push('\n');
        }
        let auth = bearer(self.endpoint.key.as_deref());
        let base = &self.endpoint.base;
        let file = super::post_file(
            &self.http,
            "openai",
            &format!("{base}/files"),
            &auth,
            &[("purpose", "batch")],
            ("parallamr-batch.jsonl", jsonl.as_bytes()),
        )?;
        let file_id = file["id"]
            .as_str()
            .ok_or_else(|| TaskError::failed("openai's /files answered without an id"))?;
        let batch = super::post_json(
            &self.http,
            "openai",
            &format!("{base}/batches"),
            &auth,
            &json!({
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": { "created_by": "parallamr" },
            }),
        )?;
        batch["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| TaskError::failed("openai's /batches answered without an id"))
    }

    fn poll(&self, id: &str) -> Result<BatchState, TaskError> {
        let url = format!("{}/batches/{id}", self.endpoint.base);
        let v = get_json(
            &self.http,
            "openai",
            &url,
            &bearer(self.endpoint.key.as_deref()),
        )?;
        Ok(openai_state(&v))
    }

    fn results(&self, state: &BatchState, schema: Option<&str>) -> Result<Vec<Line>, TaskError> {
        let _ = schema; // The structured answer is the message's content, as online.
        let mut out = Vec::new();
        for file in &state.files {
            let url = format!("{}/files/{file}/content", self.endpoint.base);
            let text = super::get_text(
                &self.http,
                "openai",
                &url,
                &bearer(self.endpoint.key.as_deref()),
            )?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                // A line that is not JSON names no request: its request ends without an answer (an
                // error row, sent again by --resume), the others are kept.
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let Some(id) = v["custom_id"].as_str() else {
                    continue;
                };
                out.push((id.to_owned(), openai_line(&v)));
            }
        }
        Ok(out)
    }

    fn cancel(&self, id: &str) -> Result<BatchState, TaskError> {
        let url = format!("{}/batches/{id}/cancel", self.endpoint.base);
        let v = super::post_json(
            &self.http,
            "openai",
            &url,
            &bearer(self.endpoint.key.as_deref()),
            &json!({}),
        )?;
        Ok(openai_state(&v))
    }
}

/// A batch object of OpenAI's.
fn openai_state(v: &Value) -> BatchState {
    let status = v["status"].as_str().unwrap_or("unknown").to_owned();
    let counts = &v["request_counts"];
    BatchState {
        id: v["id"].as_str().unwrap_or_default().to_owned(),
        finished: matches!(
            status.as_str(),
            "completed" | "failed" | "expired" | "cancelled"
        ),
        total: counts["total"].as_u64().unwrap_or(0),
        succeeded: counts["completed"].as_u64().unwrap_or(0),
        failed: counts["failed"].as_u64().unwrap_or(0),
        files: ["output_file_id", "error_file_id"]
            .iter()
            .filter_map(|k| v[*k].as_str())
            .map(str::to_owned)
            .collect(),
        error: (status == "failed").then(|| {
            let why: Vec<&str> = v["errors"]["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["message"].as_str())
                .collect();
            format!("openai refused the batch: {}", why.join("; "))
        }),
        status,
    }
}

/// One line of OpenAI's output or error file.
fn openai_line(v: &Value) -> Result<Answer, String> {
    let status = v["response"]["status_code"].as_u64().unwrap_or(0);
    if status == 200 {
        return answer("openai", &v["response"]["body"]).map_err(|e| e.to_string());
    }
    let body = &v["response"]["body"];
    let why = body["error"]["message"]
        .as_str()
        .or_else(|| v["error"]["message"].as_str())
        .unwrap_or("no reason given");
    let code = v["error"]["code"].as_str().unwrap_or_default();
    Err(match (status, code) {
        (_, "batch_expired") => {
            "the batch expired (24 h) before this request ran; --resume sends it again".to_owned()
        }
        (_, "batch_cancelled") => {
            "the batch was cancelled before this request ran; --resume sends it again".to_owned()
        }
        (0, _) => format!("openai could not run it in the batch: {why}"),
        (s, _) => format!("openai answered {s} in the batch: {why}"),
    })
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
