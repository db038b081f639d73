//! Parameters, as DVC tracks them: a job declares `params = ["params.yaml:train.lr",
//! "params.toml:data"]`, a file (YAML, TOML or JSON, relative to the job's folder) and a key path
//! in it (dotted; a number indexes a list; none: the whole file). Only those values go into the
//! job's up-to-date key, so changing another key of the same file re-runs nothing, and the reason
//! names the value that changed (`params.yaml:train.lr 0.01 -> 0.02`). `--set train.lr=0.05`
//! overrides a value for one run without editing the file: the job sees its values, overrides
//! applied, in `$LORCHESTRA_PARAMS` (a JSON object by name), and the run records them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

/// The environment variable that holds a job's parameters.
pub(crate) const ENV: &str = "LORCHESTRA_PARAMS";

/// One declared parameter: `FILE:KEY.PATH` (or `FILE` for all of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParamRef {
    pub(crate) file: String,
    /// Dotted key path; empty for the whole file.
    pub(crate) path: String,
}

impl ParamRef {
    /// `params.yaml:train.lr`, checked: a file of a known kind, a key path without empty parts.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let (file, path) = s.split_once(':').unwrap_or((s, ""));
        let file = file.trim();
        if kind(file).is_none() {
            return Err(format!(
                "{s:?}: the file must be .yaml, .yml, .toml or .json (e.g. \
                 \"params.yaml:train.lr\")"
            ));
        }
        if !path.is_empty() && path.split('.').any(str::is_empty) {
            return Err(format!("{s:?}: the key path has an empty part"));
        }
        Ok(ParamRef {
            file: file.to_owned(),
            path: path.trim().to_owned(),
        })
    }

    /// Its name in keys, reasons and records: `params.yaml:train.lr`.
    pub(crate) fn name(&self) -> String {
        if self.path.is_empty() {
            self.file.clone()
        } else {
            format!("{}:{}", self.file, self.path)
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Yaml,
    Toml,
    Json,
}

fn kind(file: &str) -> Option<Kind> {
    let ext = Path::new(file).extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "yaml" | "yml" => Some(Kind::Yaml),
        "toml" => Some(Kind::Toml),
        "json" => Some(Kind::Json),
        _ => None,
    }
}

/// `--set KEY=VALUE`s: a key path and its value (JSON when it parses as JSON, else text).
pub(crate) type Overrides = BTreeMap<String, Value>;

/// `--set` pairs, checked.
pub(crate) fn overrides(pairs: &[String]) -> Result<Overrides, String> {
    let mut out = Overrides::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!(
                "--set {pair}: expected KEY=VALUE (e.g. train.lr=0.05)"
            ));
        };
        let k = k.trim();
        if k.is_empty() || k.split('.').any(str::is_empty) {
            return Err(format!("--set {pair}: the key path has an empty part"));
        }
        let value = serde_json::from_str(v.trim()).unwrap_or_else(|_| Value::String(v.to_owned()));
        out.insert(k.to_owned(), value);
    }
    Ok(out)
}

/// Parameter files as read in one run: each parsed once.
#[derive(Debug, Default)]
pub(crate) struct Files {
    parsed: Mutex<HashMap<PathBuf, Result<Value, String>>>,
}

impl Files {
    /// The values of `refs` (files relative to `dir`) with `set` applied, by name. A missing
    /// file or key is an error naming it.
    pub(crate) fn values(
        &self,
        dir: &Path,
        refs: &[ParamRef],
        set: &Overrides,
    ) -> Result<BTreeMap<String, Value>, String> {
        let mut out = BTreeMap::new();
        for r in refs {
            let whole = self.file(&dir.join(&r.file), &r.file)?;
            let mut value = select(&whole, &r.path).cloned().ok_or_else(|| {
                format!("params {}: {} has no key {:?}", r.name(), r.file, r.path)
            })?;
            for (k, v) in set {
                if *k == r.path {
                    value = v.clone();
                } else if let Some(inner) = k.strip_prefix(&r.path).and_then(|rest| {
                    if r.path.is_empty() {
                        Some(rest)
                    } else {
                        rest.strip_prefix('.')
                    }
                }) {
                    put(&mut value, inner, v.clone());
                }
            }
            out.insert(r.name(), value);
        }
        Ok(out)
    }

