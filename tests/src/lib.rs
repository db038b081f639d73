//! Shared fixtures for the end-to-end tests of `export-nb`, `lorchestra` and `parallamr`.
//!
//! Each binary's end-to-end tests live in its own crate (`crates/<tool>/tests/it/`), because
//! cargo hands a test the path of a binary (`env!("CARGO_BIN_EXE_<name>")`) only inside the
//! package that owns it. What those tests share lives here: running a binary and reading what
//! it did, writing stand-in tools onto a `PATH`, temporary projects.
#![expect(
    clippy::disallowed_methods,
    reason = "tests run the real binaries and stand-in tools directly, from outside the core"
)]

#[cfg(feature = "browser")]
pub mod browser;
pub mod layering;
pub mod llm_server;
pub mod shell_oracle;
pub mod site_server;
pub mod slurm;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What a finished run of a binary left: exit code and both streams as text.
#[derive(Debug)]
pub struct Run {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A command for `bin` with stdin from /dev/null, `NO_COLOR` set and help wrapped at 100
/// columns, so output is plain and the same everywhere, and without the tools' own settings
/// from the environment of whoever runs the tests.
pub fn command(bin: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::null())
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env_remove("EXPORT_NB_ENV_DIR");
    cmd
}

/// Run `bin` with `args` in `dir` and collect what it printed.
pub fn run_in(bin: impl AsRef<OsStr>, dir: &Path, args: &[&str]) -> Run {
    command(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the binary runs")
        .into()
}

/// Write an executable script `name` into `dir` (a stand-in tool for a `PATH`), return its path.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the script executable");
    path
}

/// `dir` prepended to this process's `PATH`, for a child's environment.
pub fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("a valid PATH")
}

/// Send SIGINT to a running child, as Ctrl-C in its terminal would (to it alone: a terminal
/// would signal its whole process group, but the tools put their jobs in groups of their own).
pub fn interrupt(child: &std::process::Child) {
    signal(child, "-INT");
}

/// Send `sig` (`-HUP`, `-TERM`...) to `child` with `kill`.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "could not signal {}", child.id());
}

/// Whether a process is alive (a zombie counts as dead: it runs no code).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next());
        state != Some("Z") && state != Some("X")
    })
}

/// Wait up to 30 s for `cond`; panics naming `what` if it never holds.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The pid written in `path`, waiting for the file to be written.
pub fn read_pid(path: &Path) -> i32 {
    let mut pid = None;
    wait_for(&path.display().to_string(), || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    pid.expect("waited for")
}

/// The command-line contract every tool keeps: `--help` explains usage and every exit code,
/// `--version` prints `NAME VERSION`, an unknown flag is a usage error (exit 2) naming the flag.
pub fn assert_cli_contract(bin: &str, name: &str, version: &str) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let help = run_in(bin, dir.path(), &["--help"]);
    assert_eq!(help.code, Some(0), "{}", help.stderr);
    assert!(
        help.stdout.contains(&format!("Usage: {name}")),
        "{}",
        help.stdout
    );
    for code in ["0 ", "1 ", "2 ", "130 "] {
        assert!(
            help.stdout.contains(&format!("\n  {code}")),
            "exit code {code} is not documented in --help:\n{}",
            help.stdout
        );
    }

    // `NAME VERSION (COMMIT DATE, TARGET)`, as uv and ripgrep say what they are.
    let ver = run_in(bin, dir.path(), &["--version"]);
    assert_eq!(ver.code, Some(0));
    let line = ver.stdout.trim();
    let rest = line
        .strip_prefix(&format!("{name} {version} ("))
        .unwrap_or_else(|| panic!("--version: {line}"));
    let (commit_date, target) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", "))
        .unwrap_or_else(|| panic!("--version: {line}"));
    assert!(commit_date.split(' ').count() == 2, "--version: {line}");
    assert!(
        target.contains("-linux-") || target.contains("-apple-"),
        "--version: {line}"
    );

    let bad = run_in(bin, dir.path(), &["--no-such-flag"]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("--no-such-flag"), "{}", bad.stderr);
}

