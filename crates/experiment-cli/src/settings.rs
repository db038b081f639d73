//! Where provider settings come from: the environment, else a `.env` file found in the current
//! folder or the nearest one above it (python-dotenv's `find_dotenv`, which the Python
//! parallamr used), but no higher than the repository's root (the folder with `.git`) or the
//! user's home. The environment always wins; nothing is written into it.
//!
//! A `.env` can point `OPENAI_BASE_URL` elsewhere (the API key follows it) or give `--command`
//! jobs `LD_PRELOAD`: as ssh does with its files, one that another user owns, that others may
//! write, or that sits in a folder others may write (without the sticky bit) is refused. An
//! error never shows a line's text, which may hold a secret: its number and name only.

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

    /// The environment over `file`. A line that does not parse is an error naming the file,
    /// the line's number and its name (not its text).
    pub(crate) fn from_file(file: &Path) -> Result<Self> {
        trusted(file)?;
        let iter = dotenvy::from_path_iter(file)
            .map_err(|e| anyhow!("cannot read {}: {}", file.display(), redacted(&e)))?;
        let mut values = HashMap::new();
        for item in iter {
            let (k, v) = item.map_err(|e| match e {
                dotenvy::Error::LineParse(line, _) => {
                    let first = line.lines().next().unwrap_or_default().trim();
                    let n = std::fs::read_to_string(file)
                        .ok()
                        .and_then(|t| t.lines().position(|l| l.trim() == first))
                        .map_or_else(String::new, |i| format!(" line {}", i + 1));
                    let name = first
                        .trim_start_matches("export ")
                        .split_once('=')
                        .map(|(n, _)| n.trim())
                        .filter(|n| is_name(n))
                        .map_or_else(String::new, |n| format!(" (the setting {n})"));
                    anyhow!(
                        "{}{n}{name}: cannot parse it (expected NAME=value, with quotes \
                         closed)",
                        file.display()
                    )
                }
                other => anyhow!("{}: {}", file.display(), redacted(&other)),
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

/// The `.env` in `dir` or the nearest folder above it, up to the repository's root (a folder
/// with `.git`) or the user's home, whichever comes first.
fn find(dir: &Path) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    for d in dir.ancestors() {
        let file = d.join(".env");
        if file.is_file() {
            return Some(file);
        }
        if d.join(".git").exists() || home.as_deref() == Some(d) {
            return None;
        }
    }
    None
}

/// Whether `s` can name a setting.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A `.env` is read only if this user (or root) owns it, others cannot write it, and others
/// cannot replace it (its folder is not writable by others, or has the sticky bit).
fn trusted(file: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(file).map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?;
    let me = rustix::process::geteuid().as_raw();
    let refuse = |why: String| {
        Err(anyhow!(
            "{} {why}: refusing to read settings from it (it could send your API key \
             elsewhere); fix it (chmod go-w, or chown) or delete it",
            file.display()
        ))
    };
    if meta.uid() != me && meta.uid() != 0 {
        return refuse(format!("belongs to another user (uid {})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "can be changed by others (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::metadata(folder)
        && dir.mode() & 0o022 != 0
        && dir.mode() & 0o1000 == 0
    {
        return refuse(format!(
            "is in {}, a folder others can write to (they could replace it)",
            folder.display()
        ));
    }
    Ok(())
}

/// A dotenvy error without the text it quotes (a line may hold a secret).
fn redacted(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::Io(io) => io.to_string(),
        dotenvy::Error::LineParse(..) => "a line cannot be parsed".to_owned(),
        _ => "it cannot be read as NAME=value lines".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_file_above_is_found_and_bad_lines_are_named() {
        use std::os::unix::fs::PermissionsExt;
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

        // Files others could change are refused, as ssh refuses them.
        let env = dir.path().join(".env");
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Settings::from_file(&file).unwrap_err().to_string();
        assert!(e.contains("can be changed by others (mode 666)"), "{e}");
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o644)).unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join(".env"), "A=1\n").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Settings::from_file(&shared.join(".env"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a folder others can write to"), "{e}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            Settings::from_file(&shared.join(".env")).is_ok(),
            "sticky, as /tmp"
        );

        // The search stops at the repository's root.
        std::fs::create_dir(dir.path().join("a/.git")).unwrap();
        assert_eq!(
            find(&deep),
            None,
            "the .env above the repository is not read"
        );

        // A bad line is named by its number and name, never its text (it may hold a secret).
        for (text, says) in [
            (
                "A=1\nsk-SECRET-5678 extra\n",
                ".env line 2: cannot parse it (expected NAME=value, with quotes closed)",
            ),
            (
                "A=1\nOPENAI_API_KEY=\"sk-SECRET-5678\nB=2\n",
                ".env line 2 (the setting OPENAI_API_KEY): cannot parse it",
            ),
        ] {
            std::fs::write(dir.path().join(".env"), text).unwrap();
            let e = Settings::from_file(&file).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("SECRET"), "a secret in the error: {e}");
        }
    }
}
