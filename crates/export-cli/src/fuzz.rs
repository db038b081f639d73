//! Entry points for the fuzz targets in `fuzz/` (built with the `fuzzing` feature): each hands
//! bytes to a parser of user input the way the tool does. Errors are expected; a panic, or a
//! broken promise checked here, is a bug.

use std::collections::HashSet;
use std::path::Path;

use clap::Parser;

use crate::cli::Cli;
use crate::config::Settings;
use crate::discover::inspect_bytes;
use crate::envs::EnvSpec;
use crate::manifest::Manifest;

/// `dir/pyproject.toml` (written by the caller): read `[tool.export-nb]` and merge it with the
/// flags, as `export-nb` run in `dir` does.
pub fn pyproject(dir: &Path) {
    let cli = Cli::try_parse_from(["export-nb"]).expect("no flags parse");
    if let Ok(settings) = Settings::from_args_in(cli.export, dir) {
        let _ = settings.launcher();
        let _ = settings.env_root();
    }
}

/// A `.py` file's content, as discovery reads it: is it a marimo notebook, its PEP 723 header,
/// and the environment that header asks for. A dependency the header yields is one line of
/// the requirements file export-nb writes for uv: it never holds a line break, and never
/// starts with `-` (an option there).
pub fn notebook(content: &[u8]) {
    let inspected = inspect_bytes(content);
    let header = inspected.header.ok().flatten();
    if let Some(h) = &header {
        for dep in &h.dependencies {
            assert!(
                !dep.contains(['\n', '\r']) && !dep.starts_with('-'),
                "a dependency that is not one requirement: {dep:?}"
            );
        }
    }
    for sandbox in [false, true] {
        for pin in [None, Some("0.1")] {
            let spec = EnvSpec::for_notebook(header.as_ref(), sandbox, pin);
            let _ = (spec.key(), spec.describe());
        }
    }
}

/// `manifest` as `<root>/out/.export-nb/manifest.json`, then the run in which every notebook
/// is gone: every page it names is removed. Nothing outside `<root>/out` may be touched: the
/// caller's `<root>/outside.html` (and the pages it keeps elsewhere) must survive.
pub fn manifest(root: &Path, manifest: &[u8]) {
    let output = root.join("out");
    let path = Manifest::path(&output);
    if std::fs::create_dir_all(path.parent().expect("a state folder"))
        .and_then(|()| std::fs::write(&path, manifest))
        .is_err()
    {
        return;
    }
    let mut loaded = Manifest::load(&output);
    loaded.remove_pages_except(&HashSet::new(), &output);
    assert!(
        loaded.pages.is_empty(),
        "every page of a gone notebook is forgotten"
    );
    assert!(
        root.join("outside.html").exists(),
        "a manifest key removed a file outside the output folder"
    );
}

/// A file's text: the header parser finds exactly the `script` block PEP 723's reference
/// expression finds (see `pep723::check_against_reference`).
pub fn pep723(content: &[u8]) {
    crate::pep723::check_against_reference(&String::from_utf8_lossy(content));
}
