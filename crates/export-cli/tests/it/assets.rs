//! `--assets local|cdn` with the stand-in uv: the stand-in marimo ships a frontend
//! (`marimo/_static`) and writes pages that load it from the CDN (static pages) or from beside
//! the page (WebAssembly pages), as marimo does.

use crate::{Project, notebook};

const FRONTEND: &str = "_site/_marimo/0.0.0+fake";
const CDN: &str = "https://cdn.jsdelivr.net/npm/@marimo-team/frontend@";

fn two_notebooks() -> Project {
    let p = Project::with_fake_uvx();
    p.write("notebooks/intro.py", &notebook("ok"));
    p.write("notebooks/deep/analysis.py", &notebook("ok"));
    p
}

#[test]
fn local_pages_load_the_one_frontend_copied_into_the_site() {
    let p = two_notebooks();
    let out = p.run(&["-j", "2"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let intro = p.read("_site/notebooks/intro.html");
    assert!(
        intro.contains(r#"<script src="../_marimo/0.0.0+fake/assets/index.js">"#)
            && intro.contains(r#"href="../_marimo/0.0.0+fake/favicon.ico""#),
        "{intro}"
    );
    let deep = p.read("_site/notebooks/deep/analysis.html");
    assert!(
        deep.contains(r#"src="../../_marimo/0.0.0+fake/assets/index.js""#),
        "{deep}"
    );
    for page in [&intro, &deep] {
        assert!(
            !page.contains(CDN),
            "no reference to the CDN is left: {page}"
        );
    }
    assert_eq!(
        p.read(&format!("{FRONTEND}/assets/index.js")),
        "// the stand-in frontend\n"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&p.read("_site/.export-nb/manifest.json")).unwrap();
    assert_eq!(manifest["frontends"], serde_json::json!(["0.0.0+fake"]));
    assert_eq!(
        manifest["pages"]["notebooks/intro.html"]["frontend"],
        "0.0.0+fake"
    );

    // An unchanged run exports nothing and copies nothing (a copy would replace the folder,
    // and with it this file); a changed notebook is exported into the frontend in place.
    p.take_calls();
    p.write(&format!("{FRONTEND}/assets/kept"), "");
    let again = p.run(&[]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(p.take_calls().is_empty());
    p.write("notebooks/intro.py", &notebook("changed"));
    let changed = p.run(&[]);
    assert_eq!(changed.code, Some(0), "{}", changed.stderr);
    assert_eq!(p.take_calls().len(), 1);
    assert!(p.exists(&format!("{FRONTEND}/assets/kept")));

    // A frontend folder removed by hand is noticed: its pages are exported again.
    std::fs::remove_dir_all(p.path().join("_site/_marimo")).unwrap();
    let restored = p.run(&[]);
    assert_eq!(restored.code, Some(0), "{}", restored.stderr);
    assert_eq!(p.take_calls().len(), 2);
    assert!(p.exists(&format!("{FRONTEND}/assets/index.js")));
}

/// Issue 27: a failed re-export keeps the last good page, so it keeps the frontend that page
/// loads (it used to drop its entry's frontend, and `_marimo/<version>` was pruned).
#[test]
fn a_failed_re_export_keeps_the_frontend_its_kept_page_loads() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/intro.py", &notebook("ok"));
    assert_eq!(p.run(&[]).code, Some(0));
    p.write("notebooks/intro.py", &notebook("FAKE_RAISE"));
    let out = p.run(&[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let page = p.read("_site/notebooks/intro.html");
    assert!(
        page.contains("../_marimo/0.0.0+fake/assets/index.js"),
        "{page}"
    );
    assert!(
        p.exists(&format!("{FRONTEND}/assets/index.js")),
        "the kept page still finds its frontend"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&p.read("_site/.export-nb/manifest.json")).unwrap();
    assert_eq!(manifest["frontends"], serde_json::json!(["0.0.0+fake"]));
}

#[test]
fn switching_to_the_cdn_re_exports_and_removes_the_frontend() {
    let p = two_notebooks();
    assert_eq!(p.run(&[]).code, Some(0));
    p.take_calls();
    let out = p.run(&["--assets", "cdn"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(p.take_calls().len(), 2, "the mode is part of the key");
    assert!(
        p.read("_site/notebooks/intro.html")
            .contains(&format!("{CDN}0.0.0+fake/dist/assets/index.js")),
        "pages as marimo writes them"
    );
    assert!(
        !p.exists("_site/_marimo"),
        "a frontend no page uses is removed"
    );

    // The setting from pyproject.toml, and back to local.
    p.write("pyproject.toml", "[tool.export-nb]\nassets = \"local\"\n");
    assert_eq!(p.run(&[]).code, Some(0));
    assert_eq!(p.take_calls().len(), 2);
    assert!(p.exists(&format!("{FRONTEND}/assets/index.js")));
    p.write("pyproject.toml", "[tool.export-nb]\nassets = \"nearby\"\n");
    let bad = p.run(&[]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("pyproject.toml") && bad.stderr.contains("nearby"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_new_marimo_version_replaces_the_old_frontend() {
    let p = two_notebooks();
    assert_eq!(p.run(&[]).code, Some(0));
    let out = p.run(&["--marimo-version", "1.0.0"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        p.read("_site/notebooks/intro.html")
            .contains("../_marimo/1.0.0/assets/index.js")
    );
    assert!(p.exists("_site/_marimo/1.0.0/assets/index.js"));
    assert!(!p.exists(FRONTEND), "the unused version is removed");
}

#[test]
fn wasm_pages_share_the_sites_frontend() {
    let p = Project::with_fake_uvx();
    p.write("apps/a.py", &notebook("ok"));
    p.write("wasm/w.py", &notebook("ok"));
    let out = p.run(&["--apps", "apps", "--wasm", "wasm"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for page in ["_site/apps/a.html", "_site/notebooks_wasm/w.html"] {
        let html = p.read(page);
        assert!(
            html.contains(r#"<script src="../_marimo/0.0.0+fake/assets/index.js">"#),
            "{html}"
        );
    }
    assert!(!p.exists("_site/apps/assets") && !p.exists("_site/apps/favicon.ico"));
    assert!(!p.exists("_site/notebooks_wasm/assets"));

    // With the CDN mode, marimo's own layout: a copy beside the pages.
    let cdn = p.run(&["--apps", "apps", "--wasm", "wasm", "--assets", "cdn"]);
    assert_eq!(cdn.code, Some(0), "{}", cdn.stderr);
    assert!(p.exists("_site/apps/assets/index.js"));
    assert!(
        p.read("_site/apps/a.html")
            .contains(r#"src="./assets/index.js""#)
    );
    assert!(!p.exists("_site/_marimo"));

    // Back to local: the copies beside the pages go, what else is there stays.
    p.write("_site/apps/mine.txt", "not export-nb's");
    let local = p.run(&["--apps", "apps", "--wasm", "wasm"]);
    assert_eq!(local.code, Some(0), "{}", local.stderr);
    assert!(!p.exists("_site/apps/assets") && !p.exists("_site/apps/favicon.ico"));
    assert!(!p.exists("_site/notebooks_wasm/assets"));
    assert!(p.exists("_site/apps/mine.txt") && p.exists("_site/apps/a.html"));
}

#[test]
fn a_page_whose_frontend_cannot_be_local_fails_and_is_not_installed() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook("ok"));

    // The page asks for another version's frontend than its environment has.
    let out = p.run_env(
        &["--report", "report.json"],
        &[("FAKE_PAGE_VERSION", "9.9.9")],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report = crate::fake::report(&p);
    let error = report["tasks"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&format!(
            "--assets local: the page loads marimo's frontend from \
             {CDN}9.9.9/dist/favicon.ico, but the environment has marimo 0.0.0+fake"
        )),
        "{error}"
    );
    assert!(
        !p.exists("_site/notebooks/a.html"),
        "no half-rewritten page"
    );

    // The environment's marimo ships no frontend.
    let out = p.run_env(
        &["--marimo-version", "0.1.0", "--report", "report.json"],
        &[("FAKE_UV_NO_FRONTEND", "1")],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report = crate::fake::report(&p);
    let error = report["tasks"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("marimo 0.1.0 in the notebook's environment has no frontend to copy")
            && error.contains("--assets cdn"),
        "{error}"
    );
    assert!(!p.exists("_site/notebooks/a.html"));
    assert!(!p.exists("_site/_marimo/0.1.0"));

    // The way out it names works.
    let cdn = p.run_env(
        &["--marimo-version", "0.1.0", "--assets", "cdn"],
        &[("FAKE_UV_NO_FRONTEND", "1")],
    );
    assert_eq!(cdn.code, Some(0), "{}", cdn.stderr);
    assert!(p.exists("_site/notebooks/a.html"));
}

#[test]
fn notebooks_pinning_different_marimo_versions_get_a_frontend_each() {
    let p = Project::with_fake_uvx();
    for (i, version) in ["1.0.0", "2.0.0", "1.0.0", "2.0.0"].iter().enumerate() {
        p.write(
            &format!("notebooks/n{i}.py"),
            &crate::fake::notebook_with_deps(&[&format!("marimo=={version}")]),
        );
    }
    let out = p.run(&["-j", "4"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for (i, version) in ["1.0.0", "2.0.0", "1.0.0", "2.0.0"].iter().enumerate() {
        let page = p.read(&format!("_site/notebooks/n{i}.html"));
        assert!(
            page.contains(&format!("../_marimo/{version}/assets/index.js")),
            "{page}"
        );
        assert!(p.exists(&format!("_site/_marimo/{version}/assets/index.js")));
    }
}
