//! `--grader PROVIDER/MODEL --rubric FILE`: a model-graded check. After a row's answer, a second
//! request asks the grader whether the answer meets the rubric; its verdict (pass, score,
//! reason) is one of the row's checks. The request goes through the same provider limits, rate
//! schedules, budget and response cache as any other: a re-run grades from the cache.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use fanout::TaskError;

use crate::experiments::{Experiment, Experiments, Template};
use crate::providers;

/// The rubric used without `--rubric`.
const DEFAULT_RUBRIC: &str = "You are grading an answer to a request. Is the answer correct, \
complete and responsive to the request?\n\n## Request\n\n{{ prompt }}\n\n## Answer\n\n{{ output }}\n";

/// What the grader is asked to reply, after the rubric.
const VERDICT_FORM: &str = "\n\nReply with only a JSON object: {\"pass\": true or false, \
\"score\": a number from 0 to 1, \"reason\": \"one short sentence\"}.\n";

/// The grader of a run: its provider, model and rubric.
#[derive(Debug)]
pub(crate) struct Grader {
    pub(crate) provider: String,
    pub(crate) model: String,
    rubric: Template,
}

/// The grader's verdict on one answer, and what asking cost.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Grade {
    pub(crate) pass: bool,
    pub(crate) score: Option<f64>,
    pub(crate) reason: String,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) cost: Option<f64>,
    pub(crate) cached: bool,
}

impl Grader {
    /// `--grader` and `--rubric`, checked: a known provider other than `command`, a model, a
    /// rubric that reads and parses.
    pub(crate) fn new(
        grader: Option<&str>,
        rubric: Option<&Path>,
        experiments: &Experiments,
    ) -> Result<Option<Grader>> {
        let Some(spec) = grader else {
            if let Some(r) = rubric {
                bail!("--rubric {} needs --grader PROVIDER/MODEL", r.display());
            }
            return Ok(None);
        };
        let (provider, model) = spec
            .split_once('/')
            .filter(|(p, m)| !p.is_empty() && !m.is_empty())
            .ok_or_else(|| {
                anyhow!("--grader {spec:?} is not PROVIDER/MODEL (e.g. openai/gpt-4o-mini)")
            })?;
        if !providers::KNOWN.contains(&provider) || provider == "command" {
            bail!(
                "--grader {spec}: unknown provider {provider:?}; a grader is one of: {}",
                providers::KNOWN
                    .iter()
                    .filter(|p| **p != "command")
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let rubric = match rubric {
            Some(path) => {
                let text = crate::experiments::read_input(path, "rubric")?;
                Template::new(&path.display().to_string(), text)?
            }
            None => Template::new("the default rubric", DEFAULT_RUBRIC.to_owned())?,
        };
        for name in ["output", "prompt"] {
            if experiments.var_names.iter().any(|v| v == name) && rubric.uses.contains(name) {
                bail!(
                    "{}: a column named {name} hides the answer's {name} from the rubric: \
                     rename it",
                    experiments.source
                );
            }
        }
        Ok(Some(Grader {
            provider: provider.to_owned(),
            model: model.to_owned(),
            rubric,
        }))
    }

    /// What the grader is sent for `e`'s answer: the rubric rendered with the row's variables,
    /// `prompt` and `output` (the answer follows it under a heading if it does not use
    /// `output`), then the form of the verdict.
    pub(crate) fn prompt(
        &self,
        e: &Experiment,
        prompt: &str,
        answer: &str,
    ) -> Result<String, String> {
        let (mut text, _) = self
            .rubric
            .render(&e.vars, &[("prompt", prompt), ("output", answer)])?;
        if !self.rubric.uses.contains("output") {
            text.push_str("\n\n## Answer\n\n");
            text.push_str(answer);
        }
        text.push_str(VERDICT_FORM);
        Ok(text)
    }
}

/// A failed grading request names the grader (the row's own answer was fine).
pub(crate) fn grading_error(g: &Grader, err: TaskError) -> TaskError {
    match err {
        TaskError::Failed {
            message,
            detail,
            retryable,
            retry_after,
        } => TaskError::Failed {
            message: format!("grading with {}/{}: {message}", g.provider, g.model),
            detail,
            retryable,
            retry_after,
        },
        other => other,
    }
}

/// The grader's reply read as a verdict: a JSON object with `pass` (and `score`, `reason`),
/// else a reply starting with PASS or FAIL; anything else fails, quoting the reply.
pub(crate) fn verdict(
    reply: &str,
    input_tokens: u64,
    output_tokens: u64,
    cost: Option<f64>,
    cached: bool,
) -> Grade {
    let (pass, score, reason) = read_verdict(reply);
    Grade {
        pass,
        score,
        reason,
        input_tokens,
        output_tokens,
        cost,
        cached,
    }
}

/// The first JSON object in `reply` with a `pass` field (the reply may say other things, with
/// other JSON, around it).
fn verdict_object(reply: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    if let Some(serde_json::Value::Object(o)) = crate::flatten::extract(reply)
        && o.contains_key("pass")
    {
        return Some(o);
    }
    reply.match_indices('{').find_map(|(i, _)| {
        let mut values =
            serde_json::Deserializer::from_str(&reply[i..]).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(serde_json::Value::Object(o))) if o.contains_key("pass") => Some(o),
            _ => None,
        }
    })
}

