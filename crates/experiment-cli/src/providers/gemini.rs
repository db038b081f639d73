//! `gemini`: Google's Gemini API (`POST /v1beta/models/MODEL:generateContent`, `GET
//! /v1beta/models`), with the key in `x-goog-api-key` (never in the URL, where logs and error
//! messages would show it). A 429 says when to come back in the body's `RetryInfo`.

use std::sync::OnceLock;

use anyhow::Result;
use fanout::{CancelToken, TaskError};
use serde_json::{Value, json};

use crate::settings::Settings;

use super::{
    Answer, Endpoint, Headers, Http, ModelInfo, Provider, Request, get_json, listed_window,
    post_json_cancellable, split_system, unknown_model,
};

const DEFAULT_BASE: &str = "https://generativelanguage.googleapis.com";

/// The API version in every path.
const API: &str = "v1beta";

#[derive(Debug)]
pub(crate) struct Gemini {
    endpoint: Endpoint,
    http: Http,
    models: OnceLock<Result<Vec<ModelInfo>, TaskError>>,
}

impl Gemini {
    /// From the settings (the environment, else `.env`): `GEMINI_API_KEY`, needed for the
    /// public endpoint, and `GEMINI_BASE_URL`.
    pub(crate) fn from_env(http: Http, settings: &Settings) -> Result<Self> {
        Ok(Gemini {
            endpoint: Endpoint::from_settings(
                "gemini",
                ("GEMINI_API_KEY", "GEMINI_BASE_URL", DEFAULT_BASE),
                settings,
            )?,
            http,
            models: OnceLock::new(),
        })
    }

    fn headers(&self) -> Headers {
        self.endpoint
            .key
            .iter()
            .map(|k| ("x-goog-api-key", k.clone()))
            .collect()
    }

    /// Every model, page by page.
    fn list(&self) -> Result<Vec<ModelInfo>, TaskError> {
        self.models
            .get_or_init(|| {
                let mut out = Vec::new();
                let mut page = String::new();
                // A bound on the pages, in case a server hands out tokens forever.
                for _ in 0..50 {
                    let url = format!("{}/{API}/models?pageSize=1000{page}", self.endpoint.base);
                    let v = get_json(&self.http, "gemini", &url, &self.headers())?;
                    for m in v["models"].as_array().into_iter().flatten() {
                        let name = m["name"].as_str().unwrap_or_default();
                        out.push(ModelInfo {
                            name: name.strip_prefix("models/").unwrap_or(name).to_owned(),
                            context_window: m["inputTokenLimit"].as_u64(),
                            price: None,
                        });
                    }
                    match v["nextPageToken"].as_str() {
                        Some(t) if !t.is_empty() && t.chars().all(is_token_char) => {
                            page = format!("&pageToken={t}");
                        }
                        _ => break,
                    }
                }
                Ok(out)
            })
            .clone()
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')
}

/// The model's name as it goes in the path (`models/` taken off), or why it cannot.
fn model_path(model: &str) -> Result<&str, TaskError> {
    let m = model.strip_prefix("models/").unwrap_or(model);
    if m.is_empty() || !m.chars().all(is_token_char) {
        return Err(TaskError::failed(format!(
            "{model:?} is not a Gemini model name (letters, digits, '-', '_', '.'; e.g. \
             gemini-2.5-flash)"
        )));
    }
    Ok(m)
}

/// The `generateContent` body for `req`: the prompt as one user turn, sampling parameters in
/// `generationConfig` under the API's names.
pub(crate) fn body(req: &Request<'_>) -> Value {
    let (system, params) = split_system(req.params);
    let mut body = json!({ "contents": [{ "role": "user", "parts": [{ "text": req.prompt }] }] });
    if let Some(s) = system {
        body["systemInstruction"] = json!({ "parts": [{ "text": s }] });
    }
    let mut config = serde_json::Map::new();
    for (k, v) in params {
        let name = match k.as_str() {
            "max_tokens" => "maxOutputTokens",
            "top_p" => "topP",
            "top_k" => "topK",
            "stop" => "stopSequences",
            "presence_penalty" => "presencePenalty",
            "frequency_penalty" => "frequencyPenalty",
            other => other,
        };
        let v = if name == "stopSequences" && !v.is_array() {
            json!([v.as_str().map_or_else(|| v.to_string(), str::to_owned)])
        } else {
            v.clone()
        };
        config.insert(name.to_owned(), v);
    }
    if let Some(s) = req.schema {
        // `responseJsonSchema` takes JSON Schema as written; the older `responseSchema` takes
        // only an OpenAPI subset and refuses keywords such as `additionalProperties`.
        config.insert("responseMimeType".to_owned(), "application/json".into());
        config.insert("responseJsonSchema".to_owned(), s.value.clone());
    }
    if !config.is_empty() {
        body["generationConfig"] = config.into();
    }
    body
}

/// The answer in a `generateContent` response: the first candidate's text parts (not its
/// thoughts); a prompt or answer blocked by the safety filters is an error naming the reason.
pub(crate) fn answer(v: &Value) -> Result<Answer, TaskError> {
    let malformed = |what: &str| {
        TaskError::failed(format!("malformed answer from gemini: {what}"))
            .with_detail(v.to_string().chars().take(500).collect::<String>())
    };
    let Some(candidate) = v["candidates"].get(0) else {
        return Err(match v["promptFeedback"]["blockReason"].as_str() {
            Some(r) => TaskError::failed(format!("gemini blocked the prompt ({r})")),
            None => malformed("no candidates"),
        });
    };
    let parts = candidate["content"]["parts"].as_array();
    let text: String = parts
        .into_iter()
        .flatten()
        .filter(|p| p["thought"] != true)
        .filter_map(|p| p["text"].as_str())
        .collect();
    let finish = candidate["finishReason"].as_str().unwrap_or("");
    if text.is_empty() && !matches!(finish, "" | "STOP" | "MAX_TOKENS") {
        return Err(TaskError::failed(format!(
            "gemini gave no answer (finishReason {finish})"
        )));
    }
    if parts.is_none() && text.is_empty() && finish.is_empty() {
        return Err(malformed("no candidates[0].content.parts"));
    }
    let usage = &v["usageMetadata"];
    // Thinking tokens are billed as output.
    let output = match (
        usage["candidatesTokenCount"].as_u64(),
        usage["thoughtsTokenCount"].as_u64(),
    ) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    Ok(Answer {
        text,
        input_tokens: usage["promptTokenCount"].as_u64(),
        output_tokens: output,
    })
}

impl Provider for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn settings(&self) -> String {
        self.endpoint.describe()
    }

