//! How clap declares and reads [`RunArgs`]: the shared flags' names, help text (in each tool's
//! words) and values.

use std::marker::PhantomData;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, value_parser};

use fanout::Launcher;

use crate::{RunArgs, SlurmMode, Tool, VERBOSE_DETAIL_LINES};

const MAX_WORKERS: &str = "max_workers";
const SEQUENTIAL: &str = "sequential";
const TIMEOUT: &str = "timeout";
const DRY_RUN: &str = "dry_run";
const QUIET: &str = "quiet";
const VERBOSE: &str = "verbose";
const NO_PROGRESS: &str = "no_progress";
const REPORT: &str = "report";
const BACKEND: &str = "backend";
const SLURM_ARG: &str = "slurm_arg";
const SLURM_MODE: &str = "slurm_mode";
const SLURM_NODES: &str = "slurm_nodes";

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_uppercase().chain(chars).collect::<String>()
    })
}

impl<T: Tool> RunArgs<T> {
    /// How many at once, for how long, or only printed: -j, --sequential, --timeout, --dry-run.
    fn pool_args(cmd: clap::Command) -> clap::Command {
        let (one, many) = T::NOUN;
        cmd.arg(
            Arg::new(MAX_WORKERS)
                .short('j')
                .long("max-workers")
                .alias("jobs")
                .value_name("N")
                .value_parser(value_parser!(usize))
                .conflicts_with(SEQUENTIAL)
                .help(format!(
                    "{} running at once, 1 to {} {}",
                    capitalized(many),
                    T::MAX_WORKERS_CAP,
                    Self::default_help()
                )),
        )
        .arg(
            Arg::new(SEQUENTIAL)
                .long("sequential")
                .action(ArgAction::SetTrue)
                .help(format!("One {one} at a time (same as -j 1)")),
        )
        .arg(
            Arg::new(TIMEOUT)
                .long("timeout")
                .value_name("SECS")
                .value_parser(value_parser!(f64))
                .allow_negative_numbers(true)
                .help(format!("Seconds {}", T::TIMEOUT_HELP)),
        )
        .arg(
            Arg::new(DRY_RUN)
                .long("dry-run")
                .action(ArgAction::SetTrue)
                .help(format!("Print {}, and run nothing", T::DRY_RUN_HELP)),
        )
    }

    /// What is printed: -q, -v, --no-progress, --report.
    fn output_args(cmd: clap::Command) -> clap::Command {
        let one = T::NOUN.0;
        cmd.arg(
            Arg::new(QUIET)
                .short('q')
                .long("quiet")
                .action(ArgAction::SetTrue)
                .conflicts_with(VERBOSE)
                .help("Print only failures and the summary"),
        )
        .arg(
            Arg::new(VERBOSE)
                .short('v')
                .long("verbose")
                .action(ArgAction::SetTrue)
                .help(format!(
                    "Print more: a line per {one} instead of a bar, and under each failure the \
                     last {VERBOSE_DETAIL_LINES} lines of its {}",
                    T::OUTPUT_NAME
                )),
        )
        .arg(
            Arg::new(NO_PROGRESS)
                .long("no-progress")
                .action(ArgAction::SetTrue)
                .help(format!("No progress bar: a line per {one}")),
        )
        .arg(
            Arg::new(REPORT)
                .long("report")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help(format!(
                    "Write the run's report (JSON: a summary and every {one}'s status, times \
                     and error) to FILE"
                )),
        )
    }

    /// Where they run: --backend, --slurm-arg.
    fn backend_args(cmd: clap::Command) -> clap::Command {
        let many = T::NOUN.1;
        cmd.arg(
            Arg::new(BACKEND)
                .long("backend")
                .value_name("BACKEND")
                .value_parser(Launcher::NAMES)
                .help(format!(
                    "Where {many} run: here (local), or on a Slurm cluster (slurm), each a job \
                     step started with `srun`; the files they use must be on a file system the \
                     nodes share [default: local]"
                )),
        )
        .arg(
            Arg::new(SLURM_ARG)
                .long("slurm-arg")
                .value_name("ARG")
                .allow_hyphen_values(true)
                .action(ArgAction::Append)
                .help(
                    "An option for Slurm (with --backend slurm); repeatable: \
                     --slurm-arg=--partition=cpu. Given to each task's `srun`; with \
                     --slurm-mode packed the allocation's (--time, --qos, --constraint...) go to \
                     `salloc`, the others to each worker's `srun`",
                ),
        )
        .arg(
            Arg::new(SLURM_MODE)
                .long("slurm-mode")
                .value_name("MODE")
                .value_parser(value_parser!(SlurmMode))
                .default_value("jobs")
                .help(format!(
                    "With --backend slurm: each of the {many} a Slurm job of its own (jobs: for \
                     long {many} that want their own scheduling), or packed: one allocation of \
                     -j slots for the whole run (or the one this runs in), each of the {many} on \
                     a worker in it, at about a millisecond each (for many short {many})"
                )),
        )
        .arg(
            Arg::new(SLURM_NODES)
                .long("slurm-nodes")
                .value_name("N")
                .value_parser(value_parser!(u32).range(1..))
                .help("With --slurm-mode packed: spread the allocation over N nodes"),
        )
    }
}

impl<T: Tool> Args for RunArgs<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Self::backend_args(Self::output_args(Self::pool_args(cmd)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl<T> FromArgMatches for RunArgs<T> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(RunArgs {
            max_workers: m.get_one::<usize>(MAX_WORKERS).copied(),
            sequential: m.get_flag(SEQUENTIAL),
            timeout: m.get_one::<f64>(TIMEOUT).copied(),
            dry_run: m.get_flag(DRY_RUN),
            quiet: m.get_flag(QUIET),
            verbose: m.get_flag(VERBOSE),
            no_progress: m.get_flag(NO_PROGRESS),
            report: m.get_one::<PathBuf>(REPORT).cloned(),
            backend: m.get_one::<String>(BACKEND).cloned(),
            slurm_args: m
                .get_many::<String>(SLURM_ARG)
                .map(|v| v.cloned().collect())
                .unwrap_or_default(),
            slurm_mode: m
                .get_one::<SlurmMode>(SLURM_MODE)
                .copied()
                .unwrap_or_default(),
            slurm_nodes: m.get_one::<u32>(SLURM_NODES).copied(),
            tool: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}
