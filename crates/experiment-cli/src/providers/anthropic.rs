//! `anthropic`: the Messages API (`POST /v1/messages`, `GET /v1/models`), with the key in
//! `x-api-key` and the API version in `anthropic-version`. Its `anthropic-ratelimit-*` headers
//! pace the requests as OpenAI's `x-ratelimit-*` do (see `rate.rs`); its `529 overloaded` is
//! retried as a 503.

use std::sync::OnceLock;

use anyhow::Result;
use fanout::{CancelToken, TaskError};
use serde_json::{Value, json};

use crate::settings::Settings;

use super::{
    Answer, BatchApi, BatchState, Endpoint, Headers, Http, Line, ModelInfo, Provider, Request,
    get_json, get_text, post_json, post_json_cancellable, split_system, unknown_model,
};

const DEFAULT_BASE: &str = "https://api.anthropic.com";

/// The API version every request names.
pub(crate) const VERSION: &str = "2023-06-01";

/// `max_tokens` when the row gives none: the API requires one. Enough for a long answer from
/// every current model; a `max_tokens` column overrides it.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The context window of Claude models (the API's model list does not say it).
const CLAUDE_WINDOW: u64 = 200_000;

#[derive(Debug)]
pub(crate) struct Anthropic {
    endpoint: Endpoint,
    http: Http,
    models: OnceLock<Result<Vec<ModelInfo>, TaskError>>,
}

impl Anthropic {
    /// From the settings (the environment, else `.env`): `ANTHROPIC_API_KEY`, needed for the
    /// public endpoint, and `ANTHROPIC_BASE_URL` (a proxy, a gateway).
    pub(crate) fn from_env(http: Http, settings: &Settings) -> Result<Self> {
        Ok(Anthropic {
            endpoint: Endpoint::from_settings(
                "anthropic",
                ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", DEFAULT_BASE),
                settings,
            )?,
            http,
            models: OnceLock::new(),
        })
    }

    fn headers(&self) -> Headers {
        let mut h = vec![("anthropic-version", VERSION.to_owned())];
        if let Some(k) = &self.endpoint.key {
            h.push(("x-api-key", k.clone()));
        }
        h
    }

    fn list(&self) -> Result<Vec<ModelInfo>, TaskError> {
        self.models
            .get_or_init(|| {
                let url = format!("{}/v1/models?limit=1000", self.endpoint.base);
                let v = get_json(&self.http, "anthropic", &url, &self.headers())?;
                Ok(v["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["id"].as_str())
                    .map(|id| ModelInfo {
                        name: id.to_owned(),
                        context_window: window(id),
                        price: None,
                    })
                    .collect())
            })
            .clone()
    }
}

fn window(model: &str) -> Option<u64> {
    model.starts_with("claude-").then_some(CLAUDE_WINDOW)
}

/// The request body of the Messages API for `req`.
pub(crate) fn body(req: &Request<'_>) -> Value {
    let (system, params) = split_system(req.params);
    let mut body = json!({
        "model": req.model,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{ "role": "user", "content": req.prompt }],
    });
    if let Some(s) = system {
        body["system"] = s.into();
    }
    for (k, v) in params {
        match k.as_str() {
            // The Messages API has no seed: a sweep that gives one for every provider still
            // runs here (the answers then vary as the model's do).
            "seed" => {}
            "stop" => body["stop_sequences"] = stop_list(v),
            _ => body[k] = v.clone(),
        }
    }
    if let Some(s) = req.schema {
        // Structured output as Anthropic documents it: one tool whose input is the schema,
        // and the model made to call it.
        body["tools"] = json!([{
            "name": s.name,
            "description": "Give the answer in this form.",
            "input_schema": s.value,
        }]);
        body["tool_choice"] = json!({ "type": "tool", "name": s.name });
    }
    body
}

/// A `stop` value as a list of sequences.
fn stop_list(v: &Value) -> Value {
    match v {
        Value::Array(_) => v.clone(),
        other => json!([other
            .as_str()
            .map_or_else(|| other.to_string(), str::to_owned)]),
    }
}

/// The answer in a Messages API response: its text blocks, or with a schema the forced tool's
/// input (as JSON text).
pub(crate) fn answer(v: &Value, schema: Option<&str>) -> Result<Answer, TaskError> {
    let blocks = v["content"].as_array().ok_or_else(|| {
        TaskError::failed("malformed answer from anthropic: no \"content\"")
            .with_detail(v.to_string().chars().take(500).collect::<String>())
    })?;
    let text = match schema {
        Some(name) => blocks
            .iter()
            .find(|b| b["type"] == "tool_use" && b["name"] == name)
            .map(|b| b["input"].to_string())
            .ok_or_else(|| {
                TaskError::failed(format!(
                    "anthropic answered without the structured answer (no tool_use {name:?}; \
                     stop_reason {})",
                    v["stop_reason"]
                ))
            })?,
        None => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<String>(),
    };
    Ok(Answer {
        text,
        input_tokens: v["usage"]["input_tokens"].as_u64(),
        output_tokens: v["usage"]["output_tokens"].as_u64(),
    })
}

