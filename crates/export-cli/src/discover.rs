//! Finding notebooks: every `.py` under each folder, recursively, in a stable order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use globset::GlobSet;
use sha2::{Digest, Sha256};
use walkdir::WalkDir;

use crate::config::{Category, Pick, Source};
use crate::pep723::{self, ScriptMetadata};

/// One `.py` file found in a source folder.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The file, as reachable from the current folder (`notebooks/sub/intro.py`).
    pub(crate) source: PathBuf,
    /// The file within its folder (`sub/intro.py`).
    pub(crate) rel: PathBuf,
    pub(crate) category: Category,
    /// Where its page goes, relative to the output folder (`notebooks/sub/intro.html`).
    pub(crate) page: PathBuf,
    /// `None` for a marimo notebook, else why it is not exported.
    pub(crate) not_a_notebook: Option<String>,
    /// SHA-256 of the file's content, taken when it was read for the check above.
    pub(crate) content_hash: Vec<u8>,
    /// The Python files of its folder it imports (see `imports`), each with the SHA-256 of its
    /// content; empty for a file that is not a notebook.
    pub(crate) modules: BTreeMap<PathBuf, String>,
    /// Its inline script metadata (PEP 723), or why it cannot be read.
    pub(crate) header: Result<Option<ScriptMetadata>, String>,
    /// What its card and link previews show.
    pub(crate) meta: crate::meta::PageMeta,
}

impl Found {
    /// The name people read: the file stem with underscores as spaces (as marimushka does).
    pub(crate) fn display_name(&self) -> String {
        self.source
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', " "))
            .unwrap_or_default()
    }
}

/// Folders never descended into: hidden ones (`.venv`, `.git`), caches, and the output folder.
fn skip_dir(path: &Path, name: &str, output: Option<&Path>) -> bool {
    name.starts_with('.')
        || name == "__pycache__"
        || name == "__marimo__"
        || name == "node_modules"
        || output.is_some_and(|o| path.canonicalize().is_ok_and(|p| p == o))
}

/// Every `.py` file of every source: the notebooks sorted by page, then the other Python files;
/// excluded ones left out. A notebook reached twice (`export-nb nbs nbs/sub/a.py`, or by two
/// spellings of its path) is exported once, where a named folder puts it.
pub(crate) fn discover(sources: &[Source], exclude: &GlobSet, output: &Path) -> Result<Vec<Found>> {
    let output = output.canonicalize().ok();
    let mut found_all = Discovered::default();
    // Folders first, then globs, then files: a folder's layout wins for what it holds.
    let rank = |s: &&Source| match s.pick {
        Pick::All => 0,
        Pick::Glob(..) => 1,
        Pick::File(_) => 2,
    };
    let mut ordered: Vec<&Source> = sources.iter().collect();
    ordered.sort_by_key(rank);
    for src in ordered {
        let files = python_files(src, output.as_deref())?;
        let mut notebooks = 0;
        for path in &files {
            let rel = path.strip_prefix(&src.folder).unwrap_or(path);
            // A file named on the command line is exported even if an --exclude matches it.
            let named = matches!(src.pick, Pick::File(_));
            if (named || !(exclude.is_match(rel) || exclude.is_match(path)))
                && found_all.add(src, path)?
            {
                notebooks += 1;
            }
        }
        match &src.pick {
            Pick::Glob(_, text) if files.is_empty() => {
                bail!("the glob {text:?} matches no .py file");
            }
            // Naming only what is not a notebook would empty the site: refuse instead.
            Pick::Glob(_, text) if notebooks == 0 => {
                bail!("the glob {text:?} matches no marimo notebook (no file has marimo.App)");
            }
            Pick::File(path) => {
                if let Some(why) = found_all.others.iter().find(|f| &f.source == path) {
                    bail!(
                        "{} is {}",
                        path.display(),
                        why.not_a_notebook.as_deref().unwrap_or("not a notebook")
                    );
                }
            }
            _ => {}
        }
    }
    Ok(found_all
        .by_page
        .into_values()
        .chain(found_all.others)
        .collect())
}

