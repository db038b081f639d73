//! With the real `uvx` and marimo from PyPI (`cargo xtask test` installs uv). Kept small:
//! each export starts a Python process that takes seconds.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Project;

const GOOD: &str = r##"import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo
    mo.md("# A good notebook")
    return (mo,)


@app.cell
def _():
    answer = 6 * 7
    answer
    return (answer,)


if __name__ == "__main__":
    app.run()
"##;

const RAISES: &str = r#"import marimo

app = marimo.App()


@app.cell
def _():
    raise ValueError("this cell fails on purpose")
    return


if __name__ == "__main__":
    app.run()
"#;

const SYNTAX_ERROR: &str = r#"import marimo

app = marimo.App()


@app.cell
def _():
    x = (1 +
    return


if __name__ == "__main__":
    app.run()
"#;

const SLOW: &str = r#"import marimo

app = marimo.App()


@app.cell
def _():
    import time
    time.sleep(600)
    return


if __name__ == "__main__":
    app.run()
"#;

fn task<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the report"))
}

/// Processes whose command line mentions `needle` (the notebook's temporary folder).
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
fn real_marimo_exports_good_notebooks_and_reports_the_bad_ones() {
    let p = Project::create();
    p.write("notebooks/good.py", GOOD);
    p.write("notebooks/raises.py", RAISES);
    p.write("notebooks/syntax_error.py", SYNTAX_ERROR);
    p.write("notebooks/plain_script.py", "print('not a notebook')\n");
    let out = p.run_with(&["-j", "2", "--no-sandbox", "--report", "report.json"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report: Value = serde_json::from_str(&p.read("report.json")).unwrap();

    assert_eq!(
        task(&report, "notebooks/good.py")["status"],
        "succeeded",
        "{}",
        out.stderr
    );
    let page = p.read("_site/notebooks/good.html");
    assert!(page.contains("<marimo-"), "a real marimo page");

    let raises = task(&report, "notebooks/raises.py");
    assert_eq!(raises["status"], "failed");
    assert!(
        raises["error"]
            .as_str()
            .unwrap()
            .contains("this cell fails on purpose"),
        "{raises}"
    );
    let syntax = task(&report, "notebooks/syntax_error.py");
    assert_eq!(syntax["status"], "failed");
    assert!(
        syntax["error_detail"]
            .as_str()
            .unwrap()
            .contains("SyntaxError"),
        "{syntax}"
    );
    assert_eq!(
        task(&report, "notebooks/plain_script.py")["status"],
        "skipped"
    );

    let index = p.read("_site/index.html");
    assert!(index.contains(r#"<a href="notebooks/good.html">good</a>"#));
    assert!(!index.contains("raises.html") && !index.contains("syntax_error.html"));
}

#[test]
fn real_marimo_timeout_leaves_no_process_behind() {
    let p = Project::create();
    p.write("notebooks/slow.py", SLOW);
    let start = Instant::now();
    let out = p.run_with(
        &["--timeout", "20", "--no-sandbox", "--report", "report.json"],
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(start.elapsed() < Duration::from_secs(120));
    let report: Value = serde_json::from_str(&p.read("report.json")).unwrap();
    assert_eq!(task(&report, "notebooks/slow.py")["status"], "timed_out");
    let dir = p.path().to_string_lossy().into_owned();
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}
