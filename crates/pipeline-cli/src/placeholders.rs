//! Filling a job's `{{payload.KEY}}` placeholders so that a value stays data.
//!
//! - In a string command (run with `sh -c`), and in the script of an array command that runs a
//!   shell (`["sh", "-c", "..."]`, `["env", "bash", "-ec", "..."]`), a placeholder becomes a
//!   reference to the job's `LORCHESTRA_PAYLOAD_<KEY>` variable, written for the quoting state
//!   it is in (`fanout::shell`): `echo "id={{payload.id}}"` prints `$(touch x)` as it is.
//!   Where no reference can keep a value data (backticks, `eval`...), the pipeline is refused
//!   before anything runs, naming the place.
//! - In the code argument of another interpreter (`python -c`, `perl -e`, `node -e`...) a
//!   placeholder is refused: nothing here knows that language's quoting; read the value from
//!   the environment there (`os.environ["LORCHESTRA_PAYLOAD_ID"]`).
//! - In any other argument of an array command the value is (part of) one argument, as it is.
//! - In `env`, a value goes into the variable as it is, except into variables that change
//!   which code runs (`PATH`, `LD_PRELOAD`, `BASH_ENV`, `PYTHONPATH`...), which are refused.
//! - In `cwd`, a value may not move the job outside the project folder (`..`, an absolute
//!   path) unless the job says `outside_project = true`.

use std::path::{Component, Path, PathBuf};

use fanout::shell::{HoleError, ScriptBuilder};
use serde_json::Value;

use anyhow::{Result, anyhow};

use crate::model::{Job, Pipeline, Run};
use crate::payload::{ENV_ALL, Payload, check_keys, text, variable};

/// Why a job's placeholders cannot be filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfilled {
    /// The payload has no such key.
    Unknown(String),
    /// A placeholder where a value would not stay data.
    Refused { key: String, why: HoleError },
    /// In the code of an interpreter other than a shell.
    Code { key: String, program: String },
    /// In a variable that changes which code runs.
    Variable { key: String, var: String },
    /// A folder outside the project.
    Outside { key: String, cwd: PathBuf },
}

impl Unfilled {
    /// The key the placeholder names.
    pub(crate) fn key(&self) -> &str {
        match self {
            Unfilled::Unknown(key)
            | Unfilled::Refused { key, .. }
            | Unfilled::Code { key, .. }
            | Unfilled::Variable { key, .. }
            | Unfilled::Outside { key, .. } => key,
        }
    }

    /// What is wrong, after "the job X uses {{payload.KEY}}" (not for `Unknown`).
    pub(crate) fn why(&self) -> String {
        match self {
            Unfilled::Unknown(_) => "which the payload does not have".to_owned(),
            Unfilled::Refused { why, .. } => format!("in its command {why}"),
            Unfilled::Code { program, .. } => format!(
                "in the code it hands to {program}, whose quoting lorchestra does not know: \
                 read the value from the environment there instead (the job has it as \
                 ${ENV_ALL}_<KEY>)"
            ),
            Unfilled::Variable { var, .. } => format!(
                "in its env {var}, which changes which code runs: write that value in the \
                 pipeline"
            ),
            Unfilled::Outside { cwd, .. } => format!(
                "in its cwd, which becomes {} with this payload, outside the project folder \
                 (write `outside_project = true` in the job if it may run there)",
                cwd.display()
            ),
        }
    }
}

