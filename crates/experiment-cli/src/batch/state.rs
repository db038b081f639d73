//! The state file of a `--batch` run: `.NAME.batches.json` beside the results, the batches
//! still at the providers, each written the moment its provider named it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

/// The state file of the results file `output`: `.NAME.batches.json` in its folder (with a path
/// template, in the fixed folder before the first placeholder).
pub(crate) fn state_path(output: &Path) -> PathBuf {
    let text = output.to_string_lossy();
    let fixed = text.split("{{").next().unwrap_or_default();
    let folder = if fixed.len() == text.len() {
        output.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        Path::new(&fixed[..fixed.rfind('/').map_or(0, |i| i + 1)]).to_path_buf()
    };
    let name: String = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    folder.join(format!(".{name}.batches.json"))
}

/// The batches a results file has at the providers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) batches: Vec<Recorded>,
}

/// One batch, as soon as its provider named it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Recorded {
    pub(crate) provider: String,
    /// Where it was sent (the provider's base URL, any credentials in it masked): a later run
    /// polls it only there.
    pub(crate) endpoint: String,
    pub(crate) id: String,
    /// With `--schema`, the structured answer's name.
    pub(crate) schema: Option<String>,
    /// Seconds since the Unix epoch.
    pub(crate) submitted: u64,
    /// The requests in it, by their cache keys (their names in the batch).
    pub(crate) keys: Vec<String>,
    /// The model of each request (as `keys`): to keep an answer no row waits for any more.
    #[serde(default)]
    pub(crate) models: Vec<String>,
}

impl Recorded {
    /// The model of the request `key`.
    pub(crate) fn model_of(&self, key: &str) -> Option<&str> {
        let i = self.keys.iter().position(|k| k == key)?;
        self.models.get(i).map(String::as_str)
    }
}

impl State {
    /// The state file at `path`; none is an empty state.
    pub(crate) fn load(path: &Path) -> Result<State> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a batch state file parallamr can read (remove it only if no \
                     batch of it is still running)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Written whole and atomically; with no batch left, removed.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        if self.batches.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(anyhow!("cannot remove {}: {e}", path.display()))
                }
                _ => Ok(()),
            };
        }
        let text = serde_json::to_vec_pretty(self).expect("a state serializes");
        fanout::fsutil::write_atomic(path, &text)
            .with_context(|| format!("cannot write the batch state file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_sits_beside_the_results() {
        assert_eq!(
            state_path(Path::new("out/r.csv")),
            Path::new("out/.r.csv.batches.json")
        );
        assert_eq!(
            state_path(Path::new("r.csv")),
            Path::new(".r.csv.batches.json")
        );
        assert_eq!(
            state_path(Path::new("runs/{{model}}/r.csv")),
            Path::new("runs/.r.csv.batches.json")
        );
        assert_eq!(
            state_path(Path::new("runs/{{model}}.csv")),
            Path::new("runs/.__model__.csv.batches.json")
        );
    }
}
