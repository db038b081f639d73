//! A job's `inputs` and `outputs` patterns: plain paths (a folder: every file in it) and globs
//! (`*`, `**`, `?`, `[...]`, `{a,b}`), relative to the job's folder, links followed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A pattern that is not a valid glob, in words.
pub(crate) fn check_pattern(pattern: &str) -> Result<(), String> {
    if !is_glob(pattern) {
        return Ok(());
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(drop)
        .map_err(|e| e.kind().to_string())
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// The files `patterns` name in `dir`, relative to it, sorted: a plain path names that file
/// (a folder: every file in it), a glob (`*`, `**`, `?`, `[...]`, `{a,b}`) what it matches.
/// A plain path that does not exist is an error naming it (`what`: input or output).
pub(crate) fn expand(dir: &Path, patterns: &[String], what: &str) -> Result<Vec<String>, String> {
    let mut files: HashSet<String> = HashSet::new();
    for pattern in patterns {
        if !is_glob(pattern) {
            let path = dir.join(pattern);
            if path.is_file() {
                files.insert(pattern.trim_start_matches("./").to_owned());
            } else if path.is_dir() {
                walk(dir, &path, None, &mut files);
            } else {
                return Err(format!("{what} {pattern} does not exist"));
            }
            continue;
        }
        let matcher = globset::GlobBuilder::new(pattern.trim_start_matches("./"))
            .literal_separator(true)
            .build()
            .map_err(|e| format!("{what} pattern {pattern:?}: {e}"))?
            .compile_matcher();
        // Walk only below the pattern's plain leading folders.
        let base: PathBuf = Path::new(pattern.trim_start_matches("./"))
            .components()
            .take_while(|c| !is_glob(&c.as_os_str().to_string_lossy()))
            .collect();
        let base = if base.as_os_str().is_empty() || base == Path::new(pattern) {
            dir.to_path_buf()
        } else {
            dir.join(base)
        };
        walk(dir, &base, Some(&matcher), &mut files);
    }
    let mut files: Vec<String> = files.into_iter().collect();
    files.sort_unstable();
    Ok(files)
}

fn walk(
    dir: &Path,
    from: &Path,
    matcher: Option<&globset::GlobMatcher>,
    out: &mut HashSet<String>,
) {
    // Links are followed: data kept behind them (git-annex, DVC, DataLad) is an input like
    // any file; a link loop is an error entry, left out.
    for entry in walkdir::WalkDir::new(from)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        let Ok(rel) = entry.path().strip_prefix(dir) else {
            continue;
        };
        if matcher.is_none_or(|m| m.is_match(rel)) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, rels: &[&str]) {
        for r in rels {
            let p = dir.join(r);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, r).unwrap();
        }
    }

    #[test]
    fn patterns_name_files_folders_and_globs_relative_to_the_job() {
        let d = tempfile::tempdir().unwrap();
        files(
            d.path(),
            &[
                "data/raw/a.csv",
                "data/raw/b.csv",
                "data/raw/sub/c.csv",
                "scripts/x.py",
                "top.txt",
            ],
        );
        let ex = |p: &[&str]| {
            expand(
                d.path(),
                &p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                "input",
            )
        };
        assert_eq!(
            ex(&["data/raw/*.csv"]).unwrap(),
            ["data/raw/a.csv", "data/raw/b.csv"],
            "* stays in its folder"
        );
        assert_eq!(ex(&["data/**/*.csv"]).unwrap().len(), 3);
        assert_eq!(ex(&["scripts"]).unwrap(), ["scripts/x.py"]);
        assert_eq!(ex(&["./top.txt", "*.txt"]).unwrap(), ["top.txt"]);
        assert_eq!(ex(&["nothing/*.csv"]).unwrap(), Vec::<String>::new());
        assert_eq!(
            ex(&["data/raw/zz.csv"]).unwrap_err(),
            "input data/raw/zz.csv does not exist"
        );
    }
}
