//! `fanout-cli`: the command-line vocabulary `export-nb`, `lorchestra` and `parallamr` share,
//! defined once so the tools cannot drift apart.
//!
//! - [`RunArgs`]: the flags of every command that runs a batch: `-j/--max-workers` (with
//!   `--jobs` as a hidden alias), `--sequential`, `--timeout`, `--dry-run`, `-q/--quiet`,
//!   `-v/--verbose`, `--no-progress`, `--report`, `--backend`, `--slurm-arg`, `--slurm-mode`,
//!   `--slurm-nodes`. Their help text is
//!   written here, with each tool's name for its tasks ([`Tool`]).
//! - [`UsageResult::usage`] marks an error as the user's (exit 2); [`finish`] prints an error
//!   and maps it to its exit status through [`ExitStatus::of_error`].
//! - [`Shell`] and [`print_completions`]: `<tool> completions bash|zsh|fish|powershell`.
//! - [`after_help`]: examples, then the exit-status table of [`fanout::exit::exit_codes_help`].
//! - [`VERSION`]: what `--version` says (version, commit, date, target).
//!
//! The values stay optional where a tool merges them with a configuration file (flags win);
//! the `*_or` methods apply the tool's defaults and check the result.
#![expect(
    clippy::print_stderr,
    reason = "finish() prints the error that ends a run: the one message every tool prints alike"
)]

use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use fanout::{ExitStatus, Launcher, MaxWorkers, ProgressMode, UsageError};

pub use backend::{
    SlurmMode, check_slurm_nodes, checked_launcher, launcher, launcher_in, packed_allocation,
    placed,
};
pub use clap_complete::Shell;

mod backend;
mod flags;

/// What `--version` prints after the tool's name: the version, the git commit and its date, and
/// the target (`0.1.0 (abc123456 2026-12-03, x86_64-unknown-linux-gnu)`), so a bug report says
/// what ran. Every tool is built from this workspace, at this version.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FANOUT_BUILD_COMMIT"),
    " ",
    env!("FANOUT_BUILD_DATE"),
    ", ",
    env!("FANOUT_BUILD_TARGET"),
    ")"
);

/// How many lines of a failure's output `-v/--verbose` shows under it.
pub const VERBOSE_DETAIL_LINES: usize = 200;

/// What a tool calls its tasks and how many it runs at once: the parts of the shared help
/// text and defaults that differ between tools.
pub trait Tool {
    /// The program's name, for messages: `export-nb`.
    const NAME: &'static str;
    /// Its tasks, singular and plural: `("export", "exports")`.
    const NOUN: (&'static str, &'static str);
    /// The most tasks it runs at once.
    const MAX_WORKERS_CAP: usize;
    /// How many run at once by default.
    const MAX_WORKERS_DEFAULT: Workers;
    /// An environment variable read when `-j` is not given.
    const MAX_WORKERS_ENV: Option<&'static str> = None;
    /// What `--timeout` limits, after "Seconds": `one export may take before its whole process
    /// tree is killed [default: 300]`.
    const TIMEOUT_HELP: &'static str;
    /// What `--dry-run` prints: `the environments and export commands that would run`.
    const DRY_RUN_HELP: &'static str;
    /// What a failure's output is called in `--verbose`'s help: `marimo's output`.
    const OUTPUT_NAME: &'static str = "output";
}

/// A tool's default number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// As many as the cores this process may use (at most the cap).
    Cores,
    /// This many.
    Fixed(usize),
}

/// The flags every batch-running command shares. See the crate docs.
#[derive(Debug, Clone, Default)]
pub struct RunArgs<T> {
    pub max_workers: Option<usize>,
    pub sequential: bool,
    /// Seconds, as given (checked by [`RunArgs::timeout_or`]).
    pub timeout: Option<f64>,
    pub dry_run: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub no_progress: bool,
    pub report: Option<PathBuf>,
    pub backend: Option<String>,
    pub slurm_args: Vec<String>,
    /// `--slurm-mode`: a Slurm job per task, or one allocation for the batch.
    pub slurm_mode: SlurmMode,
    /// `--slurm-nodes N`: the allocation of `--slurm-mode packed` spread over N nodes.
    pub slurm_nodes: Option<u32>,
    pub tool: PhantomData<T>,
}