impl Provider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn settings(&self) -> String {
        format!(
            "{}, anthropic-version {VERSION}, max_tokens {DEFAULT_MAX_TOKENS} unless a row \
             gives one",
            self.endpoint.describe()
        )
    }

    fn generate(&self, req: &Request<'_>, cancel: &CancelToken) -> Result<Answer, TaskError> {
        let url = format!("{}/v1/messages", self.endpoint.base);
        let v = post_json_cancellable(
            &self.http,
            "anthropic",
            &url,
            &self.headers(),
            &body(req),
            cancel,
        )
        .map_err(|e| unknown_model(e, "anthropic", req.model))?;
        answer(&v, req.schema.map(|s| s.name.as_str()))
    }

    fn cache_endpoint(&self) -> Option<String> {
        Some(self.endpoint.base.clone())
    }

    fn context_window(&self, model: &str) -> Result<Option<u64>, TaskError> {
        Ok(window(model))
    }

    fn models(&self) -> Result<Vec<ModelInfo>, TaskError> {
        self.list()
    }

    fn batch(&self) -> Option<&dyn BatchApi> {
        Some(self)
    }
}

/// Anthropic's Message Batches: the requests in one `POST /v1/messages/batches`, polled at
/// `/v1/messages/batches/ID`, the results as JSON Lines at `.../results` once it has `ended`.
/// At most 100,000 requests and 256 MB per batch.
impl BatchApi for Anthropic {
    fn limits(&self) -> (usize, usize) {
        (100_000, 256 * 1000 * 1000)
    }

    fn line(&self, id: &str, req: &Request<'_>) -> Value {
        json!({ "custom_id": id, "params": body(req) })
    }

    fn submit(&self, lines: &[Value]) -> Result<String, TaskError> {
        let url = format!("{}/v1/messages/batches", self.endpoint.base);
        let v = post_json(
            &self.http,
            "anthropic",
            &url,
            &self.headers(),
            &json!({ "requests": lines }),
        )?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| TaskError::failed("anthropic's message batches answered without an id"))
    }

    fn poll(&self, id: &str) -> Result<BatchState, TaskError> {
        let url = format!("{}/v1/messages/batches/{id}", self.endpoint.base);
        Ok(batch_state(&get_json(
            &self.http,
            "anthropic",
            &url,
            &self.headers(),
        )?))
    }

    fn results(&self, state: &BatchState, schema: Option<&str>) -> Result<Vec<Line>, TaskError> {
        // Fetched from the documented place under our own base URL, not `results_url`: the key
        // goes to no host the user did not name.
        let url = format!(
            "{}/v1/messages/batches/{}/results",
            self.endpoint.base, state.id
        );
        let text = get_text(&self.http, "anthropic", &url, &self.headers())?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // A line that is not JSON names no request: its request ends without an answer (an
            // error row, sent again by --resume), the others are kept.
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(id) = v["custom_id"].as_str() else {
                continue;
            };
            let r = &v["result"];
            let outcome = match r["type"].as_str().unwrap_or_default() {
                "succeeded" => answer(&r["message"], schema).map_err(|e| e.to_string()),
                "errored" => Err(format!(
                    "anthropic could not answer it in the batch: {}",
                    r["error"]["error"]["message"]
                        .as_str()
                        .or_else(|| r["error"]["message"].as_str())
                        .unwrap_or("no reason given")
                )),
                "canceled" => Err(
                    "the batch was cancelled before this request ran; --resume sends it again"
                        .to_owned(),
                ),
                "expired" => Err(
                    "the batch expired (24 h) before this request ran; --resume sends it again"
                        .to_owned(),
                ),
                other => Err(format!("anthropic's batch result has the type {other:?}")),
            };
            out.push((id.to_owned(), outcome));
        }
        Ok(out)
    }

    fn cancel(&self, id: &str) -> Result<BatchState, TaskError> {
        let url = format!("{}/v1/messages/batches/{id}/cancel", self.endpoint.base);
        Ok(batch_state(&post_json(
            &self.http,
            "anthropic",
            &url,
            &self.headers(),
            &json!({}),
        )?))
    }
}

/// A message batch of Anthropic's.
fn batch_state(v: &Value) -> BatchState {
    let status = v["processing_status"]
        .as_str()
        .unwrap_or("unknown")
        .to_owned();
    let c = &v["request_counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    BatchState {
        id: v["id"].as_str().unwrap_or_default().to_owned(),
        finished: status == "ended",
        total: n("processing") + n("succeeded") + n("errored") + n("canceled") + n("expired"),
        succeeded: n("succeeded"),
        failed: n("errored") + n("canceled") + n("expired"),
        files: Vec::new(),
        error: None,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Schema;

    #[test]
    fn the_body_follows_the_messages_api() {
        let params = vec![
            ("system".to_owned(), json!("Be brief.")),
            ("temperature".to_owned(), json!(0.2)),
            ("seed".to_owned(), json!(7)),
            ("stop".to_owned(), json!("END")),
        ];
        let schema = Schema::new("city", json!({"type": "object"}));
        let req = Request {
            model: "claude-x",
            prompt: "Capital of France?",
            vars: &[],
            params: &params,
            repeat: 1,
            schema: Some(&schema),
        };
        let b = body(&req);
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(b["system"], "Be brief.");
        assert_eq!(b["messages"][0]["content"], "Capital of France?");
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["stop_sequences"], json!(["END"]));
        assert!(b.get("seed").is_none(), "{b}");
        assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "city"}));
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));

        let a = answer(
            &json!({"content": [{"type": "tool_use", "name": "city", "input": {"name": "Paris"}}],
                    "usage": {"input_tokens": 3, "output_tokens": 4}}),
            Some("city"),
        )
        .unwrap();
        assert_eq!(
            (a.text.as_str(), a.input_tokens, a.output_tokens),
            ("{\"name\":\"Paris\"}", Some(3), Some(4))
        );
        let a = answer(
            &json!({"content": [{"type": "text", "text": "Par"}, {"type": "text", "text": "is"}]}),
            None,
        )
        .unwrap();
        assert_eq!(a.text, "Paris");
    }
}
