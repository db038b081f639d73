//! `mock`: deterministic, no network. Answers with facts about its input, so sweeps and the
//! whole output pipeline can be tried without a model.

use fanout::{CancelToken, TaskError};

use super::{Answer, ModelInfo, Provider, estimate_tokens};

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

    fn generate(
        &self,
        model: &str,
        prompt: &str,
        _vars: &[(String, String)],
        _cancel: &CancelToken,
    ) -> Result<Answer, TaskError> {
        let words = prompt.split_whitespace().count();
        let first = prompt.lines().next().unwrap_or("").trim();
        let text = format!(
            "MOCK {model}: {} characters, {words} words, {} lines; first line: {first}",
            prompt.chars().count(),
            prompt.lines().count()
        );
        Ok(Answer {
            input_tokens: Some(estimate_tokens(prompt)),
            output_tokens: Some(estimate_tokens(&text)),
            text,
        })
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
            })
            .collect())
    }
}