impl<T: Tool> RunArgs<T> {
    fn default_help() -> String {
        let default = match T::MAX_WORKERS_DEFAULT {
            Workers::Cores => "the number of cores".to_owned(),
            Workers::Fixed(n) => n.to_string(),
        };
        match T::MAX_WORKERS_ENV {
            Some(var) => format!("[env: {var}] [default: {default}]"),
            None => format!("[default: {default}]"),
        }
    }

    /// `-j`, then the tool's environment variable, then `fallback` (a configuration file's
    /// value, and where it was written, for errors), then the tool's default; `--sequential` is
    /// one. Checked against the cap.
    pub fn max_workers_or(&self, fallback: Option<(usize, &str)>) -> Result<MaxWorkers> {
        if self.sequential {
            return Ok(MaxWorkers::one());
        }
        let cap = T::MAX_WORKERS_CAP;
        if let Some(n) = self.max_workers {
            return MaxWorkers::new(n, cap).context("-j/--max-workers").usage();
        }
        // An empty variable counts as unset.
        if let Some(var) = T::MAX_WORKERS_ENV
            && let Some(value) =
                std::env::var_os(var).filter(|v| !v.to_string_lossy().trim().is_empty())
        {
            let text = value.to_string_lossy();
            let n: usize = text
                .trim()
                .parse()
                .map_err(|_| {
                    anyhow::anyhow!("{var}={text:?} is not a whole number of {}", T::NOUN.1)
                })
                .usage()?;
            return MaxWorkers::new(n, cap)
                .with_context(|| format!("{var}={n}"))
                .usage();
        }
        if let Some((n, source)) = fallback {
            return MaxWorkers::new(n, cap)
                .with_context(|| source.to_owned())
                .usage();
        }
        Ok(match T::MAX_WORKERS_DEFAULT {
            Workers::Cores => MaxWorkers::available(cap),
            Workers::Fixed(n) => MaxWorkers::new(n, cap).expect("the tool's default is in range"),
        })
    }

    /// `--timeout`, else `fallback` (seconds, and where they were written, for errors),
    /// checked; `None` when neither is set.
    pub fn timeout_or(&self, fallback: Option<(f64, &str)>) -> Result<Option<Duration>> {
        let (secs, source) = match (self.timeout, fallback) {
            (Some(secs), _) => (secs, "--timeout"),
            (None, Some((secs, source))) => (secs, source),
            (None, None) => return Ok(None),
        };
        fanout::timeout_from_secs(secs)
            .map(Some)
            .map_err(|why| anyhow::anyhow!("{source} {secs}: {why}"))
            .usage()
    }

    /// `-q`: failures and the summary; `-v` or `--no-progress`: a line per task; else a bar on a
    /// terminal and lines elsewhere.
    pub fn progress(&self) -> ProgressMode {
        if self.quiet {
            ProgressMode::Quiet
        } else if self.verbose || self.no_progress {
            ProgressMode::Plain
        } else {
            ProgressMode::Auto
        }
    }

    /// How many lines of a failure's output to show under it: [`VERBOSE_DETAIL_LINES`] with
    /// `-v`, else the tool's `normal`.
    pub fn detail_lines(&self, normal: usize) -> usize {
        if self.verbose {
            VERBOSE_DETAIL_LINES
        } else {
            normal
        }
    }

