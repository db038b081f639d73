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
    good_and_bad_notebooks(&[], "notebooks forked from a warm marimo worker");
}

#[test]
fn real_marimo_without_the_worker_judges_the_same() {
    good_and_bad_notebooks(&["--no-worker"], "one `python -m marimo` per notebook");
}

/// Good and bad notebooks, exported by the worker or by `python -m marimo export` (`how` is
/// what `-v` says of the environment): the same pages and the same judgements either way.
fn good_and_bad_notebooks(extra: &[&str], how: &str) {
    let p = Project::create();
    p.write("notebooks/good.py", &good());
    p.write("notebooks/raises.py", &raises());
    p.write("notebooks/syntax_error.py", &syntax_error());
    p.write("notebooks/plain_script.py", "print('not a notebook')\n");
    let mut args = vec!["-j", "2", "-v", "--no-sandbox", "--report", "report.json"];
    args.extend_from_slice(extra);
    let out = p.run_with(&args, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains(how), "{}", out.stderr);
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
    // The card's title is the notebook's first markdown heading.
    assert!(
        index.contains(r#"<a href="notebooks/good.html">A good notebook</a>"#),
        "{index}"
    );
    // Its page carries link previews, with marimo's page intact.
    let page = p.read("_site/notebooks/good.html");
    assert!(
        page.contains(r#"<meta property="og:title" content="A good notebook">"#),
        "{page}"
    );
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

/// A notebook with a PEP 723 header naming `deps`, whose page says whether `six` is importable.
fn reports_six(deps: &[&str]) -> String {
    let list: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "# /// script\n# requires-python = \">=3.10\"\n# dependencies = [{}]\n# ///\n{}",
        list.join(", "),
        notebook(&["    import importlib.util\n    import marimo as mo\n    \
             mo.md('SIX-' + ('PRESENT' if importlib.util.find_spec('six') else 'ABSENT'))"])
    )
}

fn environments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count()
}

#[test]
fn real_environments_hold_exactly_each_notebooks_packages_and_are_shared() {
    let p = Project::create();
    p.write("notebooks/with_six.py", &reports_six(&["marimo", "six"]));
    p.write("notebooks/without.py", &reports_six(&["marimo"]));
    p.write("notebooks/same_header.py", &reports_six(&["marimo"]));
    let envs = p.path().join("envs");
    let out = p.run_with(&["-j", "2", "-v", "--env-dir", envs.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("notebooks forked from a warm marimo worker"),
        "marimo {} is tested with the worker: {}",
        "0.25.2",
        out.stderr
    );
    assert!(
        p.read("_site/notebooks/with_six.html")
            .contains("SIX-PRESENT")
    );
    assert!(
        !p.read("_site/notebooks/with_six.html")
            .contains("SIX-ABSENT")
    );
    for page in ["without", "same_header"] {
        let html = p.read(&format!("_site/notebooks/{page}.html"));
        assert!(
            html.contains("SIX-ABSENT"),
            "{page} sees only its own packages"
        );
        assert!(!html.contains("SIX-PRESENT"), "{page}");
    }
    assert_eq!(
        environments(&envs),
        2,
        "identical headers share one environment"
    );
}

#[test]
fn real_unknown_marimo_version_exports_with_the_cli() {
    let p = Project::create();
    p.write("notebooks/good.py", &good());
    let envs = p.path().join("envs");
    let out = p.run_with(
        &[
            "-v",
            "--marimo-version",
            "0.25.1",
            "--env-dir",
            envs.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("marimo 0.25.1, one `python -m marimo` per notebook"),
        "{}",
        out.stderr
    );
    assert!(p.read("_site/notebooks/good.html").contains("<marimo-"));
}

/// A notebook that leaves a `setsid` sleeper and hangs, writing its kernel's and the sleeper's
/// pids into `dir`.
fn hangs_leaving(dir: &std::path::Path) -> String {
    notebook(&[&format!(
        "    import os, subprocess, time\n    \
         sleeper = subprocess.Popen(['sleep', '600'], start_new_session=True)\n    \
         open('{d}/sleeper.tmp', 'w').write(str(sleeper.pid))\n    \
         os.rename('{d}/sleeper.tmp', '{d}/sleeper.pid')\n    \
         open('{d}/kernel.tmp', 'w').write(str(os.getpid()))\n    \
         os.rename('{d}/kernel.tmp', '{d}/kernel.pid')\n    \
         time.sleep(600)",
        d = dir.display()
    )])
}

#[test]
fn real_forked_export_timeout_kills_its_tree_and_the_worker_exports_the_next() {
    let p = Project::create();
    p.write("notebooks/a_hangs.py", &hangs_leaving(p.path()));
    p.write("notebooks/b_good.py", &good());
    let start = Instant::now();
    let out = p.run_with(
        &[
            "-j",
            "1",
            "-v",
            "--timeout",
            "10",
            "--report",
            "report.json",
        ],
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(start.elapsed() < Duration::from_secs(120));
    assert!(
        out.stderr.contains("forked from a warm marimo worker"),
        "{}",
        out.stderr
    );
    let report: Value = serde_json::from_str(&p.read("report.json")).unwrap();
    assert_eq!(task(&report, "notebooks/a_hangs.py")["status"], "timed_out");
    assert_eq!(
        task(&report, "notebooks/b_good.py")["status"],
        "succeeded",
        "the worker exports the next notebook after a kill"
    );
    for name in ["kernel.pid", "sleeper.pid"] {
        let pid = testkit::read_pid(&p.path().join(name));
        assert!(!testkit::alive(pid), "{name}: {pid} survived the timeout");
    }
}

#[test]
fn real_ctrl_c_during_a_forked_export_kills_its_tree_and_exits_130() {
    let p = Project::create();
    p.write("notebooks/hangs.py", &hangs_leaving(p.path()));
    let mut child = testkit::command(crate::BIN)
        .args(["--no-progress"])
        .current_dir(p.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let kernel = testkit::read_pid(&p.path().join("kernel.pid"));
    let sleeper = testkit::read_pid(&p.path().join("sleeper.pid"));
    testkit::interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    for (name, pid) in [("kernel", kernel), ("sleeper", sleeper)] {
        testkit::wait_for(&format!("the {name} {pid} to be gone"), || {
            !testkit::alive(pid)
        });
    }
}