    fn generate(&self, req: &Request<'_>, cancel: &CancelToken) -> Result<Answer, TaskError> {
        let model = model_path(req.model)?;
        let url = format!(
            "{}/{API}/models/{model}:generateContent",
            self.endpoint.base
        );
        let v = post_json_cancellable(
            &self.http,
            "gemini",
            &url,
            &self.headers(),
            &body(req),
            cancel,
        )
        .map_err(|e| unknown_model(e, "gemini", req.model))?;
        answer(&v)
    }

    fn cache_endpoint(&self) -> Option<String> {
        Some(self.endpoint.base.clone())
    }

    fn context_window(&self, model: &str) -> Result<Option<u64>, TaskError> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        Ok(listed_window(self.list(), model))
    }

    fn models(&self) -> Result<Vec<ModelInfo>, TaskError> {
        self.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Schema;

    #[test]
    fn the_body_follows_generate_content() {
        let params = vec![
            ("system".to_owned(), json!("Be brief.")),
            ("max_tokens".to_owned(), json!(50)),
            ("top_p".to_owned(), json!(0.9)),
        ];
        let schema = Schema::new("city", json!({"type": "object"}));
        let req = Request {
            model: "gemini-x",
            prompt: "Capital of France?",
            vars: &[],
            params: &params,
            repeat: 1,
            schema: Some(&schema),
        };
        let b = body(&req);
        assert_eq!(b["contents"][0]["parts"][0]["text"], "Capital of France?");
        assert_eq!(b["systemInstruction"]["parts"][0]["text"], "Be brief.");
        let c = &b["generationConfig"];
        assert_eq!(
            (c["maxOutputTokens"].clone(), c["topP"].clone()),
            (json!(50), json!(0.9))
        );
        assert_eq!(c["responseMimeType"], "application/json");
        assert_eq!(c["responseJsonSchema"], json!({"type": "object"}));
    }

    #[test]
    fn answers_blocks_and_bad_names() {
        let a = answer(&json!({
            "candidates": [{"content": {"parts": [{"text": "hm", "thought": true}, {"text": "Paris"}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 3}
        }))
        .unwrap();
        assert_eq!(
            (a.text.as_str(), a.input_tokens, a.output_tokens),
            ("Paris", Some(5), Some(5))
        );
        let e = answer(&json!({"promptFeedback": {"blockReason": "SAFETY"}})).unwrap_err();
        assert!(e.to_string().contains("blocked the prompt (SAFETY)"), "{e}");
        let e = answer(&json!({"candidates": [{"finishReason": "RECITATION"}]})).unwrap_err();
        assert!(e.to_string().contains("finishReason RECITATION"), "{e}");
        assert!(model_path("models/gemini-2.5-flash").is_ok());
        assert!(model_path("../x?key=1").is_err());
    }
}