    /// The backend named by `--backend` (else `fallback`, else local) with the `--slurm-arg`s
    /// (else `fallback_args`), checked before anything runs: Slurm must be usable here. No
    /// allocation is asked for yet: [`placed`] does that, with `--slurm-mode`,
    /// `--slurm-nodes` and `-j`, once the tool's inputs are read.
    pub fn launcher_or(
        &self,
        fallback: Option<&str>,
        fallback_args: &[String],
    ) -> Result<Launcher> {
        let backend = self.backend.as_deref().or(fallback).unwrap_or("local");
        let args = if self.slurm_args.is_empty() {
            fallback_args
        } else {
            &self.slurm_args
        };
        checked_launcher(backend, args, self.slurm_mode, self.slurm_nodes)
    }
}

/// Marks errors as the user's: what they asked for cannot run (exit 2).
pub trait UsageResult<T> {
    fn usage(self) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> UsageResult<T> for Result<T, E> {
    fn usage(self) -> Result<T> {
        self.map_err(|e| anyhow::Error::new(UsageError(e.into().into())))
    }
}

/// The end of a run: the status, or the error printed as `<tool>: error: ...` and mapped to
/// its class (usage 2, else 1).
pub fn finish<T: Tool>(result: Result<ExitStatus>) -> ExitStatus {
    match result {
        Ok(status) => status,
        Err(e) => {
            eprintln!("{}: error: {e:#}", T::NAME);
            ExitStatus::of_error(e.as_ref())
        }
    }
}

/// The user's cache folder: `$XDG_CACHE_HOME` (when absolute), else `~/.cache`. `for_what`
/// completes the error: "pass --env-dir DIR for the notebooks' environments".
pub fn user_cache_dir(for_what: &str) -> Result<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| std::path::Path::new(v).is_absolute())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .with_context(|| format!("neither XDG_CACHE_HOME nor HOME is set: {for_what}"))
}

/// A tool's `after_help`: its examples, then the exit-status table.
pub fn after_help(examples: &str, noun: (&str, &str)) -> String {
    format!(
        "Examples:\n{}\n\n{}",
        examples.trim_end(),
        fanout::exit::exit_codes_help(noun)
    )
}

/// The arguments of `<tool> completions SHELL`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Print the completion script of `cmd` for `shell` to stdout.
pub fn print_completions(mut cmd: clap::Command, shell: Shell) -> ExitStatus {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
    ExitStatus::Success
}

