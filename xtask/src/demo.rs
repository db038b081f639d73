//! `cargo xtask demo`: the main job on bundled examples — export-nb exports the bundled marimo
//! notebooks to a static site in `target/demo/site`, with a photograph of each page on its card
//! (`--thumbnails`) when Chromium is here.

use std::process::Command;

use anyhow::Result;

use crate::tasks;

pub(crate) fn run(extra: &[String]) -> Result<()> {
    tasks::ensure_uv()?;
    tasks::run(Command::new(env!("CARGO")).args(["build", "--release", "-p", "export-nb"]))?;
    let root = tasks::root();
    let site = root.join("target/demo/site");
    let report = root.join("target/demo/export-report.json");
    let thumbnails: &[&str] = if tasks::available("chromium") {
        &["--thumbnails"]
    } else {
        eprintln!(
            "xtask: no chromium on PATH: the cards get no photographs (apt-get install chromium)"
        );
        &[]
    };
    tasks::run(
        Command::new(root.join("target/release/export-nb"))
            .arg("crates/export-cli/examples/notebooks")
            .arg("--output")
            .arg(&site)
            .arg("--title")
            .arg("export-nb demo")
            .arg("--report")
            .arg(&report)
            .args(thumbnails)
            .args(extra),
    )?;
    eprintln!(
        "\nxtask: the site is in {}; the run's report is {}.\n\
         xtask: to look at it, offline too: python3 -m http.server -d {} and open \
         http://localhost:8000/\n\
         xtask: run the demo again: nothing changed, so nothing is exported again.",
        site.display(),
        report.display(),
        site.strip_prefix(&root).unwrap_or(&site).display()
    );
    Ok(())
}
