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
            // The title of its [tool.marimo.opengraph], else its name.
            let stem = file.trim_end_matches(".py").replace('_', " ");
            let expected = if file == "hello_marimo.py" {
                "Hello, marimo"
            } else if file == "sales_dashboard.py" {
                "sales dashboard"
            } else {
                text.as_str()
            };
            assert_eq!(text, expected, "the link text is the notebook's title");
            assert!(
                !text.is_empty() && (file == "sales_dashboard.py" || text != &stem),
                "the bundled notebooks have titles of their own: {text} ({file})"
            );
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

        // Cards say what a notebook is; the tag filter shows those with a tag.
        let description: String = page.eval(
            "[...document.querySelectorAll('.card')].find(c => c.textContent.includes('Hello, marimo')).querySelector('.description').textContent",
        );
        assert!(description.starts_with("A first notebook"), "{description}");
        page.click(".filter button[data-tag='math']");
        let shown: Vec<String> = page.eval(
            "[...document.querySelectorAll('.card')].filter(c => !c.hidden).map(c => c.querySelector('a, .name').textContent)",
        );
        assert_eq!(
            shown,
            ["Collatz sequences", "Fibonacci numbers", "Prime numbers"],
            "the cards tagged math"
        );
        let apps_hidden: bool =
            page.eval("document.querySelector('section[aria-labelledby=apps]').hidden");
        assert!(apps_hidden, "a section with no card shown is hidden");
        page.click(".filter button[data-tag='math']");
        let all: usize =
            page.eval("[...document.querySelectorAll('.card')].filter(c => !c.hidden).length");
        assert_eq!(all, 10, "pressed again, the filter is off");

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

/// A notebook whose rendered output is `text`, computed in a cell (so it is in no source).
#[cfg(feature = "real-uvx-tests")]
fn computing(expression: &str) -> String {
    format!(
        "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    import marimo as mo\n    \
         return (mo,)\n\n\n@app.cell\ndef _(mo):\n    mo.md(f\"The answer is {{{expression}}}.\")\n    \
         return\n\n\nif __name__ == \"__main__\":\n    app.run()\n"
    )
}

