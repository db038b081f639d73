//! Issue 34, first part: what a card and a link preview show (from `[tool.marimo.opengraph]`
//! or the notebook's markdown), pictures from `__marimo__/assets`, `og:`/`twitter:` tags in
//! every page and the index, and `--base-url`'s canonical links and sitemap.

use crate::{Project, notebook};

/// A notebook whose first markdown is a heading and a paragraph.
fn with_markdown() -> String {
    "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _(mo):\n    mo.md(\"\"\"\n    \
     # Getting started\n\n    How to read these notebooks, in *two* minutes.\n    \"\"\")\n    \
     return\n"
        .to_owned()
}

fn with_header(header: &str) -> String {
    format!("# /// script\n{header}# ///\n{}", notebook("ok"))
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n a picture";

#[test]
fn cards_and_link_previews_come_from_the_header_or_the_markdown() {
    let p = Project::with_fake_uvx();
    p.write(
        "notebooks/sales.py",
        &with_header(
            "# [tool.marimo.opengraph]\n# title = \"Sales <b> & \\\"co\\\"\"\n\
             # description = \"Per region.\"\n# tags = [\"finance\", \"maps\"]\n",
        ),
    );
    p.write("notebooks/intro.py", &with_markdown());
    let assets = p.path().join("notebooks/__marimo__/assets/sales");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("opengraph.png"), PNG).unwrap();

    let out = p.run(&["notebooks", "--base-url", "https://me.github.io/nb"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // The picture is copied beside its page; the page's previews name it, absolute.
    assert_eq!(
        std::fs::read(p.path().join("_site/notebooks/sales.og.png")).unwrap(),
        PNG
    );
    let sales = p.read("_site/notebooks/sales.html");
    assert!(
        sales.contains(
            r#"<meta property="og:title" content="Sales &lt;b&gt; &amp; &quot;co&quot;">"#
        ),
        "{sales}"
    );
    assert!(!sales.contains("Sales <b>"), "the title is escaped");
    assert!(sales.contains(
        r#"<meta property="og:image" content="https://me.github.io/nb/notebooks/sales.og.png">"#
    ));
    assert!(sales.contains(r#"<meta name="twitter:card" content="summary_large_image">"#));
    assert!(
        sales.contains(
            r#"<link rel="canonical" href="https://me.github.io/nb/notebooks/sales.html">"#
        )
    );
    assert!(
        sales.contains("page of notebooks/sales.py"),
        "the page itself is kept"
    );
    let intro = p.read("_site/notebooks/intro.html");
    assert!(intro.contains(r#"<meta property="og:title" content="Getting started">"#));
    assert!(intro.contains(
        r#"<meta property="og:description" content="How to read these notebooks, in two minutes.">"#
    ));

    // The cards.
    let index = p.read("_site/index.html");
    assert!(index.contains(r#"<a href="notebooks/intro.html">Getting started</a>"#));
    assert!(
        index
            .contains(r#"<a href="notebooks/sales.html">Sales &lt;b&gt; &amp; &quot;co&quot;</a>"#)
    );
    assert!(index.contains(r#"<img src="notebooks/sales.og.png" alt="""#));
    assert!(index.contains(r#"<p class="description">Per region.</p>"#));
    assert!(index.contains(r#"data-tag="finance""#) && index.contains(r#"data-tag="maps""#));
    assert!(
        index.contains(r#"<meta property="og:url" content="https://me.github.io/nb/index.html">"#)
    );

    // The sitemap: the index and each page.
    let sitemap = p.read("_site/sitemap.xml");
    for page in ["index.html", "notebooks/intro.html", "notebooks/sales.html"] {
        assert!(
            sitemap.contains(&format!("<loc>https://me.github.io/nb/{page}</loc>")),
            "{sitemap}"
        );
    }

    // Without --base-url the pages are exported again with relative previews, and no sitemap
    // names the old address.
    p.take_calls();
    let out = p.run(&["notebooks"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        p.take_calls().len(),
        2,
        "both pages name their address: exported again"
    );
    let sales = p.read("_site/notebooks/sales.html");
    assert!(sales.contains(r#"<meta property="og:image" content="sales.og.png">"#));
    assert!(!sales.contains("canonical"));
    assert!(!p.exists("_site/sitemap.xml"));

    // A notebook that is gone takes its picture with it.
    std::fs::remove_file(p.path().join("notebooks/sales.py")).unwrap();
    let out = p.run(&["notebooks"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!p.exists("_site/notebooks/sales.html"));
    assert!(!p.exists("_site/notebooks/sales.og.png"));
}

#[test]
fn a_picture_outside_the_marimo_folder_or_at_an_url_is_never_fetched_by_the_site() {
    let p = Project::with_fake_uvx();
    std::fs::write(p.path().join("secret.png"), PNG).unwrap();
    p.write(
        "notebooks/a.py",
        &with_header("# [tool.marimo.opengraph]\n# image = \"../secret.png\"\n"),
    );
    p.write(
        "notebooks/b.py",
        &with_header("# [tool.marimo.opengraph]\n# image = \"https://example.com/b.png\"\n"),
    );
    let out = p.run(&["notebooks"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        !p.exists("_site/notebooks/a.og.png"),
        "only __marimo__/ is read"
    );
    let index = p.read("_site/index.html");
    assert!(!index.contains("<img"), "{index}");
    assert!(
        !index.contains("https://"),
        "the index fetches nothing from elsewhere"
    );
    // A link preview may name it: a chat app fetches it, not the site's visitors.
    assert!(
        p.read("_site/notebooks/b.html")
            .contains(r#"<meta property="og:image" content="https://example.com/b.png">"#)
    );
    let no_browser = p.run(&[
        "notebooks",
        "--thumbnails",
        "--chromium",
        "/nonexistent/chromium",
    ]);
    assert_eq!(no_browser.code, Some(2));
    assert!(
        no_browser
            .stderr
            .contains("--chromium /nonexistent/chromium: no such program"),
        "{}",
        no_browser.stderr
    );
    let bad = p.run(&["notebooks", "--base-url", "me.github.io"]);
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr.contains("is not an http(s) URL"),
        "{}",
        bad.stderr
    );
}

/// A photograph that fails is a warning, and the next run takes it again (the page is exported
/// again for it); once there, an unchanged page is left alone. A stand-in Chromium that fails,
/// then one that writes its picture.
#[test]
fn a_failed_thumbnail_is_taken_again_by_the_next_run() {
    use std::os::unix::fs::PermissionsExt as _;

    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook("ok"));
    let chrome = p.path().join("chrome");
    let install = |script: &str| {
        std::fs::write(&chrome, script).unwrap();
        std::fs::set_permissions(&chrome, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let chrome_arg = chrome.to_str().unwrap().to_owned();
    let args = [
        "notebooks",
        "--thumbnails",
        "--chromium",
        chrome_arg.as_str(),
    ];
    install("#!/bin/sh\necho 'no display' >&2\nexit 1\n");
    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "the page is published: {}", out.stderr);
    assert!(
        out.stderr
            .contains("warning: no thumbnail for notebooks/a.py (the next run tries again)"),
        "{}",
        out.stderr
    );
    assert!(!p.exists("_site/notebooks/a.thumb.png"));

    install(
        "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --screenshot=*) printf 'picture' > \"${a#--screenshot=}\";; esac; done\n",
    );
    p.take_calls();
    let out = p.run(&[&args[..], &["-v"]].concat());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("its page has no thumbnail yet (--thumbnails)"),
        "{}",
        out.stderr
    );
    assert_eq!(p.take_calls().len(), 1);
    assert_eq!(
        std::fs::read(p.path().join("_site/notebooks/a.thumb.png")).unwrap(),
        b"picture"
    );
    assert!(
        p.read("_site/index.html")
            .contains(r#"<img src="notebooks/a.thumb.png""#)
    );

    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        p.take_calls().is_empty(),
        "unchanged: not exported, not photographed"
    );

    // Without --thumbnails the next export of the page drops its photograph.
    p.write("notebooks/a.py", &notebook("changed"));
    let out = p.run(&["notebooks"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!p.exists("_site/notebooks/a.thumb.png"));
    assert!(!p.read("_site/index.html").contains("<img"));
}
