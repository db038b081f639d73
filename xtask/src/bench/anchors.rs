//! The tools people would use instead: found, installed where a package exists, or skipped with
//! the reason. A missing anchor never fails the bench.

use std::process::{Command, Stdio};

use crate::tasks;

/// marimushka, pinned so that runs compare like with like.
pub(crate) const MARIMUSHKA: &str = "marimushka@0.4.0";

/// One anchor's state: its version when it runs, else why not.
pub(crate) type Availability = Result<String, String>;

#[derive(Debug)]
pub(crate) struct Anchors {
    pub(crate) parallel: Availability,
    pub(crate) xargs: Availability,
    pub(crate) curl: Availability,
    /// GNU make: the anchor of deciding that targets are up to date.
    pub(crate) make: Availability,
    /// Only looked for when the notebook export scenario runs.
    pub(crate) marimushka: Option<Availability>,
}

impl Anchors {
    pub(crate) fn find(with_marimushka: bool) -> Self {
        Anchors {
            parallel: gnu_parallel(),
            xargs: first_line("xargs", &["--version"])
                .ok_or_else(|| "xargs not found (it comes with findutils)".to_owned()),
            curl: first_line("curl", &["--version"])
                .ok_or_else(|| "curl not found (apt-get install curl)".to_owned()),
            make: first_line("make", &["--version"])
                .ok_or_else(|| "GNU make not found (apt-get install make)".to_owned()),
            marimushka: with_marimushka.then(marimushka),
        }
    }

    /// `(name, version)` of each anchor that runs, for the report's machine section.
    pub(crate) fn versions(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (name, a) in [
            ("GNU parallel", &self.parallel),
            ("xargs", &self.xargs),
            ("curl", &self.curl),
            ("GNU make", &self.make),
        ] {
            if let Ok(version) = a {
                v.push((name.to_owned(), version.clone()));
            }
        }
        if let Some(Ok(version)) = &self.marimushka {
            v.push(("marimushka".to_owned(), version.clone()));
        }
        v
    }
}

/// The first line `program ARGS` prints, if it runs and succeeds.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or("").trim().to_owned())
}

/// GNU parallel, installed from Debian when it is missing and we may install packages.
fn gnu_parallel() -> Availability {
    let version = || first_line("parallel", &["--will-cite", "--version"]);
    if let Some(v) = version() {
        return Ok(v);
    }
    eprintln!("xtask: GNU parallel not found; installing it from Debian");
    if let Err(e) = tasks::apt_install("parallel") {
        return Err(format!(
            "GNU parallel not found and could not be installed ({e:#}); apt-get install parallel"
        ));
    }
    version().ok_or_else(|| "GNU parallel installed but does not run".to_owned())
}

/// marimushka from PyPI through uvx (uv itself from PyPI through pip).
fn marimushka() -> Availability {
    if let Err(e) = tasks::ensure_uv() {
        return Err(format!("uv is needed to run marimushka: {e:#}"));
    }
    match Command::new("uvx")
        .args([MARIMUSHKA, "--help"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(MARIMUSHKA.replace('@', " ")),
        Ok(out) => Err(format!(
            "uvx {MARIMUSHKA} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => Err(format!("could not run uvx: {e}")),
    }
}
