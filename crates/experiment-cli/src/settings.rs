//! Where provider settings come from: the environment, else a `.env` file found in the current
//! folder or the nearest one above it (python-dotenv's `find_dotenv`, which the Python
//! parallamr used). The environment always wins; nothing is written into it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    Environment,
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Environment => f.write_str("from the environment"),
            Origin::File(p) => write!(f, "from {}", p.display()),
        }
    }
}

/// The settings of a run: the environment over one `.env` file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    file: Option<PathBuf>,
    values: HashMap<String, String>,
}

impl Settings {
    /// The environment, over the `.env` nearest to the current folder (if any).
    pub(crate) fn load() -> Result<Self> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        match find(&cwd) {
            Some(file) => Self::from_file(&file),
            None => Ok(Settings::default()),
        }
    }

    /// The environment over `file`. A line that does not parse is an error naming the file
    /// and line.
    pub(crate) fn from_file(file: &Path) -> Result<Self> {
        let iter = dotenvy::from_path_iter(file)
            .map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?;
        let mut values = HashMap::new();
        for item in iter {
            let (k, v) = item.map_err(|e| match e {
                dotenvy::Error::LineParse(line, _) => {
                    let n = std::fs::read_to_string(file)
                        .ok()
                        .and_then(|t| t.lines().position(|l| l.contains(line.trim())))
                        .map_or_else(String::new, |i| format!(" line {}", i + 1));
                    anyhow!(
                        "{}{n}: cannot parse {line:?} (expected NAME=value)",
                        file.display()
                    )
                }
                other => anyhow!("{}: {other}", file.display()),
            })?;
            // As python-dotenv: a name given twice takes its last value.
            values.insert(k, v);
        }
        Ok(Settings {
            file: Some(file.to_owned()),
            values,
        })
    }

    /// The `.env` file in use, if any.
    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// A setting's value (an empty one counts as unset) and where it came from.
    pub(crate) fn get(&self, name: &str) -> Option<(String, Origin)> {
        if let Some(v) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
            return Some((v, Origin::Environment));
        }
        let v = self.values.get(name).filter(|v| !v.trim().is_empty())?;
        Some((v.clone(), Origin::File(self.file.clone()?)))
    }

    /// Every name the `.env` file sets and the environment does not, with its value: what a
    /// command the run starts should see too.
    pub(crate) fn file_only(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .values
            .iter()
            .filter(|(k, _)| std::env::var_os(k).is_none())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort();
        v
    }
}

/// The `.env` in `dir` or the nearest folder above it.
fn find(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(".env"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_file_above_is_found_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(
            find(&deep),
            find(dir.path()),
            "none in the folder: as above it"
        );
        std::fs::write(
            dir.path().join(".env"),
            "# keys\nexport PARALLAMR_TEST_ONLY_IN_FILE=\"from file\"\nPARALLAMR_TEST_EMPTY=\n",
        )
        .unwrap();
        let file = find(&deep).unwrap();
        assert_eq!(file, dir.path().join(".env"));
        let s = Settings::from_file(&file).unwrap();
        assert_eq!(
            s.get("PARALLAMR_TEST_ONLY_IN_FILE"),
            Some(("from file".to_owned(), Origin::File(file.clone())))
        );
        assert_eq!(s.get("PARALLAMR_TEST_EMPTY"), None, "empty is unset");
        assert_eq!(
            s.get("PATH").map(|(_, o)| o),
            Some(Origin::Environment),
            "the environment's own"
        );

        std::fs::write(dir.path().join(".env"), "A=1\nthis is not a setting\n").unwrap();
        let e = Settings::from_file(&file).unwrap_err().to_string();
        assert!(
            e.ends_with(
                ".env line 2: cannot parse \"this is not a setting\" (expected NAME=value)"
            ),
            "{e}"
        );
    }
}
