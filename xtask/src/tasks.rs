//! Helpers shared by the tasks: running commands loudly, finding the workspace.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of this crate's folder).
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Run a command in the workspace root, echoing it first; fail if it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `program` runs (`program --version` succeeds).
pub(crate) fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Make sure `uv` and `uvx` are on `PATH`, installing them with pip if missing.
pub(crate) fn ensure_uv() -> Result<()> {
    if available("uvx") {
        return Ok(());
    }
    eprintln!("xtask: uvx not found; installing uv from PyPI with pip");
    let pip = if available("pip") { "pip" } else { "pip3" };
    run(Command::new(pip).args(["install", "--quiet", "uv"])).context(
        "installing uv (needed to run marimo); install it yourself with `pip install uv`",
    )?;
    if !available("uvx") {
        bail!("pip installed uv, but `uvx` is still not on PATH: add pip's script folder to PATH");
    }
    Ok(())
}
