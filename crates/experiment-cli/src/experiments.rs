//! The inputs: the experiments CSV, the prompt and context files, and the prompt template.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use minijinja::{Environment, UndefinedBehavior};

/// One row of the experiments file.
#[derive(Debug, Clone)]
pub(crate) struct Experiment {
    /// Position in the file's rows (0 for the first).
    pub(crate) index: usize,
    /// Line in the file (the header is line 1).
    pub(crate) line: u64,
    pub(crate) provider: String,
    pub(crate) model: String,
    /// Every other column, in the file's order.
    pub(crate) vars: Vec<(String, String)>,
    /// The request parameters among the variables (`temperature`...), typed.
    pub(crate) params: crate::params::Params,
    /// With `--repeat N`: which of the row's N sends this is (1 to N).
    pub(crate) repeat: Option<u32>,
}

impl Experiment {
    /// The `max_tokens` parameter the row sends, if any.
    pub(crate) fn max_tokens(&self) -> Option<u64> {
        self.params
            .iter()
            .find(|(k, _)| k == "max_tokens")
            .and_then(|(_, v)| v.as_u64())
    }

    /// The value of the variable `name`, if the row has the column.
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// What identifies an experiment's result row: provider, model, variable values (and the
    /// repeat).
    pub(crate) fn key(&self) -> Vec<String> {
        let mut k = vec![self.provider.clone(), self.model.clone()];
        k.extend(self.vars.iter().map(|(_, v)| v.clone()));
        if let Some(r) = self.repeat {
            k.push(r.to_string());
        }
        k
    }
}

/// The experiments file, read and checked.
#[derive(Debug)]
pub(crate) struct Experiments {
    pub(crate) source: String,
    /// The variable columns, in order.
    pub(crate) var_names: Vec<String>,
    pub(crate) rows: Vec<Experiment>,
}

/// Read a file, or standard input for `-`. Errors name the file.
pub(crate) fn read_input(path: &Path, what: &str) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("reading the {what} from standard input"))?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))
}

impl Experiments {
    pub(crate) fn parse(text: &str, source: &str, known: &[&str]) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let headers: Vec<String> = reader
            .headers()
            .with_context(|| format!("{source}: cannot read the header row"))?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let (Some(pi), Some(mi)) = (col("provider"), col("model")) else {
            let missing: Vec<&str> = ["provider", "model"]
                .into_iter()
                .filter(|c| col(c).is_none())
                .collect();
            bail!(
                "{source}: the header has no {} column (it has: {}); every experiments file needs \
                 provider and model columns",
                missing.join(" or "),
                headers.join(", ")
            );
        };
        let mut seen = BTreeSet::new();
        for h in &headers {
            if h.is_empty() {
                bail!("{source}: a column of the header has no name");
            }
            if !seen.insert(h.as_str()) {
                bail!("{source}: the header names the column {h:?} twice");
            }
        }
        let var_idx: Vec<usize> = (0..headers.len())
            .filter(|i| *i != pi && *i != mi)
            .collect();
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    pos,
                    expected_len,
                    len,
                } => anyhow!(
                    "{source} line {}: the row has {len} fields, but the header has {expected_len}",
                    pos.as_ref().map_or(0, csv::Position::line)
                ),
                _ => anyhow!("{source}: {e}"),
            })?;
            let line = record.position().map_or(0, csv::Position::line);
            let provider = record[pi].trim().to_owned();
            if !known.contains(&provider.as_str()) {
                bail!(
                    "{source} line {line}: unknown provider {provider:?}; the known providers: {}",
                    known.join(", ")
                );
            }
            let model = record[mi].trim().to_owned();
            if model.is_empty() {
                bail!("{source} line {line}: the model is empty");
            }
            rows.push(Experiment {
                index: rows.len(),
                line,
                provider,
                model,
                vars: var_idx
                    .iter()
                    .map(|&i| (headers[i].clone(), record[i].to_owned()))
                    .collect(),
                params: Vec::new(),
                repeat: None,
            });
        }
        Ok(Experiments {
            source: source.to_owned(),
            var_names: var_idx.iter().map(|&i| headers[i].clone()).collect(),
            rows,
        })
    }
}

impl Experiments {
    /// `--repeat N`: each row N times in a row, numbered 1 to N (the `repeat` column).
    pub(crate) fn repeat(&mut self, n: u32) -> Result<()> {
        if self.var_names.iter().any(|v| v == "repeat") {
            bail!(
                "{}: the experiments have a column named repeat, and --repeat adds one: rename it",
                self.source
            );
        }
        let rows = std::mem::take(&mut self.rows);
        self.rows.reserve(rows.len() * n as usize);
        for e in rows {
            for r in 1..=n {
                self.rows.push(Experiment {
                    index: self.rows.len(),
                    repeat: Some(r),
                    ..e.clone()
                });
            }
        }
        Ok(())
    }