fn read_verdict(reply: &str) -> (bool, Option<f64>, String) {
    if let Some(o) = verdict_object(reply) {
        let pass = match o.get("pass") {
            Some(serde_json::Value::Bool(b)) => Some(*b),
            Some(serde_json::Value::String(s)) => word_verdict(s),
            _ => None,
        };
        if let Some(pass) = pass {
            let score = o
                .get("score")
                .and_then(serde_json::Value::as_f64)
                .map(|s| s.clamp(0.0, 1.0));
            let reason = o
                .get("reason")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            return (pass, score, reason);
        }
    }
    match word_verdict(reply) {
        Some(pass) => (pass, None, reply.trim().chars().take(200).collect()),
        None => (
            false,
            Some(0.0),
            format!(
                "the grader's reply has no verdict: {:?}",
                reply.trim().chars().take(120).collect::<String>()
            ),
        ),
    }
}

/// PASS/FAIL (also yes/no, true/false) as the reply's first word.
fn word_verdict(s: &str) -> Option<bool> {
    let first: String = s
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect::<String>()
        .to_lowercase();
    match first.as_str() {
        "pass" | "passed" | "yes" | "true" => Some(true),
        "fail" | "failed" | "no" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_json_or_a_first_word() {
        assert_eq!(
            read_verdict("```json\n{\"pass\": true, \"score\": 0.8, \"reason\": \"ok\"}\n```"),
            (true, Some(0.8), "ok".to_owned())
        );
        assert_eq!(
            read_verdict("{\"pass\": \"FAIL\", \"score\": 7}"),
            (false, Some(1.0), String::new())
        );
        assert!(read_verdict("PASS - names Paris").0);
        assert!(!read_verdict("No. It names Lyon.").0);
        assert_eq!(
            read_verdict("Lists [\"Paris\"]. {\"pass\": true, \"reason\": \"ok\"} done").2,
            "ok",
            "the object with the verdict, not the first JSON"
        );
        let (pass, score, reason) = read_verdict("I think so");
        assert!(!pass);
        assert_eq!(score, Some(0.0));
        assert_eq!(reason, "the grader's reply has no verdict: \"I think so\"");
    }

    #[test]
    fn the_grader_is_checked_before_anything_is_sent() {
        let e = Experiments::parse("provider,model\nmock,m\n", "e.csv", &["mock"]).unwrap();
        let err = |grader: &str| format!("{:#}", Grader::new(Some(grader), None, &e).unwrap_err());
        assert!(err("gpt-4o").contains("is not PROVIDER/MODEL"));
        assert!(err("command/x").contains("unknown provider \"command\""));
        assert!(
            format!(
                "{:#}",
                Grader::new(None, Some(Path::new("r.txt")), &e).unwrap_err()
            )
            .contains("--rubric r.txt needs --grader")
        );
    }

    #[test]
    fn the_rubric_gets_the_row_the_prompt_and_the_answer() {
        let e =
            Experiments::parse("provider,model,city\nmock,m,Paris\n", "e.csv", &["mock"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rubric = dir.path().join("r.txt");
        std::fs::write(&rubric, "Does it name {{ city }}?").unwrap();
        let g = Grader::new(Some("mock/mock"), Some(&rubric), &e)
            .unwrap()
            .unwrap();
        let text = g.prompt(&e.rows[0], "Capital?", "Lyon").unwrap();
        assert!(
            text.starts_with("Does it name Paris?\n\n## Answer\n\nLyon\n\nReply with only a JSON"),
            "{text}"
        );
    }
}
