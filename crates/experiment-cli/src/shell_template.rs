//! The `--command` template: a shell command rendered per row, where a row's values stay data.
//!
//! A placeholder's value is not pasted into the command: the template is rendered with a
//! marker per value, and [`fanout::shell::ScriptBuilder`] turns each marker into a reference to
//! an environment variable (`"${PARALLAMR_V1}"`, written for the quoting state the placeholder
//! is in), and the value goes into that variable. So `echo "t={{t}}"` with a cell
//! `$(touch PWNED)` prints it, and no filter (`| e`, `| tojson`...) can turn that off. The one
//! way to insert a value as code is `{{ value | safe }}`. A placeholder where no reference can
//! mean "this value" (inside backticks, `${...}`, arithmetic, after a `\`...) is refused, with
//! its line and column, before anything runs.

use std::fmt::Write as _;

use anyhow::Result;
use fanout::shell::{HoleError, ScriptBuilder};
use minijinja::Environment;
use minijinja::value::{Object, Value};

use crate::experiments::Template;

/// Values are named `PARALLAMR_V1`, `PARALLAMR_V2`... in the order they appear.
const VAR_PREFIX: &str = "PARALLAMR_V";

/// What an undefined value prints as: a marker that is not hex.
const UNDEFINED: &str = "\0?\0";

/// What `{{ x | safe }}` returns: text that goes into the command as code.
#[derive(Debug)]
struct Raw(String);

impl Object for Raw {}

/// A command template.
#[derive(Debug)]
pub(crate) struct ShellTemplate {
    template: Template,
    name: String,
    source: String,
}

/// A rendered command: the script for `sh -c` and the variables its values are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Script {
    pub(crate) text: String,
    pub(crate) env: Vec<(String, String)>,
}

impl Script {
    /// The script, then each variable it reads, for `--dry-run`.
    pub(crate) fn preview(&self) -> String {
        let mut out = self.text.clone();
        for (k, v) in &self.env {
            let _ = write!(out, "\n  with {k}={}", fanout::process::shell_quote(v));
        }
        out
    }
}

impl ShellTemplate {
    /// `name` is what error messages call it (`--command`).
    pub(crate) fn new(name: &str, source: String) -> Result<Self> {
        let mut env = Environment::new();
        env.add_filter("safe", |v: Value| Value::from_object(Raw(v.to_string())));
        env.set_formatter(|out, _state, value| {
            if let Some(raw) = value.downcast_object_ref::<Raw>() {
                return out.write_str(&raw.0).map_err(minijinja::Error::from);
            }
            if value.is_undefined() {
                // A name no row gives, printed: marked, and refused by `render`.
                return out.write_str(UNDEFINED).map_err(minijinja::Error::from);
            }
            let text = if value.is_none() {
                String::new()
            } else {
                value.to_string()
            };
            // NUL never occurs in a command (no program can receive one), so it marks a value:
            // NUL, the value's bytes in hex, NUL.
            out.write_char('\0')?;
            for b in text.bytes() {
                write!(out, "{b:02x}")?;
            }
            out.write_char('\0').map_err(minijinja::Error::from)
        });
        Ok(ShellTemplate {
            template: Template::with_env(name, source.clone(), env)?,
            name: name.to_owned(),
            source,
        })
    }

    /// Render with `vars` (and `extra`): the script, and the used variables the row lacked.
    /// A placeholder printing a name that neither gives is an error, not an empty value: a
    /// typo must not run as `rm -r data/` (a name only tested, `{% if x is defined %}`, or
    /// one of Jinja's own, `range`, is no error).
    pub(crate) fn render(
        &self,
        vars: &[(String, String)],
        extra: &[(&str, &str)],
    ) -> Result<(Script, Vec<String>), String> {
        let (marked, missing) = self.template.render(vars, extra)?;
        let mut script = ScriptBuilder::new();
        let mut env = Vec::new();
        for (i, part) in marked.split('\0').enumerate() {
            if i % 2 == 0 {
                script.code(part);
            } else if part == "?" {
                return Err(self.undefined(&missing, vars, extra));
            } else {
                let value = unhex(part);
                if value.contains('\0') {
                    return Err(format!(
                        "{}: a value holds a NUL byte, which no program can be given",
                        self.name
                    ));
                }
                let var = format!("{VAR_PREFIX}{}", env.len() + 1);
                script.value(&var);
                env.push((var, value));
            }
        }
        match script.build() {
            Ok(text) => Ok((Script { text, env }, missing)),
            Err(e) => Err(self.explain(&e, env.len())),
        }
    }

