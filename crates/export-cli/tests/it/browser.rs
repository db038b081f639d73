//! export-nb's index page in a real headless Chromium, at desktop and phone widths.

use std::path::Path;

use testkit::browser::{Browser, screenshot_dir};

use crate::{Project, notebook};

/// The bundled example notebooks, plus an app and a notebook whose cell raises.
fn site() -> Project {
    let p = Project::with_fake_uvx();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/notebooks");
    for entry in std::fs::read_dir(&bundled).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            let name = path.file_name().unwrap().to_str().unwrap();
            p.write(
                &format!("notebooks/{name}"),
                &std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
    p.write("notebooks/quarterly_forecast.py", &notebook("FAKE_RAISE"));
    p.write("apps/sales_dashboard.py", &notebook("ok"));
    let out = p.run(&[
        "notebooks",
        "--apps",
        "apps",
        "-o",
        "site",
        "--title",
        "Team notebooks",
    ]);
    assert_eq!(out.code, Some(1), "one notebook fails: {}", out.stderr);
    p
}

#[test]
fn the_index_works_in_a_browser_at_desktop_and_phone_widths() {
    let p = site();
    let index = p.path().join("site/index.html");
    let browser = Browser::launch();
    let shots = screenshot_dir("export-nb");
    for (width, name) in [(1280, "desktop"), (390, "phone")] {
        let page = browser.open(&index, width);

        // Every link names its notebook and leads to an exported page.
        let links: Vec<(String, String, String)> = page.eval(
            "[...document.querySelectorAll('main a')].map(a =>
               [a.textContent.trim(), a.getAttribute('href'),
                a.closest('.card').querySelector('.source').textContent])",
        );
        assert_eq!(links.len(), 9, "8 bundled notebooks and the app: {links:?}");
        for (text, href, file) in &links {
            let stem = file.trim_end_matches(".py").replace('_', " ");
            assert_eq!(text, &stem, "the link text names the notebook");
            let page_file = p.path().join("site").join(href);
            assert!(
                page_file.is_file(),
                "{href} (from {text}) is not an exported page"
            );
        }
        assert!(
            links.iter().any(|l| l.1 == "apps/sales_dashboard.html"),
            "{links:?}"
        );

        // The failed notebook is listed, not linked, and marked in words as well as colour.
        let failed: Vec<(String, String, String, String, String)> = page.eval(
            "[...document.querySelectorAll('.card')].filter(c => !c.querySelector('a')).map(c => [
               c.querySelector('.name').textContent, c.querySelector('.badge').textContent,
               c.querySelector('.error') ? c.querySelector('.error').textContent : '',
               getComputedStyle(c).borderColor,
               getComputedStyle(document.querySelector('.card.status-ok')).borderColor])",
        );
        assert_eq!(failed.len(), 1, "{failed:?}");
        let (nb, badge, error, border, ok_border) = &failed[0];
        assert_eq!(nb, "quarterly forecast");
        assert!(badge.contains("export failed"), "{badge}");
        assert!(error.contains("ValueError: boom"), "{error}");
        assert_ne!(border, ok_border, "the failed card stands out");
        let lede: String = page.eval("document.querySelector('.lede').textContent");
        assert!(lede.contains("10 notebooks, 1 failed to export"), "{lede}");

        page.assert_sound();
        page.screenshot(&shots.join(format!("export-nb-index-{name}.png")));
    }

    // A link followed in the browser opens the exported page.
    let page = browser.open(&index, 1280);
    let first: String = page.eval("document.querySelector('main a').href");
    let opened = browser.open(Path::new(first.trim_start_matches("file://")), 1280);
    let body: String = opened.eval("document.body.textContent");
    assert!(body.contains("page of"), "{body}");
}
