//! With the real `uvx` and marimo from PyPI (`cargo xtask test` installs uv). Kept small:
//! each export starts a Python process that takes seconds.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Project;

/// A marimo notebook with one cell per body (each body indented as a cell's).
fn notebook(cells: &[&str]) -> String {
    let mut text = String::from("import marimo\n\napp = marimo.App()\n");
    for body in cells {
        text.push_str("\n\n@app.cell\ndef _():\n");
        text.push_str(body);
        text.push_str("\n    return\n");
    }
    text.push_str("\n\nif __name__ == \"__main__\":\n    app.run()\n");
    text
}

fn good() -> String {
    notebook(&[
        "    import marimo as mo\n    mo.md(\"# A good notebook\")",
        "    answer = 6 * 7\n    print(answer)",
    ])
}

fn raises() -> String {
    notebook(&["    raise ValueError(\"this cell fails on purpose\")"])
}

fn syntax_error() -> String {
    notebook(&["    x = (1 +"])
}

fn slow() -> String {
    notebook(&["    import time\n    time.sleep(600)"])
}

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
    p.write("notebooks/good.py", &good());
    p.write("notebooks/raises.py", &raises());
    p.write("notebooks/syntax_error.py", &syntax_error());
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
    p.write("notebooks/slow.py", &slow());
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
