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
    if available("uv") && available("uvx") {
        return Ok(());
    }
    eprintln!("xtask: uv not found; installing uv from PyPI with pip");
    let pip = if available("pip") { "pip" } else { "pip3" };
    run(Command::new(pip).args(["install", "--quiet", "uv"])).context(
        "installing uv (needed to run marimo); install it yourself with `pip install uv`",
    )?;
    if !(available("uv") && available("uvx")) {
        bail!("pip installed uv, but `uv` is still not on PATH: add pip's script folder to PATH");
    }
    Ok(())
}

/// `program` to be run as root: directly when we are root, else through `sudo -n` (which fails
/// at once rather than asking for a password).
pub(crate) fn as_root(program: &str) -> Command {
    if rustix::process::geteuid().is_root() {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", program]);
        sudo
    }
}

/// Install a Debian package with apt-get (as root, see [`as_root`]).
pub(crate) fn apt_install(package: &str) -> Result<()> {
    if !available("apt-get") {
        bail!("no apt-get here to install {package} with");
    }
    let mut cmd = as_root("apt-get");
    cmd.args(["install", "-y", "-q", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut cmd).or_else(|first| {
        // A fresh machine may have no package lists yet.
        eprintln!("xtask: apt-get install failed ({first:#}); updating the package lists");
        run(as_root("apt-get").args(["update", "-q"]))?;
        run(&mut cmd)
    })
}

/// Make sure headless Chromium is here for the page tests, installing Debian's `chromium`.
pub(crate) fn ensure_chromium() -> Result<()> {
    if std::env::var_os("CHROMIUM").is_some() || available("chromium") {
        return Ok(());
    }
    eprintln!(
        "xtask: chromium not found; installing Debian's chromium package (the page tests need it)"
    );
    apt_install("chromium").context(
        "installing chromium for the browser tests; install it yourself (apt-get install chromium) \
         or set CHROMIUM to a Chrome or Chromium binary",
    )
}
