//! A notebook's local modules: the Python files of its own folder that it imports (`import
//! helpers` with `helpers.py` beside it, or a package folder), followed through their own
//! imports. marimo puts the notebook's folder on `sys.path`, so these are what its cells run
//! besides the notebook itself; a change to one changes the page. Found by a static scan of
//! `import` and `from ... import` statements, without Python: a name that is not a file or
//! folder beside the notebook is a package from the environment and is ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// At most this many files are followed from one notebook: a folder of generated code should
/// not make every run slow.
const MAX_FILES: usize = 2_000;

/// The top-level module names that Python source `text` imports absolutely: `import a.b, c as d`
/// gives `a` and `c`, `from e.f import g` gives `e`; relative imports (`from . import x`) are
/// not followed. Statements may be indented (marimo's cells are function bodies) and joined
/// by `;`.
pub(crate) fn imported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        for statement in line.split(';') {
            let statement = statement.split('#').next().unwrap_or("").trim();
            if let Some(rest) = statement.strip_prefix("import ") {
                for part in rest.split(',') {
                    let module = part.split_whitespace().next().unwrap_or("");
                    push_top_level(&mut names, module);
                }
            } else if let Some(rest) = statement.strip_prefix("from ") {
                let mut words = rest.split_whitespace();
                if let (Some(module), Some("import")) = (words.next(), words.next()) {
                    push_top_level(&mut names, module);
                }
            }
        }
    }
    names
}

fn push_top_level(names: &mut BTreeSet<String>, module: &str) {
    let top = module.split('.').next().unwrap_or("");
    let identifier = top
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && top.chars().all(|c| c.is_alphanumeric() || c == '_');
    if identifier {
        names.insert(top.to_owned());
    }
}

/// Finds local modules, reading each file once however many notebooks import it, and looking
/// for each module name once per folder (every notebook imports numpy: two `stat`s per folder,
/// not per notebook).
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    /// A file → the SHA-256 of its content (hex) and the names it imports; `None` if unreadable.
    files: HashMap<PathBuf, Option<(String, BTreeSet<String>)>>,
    /// (folder, module name) → the files of that module there.
    modules: HashMap<(PathBuf, String), Vec<PathBuf>>,
}

impl Scanner {
    /// The local modules of the notebook `notebook` whose content imports `names`: each file
    /// (relative to the notebook's folder) with the hash of its content.
    pub(crate) fn local_modules(
        &mut self,
        notebook: &Path,
        names: &BTreeSet<String>,
    ) -> BTreeMap<PathBuf, String> {
        let folder = notebook.parent().unwrap_or(Path::new(""));
        let mut found = BTreeMap::new();
        let mut seen_names = BTreeSet::new();
        let mut queue: Vec<String> = names.iter().cloned().collect();
        while let Some(name) = queue.pop() {
            if !seen_names.insert(name.clone()) || found.len() >= MAX_FILES {
                continue;
            }
            let files = self
                .modules
                .entry((folder.to_path_buf(), name.clone()))
                .or_insert_with(|| module_files(folder, &name))
                .clone();
            for file in files {
                if file == notebook || found.contains_key(&file) {
                    continue;
                }
                if let Some((hash, imports)) = self.read(&file) {
                    queue.extend(imports.iter().cloned());
                    let rel = file.strip_prefix(folder).unwrap_or(&file).to_path_buf();
                    found.insert(rel, hash.clone());
                }
            }
        }
        found
    }

    fn read(&mut self, file: &Path) -> Option<&(String, BTreeSet<String>)> {
        self.files
            .entry(file.to_path_buf())
            .or_insert_with(|| {
                let bytes = std::fs::read(file).ok()?;
                let hash = crate::site::hex(&Sha256::digest(&bytes));
                Some((hash, imported_names(&String::from_utf8_lossy(&bytes))))
            })
            .as_ref()
    }
}

/// The files of module `name` in `folder`: `name.py`, or every `.py` file of the package
/// folder `name/` (sorted, caches and hidden folders left out).
fn module_files(folder: &Path, name: &str) -> Vec<PathBuf> {
    let file = folder.join(format!("{name}.py"));
    if file.is_file() {
        return vec![file];
    }
    let package = folder.join(name);
    if !package.is_dir() {
        return Vec::new();
    }
    walkdir::WalkDir::new(&package)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0 || !(name.starts_with('.') || name == "__pycache__")
        })
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "py"))
        .take(MAX_FILES)
        .map(walkdir::DirEntry::into_path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        imported_names(text).into_iter().collect()
    }

    #[test]
    fn import_statements_give_their_top_level_modules() {
        let text = "import marimo\n\n@app.cell\ndef _():\n    import helpers, pkg.sub as s\n    \
                    from data.load import frame  # comment\n    from . import sibling\n    \
                    x = 1; import other\n    text = 'import this is prose'\n    \
                    from (weird) import x\n    importer = 2\n";
        assert_eq!(names(text), ["data", "helpers", "marimo", "other", "pkg"]);
    }

    #[test]
    fn local_modules_are_followed_through_their_imports_and_packages() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("pkg/__pycache__")).unwrap();
        std::fs::write(
            d.join("nb.py"),
            "import helpers\nimport pkg\nimport numpy\n",
        )
        .unwrap();
        std::fs::write(d.join("helpers.py"), "import shared\n").unwrap();
        std::fs::write(d.join("shared.py"), "import helpers\n").unwrap();
        std::fs::write(d.join("pkg/__init__.py"), "").unwrap();
        std::fs::write(d.join("pkg/core.py"), "").unwrap();
        std::fs::write(d.join("pkg/__pycache__/core.cpython-311.py"), "").unwrap();
        std::fs::write(d.join("unrelated.py"), "").unwrap();
        let mut scanner = Scanner::default();
        let nb = d.join("nb.py");
        let text = std::fs::read_to_string(&nb).unwrap();
        let modules = scanner.local_modules(&nb, &imported_names(&text));
        let files: Vec<_> = modules.keys().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            files,
            ["helpers.py", "pkg/__init__.py", "pkg/core.py", "shared.py"]
        );

        // A changed module changes its hash; the scanner of a new run sees it.
        std::fs::write(d.join("shared.py"), "VALUE = 2\n").unwrap();
        let again = Scanner::default().local_modules(&nb, &imported_names(&text));
        assert_ne!(
            again[Path::new("shared.py")],
            modules[Path::new("shared.py")]
        );
        assert_eq!(
            again[Path::new("helpers.py")],
            modules[Path::new("helpers.py")]
        );
    }
}