    fn file(&self, path: &Path, shown: &str) -> Result<Value, String> {
        let mut parsed = self
            .parsed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        parsed
            .entry(path.to_path_buf())
            .or_insert_with(|| parse(path, shown))
            .clone()
    }
}

fn parse(path: &Path, shown: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("params file {shown}: {e}"))?;
    match kind(shown).expect("checked when loaded") {
        Kind::Yaml => serde_saphyr::from_str::<Value>(&text).map_err(|e| format!("{shown}: {e}")),
        Kind::Toml => toml::from_str::<Value>(&text).map_err(|e| format!("{shown}: {e}")),
        Kind::Json => serde_json::from_str::<Value>(&text).map_err(|e| format!("{shown}: {e}")),
    }
}

/// The value at a dotted key path (a number indexes a list).
fn select<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |v, part| match v {
        Value::Object(m) => m.get(part),
        Value::Array(a) => a.get(part.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Set the value at a dotted key path, making the objects on the way.
fn put(v: &mut Value, path: &str, new: Value) {
    let mut at = v;
    for part in path.split('.') {
        if !at.is_object() {
            *at = Value::Object(serde_json::Map::new());
        }
        at = at
            .as_object_mut()
            .expect("made an object")
            .entry(part)
            .or_insert(Value::Null);
    }
    *at = new;
}

/// A value as a reason shows it: `0.01`, `"adam"`, `{"size":10}` (cut after 60 characters).
pub(crate) fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_read_by_key_path_from_each_kind_of_file_and_overridden() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("params.yaml"),
            "train:\n  lr: 0.01\n  layers: [64, 32]\ndata:\n  size: 10\n",
        )
        .unwrap();
        std::fs::write(d.path().join("p.toml"), "[data]\nsize = 10\nname = \"x\"\n").unwrap();
        std::fs::write(d.path().join("p.json"), "{\"a\": {\"b\": true}}").unwrap();
        let refs: Vec<ParamRef> = [
            "params.yaml:train.lr",
            "params.yaml:train.layers.1",
            "p.toml:data",
            "p.json",
        ]
        .iter()
        .map(|s| ParamRef::parse(s).unwrap())
        .collect();
        let files = Files::default();
        let v = files.values(d.path(), &refs, &Overrides::new()).unwrap();
        assert_eq!(v["params.yaml:train.lr"], json!(0.01));
        assert_eq!(v["params.yaml:train.layers.1"], json!(32));
        assert_eq!(v["p.toml:data"], json!({"size": 10, "name": "x"}));
        assert_eq!(v["p.json"], json!({"a": {"b": true}}));

        let set = overrides(&["train.lr=0.05".into(), "data.size=3".into()]).unwrap();
        let v = files.values(d.path(), &refs, &set).unwrap();
        assert_eq!(v["params.yaml:train.lr"], json!(0.05));
        assert_eq!(v["p.toml:data"], json!({"size": 3, "name": "x"}));

        let missing = [ParamRef::parse("params.yaml:train.momentum").unwrap()];
        assert_eq!(
            files
                .values(d.path(), &missing, &Overrides::new())
                .unwrap_err(),
            "params params.yaml:train.momentum: params.yaml has no key \"train.momentum\""
        );
        assert!(ParamRef::parse("params.ini:a").is_err());
        assert!(ParamRef::parse("p.yaml:a..b").is_err());
        assert!(overrides(&["lr".into()]).is_err());
        assert_eq!(
            overrides(&["opt=adam".into()]).unwrap()["opt"],
            json!("adam")
        );
    }
}