    /// Fill each row's request parameters from the columns `names`; a value of the wrong type
    /// is an error naming the file and line.
    pub(crate) fn read_params(&mut self, names: &[String]) -> Result<()> {
        for e in &mut self.rows {
            for (k, v) in &e.vars {
                if !names.contains(k) {
                    continue;
                }
                match crate::params::value(k, v) {
                    Ok(Some(value)) => e.params.push((k.clone(), value)),
                    Ok(None) => {}
                    Err(msg) => bail!("{} line {}: {msg}", self.source, e.line),
                }
            }
        }
        Ok(())
    }
}

/// A template checked for syntax, with the names it uses.
#[derive(Debug)]
pub(crate) struct Template {
    env: Environment<'static>,
    name: String,
    /// Top-level variables the template uses.
    pub(crate) uses: BTreeSet<String>,
}

impl Template {
    /// `name` is what error messages call it (a file name, `--command`).
    pub(crate) fn new(name: &str, source: String) -> Result<Self> {
        Self::with_env(name, source, Environment::new())
    }

    /// A template rendered by `env` (the `--command` template sets its own formatter).
    pub(crate) fn with_env(
        name: &str,
        source: String,
        mut env: Environment<'static>,
    ) -> Result<Self> {
        // Missing variables render empty; the run reports them as a warning per row instead.
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.add_template_owned(name.to_owned(), source)
            .map_err(|e| template_error(name, &e))?;
        let uses = env
            .get_template(name)
            .expect("just added")
            .undeclared_variables(false)
            .into_iter()
            .collect();
        Ok(Template {
            env,
            name: name.to_owned(),
            uses,
        })
    }

    /// Render with `vars` (and `extra`); returns the text and the used variables it lacked.
    pub(crate) fn render(
        &self,
        vars: &[(String, String)],
        extra: &[(&str, &str)],
    ) -> Result<(String, Vec<String>), String> {
        let mut ctx: std::collections::BTreeMap<&str, &str> =
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ctx.extend(extra.iter().copied());
        let missing: Vec<String> = self
            .uses
            .iter()
            .filter(|u| !ctx.contains_key(u.as_str()))
            .cloned()
            .collect();
        let text = self
            .env
            .get_template(&self.name)
            .and_then(|t| t.render(&ctx))
            .map_err(|e| template_error(&self.name, &e).to_string())?;
        Ok((text, missing))
    }
}

fn template_error(name: &str, e: &minijinja::Error) -> anyhow::Error {
    let line = e.line().map(|l| format!(" line {l}")).unwrap_or_default();
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    anyhow!("template error in {name}{line}: {}{detail}", e.kind())
}

/// The prompt and context files joined: each context file after `## Document: <file name>`.
pub(crate) fn join_prompt(prompt: &str, contexts: &[(String, String)]) -> String {
    let mut text = prompt.to_owned();
    for (name, body) in contexts {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("\n## Document: ");
        text.push_str(name);
        text.push_str("\n\n");
        text.push_str(body);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["mock", "ollama"];

    #[test]
    fn rows_carry_their_variables_in_column_order() {
        let e = Experiments::parse(
            "topic,provider,model,tone\ncats,mock,m1,dry\n",
            "x.csv",
            KNOWN,
        )
        .unwrap();
        assert_eq!(e.var_names, ["topic", "tone"]);
        assert_eq!(e.rows[0].line, 2);
        assert_eq!(e.rows[0].key(), ["mock", "m1", "cats", "dry"]);
    }

    #[test]
    fn bad_files_name_the_file_and_line() {
        let err = |t: &str| format!("{:#}", Experiments::parse(t, "x.csv", KNOWN).unwrap_err());
        assert!(err("model,topic\nm,a\n").contains("x.csv: the header has no provider column"));
        assert!(
            err("provider,model\nmock,m\nmock\n")
                .contains("x.csv line 3: the row has 1 fields, but the header has 2")
        );
        let e = err("provider,model\nmock,m\nopenia,m\n");
        assert!(
            e.contains(
                "x.csv line 3: unknown provider \"openia\"; the known providers: mock, ollama"
            ),
            "{e}"
        );
    }

    #[test]
    fn templates_report_the_variables_a_row_lacks() {
        let t = Template::new(
            "prompt.txt",
            "Write about {{ topic }} in a {{tone}} tone.".into(),
        )
        .unwrap();
        let (text, missing) = t.render(&[("topic".into(), "cats".into())], &[]).unwrap();
        assert_eq!(text, "Write about cats in a  tone.");
        assert_eq!(missing, ["tone"]);
        let e = Template::new("prompt.txt", "{% if %}".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("template error in prompt.txt line 1"), "{e}");
    }

    #[test]
    fn context_files_follow_the_prompt_under_a_heading() {
        let joined = join_prompt("Summarise.", &[("a.md".into(), "alpha\n".into())]);
        assert_eq!(joined, "Summarise.\n\n## Document: a.md\n\nalpha\n");
    }
}
