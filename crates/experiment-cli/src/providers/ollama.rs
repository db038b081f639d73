//! `ollama`: `POST /api/generate` (not streamed), `/api/tags`, `/api/show` for the context length.

use fanout::{CancelToken, TaskError};

use crate::settings::Settings;
use serde_json::json;

use super::{
    Answer, Http, ModelInfo, Provider, Request, WindowCache, get_json, post_json,
    post_json_cancellable, split_system,
};

#[derive(Debug)]
pub(crate) struct Ollama {
    base: String,
    /// Where `base` came from, for `parallamr providers`.
    origin: String,
    http: Http,
    windows: WindowCache,
}

impl Ollama {
    pub(crate) fn from_env(http: Http, settings: &Settings) -> Self {
        let (base, origin) = settings.get("OLLAMA_BASE_URL").map_or_else(
            || ("http://localhost:11434".to_owned(), "default".to_owned()),
            |(v, o)| (v, o.to_string()),
        );
        Ollama {
            base: base.trim_end_matches('/').to_owned(),
            origin,
            http,
            windows: WindowCache::default(),
        }
    }

    fn show(&self, model: &str) -> Result<Option<u64>, TaskError> {
        let url = format!("{}/api/show", self.base);
        let v = post_json(
            &self.http,
            "ollama",
            &url,
            &Vec::new(),
            &json!({ "model": model }),
        )
        .map_err(|e| unknown_model(e, model))?;
        // The key is `<architecture>.context_length`.
        Ok(v["model_info"].as_object().and_then(|info| {
            info.iter()
                .find(|(k, _)| k.ends_with(".context_length"))
                .and_then(|(_, v)| v.as_u64())
        }))
    }
}

/// A 404 from Ollama means it does not have the model: say that, with the way to get it.
fn unknown_model(e: TaskError, model: &str) -> TaskError {
    match &e {
        TaskError::Failed { message, .. } if message.contains("(404)") => TaskError::failed(
            format!("unknown model {model:?}: ollama does not have it (`ollama pull {model}`)"),
        ),
        _ => e,
    }
}

impl Provider for Ollama {
    fn name(&self) -> &'static str {
        "ollama"
    }

    fn settings(&self) -> String {
        format!(
            "OLLAMA_BASE_URL = {} ({})",
            super::redact(&self.base),
            self.origin
        )
    }

    fn generate(&self, req: &Request<'_>, cancel: &CancelToken) -> Result<Answer, TaskError> {
        let model = req.model;
        let url = format!("{}/api/generate", self.base);
        let mut body = json!({ "model": model, "prompt": req.prompt, "stream": false });
        let (system, params) = split_system(req.params);
        if let Some(s) = system {
            body["system"] = s.into();
        }
        let params: Vec<_> = params.collect();
        if !params.is_empty() {
            // Ollama takes sampling parameters in `options`, and calls max_tokens num_predict.
            let options: serde_json::Map<String, serde_json::Value> = params
                .into_iter()
                .map(|(k, v)| {
                    let k = if k == "max_tokens" { "num_predict" } else { k };
                    (k.to_owned(), v.clone())
                })
                .collect();
            body["options"] = options.into();
        }
        if let Some(s) = req.schema {
            // Ollama's structured output: the schema itself as `format`.
            body["format"] = s.value.clone();
        }
        let v = post_json_cancellable(&self.http, "ollama", &url, &Vec::new(), &body, cancel)
            .map_err(|e| unknown_model(e, model))?;
        let text = v["response"].as_str().ok_or_else(|| {
            TaskError::failed("malformed answer from ollama: no \"response\" field")
                .with_detail(v.to_string().chars().take(500).collect::<String>())
        })?;
        Ok(Answer {
            text: text.to_owned(),
            input_tokens: v["prompt_eval_count"].as_u64(),
            output_tokens: v["eval_count"].as_u64(),
        })
    }

    fn cache_endpoint(&self) -> Option<String> {
        Some(self.base.clone())
    }

    fn context_window(&self, model: &str) -> Result<Option<u64>, TaskError> {
        self.windows.get_or(model, || self.show(model))
    }

    fn models(&self) -> Result<Vec<ModelInfo>, TaskError> {
        let url = format!("{}/api/tags", self.base);
        let v = get_json(&self.http, "ollama", &url, &Vec::new())?;
        let mut out = Vec::new();
        for m in v["models"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default().to_owned();
            let context_window = self.context_window(&name).ok().flatten();
            out.push(ModelInfo {
                name,
                context_window,
                price: None,
            });
        }
        Ok(out)
    }
}
