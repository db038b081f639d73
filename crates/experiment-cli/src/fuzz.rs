//! Entry points for the fuzz targets in `fuzz/` (built with the `fuzzing` feature): each hands
//! bytes to a parser of user input the way the tool does. Errors are expected; a panic, or a
//! broken promise checked here, is a bug.

use std::path::Path;

use crate::experiments::{Experiments, Template, join_prompt};
use crate::providers::KNOWN;
use crate::row::header;
use crate::shell_template::ShellTemplate;
use crate::sink::Sink;

/// A prompt template and an experiments CSV, as `parallamr run -p PROMPT -e CSV` reads them:
/// parse the file, compile the template as a prompt and as a `--command`, and render both for
/// every row. In a command, a value stands for itself: `{{ VAR }}` becomes a reference to a
/// variable that holds the value, whatever the value holds.
pub fn experiments(template: &str, csv: &str) {
    // What an answer's JSON (--flatten) and a server's reset time may be: never a panic.
    if let Some(v) = crate::flatten::extract(template) {
        let _ = crate::flatten::flatten(&v, crate::flatten::Limits::default());
    }
    let _ = crate::rate::parse_reset(template);
    let Ok(experiments) = Experiments::parse(csv, "experiments.csv", KNOWN) else {
        return;
    };
    let prompt = Template::new(
        "prompt.txt",
        join_prompt(template, &[("context.md".to_owned(), template.to_owned())]),
    );
    let command = ShellTemplate::new("--command", template.to_owned());
    for row in &experiments.rows {
        let extra = [
            ("provider", row.provider.as_str()),
            ("model", row.model.as_str()),
        ];
        if let Ok(t) = &prompt {
            let _ = t.render(&row.vars, &extra);
        }
        if let Ok(t) = &command {
            let _ = t.render(&row.vars, &extra);
        }
        let _ = row.key();
        // A value in an -o path never leaves its folder nor names nothing.
        for (_, v) in &row.vars {
            let name = crate::writer::sanitize(v);
            assert!(
                !name.is_empty()
                    && !name.contains(['/', '\\'])
                    && name != "."
                    && name != ".."
                    && name.len() <= 255,
                "{v:?} -> {name:?}"
            );
        }
        // A column a template can name: an identifier that is not one of Jinja's words.
        let nameable = |name: &str| {
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && !matches!(
                    name.to_ascii_lowercase().as_str(),
                    "true" | "false" | "none" | "and" | "or" | "not" | "in" | "is" | "if" | "else"
                )
        };
        if let Some((name, value)) = row.vars.first().filter(|(n, _)| nameable(n))
            && let Ok(t) = ShellTemplate::new("--command", format!("echo {{{{ {name} }}}}"))
            && let Ok((script, _)) = t.render(&row.vars, &[])
        {
            // A value is never in the command's text: the command names its variable.
            assert_eq!(script.text, "echo \"${PARALLAMR_V1}\"", "{name}={value:?}");
            assert_eq!(script.env, [("PARALLAMR_V1".to_owned(), value.clone())]);
        }
    }
}

/// `results` as the results file that `parallamr run --resume` completes, for experiments with
/// the variable columns `vars`: resuming keeps the finished rows, and resuming what that
/// left keeps the same rows and changes nothing.
pub fn resume(dir: &Path, vars: &[String], results: &[u8]) {
    let path = dir.join("results.csv");
    if std::fs::write(&path, results).is_err() {
        return;
    }
    let header = header(vars, crate::row::Shape::default());
    let Ok((_, done, _)) = Sink::resume(&path, &header, false) else {
        return;
    };
    let kept = std::fs::read(&path).expect("the resumed file is there");
    let (_, again, _) = Sink::resume(&path, &header, false).expect("a resumed file resumes");
    assert_eq!(done, again, "resuming twice finds other rows done");
    assert_eq!(
        kept,
        std::fs::read(&path).expect("the resumed file is there"),
        "resuming a resumed file changed it"
    );
}
