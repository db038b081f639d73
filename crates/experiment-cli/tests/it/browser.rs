//! The results page (`parallamr view`) in a real headless Chromium, at desktop and phone widths:
//! the matrix, the filters clicked and typed into, the marks of `--compare`, and hostile values
//! shown as text.

use std::fmt::Write as _;
use std::time::Duration;

use testkit::browser::{Browser, screenshot_dir};

use crate::{Project, run_run};

/// Three questions answered by two models (commands that print the `answer` column), judged by
/// an `expected` column; then an older run in which one answer that fails now passed.
fn results() -> Project {
    let rows = [
        ("Capital of France?", "Paris", "It is Paris.", "paris"),
        ("Capital of Italy?", "Milan", "Rome", "rome"),
        (
            "<img src=x onerror=\"\"document.title='PWNED'\"\">",
            "<script>document.title='PWNED'</script> unsure",
            "x marks the spot",
            "x",
        ),
    ];
    let mut csv = String::from("provider,model,question,small,large,expected\n");
    for model in ["small", "large"] {
        for (q, small, large, expected) in rows {
            let _ = writeln!(
                csv,
                "command,{model},\"{q}\",\"{small}\",\"{large}\",{expected}"
            );
        }
    }
    let p = Project::create("unused", &csv);
    // Each model answers with its own column.
    let command =
        "case {{ model }} in small) printf '%s' {{ small }};; *) printf '%s' {{ large }};; esac";
    let out = run_run(&p, &["--command", command], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Before: the large model answered Italy wrong, and the small one France with other words.
    crate::judge::earlier_results(&p, |row| {
        match (row["model"].as_str(), row["question"].as_str()) {
            ("large", "Capital of Italy?") => {
                row.insert("output".into(), "Naples".into());
                row.insert("pass".into(), "false".into());
            }
            ("small", "Capital of France?") => {
                row.insert("output".into(), "Paris, France".into());
            }
            _ => {}
        }
    });
    let view = p.run(
        &[
            "view",
            "out.csv",
            "--compare",
            "old.csv",
            "-o",
            "page.html",
            "--title",
            "Capitals",
        ],
        None,
    );
    assert_eq!(view.code, Some(0), "{}", view.stderr);
    p
}

#[test]
fn the_results_page_works_in_a_browser_at_desktop_and_phone_widths() {
    let p = results();
    let browser = Browser::launch();
    let shots = screenshot_dir("parallamr");
    for (width, name) in [(1280, "desktop"), (390, "phone")] {
        let page = browser.open(&p.path().join("page.html"), width);
        // The matrix: a row per question, a cell per model, marked in words as well as colour.
        let cells: Vec<(String, String, String)> = page.eval(
            "[...document.querySelectorAll('td.cell')].map(td =>
               [td.dataset.model, td.querySelector('.verdict').textContent,
                getComputedStyle(td.querySelector('.verdict')).backgroundColor])",
        );
        assert_eq!(cells.len(), 6, "{cells:?}");
        let verdicts: Vec<&str> = cells.iter().map(|c| c.1.as_str()).collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v == "pass").count(),
            4,
            "{verdicts:?}"
        );
        assert_eq!(
            verdicts.iter().filter(|v| **v == "fail").count(),
            2,
            "{verdicts:?}"
        );
        let colour = |v: &str| cells.iter().find(|c| c.1 == v).unwrap().2.clone();
        assert_ne!(
            colour("pass"),
            colour("fail"),
            "pass and fail differ in colour too"
        );

        // Hostile values are text: nothing ran, and they read as written.
        let title: String = page.eval("document.title");
        assert_eq!(title, "Capitals");
        let text: String = page.eval("document.querySelector('table.matrix').textContent");
        assert!(
            text.contains("<script>document.title='PWNED'</script> unsure"),
            "{text}"
        );
        assert!(text.contains("<img src=x onerror="), "{text}");
        let imgs: usize = page.eval("document.querySelectorAll('img').length");
        assert_eq!(imgs, 0);

        // The summary per model: the large model first (all passed).
        let summary: Vec<String> = page.eval(
            "[...document.querySelectorAll('table.summary tbody th')].map(t => t.textContent)",
        );
        assert_eq!(summary, ["command/large", "command/small"]);

        // Compare: the newly passing cell and the changed answer are marked, with a word diff.
        let changes: Vec<String> =
            page.eval("[...document.querySelectorAll('td.cell .change')].map(c => c.textContent)");
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.contains(&"newly passing".to_owned()), "{changes:?}");
        assert!(
            changes.contains(&"answer changed".to_owned()),
            "{changes:?}"
        );

        filters_work(&page);

        // The page as it first opens, for README.
        let page = browser.open(&p.path().join("page.html"), width);
        page.eval::<bool>("(document.querySelectorAll('details')[2].open = true)");
        page.assert_sound();
        page.screenshot(&shots.join(format!("parallamr-view-{name}.png")));
    }
}

/// The filters, clicked and typed into as a user does.
fn filters_work(page: &testkit::browser::Page) {
    let visible_rows = || -> usize {
        page.eval(
            "[...document.querySelectorAll('table.matrix tbody tr')].filter(r => !r.hidden).length",
        )
    };
    // Filters, clicked and typed as a user does.
    assert_eq!(visible_rows(), 3);
    page.click("#failed");
    assert!(page.wait_until(
        "document.getElementById('shown').textContent === '2 of 3 rows shown'",
        Duration::from_secs(5)
    ));
    assert_eq!(visible_rows(), 2, "rows with a failed cell");
    page.click("#failed");
    page.click("#changed");
    assert_eq!(visible_rows(), 2, "rows with a changed cell");
    page.click("#changed");
    page.type_into("#q", "milan");
    assert!(page.wait_until(
        "document.getElementById('shown').textContent === '1 of 3 rows shown'",
        Duration::from_secs(5)
    ));
    let shown: String = page.eval(
        "[...document.querySelectorAll('table.matrix tbody tr')].find(r => !r.hidden).querySelector('th').textContent",
    );
    assert!(shown.contains("Capital of Italy?"), "{shown}");
    for _ in 0.."milan".len() {
        page.press("Backspace");
    }
    assert!(page.wait_until(
        "document.getElementById('shown').textContent === '3 of 3 rows shown'",
        Duration::from_secs(5)
    ));
    // A model picked: the other's column is hidden.
    page.click("#model");
    page.press("ArrowDown");
    page.press("ArrowDown");
    page.press("Enter");
    assert!(page.wait_until(
        "document.getElementById('model').value === 'command/small'",
        Duration::from_secs(5)
    ));
    let hidden: Vec<String> = page.eval(
        "[...document.querySelectorAll('table.matrix [data-model]')].filter(e => e.hidden).map(e => e.dataset.model)",
    );
    assert_eq!(
        hidden.len(),
        4,
        "the large model's heading and cells: {hidden:?}"
    );
    assert!(hidden.iter().all(|m| m == "command/large"), "{hidden:?}");
}
