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
use std::time::SystemTime;

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

/// `--set KEY=VALUE`s, by key: `train.lr`, or with its file, `params.yaml:train.lr`; the value
/// is JSON when it parses as JSON, else text.
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
        let (file, path) = split_key(k);
        if path.is_empty()
            || path.split('.').any(str::is_empty)
            || file.is_some_and(|f| kind(f).is_none())
        {
            return Err(format!(
                "--set {pair}: expected a key path (train.lr) or a file and a key path \
                 (params.yaml:train.lr)"
            ));
        }
        let value = serde_json::from_str(v.trim()).unwrap_or_else(|_| Value::String(v.to_owned()));
        out.insert(k.to_owned(), value);
    }
    Ok(out)
}

/// `params.yaml:train.lr` as its file and key path; `train.lr` has no file.
fn split_key(k: &str) -> (Option<&str>, &str) {
    match k.split_once(':') {
        Some((f, p)) => (Some(f), p),
        None => (None, k),
    }
}

/// Where override `key` lands in the value `r` selects: `Some("")` for the value itself, the
/// path inside it, or `None` when it is not about `r` (another file, another key).
fn inside<'k>(r: &ParamRef, key: &'k str) -> Option<&'k str> {
    let (file, path) = split_key(key);
    if file.is_some_and(|f| f != r.file) {
        return None;
    }
    if r.path.is_empty() {
        return Some(path);
    }
    if path == r.path {
        return Some("");
    }
    path.strip_prefix(&r.path)?.strip_prefix('.')
}

/// The `--set` keys that no value of `tracked` (each ref with its value before overrides; none
/// when its file is not there yet, and any key inside it may be right) has: a misspelled key
/// must not pass unnoticed.
pub(crate) fn unused<'s>(
    set: &'s Overrides,
    tracked: &[(ParamRef, Option<Value>)],
) -> Vec<&'s str> {
    set.keys()
        .map(String::as_str)
        .filter(|k| {
            !tracked.iter().any(|(r, v)| {
                inside(r, k).is_some_and(|at| {
                    at.is_empty() || v.as_ref().is_none_or(|v| select(v, at).is_some())
                })
            })
        })
        .collect()
}

/// A parsed file: its size and modification time when read, and what it held.
type Parsed = (Option<(u64, Option<SystemTime>)>, Result<Value, String>);

/// Parameter files as read in one run: each parsed again only when it changed (an earlier job
/// of the run may write it).
#[derive(Debug, Default)]
pub(crate) struct Files {
    parsed: Mutex<HashMap<PathBuf, Parsed>>,
}

impl Files {
    /// The values of `refs` (files relative to `dir`) with `set` applied, by name. A missing
    /// file or key is an error naming it. An override sets only a key the value has.
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
                match inside(r, k) {
                    Some("") => value = v.clone(),
                    Some(at) => {
                        if let Some(slot) = select_mut(&mut value, at) {
                            *slot = v.clone();
                        }
                    }
                    None => {}
                }
            }
            out.insert(r.name(), value);
        }
        Ok(out)
    }

    /// The values of `refs` before any override, with their refs (for [`unused`]): none for a
    /// file that is not there (yet).
    pub(crate) fn raw(&self, dir: &Path, refs: &[ParamRef]) -> Vec<(ParamRef, Option<Value>)> {
        refs.iter()
            .map(|r| {
                let whole = self.file(&dir.join(&r.file), &r.file).ok();
                let value = whole.map(|w| select(&w, &r.path).cloned().unwrap_or(Value::Null));
                (r.clone(), value)
            })
            .collect()
    }

    fn file(&self, path: &Path, shown: &str) -> Result<Value, String> {
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        let mut parsed = self
            .parsed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, value)) = parsed.get(path)
            && stamp.is_some()
            && *at == stamp
        {
            return value.clone();
        }
        let value = parse(path, shown);
        parsed.insert(path.to_path_buf(), (stamp, value.clone()));
        value
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

/// The value at a dotted key path, to change it.
fn select_mut<'v>(v: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    path.split('.').try_fold(v, |v, part| match v {
        Value::Object(m) => m.get_mut(part),
        Value::Array(a) => a.get_mut(part.parse::<usize>().ok()?),
        _ => None,
    })
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

        let set = overrides(&["train.lr=0.05".into(), "p.toml:data.size=3".into()]).unwrap();
        let v = files.values(d.path(), &refs, &set).unwrap();
        assert_eq!(v["params.yaml:train.lr"], json!(0.05));
        assert_eq!(v["p.toml:data"], json!({"size": 3, "name": "x"}));
        assert_eq!(
            v["p.json"],
            json!({"a": {"b": true}}),
            "no key of its own: untouched"
        );
        // Inside a tracked list; a key with another file's name is not about this one.
        let whole = [ParamRef::parse("params.yaml:train").unwrap()];
        let set = overrides(&[
            "train.layers.0=128".into(),
            "p.toml:train.layers.0=1".into(),
        ])
        .unwrap();
        let v = files.values(d.path(), &whole, &set).unwrap();
        assert_eq!(v["params.yaml:train"]["layers"], json!([128, 32]));
        // Keys no tracked value has are named.
        let set = overrides(&[
            "train.lr=1".into(),
            "train.momentum=0.9".into(),
            "x.yaml:a=1".into(),
        ])
        .unwrap();
        assert_eq!(
            unused(&set, &files.raw(d.path(), &refs)),
            ["train.momentum", "x.yaml:a"]
        );
        // A file that changes is read again.
        std::fs::write(d.path().join("p.json"), "{\"a\": {\"b\": false, \"c\": 1}}").unwrap();
        let v = files.values(d.path(), &refs, &Overrides::new()).unwrap();
        assert_eq!(v["p.json"], json!({"a": {"b": false, "c": 1}}));

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
        assert!(overrides(&["params.ini:lr=1".into()]).is_err());
        assert_eq!(
            overrides(&["opt=adam".into()]).unwrap()["opt"],
            json!("adam")
        );
    }
}