/// Fill the `{{payload.KEY}}` placeholders of every job of `pipeline` with the payload's
/// values (see `placeholders.rs`). A placeholder naming a key the payload does not have, or
/// standing where its value would not stay data, is an error naming the file, the line, the
/// job and the key. Other `{{ ... }}` are left alone.
pub(crate) fn apply(pipeline: &mut Pipeline, payload: &Payload) -> Result<()> {
    check_keys(payload.keys(), "the payload")?;
    // A loop's jobs are filled per item; here their placeholders are checked against the
    // keys they will have: the run's and the loop's.
    for stage in &pipeline.stages {
        let Some(l) = &stage.looping else { continue };
        let mut keys = payload.clone();
        keys.extend(
            l.payload
                .keys()
                .map(|k| (k.clone(), Value::String(String::new()))),
        );
        check_keys(keys.keys(), &format!("the loop of stage {:?}", stage.name))?;
        for job in &l.jobs {
            fill(&mut job.clone(), &keys).map_err(|why| {
                let have = format!(
                    "neither the loop's payload nor the run's has it (they have: {})",
                    keys.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                unfilled(
                    job,
                    &format!(" (in the loop of stage {:?})", stage.name),
                    &why,
                    &have,
                )
            })?;
        }
    }
    for stage in &mut pipeline.stages {
        for job in &mut stage.jobs {
            // A matrix's job: its combination over the run's payload.
            let own = job.iteration.as_mut().map(|it| {
                let mut merged = payload.clone();
                merged.extend(std::mem::take(&mut it.payload));
                it.payload.clone_from(&merged);
                merged
            });
            if let Some(own) = &own {
                check_keys(
                    own.keys(),
                    &format!("the job {:?} with the run's payload", job.id),
                )?;
            }
            let payload = own.as_ref().unwrap_or(payload);
            fill(job, payload).map_err(|why| {
                let have = if payload.is_empty() {
                    "the run has no payload (--payload KEY=VALUE, --payload-file FILE)".to_owned()
                } else {
                    format!(
                        "the payload has {}",
                        payload.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                unfilled(job, "", &why, &have)
            })?;
        }
    }
    Ok(())
}

/// The error for a job whose placeholder cannot be filled: file, line, job and key.
fn unfilled(job: &Job, context: &str, why: &Unfilled, have: &str) -> anyhow::Error {
    let key = why.key();
    let why = match why {
        Unfilled::Unknown(_) => format!(", but {have}"),
        other => format!(" {}", other.why()),
    };
    anyhow!(
        "{}{}: the job {:?}{context} uses {{{{payload.{key}}}}}{why}",
        job.defined_in.display(),
        crate::raw::line_of(&job.defined_in, &format!("payload.{key}")),
        job.id
    )
}

/// Fill the placeholders of `job` from `payload`. Text without `{{` is not touched.
pub(crate) fn fill(job: &mut Job, payload: &Payload) -> Result<(), Unfilled> {
    match &mut job.run {
        Run::Shell(script) => {
            if script.contains("{{") {
                *script = shell(script, payload)?;
            }
        }
        Run::Argv(argv) => {
            let code = code_argument(argv);
            for (i, arg) in argv.iter_mut().enumerate() {
                if !arg.contains("{{") {
                    continue;
                }
                *arg = match code {
                    Some((at, None)) if at == i => shell(arg, payload)?,
                    Some((at, Some(program))) if at == i => {
                        if let Some(key) = first_key(arg) {
                            return Err(Unfilled::Code {
                                key: key.to_owned(),
                                program: program.to_owned(),
                            });
                        }
                        arg.clone()
                    }
                    _ => raw(arg, payload)?,
                };
            }
        }
        Run::Pipeline(_) => {}
    }
    for (name, value) in &mut job.env {
        if value.contains("{{") {
            if let (Some(key), true) = (first_key(value), runs_code(name)) {
                return Err(Unfilled::Variable {
                    key: key.to_owned(),
                    var: name.clone(),
                });
            }
            *value = raw(value, payload)?;
        }
    }
    if let Some(cwd) = &job.cwd {
        let written = cwd.to_string_lossy().into_owned();
        if written.contains("{{") {
            let filled = PathBuf::from(raw(&written, payload)?);
            if !job.outside_project && leaves(&filled) {
                let key = first_key(&written).unwrap_or_default();
                return Err(Unfilled::Outside {
                    key: key.to_owned(),
                    cwd: filled,
                });
            }
            job.cwd = Some(filled);
        }
    }
    Ok(())
}

/// The pieces of `text`: text as written (`Ok`) and the keys of `{{payload.KEY}}`
/// placeholders (`Err`, spaces inside the braces allowed). Other `{{ ... }}` (a Go template,
/// docker's `--format`) are text.
fn parts(text: &str) -> impl Iterator<Item = Result<&str, &str>> {
    let mut rest = text;
    let mut pending_key: Option<&str> = None;
    std::iter::from_fn(move || {
        if let Some(key) = pending_key.take() {
            return Some(Err(key));
        }
        if rest.is_empty() {
            return None;
        }
        let mut from = 0;
        while let Some(start) = rest[from..].find("{{").map(|s| s + from) {
            let Some(len) = rest[start + 2..].find("}}") else {
                break;
            };
            let inner = rest[start + 2..start + 2 + len].trim();
            if let Some(key) = inner.strip_prefix("payload.") {
                let before = &rest[..start];
                rest = &rest[start + 2 + len + 2..];
                pending_key = Some(key);
                return Some(Ok(before));
            }
            from = start + 2 + len + 2;
        }
        Some(Ok(std::mem::take(&mut rest)))
    })
}

/// The key of the first placeholder of `text`.
fn first_key(text: &str) -> Option<&str> {
    parts(text).find_map(Result::err)
}

fn value<'a>(payload: &'a Payload, key: &str) -> Result<&'a Value, Unfilled> {
    payload
        .get(key)
        .ok_or_else(|| Unfilled::Unknown(key.to_owned()))
}

/// `text` with each placeholder replaced by its value, as it is.
fn raw(text: &str, payload: &Payload) -> Result<String, Unfilled> {
    let mut out = String::with_capacity(text.len());
    for part in parts(text) {
        match part {
            Ok(t) => out.push_str(t),
            Err(key) => out.push_str(&self::text(value(payload, key)?)),
        }
    }
    Ok(out)
}

/// A shell script with each placeholder a reference to its variable.
fn shell(script: &str, payload: &Payload) -> Result<String, Unfilled> {
    let mut b = ScriptBuilder::new();
    let mut keys = Vec::new();
    for part in parts(script) {
        match part {
            Ok(t) => {
                b.code(t);
            }
            Err(key) => {
                value(payload, key)?;
                b.value(variable(key));
                keys.push(key);
            }
        }
    }
    b.build().map_err(|why| Unfilled::Refused {
        key: keys
            .get(why.hole)
            .map(|k| (*k).to_owned())
            .unwrap_or_default(),
        why,
    })
}

/// Shells whose `-c` argument is a script.
const SHELLS: [&str; 8] = ["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash"];

/// Interpreters whose code comes in an argument, and the options that introduce it.
const INTERPRETERS: [(&str, &[&str]); 9] = [
    ("python", &["-c"]),
    ("perl", &["-e", "-E"]),
    ("ruby", &["-e"]),
    ("node", &["-e", "--eval", "-p", "--print"]),
    ("Rscript", &["-e"]),
    ("julia", &["-e", "--eval"]),
    ("php", &["-r"]),
    ("lua", &["-e"]),
    ("pwsh", &["-c", "-Command"]),
];

/// Where an array command carries code: the index of the argument, and `None` for a shell's
/// script (placeholders become references) or the interpreter (placeholders are refused).
/// `awk` and `sed` take their program as the first argument that is not an option.
fn code_argument(argv: &[String]) -> Option<(usize, Option<&'static str>)> {
    let mut i = 0;
    // `env [-i] [NAME=VALUE]... PROGRAM`.
    if program(argv.first()?) == "env" {
        i = 1;
        while argv
            .get(i)
            .is_some_and(|a| a.starts_with('-') || a.contains('='))
        {
            i += 1;
        }
    }
    let name = program(argv.get(i)?);
    if SHELLS.contains(&name) {
        let mut j = i + 1;
        while let Some(arg) = argv.get(j) {
            if arg == "--" || !(arg.starts_with('-') || arg.starts_with('+')) {
                return None;
            }
            if matches!(arg.as_str(), "-o" | "+o" | "-O" | "+O") {
                j += 2;
                continue;
            }
            if arg.len() > 1 && !arg.starts_with("--") && arg[1..].contains('c') {
                return Some((j + 1, None));
            }
            j += 1;
        }
        return None;
    }
    let family = |known: &str| name == known || name.strip_prefix(known).is_some_and(is_version);
    if let Some((known, flags)) = INTERPRETERS.iter().find(|(known, _)| family(known)) {
        let at = argv[i + 1..]
            .iter()
            .position(|a| flags.contains(&a.as_str()))?;
        return Some((i + 1 + at + 1, Some(known)));
    }
    if ["awk", "gawk", "mawk", "nawk", "sed", "gsed"].contains(&name) {
        let mut j = i + 1;
        while let Some(arg) = argv.get(j) {
            if arg == "-e" || arg == "--expression" {
                return Some((
                    j + 1,
                    Some(if name.ends_with("sed") { "sed" } else { "awk" }),
                ));
            }
            if !arg.starts_with('-') {
                return Some((j, Some(if name.ends_with("sed") { "sed" } else { "awk" })));
            }
            // `-F SEP`, `-v NAME=VALUE`: an option with its value.
            j += if matches!(arg.as_str(), "-F" | "-v" | "-f") {
                2
            } else {
                1
            };
        }
    }
    None
}

/// A program's file name: `/usr/bin/python3.11` is `python3.11`.
fn program(arg: &str) -> &str {
    arg.rsplit('/').next().unwrap_or(arg)
}

/// `3`, `3.11`, `-3.11`: a version after an interpreter's name.
fn is_version(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Variables that change which code a program runs (loader, shell start-up, interpreters'
/// search paths and options) or this tool's own.
fn runs_code(name: &str) -> bool {
    const EXACT: [&str; 12] = [
        "PATH",
        "ENV",
        "IFS",
        "PS4",
        "SHELLOPTS",
        "BASHOPTS",
        "PROMPT_COMMAND",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "R_PROFILE_USER",
        "CLASSPATH",
    ];
    const PREFIXES: [&str; 12] = [
        "LD_",
        "DYLD_",
        "BASH_",
        "PYTHON",
        "PERL",
        "RUBY",
        "NODE_",
        "GIT_",
        "LORCHESTRA_",
        "FANOUT_",
        "GCONV_",
        "LUA_",
    ];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&upper.as_str()) || PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// Whether a folder (relative to the project, or absolute) is outside the project, as written:
/// absolute, or more `..` than folders before them.
fn leaves(dir: &Path) -> bool {
    let mut depth: i64 = 0;
    for c in dir.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => return true,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(pairs: &[(&str, &str)]) -> Payload {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect()
    }

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn shell_placeholders_become_references_and_other_braces_stay() {
        let p = payload(&[("id", "'; touch x"), ("m", "gpt")]);
        assert_eq!(
            shell("echo {{payload.id}} \"m={{ payload.m }}\"", &p).unwrap(),
            "echo \"${LORCHESTRA_PAYLOAD_ID}\" \"m=${LORCHESTRA_PAYLOAD_M}\""
        );
        assert_eq!(
            shell("docker ps --format '{{.ID}}' {{payload.m}}", &p).unwrap(),
            "docker ps --format '{{.ID}}' \"${LORCHESTRA_PAYLOAD_M}\""
        );
        assert_eq!(
            shell("{{payload.nope}}", &p).unwrap_err(),
            Unfilled::Unknown("nope".into())
        );
        assert_eq!(raw("--id={{payload.id}}", &p).unwrap(), "--id='; touch x");
        assert_eq!(raw("open {{ end", &p).unwrap(), "open {{ end");
        let refused = shell("echo `echo {{payload.m}}`", &p).unwrap_err();
        assert!(
            matches!(&refused, Unfilled::Refused { key, .. } if key == "m"),
            "{refused:?}"
        );
    }

    #[test]
    fn array_commands_know_where_their_code_is() {
        assert_eq!(code_argument(&argv(&["sh", "-c", "x"])), Some((2, None)));
        assert_eq!(
            code_argument(&argv(&["/bin/bash", "-o", "pipefail", "-euc", "x"])),
            Some((4, None))
        );
        assert_eq!(
            code_argument(&argv(&["env", "-i", "A=1", "zsh", "-c", "x"])),
            Some((5, None))
        );
        assert_eq!(code_argument(&argv(&["bash", "script.sh", "-c"])), None);
        assert_eq!(
            code_argument(&argv(&["python3.11", "-u", "-c", "x"])),
            Some((3, Some("python")))
        );
        assert_eq!(
            code_argument(&argv(&["awk", "-F", ",", "{print}", "f"])),
            Some((3, Some("awk")))
        );
        assert_eq!(code_argument(&argv(&["python", "train.py", "--lr"])), None);
        assert_eq!(code_argument(&argv(&["pythonista", "-c", "x"])), None);
    }

    #[test]
    fn folders_outside_the_project_are_seen_as_written() {
        for outside in ["../x", "/tmp", "a/../../b", ".."] {
            assert!(leaves(Path::new(outside)), "{outside}");
        }
        for inside in ["a", "a/../b", "./a/b/..", ""] {
            assert!(!leaves(Path::new(inside)), "{inside}");
        }
    }

    #[test]
    fn code_changing_variables_are_known() {
        for var in [
            "PATH",
            "LD_PRELOAD",
            "BASH_ENV",
            "PYTHONPATH",
            "NODE_OPTIONS",
            "path",
        ] {
            assert!(runs_code(var), "{var}");
        }
        for var in ["MODEL", "DATA_DIR", "SESSION"] {
            assert!(!runs_code(var), "{var}");
        }
    }
}
