//! Notebooks shaped like other people's, with the real uv and marimo from PyPI: headers with a
//! shebang and a comment after them, files and globs named on the command line, failures that
//! say what to do, and pages published with their cell errors (`--keep-failed-pages`).

use serde_json::Value;

use crate::Project;

/// A notebook whose header (after a shebang, with a `# Copyright` line after its closing
/// `# ///`) lists `deps`, and whose one cell runs `body`.
fn with_header(deps: &[&str], requires_python: &str, body: &str) -> String {
    let list: Vec<String> = deps.iter().map(|d| format!("#     \"{d}\",\n")).collect();
    format!(
        "#!/usr/bin/env python3\n# /// script\n# requires-python = \"{requires_python}\"\n\
         # dependencies = [\n{}# ]\n# ///\n# Copyright 2026 Somebody. All rights reserved.\n\n\
         import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n{body}\n    return\n",
        list.concat()
    )
}

/// A cell that shows whether `six` can be imported.
const SHOWS_SIX: &str = "    import importlib.util\n    import marimo as mo\n    \
    mo.md('SIX-' + ('PRESENT' if importlib.util.find_spec('six') else 'ABSENT'))";

fn error_of(report: &Value, name: &str) -> String {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {report}"))["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn real_a_header_after_a_shebang_is_read_and_files_and_globs_export_like_their_folder() {
    let p = Project::create();
    p.write(
        "nbs/sub/shebang.py",
        &with_header(&["marimo", "six"], ">=3.10", SHOWS_SIX),
    );
    p.write("nbs/top.py", &with_header(&["marimo"], ">=3.10", SHOWS_SIX));
    let envs = p.path().join("envs");
    let envs = envs.to_str().unwrap();

    // One file: its page where exporting its folder puts it; nothing else.
    let out = p.run_with(&["--env-dir", envs, "nbs/sub/shebang.py"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let page = p.read("_site/notebooks/shebang.html");
    assert!(
        page.contains("SIX-PRESENT"),
        "the header's six is installed"
    );
    assert!(!p.exists("_site/notebooks/top.html"));

    // A glob the shell did not expand: the folder before the pattern is the source folder.
    let out = p.run_with(&["--env-dir", envs, "-o", "glob_site", "nbs/**/*.py"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        p.read("glob_site/notebooks/sub/shebang.html")
            .contains("SIX-PRESENT")
    );
    assert!(
        p.read("glob_site/notebooks/top.html")
            .contains("SIX-ABSENT")
    );
    let index = p.read("glob_site/index.html");
    assert!(index.contains("notebooks/sub/shebang.html"), "{index}");
}

#[test]
fn real_a_missing_module_names_the_fix_and_keep_failed_pages_publishes_the_page() {
    let p = Project::create();
    p.write(
        "notebooks/needs_six.py",
        &with_header(&["marimo"], ">=3.10", "    import six\n    print(six.PY3)"),
    );
    let envs = p.path().join("envs");
    let envs = envs.to_str().unwrap();
    let out = p.run_with(&["--env-dir", envs, "--report", "r.json"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report: Value = serde_json::from_str(&p.read("r.json")).unwrap();
    let error = error_of(&report, "notebooks/needs_six.py");
    assert!(
        error.contains("No module named 'six'")
            && error.contains("header does not list six")
            && error.contains("uv add --script notebooks/needs_six.py six"),
        "{error}"
    );
    assert!(
        !p.exists("_site/notebooks/needs_six.html"),
        "not published by default"
    );

    let out = p.run_with(
        &[
            "--env-dir",
            envs,
            "--keep-failed-pages",
            "--report",
            "r.json",
        ],
        &[],
    );
    assert_eq!(
        out.code,
        Some(1),
        "the run still says something failed: {}",
        out.stderr
    );
    assert!(
        p.read("_site/notebooks/needs_six.html")
            .contains("<marimo-")
    );
    let index = p.read("_site/index.html");
    assert!(
        index.contains(r#"<li class="card status-cell_errors">"#)
            && index.contains(r#"<a href="notebooks/needs_six.html">needs six</a>"#)
            && index.contains("published with cell errors"),
        "{index}"
    );
    let report: Value = serde_json::from_str(&p.read("r.json")).unwrap();
    let task = &report["tasks"][0];
    assert_eq!(task["status"], "failed");
    assert!(
        task["page"]
            .as_str()
            .unwrap()
            .ends_with("notebooks/needs_six.html"),
        "{task}"
    );
    // Exported again next time (it failed); failing again without the flag, its page goes.
    let out = p.run_with(&["--env-dir", envs, "-v"], &[]);
    assert!(
        out.stderr.contains("export notebooks/needs_six.py"),
        "{}",
        out.stderr
    );
    assert!(
        !p.exists("_site/notebooks/needs_six.html"),
        "a failed page only when asked for"
    );
    assert!(!p.read("_site/index.html").contains("needs_six.html"));
}

#[test]
fn real_a_python_no_interpreter_here_has_is_one_line_naming_the_versions() {
    let p = Project::create();
    p.write(
        "notebooks/future.py",
        &with_header(&["marimo"], ">=3.99", SHOWS_SIX),
    );
    p.write(
        "notebooks/future_too.py",
        &with_header(&["marimo", "six"], ">=3.99", SHOWS_SIX),
    );
    let envs = p.path().join("envs");
    let envs = envs.to_str().unwrap();
    // The real uv, through a script that notes each subcommand.
    let real_uv = which::which("uv").expect("uv on PATH (cargo xtask test installs it)");
    let log = p.path().join("uv.log");
    let uv = p.write(
        "bin/uv",
        &format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real_uv.display()
        ),
    );
    std::fs::set_permissions(&uv, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let never = std::ffi::OsStr::new("never");
    for (env, why) in [
        (vec![], "uv knows no download of it"),
        (
            vec![("UV_PYTHON_DOWNLOADS", never)],
            "uv did not download one",
        ),
    ] {
        let _ = std::fs::remove_file(&log);
        let args = [
            "--env-dir",
            envs,
            "--uv",
            uv.to_str().unwrap(),
            "--report",
            "r.json",
        ];
        let out = p.run_with(&args, &env);
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        let report: Value = serde_json::from_str(&p.read("r.json")).unwrap();
        for name in ["notebooks/future.py", "notebooks/future_too.py"] {
            let error = error_of(&report, name);
            assert!(
                error.starts_with(
                    "its header asks for Python >=3.99, which no interpreter here has (found: 3."
                ) && error.contains(why)
                    && error.contains("uv python install '>=3.99'")
                    && !error.contains('\n'),
                "{name}: {error}"
            );
        }
        // uv's own words stay for -v.
        let detail = report["tasks"][0]["error_detail"]
            .as_str()
            .unwrap_or_default();
        assert!(detail.contains("No interpreter found"), "{detail}");
        // Two environments want the same Python: uv is asked to make one once.
        let venvs = p.read("uv.log").lines().filter(|l| *l == "venv").count();
        assert_eq!(venvs, 1, "{}", p.read("uv.log"));
    }
}