/// What discovery has found so far.
#[derive(Default)]
struct Discovered {
    scanner: crate::imports::Scanner,
    by_page: BTreeMap<PathBuf, Found>,
    others: Vec<Found>,
    /// Each file's category and canonical path, and whether it is a notebook.
    seen: std::collections::HashMap<(Category, PathBuf), bool>,
}

impl Discovered {
    /// `path` of `src`, unless it was found already; two notebooks for one page are an error.
    /// Whether it is a notebook.
    fn add(&mut self, src: &Source, path: &Path) -> Result<bool> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let key = (src.category, canonical);
        if let Some(&notebook) = self.seen.get(&key) {
            return Ok(notebook);
        }
        let found = found(src, path, &mut self.scanner)?;
        self.seen.insert(key, found.not_a_notebook.is_none());
        if found.not_a_notebook.is_some() {
            // Never exported, so it claims no page.
            self.others.push(found);
            return Ok(false);
        }
        if let Some(other) = self.by_page.get(&found.page) {
            bail!(
                "{} and {} would both be exported to {}: rename one, or --exclude one",
                other.source.display(),
                found.source.display(),
                found.page.display()
            );
        }
        self.by_page.insert(found.page.clone(), found);
        Ok(true)
    }
}

/// The `.py` files below a source's folder, in name order; the folders `skip_dir` names (and
/// the output folder) are not entered, links are followed.
fn python_files(src: &Source, output: Option<&Path>) -> Result<Vec<PathBuf>> {
    if let Pick::File(path) = &src.pick {
        return Ok(vec![path.clone()]);
    }
    let walker = WalkDir::new(&src.folder)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !e.file_type().is_dir()
                || !skip_dir(e.path(), &e.file_name().to_string_lossy(), output)
        });
    let mut files = Vec::new();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            // A link to nothing (an editor's `.#nb.py` lock file is one) is not a notebook:
            // skip it, say so, and go on with the others.
            Err(e)
                if e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                    && e.path().is_some_and(Path::is_symlink) =>
            {
                eprintln!(
                    "export-nb: note: skipping {}: a symbolic link to nothing",
                    e.path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", src.folder.display()));
            }
        };
        let path = entry.path();
        let picked = match &src.pick {
            Pick::Glob(glob, _) => glob.is_match(path.strip_prefix(&src.folder).unwrap_or(path)),
            _ => true,
        };
        if picked && entry.file_type().is_file() && path.extension().is_some_and(|e| e == "py") {
            // `*.py` in the current folder: `a.py`, as the shell would have expanded it.
            let path = match &src.pick {
                Pick::Glob(..) if src.folder == Path::new(".") => {
                    path.strip_prefix(".").unwrap_or(path).to_path_buf()
                }
                _ => entry.into_path(),
            };
            files.push(path);
        }
    }
    Ok(files)
}

/// What the file `path` of `src` is: a notebook (its page, header and local modules) or why not.
fn found(src: &Source, path: &Path, scanner: &mut crate::imports::Scanner) -> Result<Found> {
    let rel = path.strip_prefix(&src.folder).unwrap_or(path);
    let page = Path::new(src.category.dir()).join(rel.with_extension("html"));
    let Inspected {
        mut not_a_notebook,
        content_hash,
        header,
        imports,
        meta,
    } = inspect(path)?;
    // The manifest, the report and the index are JSON and HTML: text. A name that is not text
    // is refused here, with the reason, rather than after its export.
    if path.to_str().is_none() && not_a_notebook.is_none() {
        not_a_notebook = Some(format!(
            "its path is not valid UTF-8 ({}): rename it to export it",
            path.display()
        ));
    }
    let modules = if not_a_notebook.is_none() {
        scanner.local_modules(path, &imports)
    } else {
        BTreeMap::new()
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().replace('_', " "))
        .unwrap_or_default();
    Ok(Found {
        meta: crate::meta::PageMeta::of(path, &name, &meta),
        source: path.to_path_buf(),
        rel: rel.to_path_buf(),
        category: src.category,
        page,
        not_a_notebook,
        content_hash,
        modules,
        header,
    })
}

