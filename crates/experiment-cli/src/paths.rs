//! Path templates: `{{var}}` in the `-p`, `-c` and `-o` paths, filled per experiment with its
//! provider, model and variables, each value made safe as a file name (`writer::sanitize`):
//! `-o 'results/{{provider}}-{{topic}}.csv'` writes one file per distinct pair.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use minijinja::{Environment, UndefinedBehavior};

use crate::experiments::Experiment;
use crate::writer::sanitize;

/// What an `-o` path becomes for a row that lacks a value its template uses.
pub(crate) const MISSING: &str = "_missing_";

/// A path given on the command line, with or without placeholders.
#[derive(Debug)]
pub(crate) struct PathTemplate {
    /// The flag it came from, for messages (`-o`).
    flag: &'static str,
    raw: PathBuf,
    env: Option<Environment<'static>>,
    /// The variables it uses, in the order they appear.
    pub(crate) uses: Vec<String>,
}

/// Why a row has no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoPath {
    /// These variables the template uses are empty in the row.
    Missing(Vec<String>),
}

impl PathTemplate {
    /// `columns`: every name a row has (provider, model and the variables). A placeholder
    /// naming no column is refused here, before anything runs.
    pub(crate) fn new(flag: &'static str, path: &Path, columns: &[String]) -> Result<Self> {
        let Some(raw) = path
            .to_str()
            .filter(|s| s.contains("{{") || s.contains("{%"))
        else {
            return Ok(PathTemplate {
                flag,
                raw: path.to_owned(),
                env: None,
                uses: Vec::new(),
            });
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template_owned("path", raw.to_owned())
            .map_err(|e| {
                anyhow!(
                    "{flag} {raw}: not a valid path template: {}{}",
                    e.kind(),
                    e.detail().map(|d| format!(": {d}")).unwrap_or_default()
                )
            })?;
        let mut uses: Vec<String> = env
            .get_template("path")
            .expect("just added")
            .undeclared_variables(false)
            .into_iter()
            .collect();
        uses.sort_by_key(|u| raw.find(u.as_str()));
        if let Some(unknown) = uses.iter().find(|u| !columns.contains(u)) {
            bail!(
                "{flag} {raw}: no column is named {unknown:?} (the columns: {})",
                columns.join(", ")
            );
        }
        Ok(PathTemplate {
            flag,
            raw: path.to_owned(),
            env: Some(env),
            uses,
        })
    }

    /// Whether the path has placeholders.
    pub(crate) fn is_template(&self) -> bool {
        self.env.is_some()
    }

    /// The path as given.
    pub(crate) fn raw(&self) -> &Path {
        &self.raw
    }

    /// The path for `e`, or why it has none.
    pub(crate) fn render(&self, e: &Experiment) -> Result<PathBuf, NoPath> {
        let missing: Vec<String> = self
            .uses
            .iter()
            .filter(|u| value(e, u).is_none_or(|v| v.trim().is_empty()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(NoPath::Missing(missing));
        }
        Ok(self.fill(e, |v| v))
    }

    /// The path for `e` with every empty value shown as [`MISSING`]: where a row that has no
    /// path goes, so it is never lost.
    pub(crate) fn render_lenient(&self, e: &Experiment) -> PathBuf {
        self.fill(e, |v| if v.trim().is_empty() { MISSING } else { v })
    }

    fn fill<'a>(&self, e: &'a Experiment, or: impl Fn(&'a str) -> &'a str) -> PathBuf {
        let Some(env) = &self.env else {
            return self.raw.clone();
        };
        let ctx: BTreeMap<&str, String> = self
            .uses
            .iter()
            .map(|u| {
                let v = value(e, u).unwrap_or_default();
                (u.as_str(), sanitize(or(v)))
            })
            .collect();
        let text = env
            .get_template("path")
            .expect("added in new")
            .render(&ctx)
            .expect("every variable it uses is given, as a string");
        PathBuf::from(text)
    }

    /// A file name part longer than 255 bytes, after filling: no file system takes it.
    pub(crate) fn check_length(&self, path: &Path, e: &Experiment, source: &str) -> Result<()> {
        if let Some(part) = path
            .components()
            .map(std::path::Component::as_os_str)
            .find(|c| c.len() > 255)
        {
            bail!(
                "{source} line {}: {} {} gives a file name of {} bytes (at most 255): {}...",
                e.line,
                self.flag,
                self.raw.display(),
                part.len(),
                part.to_string_lossy().chars().take(40).collect::<String>()
            );
        }
        Ok(())
    }
}

/// The value of column `name` in `e`.
fn value<'a>(e: &'a Experiment, name: &str) -> Option<&'a str> {
    match name {
        "provider" => Some(&e.provider),
        "model" => Some(&e.model),
        _ => e
            .vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(topic: &str) -> Experiment {
        Experiment {
            index: 0,
            line: 2,
            provider: "openai".into(),
            model: "gpt-4o".into(),
            vars: vec![("topic".into(), topic.into())],
            params: Vec::new(),
            repeat: None,
        }
    }

    fn columns() -> Vec<String> {
        ["provider", "model", "topic"].map(String::from).to_vec()
    }

    #[test]
    fn placeholders_take_the_row_values_made_safe() {
        let t = PathTemplate::new(
            "-o",
            Path::new("out/{{provider}}-{{ topic }}.csv"),
            &columns(),
        )
        .unwrap();
        assert!(t.is_template());
        assert_eq!(t.uses, ["provider", "topic"]);
        assert_eq!(
            t.render(&exp("cats")).unwrap(),
            Path::new("out/openai-cats.csv")
        );
        assert_eq!(
            t.render(&exp("../../etc/x")).unwrap(),
            Path::new("out/openai-_.._etc_x.csv")
        );
        assert_eq!(
            t.render(&exp(" ")),
            Err(NoPath::Missing(vec!["topic".to_owned()]))
        );
        assert_eq!(
            t.render_lenient(&exp("")),
            Path::new("out/openai-_missing_.csv")
        );
        let plain = PathTemplate::new("-o", Path::new("out.csv"), &columns()).unwrap();
        assert!(!plain.is_template());
        assert_eq!(plain.render(&exp("")).unwrap(), Path::new("out.csv"));
    }

    #[test]
    fn unknown_columns_and_bad_syntax_are_refused() {
        let e = PathTemplate::new("-o", Path::new("{{topc}}.csv"), &columns())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "-o {{topc}}.csv: no column is named \"topc\" (the columns: provider, model, topic)"
        );
        let e = PathTemplate::new("-p", Path::new("{{topic.txt"), &columns())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("-p {{topic.txt: not a valid path template"),
            "{e}"
        );
    }

    #[test]
    fn over_long_names_are_refused_with_the_line() {
        let t = PathTemplate::new("-o", Path::new("out/x{{topic}}.csv"), &columns()).unwrap();
        let e = exp(&"a".repeat(255));
        let p = t.render(&e).unwrap();
        let err = t.check_length(&p, &e, "e.csv").unwrap_err().to_string();
        assert!(
            err.starts_with("e.csv line 2: -o out/x{{topic}}.csv gives a file name of 260 bytes"),
            "{err}"
        );
    }
}
