//! `cargo xtask screenshots`: the pages our tools write, as a browser shows them, into
//! `docs/screenshots/` (README shows them). The browser tests take the screenshots; this task
//! runs them with `FANOUT_SCREENSHOTS` pointing at the docs folder.

use std::process::Command;

use anyhow::{Result, bail};

use crate::tasks;

pub(crate) fn run(extra: &[String]) -> Result<()> {
    if !extra.is_empty() {
        bail!("`cargo xtask screenshots` takes no arguments");
    }
    tasks::ensure_chromium()?;
    // The gallery's screenshots are of real marimo pages.
    tasks::ensure_uv()?;
    let dir = tasks::root().join("docs/screenshots");
    std::fs::create_dir_all(&dir)?;
    tasks::run(
        Command::new(env!("CARGO"))
            .args([
                "test",
                "-p",
                "export-nb",
                "-p",
                "lorchestra",
                "-p",
                "parallamr",
                "--features",
                "export-nb/browser-tests,export-nb/real-uvx-tests,lorchestra/browser-tests,\
                 parallamr/browser-tests,testkit/browser-tests",
                "--test",
                "it",
                "browser::",
            ])
            .env("FANOUT_SCREENSHOTS", &dir),
    )?;
    let mut shots: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    shots.sort();
    if shots.is_empty() {
        bail!(
            "the browser tests wrote no screenshot into {}",
            dir.display()
        );
    }
    eprintln!(
        "xtask: screenshots in {}: {}",
        dir.display(),
        shots.join(", ")
    );
    Ok(())
}
