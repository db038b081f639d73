//! What to do about the failures people meet on other people's notebooks, in one line each: a
//! module the notebook imports that its header does not list, a Python version no interpreter
//! here has. The full output stays in the error's detail (`-v`).

use std::path::Path;

use crate::pep723::{ScriptMetadata, requirement_name};

/// Import names whose distribution on PyPI has another name.
const DISTRIBUTIONS: &[(&str, &str)] = &[
    ("sklearn", "scikit-learn"),
    ("skimage", "scikit-image"),
    ("PIL", "pillow"),
    ("cv2", "opencv-python"),
    ("yaml", "pyyaml"),
    ("bs4", "beautifulsoup4"),
    ("dateutil", "python-dateutil"),
    ("dotenv", "python-dotenv"),
    ("attr", "attrs"),
    ("jwt", "pyjwt"),
    ("serial", "pyserial"),
    ("Bio", "biopython"),
    ("pkg_resources", "setuptools"),
    ("docx", "python-docx"),
    ("pptx", "python-pptx"),
    ("magic", "python-magic"),
    ("OpenGL", "pyopengl"),
    ("Crypto", "pycryptodome"),
    ("mpl_toolkits", "matplotlib"),
];

/// The distribution to install for an import of the top-level `module` (`sklearn` ->
/// `scikit-learn`, `polars_st` -> `polars-st`).
pub(crate) fn distribution(module: &str) -> String {
    DISTRIBUTIONS
        .iter()
        .find(|(m, _)| module == *m)
        .map_or_else(|| module.replace('_', "-"), |(_, d)| (*d).to_owned())
}

/// For a cell error `ModuleNotFoundError: No module named 'numpy'` in `notebook`: that its
/// header does not list the package, and the command that adds it. `None` for another error,
/// when the header lists it (then the import fails for another reason), for a submodule
/// (`'google.cloud'`: its package imported, the name of what provides the rest is a guess), and
/// for a module of the notebook's own folder (`helpers.py` beside it is no PyPI package).
pub(crate) fn missing_module(
    error: &str,
    notebook: &Path,
    header: Option<&ScriptMetadata>,
    sandbox: bool,
) -> Option<String> {
    let rest = error.split("No module named '").nth(1)?;
    let module = &rest[..rest.find('\'')?];
    let folder = notebook.parent().unwrap_or(Path::new("."));
    if module.contains('.')
        || folder.join(format!("{module}.py")).exists()
        || folder.join(module).is_dir()
    {
        return None;
    }
    let package = distribution(module);
    let listed = header.is_some_and(|h| {
        h.dependencies
            .iter()
            .any(|d| requirement_name(d) == requirement_name(&package))
    });
    let add = format!(
        "uv add --script {} {}",
        fanout::process::shell_quote(&notebook.display().to_string()),
        fanout::process::shell_quote(&package)
    );
    Some(match (sandbox, header) {
        (false, _) => format!(
            "with --no-sandbox every notebook runs with marimo alone: drop --no-sandbox, and \
             if its header does not list {package}, add it with `{add}`"
        ),
        _ if listed => return None,
        (true, None) => format!(
            "the notebook has no `# /// script` header, so it runs with marimo alone: add one \
             that lists {package} with `{add}`"
        ),
        (true, Some(_)) => format!(
            "its `# /// script` header does not list {package}: add it with `{add}` (or add \
             \"{package}\" to the header's dependencies)"
        ),
    })
}