/// The flags every tool's batch command shares (`fanout-cli`), seen from outside: `--help` of
/// the command `run` (e.g. `["pipeline"]`; empty for the tool itself) lists each with one
/// spelling, `--jobs` is a hidden alias of `-j`, bad values are usage errors (exit 2) naming
/// the flag, and `completions SHELL` prints a script for each shell.
pub fn assert_shared_flags(bin: &str, name: &str, run: &[&str]) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = run.to_vec();
        args.extend(extra);
        run_in(bin, dir.path(), &args)
    };
    let help = with(&["--help"]);
    assert_eq!(help.code, Some(0), "{}", help.stderr);
    for flag in [
        "-j, --max-workers <N>",
        "--sequential",
        "--timeout <SECS>",
        "--dry-run",
        "-q, --quiet",
        "-v, --verbose",
        "--no-progress",
        "--report <FILE>",
        "--backend <BACKEND>",
        "--slurm-arg <ARG>",
    ] {
        assert!(
            help.stdout.contains(flag),
            "{flag} is not in --help:\n{}",
            help.stdout
        );
    }
    assert!(
        !help.stdout.contains("--jobs"),
        "--jobs is a hidden alias:\n{}",
        help.stdout
    );
    let top = run_in(bin, dir.path(), &["--help"]);
    assert!(
        top.stdout
            .contains("2    usage, input or configuration error (nothing ran)"),
        "the shared exit-status table is not in --help:\n{}",
        top.stdout
    );

    for (args, says) in [
        (&["-j", "0"][..], "-j/--max-workers"),
        (&["--jobs", "0"][..], "-j/--max-workers"),
        (&["--timeout", "-3"][..], "--timeout"),
        (&["-q", "-v"][..], "--quiet"),
        (&["--backend", "cloud"][..], "cloud"),
    ] {
        let out = with(args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(says),
            "{args:?} does not name {says}: {}",
            out.stderr
        );
    }

    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = run_in(bin, dir.path(), &["completions", shell]);
        assert_eq!(out.code, Some(0), "{shell}: {}", out.stderr);
        assert!(out.stdout.contains(name), "{shell}: {}", out.stdout);
        assert!(
            out.stdout.contains("max-workers"),
            "{shell}: {}",
            out.stdout
        );
    }
    let bad = run_in(bin, dir.path(), &["completions", "nosh"]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
}

/// A run as one text for a snapshot: the command line, exit code, stdout and stderr.
pub fn transcript(name: &str, args: &[&str], run: &Run) -> String {
    format!(
        "$ {name} {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        run.code.map_or("signal".to_owned(), |c| c.to_string()),
        run.stdout,
        run.stderr
    )
}

/// Insta settings for a tool's snapshots of runs in `dir`: [`snapshot_filters`] applied, and
/// snapshot files named without the test module's prefix.
pub fn snapshot_settings(dir: &Path) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    for (pattern, replacement) in snapshot_filters(dir) {
        s.add_filter(&pattern, replacement);
    }
    s.set_prepend_module_to_snapshot(false);
    s
}

/// Regex filters (pattern, replacement) that make a tool's output the same on every run, for
/// snapshots: the temporary folder, times, durations, run ids, speed-ups and percentages.
fn snapshot_filters(dir: &Path) -> Vec<(String, &'static str)> {
    let escape = |p: &Path| {
        p.to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '/' || c == '_' {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect::<String>()
    };
    let mut filters = Vec::new();
    if let Ok(real) = dir.canonicalize() {
        filters.push((escape(&real), "[DIR]"));
    }
    filters.push((escape(dir), "[DIR]"));
    for (pattern, replacement) in [
        (r"\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{4}", "[RUN_ID]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]"),
        (
            r"\b\d+h\d\dm\b|\b\d+m\d\ds\b|\b\d+(\.\d+)?m?s\b",
            "[DURATION]",
        ),
        (
            r"speedup \d+(\.\d+)?x, \d+% busy",
            "speedup [X], [PCT] busy",
        ),
        (r"\(\d+ record writes\)", "([N] record writes)"),
    ] {
        filters.push((pattern.to_owned(), replacement));
    }
    filters
}

/// The full path of `program` on `PATH`, if it is there.
pub fn which(program: &str) -> Option<PathBuf> {
    ::which::which(program).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_script_runs_from_path_and_reports_its_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        write_script(
            dir.path(),
            "fake-tool",
            "#!/bin/sh\necho \"fake $1\"\necho oops >&2\nexit 4\n",
        );
        let out: Run = command("fake-tool")
            .arg("hello")
            .env("PATH", path_with(dir.path()))
            .output()
            .unwrap()
            .into();
        assert_eq!(out.code, Some(4));
        assert_eq!(out.stdout, "fake hello\n");
        assert_eq!(out.stderr, "oops\n");
    }
}
