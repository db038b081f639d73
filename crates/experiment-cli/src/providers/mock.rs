//! `mock`: deterministic, no network. Answers with facts about its input, so sweeps and the
//! whole output pipeline can be tried without a model.

use std::fmt::Write as _;

use fanout::{CancelToken, TaskError};

use super::{Answer, ModelInfo, Provider, Request, estimate_tokens};

#[derive(Debug)]
pub(crate) struct Mock;

/// The mock models and their context windows.
const MODELS: &[(&str, u64)] = &[("mock", 8192), ("mock-small", 256), ("mock-large", 131_072)];

impl Provider for Mock {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn settings(&self) -> String {
        "no settings; models: mock (8192 tokens), mock-small (256), mock-large (131072)".to_owned()
    }

    fn generate(&self, req: &Request<'_>, _cancel: &CancelToken) -> Result<Answer, TaskError> {
        let (model, prompt) = (req.model, req.prompt);
        let words = prompt.split_whitespace().count();
        let first = prompt.lines().next().unwrap_or("").trim();
        let mut text = format!(
            "MOCK {model}: {} characters, {words} words, {} lines; first line: {first}",
            prompt.chars().count(),
            prompt.lines().count()
        );
        // The parameters it was given, so a sweep over them shows in the answers.
        for (k, v) in req.params {
            let _ = write!(text, "; {k}={v}");
        }
        Ok(Answer {
            input_tokens: Some(estimate_tokens(prompt)),
            output_tokens: Some(estimate_tokens(&text)),
            text,
        })
    }

    fn cache_endpoint(&self) -> Option<String> {
        Some(String::new())
    }

    fn context_window(&self, model: &str) -> Result<Option<u64>, TaskError> {
        Ok(MODELS
            .iter()
            .find(|(m, _)| *m == model)
            .map_or(Some(8192), |(_, w)| Some(*w)))
    }

    fn models(&self) -> Result<Vec<ModelInfo>, TaskError> {
        Ok(MODELS
            .iter()
            .map(|(m, w)| ModelInfo {
                name: (*m).to_owned(),
                context_window: Some(*w),
                price: None,
            })
            .collect())
    }
}