/// Where a user installs a completion script, for `completions --help`.
pub const COMPLETIONS_HELP: &str = "Print a shell completion script to standard output. For \
    example: `<tool> completions bash > ~/.local/share/bash-completion/completions/<tool>`, \
    `<tool> completions zsh > ~/.zfunc/_<tool>`, `<tool> completions fish > \
    ~/.config/fish/completions/<tool>.fish`.";

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Clone, Default)]
    struct Demo;

    impl Tool for Demo {
        const NAME: &'static str = "demo";
        const NOUN: (&'static str, &'static str) = ("job", "jobs");
        const MAX_WORKERS_CAP: usize = 8;
        const MAX_WORKERS_DEFAULT: Workers = Workers::Fixed(2);
        const MAX_WORKERS_ENV: Option<&'static str> = Some("FANOUT_CLI_TEST_WORKERS");
        const TIMEOUT_HELP: &'static str = "one job may take";
        const DRY_RUN_HELP: &'static str = "the jobs";
    }

    #[derive(Debug, Parser)]
    #[command(name = "demo")]
    struct Cli {
        #[command(flatten)]
        run: RunArgs<Demo>,
    }

    fn args<I: IntoIterator<Item = &'static str>>(items: I) -> Vec<std::ffi::OsString> {
        items.into_iter().map(Into::into).collect()
    }

    fn parse(line: &[&'static str]) -> Result<RunArgs<Demo>, clap::Error> {
        let mut all = vec!["demo"];
        all.extend(line);
        Cli::try_parse_from(args(all)).map(|c| c.run)
    }

    #[test]
    fn the_shared_flags_parse_and_jobs_is_a_hidden_alias() {
        let a = parse(&["-j", "3", "-q", "--timeout", "1.5", "--report", "r.json"]).unwrap();
        assert_eq!(a.max_workers, Some(3));
        assert!(a.quiet && !a.verbose);
        assert_eq!(a.progress(), ProgressMode::Quiet);
        assert_eq!(
            a.timeout_or(None).unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(a.report, Some(PathBuf::from("r.json")));
        assert_eq!(parse(&["--jobs", "5"]).unwrap().max_workers, Some(5));
        assert_eq!(parse(&["--max-workers=4"]).unwrap().max_workers, Some(4));
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("-j, --max-workers <N>"), "{help}");
        assert!(!help.contains("--jobs"), "{help}");
        assert!(help.contains("Jobs running at once, 1 to 8"), "{help}");
    }

    #[test]
    fn conflicting_and_bad_values_are_refused() {
        assert!(parse(&["-q", "-v"]).is_err());
        assert!(parse(&["-j", "2", "--sequential"]).is_err());
        assert!(parse(&["--backend", "cloud"]).is_err());
        let a = parse(&["-j", "9"]).unwrap();
        let e = a.max_workers_or(None).unwrap_err();
        assert_eq!(ExitStatus::of_error(e.as_ref()), ExitStatus::Usage);
        assert!(format!("{e:#}").contains("-j/--max-workers"), "{e:#}");
        let a = parse(&["--timeout", "0"]).unwrap();
        let e = a.timeout_or(None).unwrap_err();
        assert_eq!(ExitStatus::of_error(e.as_ref()), ExitStatus::Usage);
    }

    #[test]
    fn defaults_and_fallbacks_apply_in_order() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.max_workers_or(None).unwrap().get(), 2);
        let file = Some((6, "pyproject.toml max-workers"));
        assert_eq!(a.max_workers_or(file).unwrap().get(), 6);
        let e = a
            .max_workers_or(Some((60, "pyproject.toml max-workers")))
            .unwrap_err();
        assert!(
            format!("{e:#}").starts_with("pyproject.toml max-workers: "),
            "{e:#}"
        );
        let one = |line: &[&'static str]| parse(line).unwrap().max_workers_or(file).unwrap().get();
        assert_eq!(one(&["-j", "1"]), 1);
        assert_eq!(one(&["--sequential"]), 1);
        assert_eq!(
            a.timeout_or(Some((60.0, "timeout"))).unwrap(),
            Some(Duration::from_secs(60))
        );
        let e = a
            .timeout_or(Some((-1.0, "the file's timeout")))
            .unwrap_err();
        assert!(
            format!("{e:#}").starts_with("the file's timeout -1: "),
            "{e:#}"
        );
        assert_eq!(a.progress(), ProgressMode::Auto);
        assert_eq!(parse(&["-v"]).unwrap().progress(), ProgressMode::Plain);
        assert_eq!(
            parse(&["-v"]).unwrap().detail_lines(10),
            VERBOSE_DETAIL_LINES
        );
        assert_eq!(a.detail_lines(10), 10);
        assert_eq!(a.launcher_or(None, &[]).unwrap(), Launcher::Local);
    }

    #[test]
    fn slurm_options_without_slurm_name_the_flags() {
        let a = parse(&["--slurm-arg=--mem=1G"]).unwrap();
        let e = a.launcher_or(None, &[]).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "--slurm-arg --mem=1G: Slurm options need --backend slurm"
        );
        assert_eq!(ExitStatus::of_error(e.as_ref()), ExitStatus::Usage);
    }

    #[test]
    fn finish_maps_errors_to_their_class() {
        let usage: Result<ExitStatus> = Err(anyhow::anyhow!("bad")).usage();
        assert_eq!(finish::<Demo>(usage), ExitStatus::Usage);
        let later: Result<ExitStatus> = Err(anyhow::anyhow!("disk full"));
        assert_eq!(
            finish::<Demo>(later.context("writing the record")),
            ExitStatus::TaskFailed
        );
        assert_eq!(finish::<Demo>(Ok(ExitStatus::Success)), ExitStatus::Success);
    }
}
