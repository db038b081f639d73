//! The command line's settings of `parallamr run` (`RunArgs`), each flag checked as it is read.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use fanout::{MaxWorkers, ProgressMode};
use fanout_cli::UsageResult;

use crate::cache::{self, Cache};
use crate::cli::RunCli;
use crate::judge::JudgeArgs;
use crate::writer::Flattening;

#[derive(Debug)]
pub(crate) struct RunArgs {
    pub(crate) prompt: PathBuf,
    pub(crate) experiments: PathBuf,
    pub(crate) output: Option<PathBuf>,
    pub(crate) contexts: Vec<PathBuf>,
    pub(crate) max_workers: MaxWorkers,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) limits: Vec<(String, usize)>,
    pub(crate) command: Option<String>,
    /// The environment over the nearest `.env`.
    pub(crate) settings: crate::settings::Settings,
    /// `--flatten`: the JSON of each answer as columns.
    pub(crate) flatten: Option<Flatten>,
    /// `--rate NAME=500rpm,200000tpm`.
    pub(crate) rates: Vec<(String, crate::rate::Rate)>,
    /// `--prices`: a price file.
    pub(crate) prices: Option<PathBuf>,
    /// `--max-cost`: a budget in USD.
    pub(crate) max_cost: Option<f64>,
    /// The response cache; `None` with `--no-cache`.
    pub(crate) cache: Option<Cache>,
    /// What the cache keeps (`PARALLAMR_CACHE_MAX_SIZE`, `PARALLAMR_CACHE_MAX_AGE`).
    pub(crate) cache_limits: cache::Limits,
    /// `--param-columns`: the columns sent as request parameters (else the usual names).
    pub(crate) param_columns: Option<Vec<String>>,
    /// `--backend`: where the command provider's experiments run, checked; with
    /// `--slurm-mode packed` the allocation is asked for by [`place_commands`].
    pub(crate) launcher: fanout::Launcher,
    /// `--slurm-mode`.
    pub(crate) slurm_mode: fanout_cli::SlurmMode,
    /// `--slurm-nodes`.
    pub(crate) slurm_nodes: Option<u32>,
    pub(crate) dry_run: bool,
    pub(crate) resume: bool,
    /// `--wait`: for another run writing the same results file.
    pub(crate) wait: fanout::runlock::Wait,
    pub(crate) report: Option<PathBuf>,
    /// `--repeat N`.
    pub(crate) repeat: Option<u32>,
    /// `--batch`, its size and poll interval.
    pub(crate) batch: Option<BatchSettings>,
    /// The checks asked for.
    pub(crate) judge: JudgeArgs,
    /// `--fail-on-assert`.
    pub(crate) fail_on_assert: bool,
    /// `--html FILE`: the results page.
    pub(crate) html: Option<PathBuf>,
    pub(crate) progress: ProgressMode,
    /// Lines of a failure's detail shown under it (`-v`).
    pub(crate) detail_lines: usize,
}

/// `--flatten` and its settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flatten {
    pub(crate) limits: crate::flatten::Limits,
    /// `--flatten-columns`: the columns, fixed from the start.
    pub(crate) columns: Option<Vec<String>>,
}

/// What `Outputs` needs to know of `--flatten`.
pub(crate) fn flatten_columns(args: &RunArgs) -> Flattening {
    match &args.flatten {
        None => Flattening::Off,
        Some(Flatten {
            columns: Some(c), ..
        }) => Flattening::Columns(c.clone()),
        Some(_) => Flattening::FromAnswers,
    }
}

/// The settings of `--batch`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSettings {
    /// `--batch-size`: at most this many requests per batch (else the provider's limit).
    pub(crate) size: Option<usize>,
    /// `--batch-poll`: how often a batch is asked where it is.
    pub(crate) poll: Duration,
}

impl RunArgs {
    /// `parallamr run`'s flags made settings (a bad value is a usage error).
    pub(crate) fn from_cli(r: RunCli) -> Result<RunArgs> {
        let shared = &r.run;
        Ok(RunArgs {
            max_workers: shared.max_workers_or(None)?,
            timeout: shared.timeout_or(None)?.unwrap_or(Duration::from_secs(300)),
            retries: r.retries,
            limits: r.provider_limits,
            launcher: shared.launcher_or(None, &[])?,
            slurm_mode: shared.slurm_mode,
            slurm_nodes: shared.slurm_nodes,
            progress: shared.progress(),
            detail_lines: shared.detail_lines(0),
            prompt: r.prompt,
            experiments: r.experiments,
            output: r.output,
            contexts: r.contexts,
            command: r.command,
            param_columns: r.param_columns,
            flatten: (r.flatten || r.flatten_columns.is_some()).then(|| Flatten {
                limits: crate::flatten::Limits {
                    depth: r.flatten_depth,
                    items: r.flatten_items,
                },
                columns: r.flatten_columns.clone(),
            }),
            rates: r
                .rates
                .iter()
                .map(|s| crate::rate::parse_rate(s).expect("checked by clap"))
                .collect(),
            prices: r.prices,
            max_cost: r.max_cost,
            settings: crate::settings::Settings::load().usage()?,
            cache: if r.no_cache {
                None
            } else {
                Some(cache::Cache::locate(r.cache_dir.as_deref()).usage()?)
            },
            cache_limits: cache::Limits::from_env().usage()?,
            dry_run: shared.dry_run,
            resume: r.resume,
            wait: if r.wait {
                fanout::runlock::Wait::Yes
            } else {
                fanout::runlock::Wait::No
            },
            report: shared.report.clone(),
            repeat: r.repeat,
            batch: r.batch.then(|| BatchSettings {
                size: r.batch_size.map(|n| n as usize),
                poll: r.batch_poll,
            }),
            fail_on_assert: r.judge.fail_on_assert,
            judge: JudgeArgs {
                expect: r.judge.expect,
                no_expect: r.judge.no_expect,
                tolerance: r.judge.tolerance,
                asserts: r.judge.asserts,
                is_json: r.judge.is_json,
                schema: r.judge.schema,
                grader: r.judge.grader,
                rubric: r.judge.rubric,
            },
            html: r.html,
        })
    }
}