    /// A placeholder printed a name that no column gives: name the likely ones (those the
    /// template uses and the row lacks, but Jinja's own) and the columns there are.
    fn undefined(
        &self,
        missing: &[String],
        vars: &[(String, String)],
        extra: &[(&str, &str)],
    ) -> String {
        const JINJA: &[&str] = &[
            "range",
            "dict",
            "namespace",
            "debug",
            "loop",
            "self",
            "super",
        ];
        let names: Vec<&str> = (missing.iter().map(String::as_str))
            .filter(|m| !JINJA.contains(m))
            .collect();
        let columns: Vec<&str> = (vars.iter().map(|(k, _)| k.as_str()))
            .chain(extra.iter().map(|(k, _)| *k))
            .collect();
        let what = if names.is_empty() {
            "prints a value that".to_owned()
        } else {
            format!("prints {}, which", names.join(", "))
        };
        format!(
            "{} {what} no column of the experiments gives (they have: {})",
            self.name,
            columns.join(", ")
        )
    }

    /// A refused placeholder, named by where it is in the template when that can be told: in
    /// a template without `{% %}` blocks or `| safe`, the n-th value is the n-th `{{`.
    fn explain(&self, e: &HoleError, values: usize) -> String {
        let plain = !self.source.contains("{%") && self.source.matches("{{").count() == values;
        let Some((at, _)) = self
            .source
            .match_indices("{{")
            .nth(e.hole)
            .filter(|_| plain)
        else {
            return format!("{}: {e}", self.name);
        };
        let before = &self.source[..at];
        let line = before.matches('\n').count() + 1;
        let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
            .chars()
            .count()
            + 1;
        let end = self.source[at..]
            .find("}}")
            .map_or(self.source.len(), |i| at + i + 2);
        format!(
            "{} line {line}, column {column} ({}): the placeholder is {}",
            self.name,
            &self.source[at..end],
            e.place.describe()
        )
    }
}

fn unhex(hex: &str) -> String {
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .filter_map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect();
    // The bytes of a value that was a `String`: valid UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, vars: &[(&str, &str)]) -> Result<Script, String> {
        let vars: Vec<(String, String)> = (vars.iter())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ShellTemplate::new("--command", template.to_owned())
            .unwrap()
            .render(&vars, &[("model", "m")])
            .map(|(script, _)| script)
    }

    /// A placeholder printing a name no column gives is refused, naming it and the columns;
    /// a name only tested, Jinja's own names, and set or loop variables are not.
    #[test]
    fn a_name_no_column_gives_is_refused_only_when_printed() {
        let err = render("rm -r data/{{ dri }}", &[("dir", "x")]).unwrap_err();
        assert_eq!(
            err,
            "--command prints dri, which no column of the experiments gives (they have: dir, \
             model)"
        );
        for (template, text) in [
            (
                "run{% if seed is defined %} --seed {{ seed }}{% endif %}",
                "run",
            ),
            (
                "echo{% for i in range(2) %} {{ i }}{% endfor %}",
                "echo \"${PARALLAMR_V1}\" \"${PARALLAMR_V2}\"",
            ),
            (
                "{% set n = dir ~ '.txt' %}cat {{ n }}",
                "cat \"${PARALLAMR_V1}\"",
            ),
            (
                "echo {{ seed | default('1') }} {{ model }}",
                "echo \"${PARALLAMR_V1}\" \"${PARALLAMR_V2}\"",
            ),
        ] {
            let script =
                render(template, &[("dir", "x")]).unwrap_or_else(|e| panic!("{template}: {e}"));
            assert_eq!(script.text, text, "{template}");
        }
        // Without a likely name (a key of a value), the message still says what happened.
        let err = render("echo {{ dir.nope }}", &[("dir", "x")]).unwrap_err();
        assert!(
            err.starts_with("--command prints a value that no column"),
            "{err}"
        );
    }
}