pub(crate) struct Inspected {
    pub(crate) not_a_notebook: Option<String>,
    pub(crate) content_hash: Vec<u8>,
    pub(crate) header: Result<Option<ScriptMetadata>, String>,
    /// The top-level modules it imports.
    pub(crate) imports: std::collections::BTreeSet<String>,
    /// Its title, description and tags as its text gives them.
    pub(crate) meta: crate::meta::FromText,
}

/// A marimo notebook creates a `marimo.App`; any other Python file is skipped with the reason.
/// Read the file once: whether it is a notebook, a digest of its content for the manifest, and
/// its inline script metadata.
fn inspect(path: &Path) -> Result<Inspected> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(inspect_bytes(&bytes))
}

/// [`inspect`] on a file's content.
pub(crate) fn inspect_bytes(bytes: &[u8]) -> Inspected {
    let text = String::from_utf8_lossy(bytes);
    let not_a_notebook =
        (!text.contains("marimo.App")).then(|| "not a marimo notebook (no marimo.App)".to_owned());
    let imports = if not_a_notebook.is_none() {
        crate::imports::imported_names(&text)
    } else {
        std::collections::BTreeSet::new()
    };
    Inspected {
        meta: if not_a_notebook.is_none() {
            crate::meta::FromText::read(&text)
        } else {
            crate::meta::FromText::default()
        },
        header: pep723::parse(&text),
        not_a_notebook,
        content_hash: Sha256::digest(bytes).to_vec(),
        imports,
    }
}

#[cfg(test)]
mod tests {
    use globset::{Glob, GlobSetBuilder};

    use super::*;

    #[test]
    fn finds_notebooks_recursively_skipping_hidden_and_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let nb = dir.path().join("nbs");
        for (path, body) in [
            ("a_first.py", "import marimo\napp = marimo.App()\n"),
            ("sub/b.py", "import marimo\napp = marimo.App()\n"),
            ("helpers.py", "def f(): pass\n"),
            (".venv/lib/x.py", "import marimo\napp = marimo.App()\n"),
            ("drafts/wip.py", "import marimo\napp = marimo.App()\n"),
            ("readme.md", "# no"),
        ] {
            let p = nb.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let exclude = GlobSetBuilder::new()
            .add(Glob::new("drafts/**").unwrap())
            .build()
            .unwrap();
        let sources = [Source {
            folder: nb.clone(),
            category: Category::Notebooks,
            pick: Pick::All,
        }];
        let found = discover(&sources, &exclude, &dir.path().join("_site")).unwrap();
        let pages: Vec<_> = found.iter().map(|f| f.page.to_str().unwrap()).collect();
        assert_eq!(
            pages,
            [
                "notebooks/a_first.html",
                "notebooks/sub/b.html",
                "notebooks/helpers.html"
            ]
        );
        assert_eq!(found[0].display_name(), "a first");
        assert!(found[0].not_a_notebook.is_none());
        assert_eq!(
            found[2].not_a_notebook.as_deref(),
            Some("not a marimo notebook (no marimo.App)")
        );
    }

