//! What to export: the folders, notebook files and globs named (or `./notebooks`), each with
//! its [`Category`] and which of its notebooks ([`Pick`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// How a folder's notebooks are exported, and where their pages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Category {
    /// Static HTML: `marimo export html`.
    Notebooks,
    /// WebAssembly apps: `marimo export html-wasm --mode run --no-show-code`.
    Apps,
    /// Interactive WebAssembly notebooks: `marimo export html-wasm --mode edit`.
    Wasm,
}

impl Category {
    pub(crate) const ALL: [Category; 3] = [Category::Notebooks, Category::Apps, Category::Wasm];

    /// The output sub-folder (marimushka's names, so existing sites keep their URLs).
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Category::Notebooks => "notebooks",
            Category::Apps => "apps",
            Category::Wasm => "notebooks_wasm",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Category::Notebooks => "Notebooks",
            Category::Apps => "Apps",
            Category::Wasm => "Interactive notebooks",
        }
    }

    /// `marimo export` arguments for this category, after `export`.
    pub(crate) fn export_args(self) -> &'static [&'static str] {
        match self {
            Category::Notebooks => &["html"],
            Category::Apps => &["html-wasm", "--mode", "run", "--no-show-code"],
            Category::Wasm => &["html-wasm", "--mode", "edit"],
        }
    }
}

/// A folder to export and how: all its notebooks, or those named on the command line.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) folder: PathBuf,
    pub(crate) category: Category,
    pub(crate) pick: Pick,
}

/// Which notebooks of a source's folder are exported. Pages are laid out as when the whole
/// folder is exported (`export-nb nbs/sub/a.py` writes `notebooks/a.html`, `export-nb
/// 'nbs/**/*.py'` writes `notebooks/sub/a.html`).
#[derive(Debug, Clone)]
pub(crate) enum Pick {
    /// Every notebook below the folder.
    All,
    /// The one file named, as named (`nbs/sub/a.py`).
    File(PathBuf),
    /// The files below the folder whose path from it matches (a glob the shell did not
    /// expand), as written.
    Glob(globset::GlobMatcher, String),
}

/// The folders (or files, or globs) to export with their categories. With none named anywhere,
/// `notebooks`.
pub(super) fn sources(
    folders: Vec<PathBuf>,
    apps: Vec<PathBuf>,
    wasm: Vec<PathBuf>,
) -> Result<Vec<Source>> {
    let named = !(folders.is_empty() && apps.is_empty() && wasm.is_empty());
    if !named {
        if !Path::new("notebooks").is_dir() {
            bail!(
                "nothing to export: there is no ./notebooks folder; name the folders (or \
                 notebook files) to export, e.g. `export-nb path/to/notebooks`"
            );
        }
        return Ok(vec![Source {
            folder: "notebooks".into(),
            category: Category::Notebooks,
            pick: Pick::All,
        }]);
    }
    let mut sources = Vec::new();
    for (list, category) in [
        (folders, Category::Notebooks),
        (apps, Category::Apps),
        (wasm, Category::Wasm),
    ] {
        for path in list {
            let (folder, pick) = source(&path)?;
            sources.push(Source {
                folder,
                category,
                pick,
            });
        }
    }
    Ok(sources)
}

/// A path named to export: a folder, a `.py` file (its folder, that file), or a glob the shell
/// left unexpanded (the folder before its first pattern, and the rest as the pattern).
fn source(path: &Path) -> Result<(PathBuf, Pick)> {
    if path.is_dir() {
        return Ok((path.to_path_buf(), Pick::All));
    }
    if path.is_file() {
        if path.extension().is_none_or(|e| e != "py") {
            bail!(
                "{} is not a notebook: name a marimo notebook (a .py file) or a folder of them",
                path.display()
            );
        }
        let folder = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        return Ok((folder, Pick::File(path.to_path_buf())));
    }
    let text = path.to_string_lossy();
    if !text.contains(['*', '?', '[', '{']) {
        bail!(
            "{} does not exist: name a folder of notebooks, a notebook (.py), or a glob",
            path.display()
        );
    }
    // The literal folders before the first component with a pattern in it.
    let mut folder = PathBuf::new();
    let mut rest = Vec::new();
    for part in path.components() {
        let s = part.as_os_str().to_string_lossy();
        if rest.is_empty() && !s.contains(['*', '?', '[', '{']) {
            folder.push(part);
        } else {
            rest.push(s.into_owned());
        }
    }
    let pattern = rest.join("/");
    let glob = globset::GlobBuilder::new(&pattern)
        .literal_separator(true)
        .build()
        .with_context(|| format!("{text:?} is not a valid glob"))?;
    let folder = if folder.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        folder
    };
    if !folder.is_dir() {
        bail!(
            "the glob {text:?} starts in {}, which does not exist (or is not a folder)",
            folder.display()
        );
    }
    Ok((
        folder,
        Pick::Glob(glob.compile_matcher(), text.into_owned()),
    ))
}
