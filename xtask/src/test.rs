//! `cargo xtask test`: everything the test suite needs, then the suite.

use std::process::Command;

use anyhow::Result;

use crate::tasks;

pub(crate) fn run(extra: &[String]) -> Result<()> {
    tasks::ensure_uv()?;
    tasks::run(
        Command::new(env!("CARGO"))
            .args(["test", "--workspace"])
            .args(extra),
    )
}
