//! `cargo xtask demo`: the main job on bundled examples.

use std::process::Command;

use anyhow::Result;

use crate::tasks;

pub(crate) fn run(extra: &[String]) -> Result<()> {
    // A batch of real subprocesses through the core pool: progress, a failure, a timeout whose
    // escaped grandchild is killed, and the shared JSON report. A failing task is part of the
    // show, so exit code 1 from the example is expected.
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "fanout",
            "--example",
            "batch",
        ])
        .args(extra)
        .current_dir(tasks::root())
        .status()?;
    eprintln!(
        "xtask: the example batch exited with {status} (1: it contains a failing and a hanging job on purpose)"
    );
    Ok(())
}