/// Real marimo pages with `--assets local`, served from 127.0.0.1 as a user would serve the
/// site: each renders its cells' outputs with no request leaving the machine and no console
/// error; a link of the index leads to a rendered page; with `--assets cdn` the same page asks
/// the CDN for its frontend.
#[cfg(feature = "real-uvx-tests")]
#[test]
fn real_marimo_pages_render_offline_from_the_sites_frontend() {
    use std::time::Duration;

    use testkit::site_server::SiteServer;

    let p = Project::create();
    p.write("notebooks/sums.py", &computing("sum(range(1, 101)) * 3"));
    p.write("notebooks/deeper/powers.py", &computing("2 ** 20 + 1"));
    let out = p.run_with(&["-j", "2", "--no-sandbox"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let site = SiteServer::start(&p.path().join("_site"));
    let browser = Browser::launch();
    let shots = screenshot_dir("export-nb");
    for (page, shown) in [
        ("notebooks/sums.html", "The answer is 15150."),
        ("notebooks/deeper/powers.html", "The answer is 1048577."),
    ] {
        let html = p.read(&format!("_site/{page}"));
        assert!(
            !html.contains("cdn.jsdelivr.net/npm/@marimo-team"),
            "{page}"
        );
        let tab = browser.open_url(&site.url_of(page), 1280);
        let expression = format!("document.body.innerText.includes({shown:?})");
        assert!(
            tab.wait_until(&expression, Duration::from_secs(60)),
            "{page} did not render {shown:?}; requests: {:?}; console: {:?}",
            tab.requests(),
            tab.console_errors()
        );
        assert_eq!(tab.requests_leaving_the_machine(), Vec::<String>::new());
        assert_eq!(tab.console_errors(), Vec::<String>::new(), "{page}");
        assert!(
            tab.requests()
                .iter()
                .any(|r| r.contains("/_marimo/") && r.contains("/assets/")),
            "the frontend came from the site"
        );
        if page.ends_with("sums.html") {
            tab.screenshot(&shots.join("export-nb-notebook-local-assets.png"));
        }
    }

    // From the index, a click leads to a rendered page.
    let index = browser.open_url(&site.url_of("index.html"), 1280);
    let href: String = index.eval("document.querySelector('main a[href$=\"sums.html\"]').href");
    let followed = browser.open_url(&href, 1280);
    assert!(followed.wait_until(
        "document.body.innerText.includes('The answer is 15150.')",
        Duration::from_secs(60)
    ));

    // The same notebook with --assets cdn: the page asks jsDelivr for marimo's frontend.
    let out = p.run_with(&["--no-sandbox", "--assets", "cdn", "-o", "cdn_site"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let cdn_site = SiteServer::start(&p.path().join("cdn_site"));
    let tab = browser.open_url(&cdn_site.url_of("notebooks/sums.html"), 1280);
    let asked = || {
        tab.requests_leaving_the_machine()
            .iter()
            .any(|r| r.starts_with("https://cdn.jsdelivr.net/npm/@marimo-team/frontend@"))
    };
    let start = std::time::Instant::now();
    while !asked() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(asked(), "{:?}", tab.requests());
    assert!(!p.exists("cdn_site/_marimo"));
}

/// `watch --serve`: a page open in the browser reloads itself when its notebook is saved.
#[test]
fn a_page_served_by_watch_reloads_itself_when_its_notebook_changes() {
    use std::time::{Duration, Instant};

    use crate::watch::{Watching, free_port};

    let p = Project::with_fake_uvx();
    p.write("notebooks/live.py", &notebook("SHOW: first version"));
    let port = free_port();
    let w = Watching::start(&p, &["--no-progress", &format!("--serve=127.0.0.1:{port}")]);
    w.wait_for_round(1);
    let browser = Browser::launch();
    let page = browser.open_url(
        &format!("http://127.0.0.1:{port}/notebooks/live.html"),
        1280,
    );
    let body: String = page.eval("document.body.textContent");
    assert!(body.contains("SHOW: first version"), "{body}");
    let saved = Instant::now();
    p.write("notebooks/live.py", &notebook("SHOW: second version"));
    assert!(
        page.wait_until(
            "document.body.textContent.includes('SHOW: second version')",
            Duration::from_secs(30)
        ),
        "the page did not reload; watch printed:\n{}",
        w.text()
    );
    eprintln!(
        "saved to reloaded page (stand-in marimo): {:?}",
        saved.elapsed()
    );
    assert_eq!(page.console_errors(), Vec::<String>::new());
    assert_eq!(w.interrupt(), Some(130));
}

/// `watch --serve` with real marimo: an edited notebook's open page shows the new output.
#[cfg(feature = "real-uvx-tests")]
#[test]
fn real_marimo_page_served_by_watch_shows_the_edit() {
    use std::time::{Duration, Instant};

    use crate::watch::{Watching, free_port};

    let p = Project::create();
    p.write("notebooks/live.py", &computing("6 * 7"));
    let envs =
        std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/export-nb/envs");
    let port = free_port();
    let w = Watching::start(
        &p,
        &[
            "--no-progress",
            "--no-sandbox",
            "--env-dir",
            envs.to_str().unwrap(),
            &format!("--serve=127.0.0.1:{port}"),
        ],
    );
    w.wait_for_round(1);
    let browser = Browser::launch();
    let page = browser.open_url(
        &format!("http://127.0.0.1:{port}/notebooks/live.html"),
        1280,
    );
    assert!(
        page.wait_until(
            "document.body.innerText.includes('The answer is 42.')",
            Duration::from_secs(60)
        ),
        "{}",
        w.text()
    );
    let saved = Instant::now();
    p.write("notebooks/live.py", &computing("6 * 9"));
    assert!(
        page.wait_until(
            "document.body.innerText.includes('The answer is 54.')",
            Duration::from_secs(120)
        ),
        "the page did not show the edit; watch printed:\n{}",
        w.text()
    );
    eprintln!(
        "saved to reloaded page (real marimo): {:?}\n{}",
        saved.elapsed(),
        w.text()
    );
    assert_eq!(w.interrupt(), Some(130));
}

/// `--thumbnails` and the search box on real marimo pages: each page photographed (a picture of
/// the rendered page, not a blank one), an unchanged page not photographed again, and a word
/// that appears only in one notebook's rendered output found by typing it into the index.
#[cfg(feature = "real-uvx-tests")]
#[test]
fn real_pages_get_thumbnails_and_their_outputs_are_searchable() {
    use std::time::{Duration, SystemTime};

    let p = Project::create();
    // Bundled notebooks, for the gallery's screenshots: a markdown-only one among them (the
    // kind whose page draws last).
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/notebooks");
    for name in ["hello_marimo.py", "temperature_table.py", "word_counts.py"] {
        p.write(
            &format!("notebooks/{name}"),
            &std::fs::read_to_string(bundled.join(name)).unwrap(),
        );
    }
    // 7 * 11 * 13 * 1009 = 1010009: in no source, only in the rendered output.
    p.write("notebooks/product.py", &computing("7 * 11 * 13 * 1009"));
    // And a word only printed, in no source either.
    p.write(
        "notebooks/printer.py",
        "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    \
         print(\"quetzal\" + \"coatl\")\n    return\n\n\nif __name__ == \"__main__\":\n    \
         app.run()\n",
    );
    let chromium = testkit::browser::chromium();
    let chromium = chromium.to_str().unwrap();
    let args = [
        "-j",
        "2",
        "--no-sandbox",
        "--thumbnails",
        "--chromium",
        chromium,
    ];
    let out = p.run_with(&args, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("no thumbnail"), "{}", out.stderr);

    let thumb = p.path().join("_site/notebooks/product.thumb.png");
    let png = std::fs::read(&thumb).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (600, 315), "a small picture of fixed size");
    assert!(png.len() < 200_000, "{} bytes", png.len());
    let index = p.read("_site/index.html");
    assert!(
        index.contains(r#"<img src="notebooks/product.thumb.png""#),
        "{index}"
    );
    assert!(
        p.read("_site/notebooks/product.html")
            .contains(r#"<meta property="og:image" content="product.thumb.png">"#)
    );

    // Served over HTTP: the index's pictures are read back in a canvas (gallery_screenshots).
    let site = testkit::site_server::SiteServer::start(&p.path().join("_site"));
    let browser = Browser::launch();
    // Nothing changed: no page exported, so none photographed again.
    let before = std::fs::metadata(&thumb).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let out = p.run_with(&args, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::metadata(&thumb).unwrap().modified().unwrap(),
        before
    );
    assert!(before < SystemTime::now());

    // Search: typed as a user types, the word leads to its notebook only.
    let page = browser.open(&p.path().join("_site/index.html"), 1280);
    page.type_into("#search", "1010009");
    assert!(
        page.wait_until(
            "document.getElementById('matches').textContent === '1 notebook match'",
            Duration::from_secs(5)
        ),
        "{}",
        page.eval::<String>("document.getElementById('matches').textContent")
    );
    let hits: Vec<(String, String)> = page.eval(
        "[...document.querySelectorAll('#results a')].map(a => [a.textContent, a.getAttribute('href')])",
    );
    assert_eq!(
        hits,
        [("product".to_owned(), "notebooks/product.html".to_owned())]
    );
    let snippet: String = page.eval("document.querySelector('#results .snippet').textContent");
    assert!(snippet.contains("The answer is 1010009."), "{snippet}");
    for _ in 0.."1010009".len() {
        page.press("Backspace");
    }
    page.type_into("#search", "quetzalcoatl");
    assert!(page.wait_until(
        "document.querySelector('#results a') && document.querySelector('#results a').textContent === 'printer'",
        Duration::from_secs(5)
    ));
    page.assert_sound();

    gallery_screenshots(&browser, &site);
}

/// The gallery as a reader sees it, for README.
#[cfg(feature = "real-uvx-tests")]
fn gallery_screenshots(browser: &Browser, site: &testkit::site_server::SiteServer) {
    use std::time::Duration;

    let shots = screenshot_dir("export-nb");
    for (width, name) in [(1280, "desktop"), (390, "phone")] {
        let page = browser.open_url(&site.url_of("index.html"), width);
        page.type_into("#search", "tables");
        // The cards' pictures load lazily, as a reader scrolls; a screenshot wants them all.
        // A lazy picture headless Chromium has deferred is not asked for when its `loading`
        // turns eager, nor when it is scrolled into view: in 7 of 12 runs here the server saw
        // six requests (the page, its script, four pictures) and never the fifth picture's,
        // which came, if at all, as the page closed. So each picture not yet complete is
        // replaced by a fresh eager copy, under a URL of its own (the deferred one may stay
        // attached to its URL), which is asked for at once (in 0.1 s in every run); then every
        // picture must arrive whole and be drawn.
        page.eval::<usize>(
            "[...document.images].filter(i => !i.complete).map(i => {
               const n = i.cloneNode(); n.loading = 'eager'; n.src = i.src.split('?')[0] + '?eager';
               i.replaceWith(n); return 1; }).length",
        );
        let all_loaded = "[...document.images].every(i => i.complete && i.naturalWidth === 600)";
        let loaded = page.wait_until(all_loaded, Duration::from_secs(60));
        assert!(
            loaded,
            "{:?}",
            page.eval::<Vec<(String, bool, u32)>>(
                "[...document.images].map(i => [i.src, i.complete, i.naturalWidth])"
            )
        );
        // Every photograph drawn: below marimo's header bar, more than a few pixels differ from
        // the background (the most common colour), as export-nb itself checks.
        let drawn: Vec<(String, f64)> = page.eval(
            "[...document.images].map(img => { const c = document.createElement('canvas');
               const w = c.width = img.naturalWidth, h = c.height = img.naturalHeight; const g = c.getContext('2d');
               g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, w, h).data; const counts = new Map();
               const y0 = Math.floor(h / 10), y1 = h - Math.floor(h / 10);
               for (let y = y0; y < y1; y++) for (let x = 0; x < w; x++) {
                 const i = (y * w + x) * 4; const k = d[i] << 16 | d[i+1] << 8 | d[i+2];
                 counts.set(k, (counts.get(k) || 0) + 1); }
               const total = (y1 - y0) * w; return [img.src, (total - Math.max(...counts.values())) / total]; })",
        );
        assert_eq!(drawn.len(), 5, "{drawn:?}");
        for (src, part) in &drawn {
            assert!(*part > 0.005, "{src} is blank ({part} of its pixels drawn)");
        }
        page.assert_sound();
        page.screenshot(&shots.join(format!("export-nb-gallery-{name}.png")));
    }
}