    #[test]
    fn named_files_and_globs_get_the_pages_of_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        let nb = dir.path().join("nbs");
        for path in ["a.py", "sub/b.py", "sub/c.py", "sub/deeper/d.py"] {
            let p = nb.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "import marimo\napp = marimo.App()\n").unwrap();
        }
        let glob = |g: &str| {
            let m = globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .unwrap();
            Pick::Glob(m.compile_matcher(), g.to_owned())
        };
        let pages = |picks: Vec<(PathBuf, Pick)>, exclude: &GlobSet| {
            let sources: Vec<_> = picks
                .into_iter()
                .map(|(folder, pick)| Source {
                    folder,
                    category: Category::Notebooks,
                    pick,
                })
                .collect();
            discover(&sources, exclude, &dir.path().join("_site")).map(|found| {
                found
                    .iter()
                    .map(|f| f.page.display().to_string())
                    .collect::<Vec<_>>()
            })
        };
        let sub = nb.join("sub");
        let all_but_c = GlobSetBuilder::new()
            .add(Glob::new("c.py").unwrap())
            .build()
            .unwrap();
        assert_eq!(
            pages(
                vec![(sub.clone(), Pick::File(sub.join("c.py")))],
                &all_but_c
            )
            .unwrap(),
            ["notebooks/c.html"],
            "a named file is exported even when --exclude matches it"
        );
        assert_eq!(
            pages(vec![(nb.clone(), glob("sub/*.py"))], &GlobSet::empty()).unwrap(),
            ["notebooks/sub/b.html", "notebooks/sub/c.html"]
        );
        assert_eq!(
            pages(
                vec![(nb.clone(), glob("**/d.py")), (nb.clone(), Pick::All)],
                &GlobSet::empty()
            )
            .unwrap()
            .len(),
            4,
            "a notebook named twice is exported once"
        );
        let err = pages(vec![(nb.clone(), glob("*.ipynb"))], &GlobSet::empty()).unwrap_err();
        assert_eq!(err.to_string(), "the glob \"*.ipynb\" matches no .py file");
        // A file inside a named folder, named too (before it, by another spelling): once,
        // where the folder puts it.
        let dotted = nb.join(".").join("sub").join("b.py");
        let both = vec![(sub.clone(), Pick::File(dotted)), (nb.clone(), Pick::All)];
        let found = pages(both, &GlobSet::empty()).unwrap();
        assert_eq!(found.len(), 4);
        assert!(
            found.contains(&"notebooks/sub/b.html".to_owned()),
            "{found:?}"
        );
        // Naming what is not a notebook is refused, not an empty site.
        std::fs::write(nb.join("helper.py"), "def f(): pass\n").unwrap();
        let err = pages(
            vec![(nb.clone(), Pick::File(nb.join("helper.py")))],
            &GlobSet::empty(),
        );
        let err = err.unwrap_err().to_string();
        assert!(
            err.ends_with("helper.py is not a marimo notebook (no marimo.App)"),
            "{err}"
        );
        let err = pages(vec![(nb.clone(), glob("help*.py"))], &GlobSet::empty()).unwrap_err();
        assert!(
            err.to_string().contains("matches no marimo notebook"),
            "{err}"
        );
    }

    #[test]
    fn two_notebooks_for_one_page_is_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["x", "y"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("same.py"), "marimo.App").unwrap();
        }
        let sources: Vec<_> = ["x", "y"]
            .iter()
            .map(|d| Source {
                folder: dir.path().join(d),
                category: Category::Notebooks,
                pick: Pick::All,
            })
            .collect();
        let err = discover(&sources, &GlobSet::empty(), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x/same.py") && err.contains("y/same.py"),
            "{err}"
        );
        assert!(err.contains("notebooks/same.html"), "{err}");
    }

    #[test]
    fn dangling_links_are_skipped_and_names_that_are_not_text_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let nb = dir.path().join("nbs");
        std::fs::create_dir_all(&nb).unwrap();
        std::fs::write(nb.join("good.py"), "import marimo\napp = marimo.App()\n").unwrap();
        std::os::unix::fs::symlink(nb.join("gone.py"), nb.join(".#good.py")).unwrap();
        std::os::unix::fs::symlink(nb.join("nowhere"), nb.join("dangling.py")).unwrap();
        let latin1 = nb.join(std::ffi::OsStr::from_bytes(b"caf\xe9.py"));
        std::fs::write(&latin1, "import marimo\napp = marimo.App()\n").unwrap();
        let sources = [Source {
            folder: nb.clone(),
            category: Category::Notebooks,
            pick: Pick::All,
        }];
        let found = discover(&sources, &GlobSet::empty(), &dir.path().join("_site")).unwrap();
        let names: Vec<String> = found.iter().map(|f| f.rel.display().to_string()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let refused = found.iter().find(|f| f.source == latin1).unwrap();
        assert!(
            refused
                .not_a_notebook
                .as_deref()
                .is_some_and(|r| r.contains("not valid UTF-8")),
            "{refused:?}"
        );
    }
}
