//! The invocation payload: values given to a run (`--payload KEY=VALUE`, `--payload-file`),
//! kept in its record (a resumed run reuses them), handed to every job as environment
//! variables and through `{{payload.KEY}}` placeholders in `command`, `env` and `cwd`.
//!
//! A placeholder never lets a value run as code: `placeholders.rs` fills them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// Key -> value, in key order. A sorted `Vec`: a matrix's 30,000 iterations each carry one.
pub(crate) type Payload = litemap::LiteMap<String, Value>;

/// The whole payload, as JSON, in every job's environment.
pub(crate) const ENV_ALL: &str = "LORCHESTRA_PAYLOAD";

/// The payload of `--payload-file FILE` (a JSON object) with the `--payload KEY=VALUE`s over it.
/// Errors name the flag, the file (with line and column) or the value.
pub(crate) fn from_args(pairs: &[String], file: Option<&Path>) -> Result<Payload> {
    let mut payload = Payload::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--payload-file {}: cannot read it", file.display()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "--payload-file {}: not JSON at line {}, column {}: {e}",
                file.display(),
                e.line(),
                e.column()
            )
        })?;
        let Value::Object(map) = value else {
            bail!(
                "--payload-file {}: expected a JSON object ({{\"key\": value, ...}}), found {}",
                file.display(),
                kind(&value)
            );
        };
        for (k, v) in map {
            check_key(&k).map_err(|why| anyhow!("--payload-file {}: {why}", file.display()))?;
            payload.insert(k, v);
        }
    }
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--payload {pair}: expected KEY=VALUE");
        };
        check_key(k).map_err(|why| anyhow!("--payload {pair}: {why}"))?;
        payload.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(payload)
}

/// A key is a name environment variables and placeholders can carry.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "the key {key:?} is not a name: letters, digits and _, not starting with a digit"
        ))
    }
}

/// The kind of a JSON value, in words.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value as text: a string as it is, anything else as JSON.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The environment variables a job gets: `LORCHESTRA_PAYLOAD` (the whole payload as JSON) and
/// `LORCHESTRA_PAYLOAD_<KEY>` per key (upper case). Nothing for an empty payload.
pub(crate) fn env(payload: &Payload) -> Vec<(String, String)> {
    if payload.is_empty() {
        return Vec::new();
    }
    let mut vars = vec![(
        ENV_ALL.to_owned(),
        serde_json::to_string(payload).expect("a payload serializes"),
    )];
    for (k, v) in payload {
        vars.push((format!("{ENV_ALL}_{}", k.to_ascii_uppercase()), text(v)));
    }
    vars
}

/// The variable a job reads the payload's `key` from (see `payload::env`).
pub(crate) fn variable(key: &str) -> String {
    format!("{ENV_ALL}_{}", key.to_ascii_uppercase())
}

/// Keys that would name the same variable (`id` and `ID` both `LORCHESTRA_PAYLOAD_ID`) are an
/// error naming both.
pub(crate) fn check_keys<'a>(keys: impl Iterator<Item = &'a String>, whose: &str) -> Result<()> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for key in keys {
        if let Some(other) = seen.insert(key.to_ascii_uppercase(), key) {
            bail!(
                "{whose} has the keys {other:?} and {key:?}, which differ only in case: a job \
                 gets both as the variable {}; rename one",
                variable(key)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_differ_only_in_case_are_refused() {
        let p = from_args(&["id=1".to_owned(), "ID=2".to_owned()], None).unwrap();
        let err = check_keys(p.keys(), "the payload").unwrap_err().to_string();
        assert!(
            err.contains("\"ID\" and \"id\", which differ only in case"),
            "{err}"
        );
    }

    fn payload(pairs: &[(&str, &str)]) -> Payload {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect()
    }

    #[test]
    fn keys_are_names_and_the_flags_win_over_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.json");
        std::fs::write(&f, r#"{"model": "a", "n": 3}"#).unwrap();
        let p = from_args(&["model=b".to_owned()], Some(&f)).unwrap();
        assert_eq!(p.get("model").unwrap(), "b");
        assert_eq!(p.get("n").unwrap(), 3);
        let err = |pairs: &[&str], file: Option<&Path>| {
            let pairs: Vec<String> = pairs.iter().map(|s| (*s).to_owned()).collect();
            format!("{:#}", from_args(&pairs, file).unwrap_err())
        };
        assert!(err(&["x-y=1"], None).contains("the key \"x-y\" is not a name"));
        assert!(err(&["novalue"], None).contains("--payload novalue: expected KEY=VALUE"));
        std::fs::write(&f, "[1, 2]").unwrap();
        assert!(err(&[], Some(&f)).contains("expected a JSON object"));
        std::fs::write(&f, "{\n\"a\": }").unwrap();
        assert!(err(&[], Some(&f)).contains("not JSON at line 2"));
    }

    #[test]
    fn every_key_becomes_an_environment_variable() {
        let mut p = payload(&[("session_id", "s1")]);
        p.insert("n".to_owned(), Value::from(3));
        let vars = env(&p);
        assert!(vars.contains(&("LORCHESTRA_PAYLOAD_SESSION_ID".to_owned(), "s1".to_owned())));
        assert!(vars.contains(&("LORCHESTRA_PAYLOAD_N".to_owned(), "3".to_owned())));
        assert!(vars.contains(&(
            "LORCHESTRA_PAYLOAD".to_owned(),
            r#"{"n":3,"session_id":"s1"}"#.to_owned()
        )));
        assert!(env(&Payload::new()).is_empty());
    }
}