/// Why an environment for `requires_python` could not be made, in one line: the version asked
/// for, the ones found here (`found`, from `uv python list`), and what uv said (`uv_error`,
/// its `error:` line and causes). `None` when uv's error is not that no interpreter could be
/// had (a full disk, a folder in the way): that is said in uv's words.
pub(crate) fn missing_python(
    requires_python: &str,
    found: &[String],
    uv_error: &str,
) -> Option<String> {
    let found = if found.is_empty() {
        "none".to_owned()
    } else {
        found.join(", ")
    };
    let lower = uv_error.to_ascii_lowercase();
    let install = format!(
        "install one with `uv python install '{requires_python}'`, or lower the header's \
         requires-python"
    );
    let why = if ["failed to download", "request failed", "dns", "connect"]
        .iter()
        .any(|w| lower.contains(w))
    {
        format!(
            "uv could not download one (offline?): where it can, `uv python install \
             '{requires_python}'` installs one; or lower the header's requires-python"
        )
    } else if lower.contains("embeds available python downloads") {
        format!("uv knows no download of it (a newer uv may): {install}")
    } else if lower.contains("no interpreter found") {
        format!(
            "uv did not download one (are Python downloads off? UV_PYTHON_DOWNLOADS, \
             python-downloads): {install}"
        )
    } else {
        return None;
    };
    Some(format!(
        "its header asks for Python {requires_python}, which no interpreter here has \
         (found: {found}); {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(deps: &[&str]) -> ScriptMetadata {
        ScriptMetadata {
            requires_python: None,
            dependencies: deps.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn a_module_the_header_lacks_is_named_with_the_command_that_adds_it() {
        let error = "ModuleNotFoundError: No module named 'sklearn'";
        let nb = Path::new("my notebooks/fit.py");
        let hint = missing_module(error, nb, Some(&header(&["marimo"])), true).unwrap();
        assert_eq!(
            hint,
            "its `# /// script` header does not list scikit-learn: add it with `uv add --script \
             'my notebooks/fit.py' scikit-learn` (or add \"scikit-learn\" to the header's \
             dependencies)"
        );
        let hint = missing_module(error, nb, None, true).unwrap();
        assert!(hint.contains("has no `# /// script` header"), "{hint}");
        let hint = missing_module(error, nb, Some(&header(&["marimo"])), false).unwrap();
        assert!(hint.starts_with("with --no-sandbox"), "{hint}");
        let listed = header(&["Scikit_Learn>=1"]);
        assert_eq!(missing_module(error, nb, Some(&listed), true), None);
        assert_eq!(missing_module("ZeroDivisionError: x", nb, None, true), None);
        let submodule = "ModuleNotFoundError: No module named 'google.cloud'";
        assert_eq!(missing_module(submodule, nb, None, true), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("helpers.py"), "").unwrap();
        let local = "ModuleNotFoundError: No module named 'helpers'";
        assert_eq!(
            missing_module(local, &dir.path().join("nb.py"), None, true),
            None
        );
        let setuptools = "ModuleNotFoundError: No module named 'pkg_resources'";
        let hint = missing_module(setuptools, nb, None, true).unwrap();
        assert!(
            hint.ends_with("'my notebooks/fit.py' setuptools`"),
            "{hint}"
        );
    }

    #[test]
    fn a_missing_python_says_what_was_asked_what_was_found_and_why() {
        let found = ["3.11.7".to_owned(), "3.11.2".to_owned()];
        let offline = "Request failed after 3 retries\n  cause: Failed to download `https://x`";
        assert_eq!(
            missing_python(">=3.13", &found, offline).unwrap(),
            "its header asks for Python >=3.13, which no interpreter here has (found: 3.11.7, \
             3.11.2); uv could not download one (offline?): where it can, `uv python install \
             '>=3.13'` installs one; or lower the header's requires-python"
        );
        let never = "No interpreter found for Python >=3.13 in managed installations";
        let said = missing_python(">=3.13", &[], never).unwrap();
        assert!(said.contains("(found: none); uv did not"), "{said}");
        let unknown = format!("{never}\n\nhint: uv embeds available Python downloads and ...");
        let said = missing_python(">=3.99", &[], &unknown).unwrap();
        assert!(said.contains("uv knows no download of it"), "{said}");
        let other = "Failed to create virtual environment: File exists at `/x`";
        assert_eq!(missing_python(">=3.11", &found, other), None);
    }
}
