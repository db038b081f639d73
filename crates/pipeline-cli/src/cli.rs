//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fanout_cli::{CompletionsArgs, RunArgs, Tool, Workers};

/// lorchestra's words for the shared flags (see `fanout_cli`).
#[derive(Debug, Clone, Default)]
pub struct Lorchestra;

impl Tool for Lorchestra {
    const NAME: &'static str = "lorchestra";
    const NOUN: (&'static str, &'static str) = ("job", "jobs");
    const MAX_WORKERS_CAP: usize = 64;
    const MAX_WORKERS_DEFAULT: Workers = Workers::Fixed(1);
    const MAX_WORKERS_ENV: Option<&'static str> = Some("LORCHESTRA_MAX_WORKERS");
    const TIMEOUT_HELP: &'static str = "a job may run before its whole process tree is killed, \
        for jobs without a `timeout` of their own [default: no limit]";
    const DRY_RUN_HELP: &'static str = "the stages and commands that would run";
    const OUTPUT_NAME: &'static str = "log";
}

const EXAMPLES: &str = "  lorchestra pipeline ingest --max-workers 4
  lorchestra pipeline ingest --resume 20261123T014512.345Z-1a2b
  lorchestra pipeline ingest --explain
  lorchestra pipeline ingest --force=clean_orders
  lorchestra pipeline extract --payload model=gpt-4o --payload-file sessions.json
  lorchestra runs
  lorchestra report <RUN_ID> -o timeline.html
  lorchestra completions bash > ~/.local/share/bash-completion/completions/lorchestra";

/// Run pipelines: stages in order, the independent jobs of each stage in parallel.
#[derive(Debug, Parser)]
#[command(
    name = "lorchestra",
    version = fanout_cli::VERSION,
    long_about = "Run a pipeline's stages in order; the independent jobs inside a stage run in \
        parallel through a bounded worker pool. Each job's output goes to its log; the run's \
        state is saved after every job in .lorchestra/runs/<RUN_ID>/ (run.json and its journal; \
        `lorchestra status RUN_ID --json` reads both), so an interrupted or crashed run can be \
        resumed.\n\n\
        A project folder holds pipelines/<NAME>.toml (or .yaml) and, for jobs shared by several \
        pipelines, jobs/<JOB_ID>.toml.",
    after_help = fanout_cli::after_help(EXAMPLES, Lorchestra::NOUN),
)]
pub struct Cli {
    /// The project folder (holding pipelines/, jobs/ and .lorchestra/)
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run a pipeline
    #[command(
        long_about = "Run a pipeline: its stages in order, the independent jobs of each \
        stage in parallel; a job with `needs` starts as soon as the jobs it needs succeeded. \
        A job that declares `inputs` runs only when its definition, its inputs or a job it \
        depends on changed since it last succeeded (or an output is missing); --explain says \
        why each job would run, --force runs them anyway. A job's or its pipeline's `backend` \
        and a job's `timeout` in the pipeline file win over --backend and --timeout. The run is recorded in \
        .lorchestra/runs/<RUN_ID>/ after every job (run.json, with journal.jsonl while it runs), \
        with the shared JSON report beside it in report.json (and in --report FILE)."
    )]
    Pipeline(Box<PipelineArgs>),
    /// Print a pipeline's jobs and what each waits for
    #[command(
        long_about = "Print a pipeline's jobs and what each waits for: the jobs it `needs` \
        (they must succeed) and, for a job without `needs`, the earlier stage's jobs it runs \
        after. --dot prints it for Graphviz: `lorchestra graph NAME --dot | dot -Tsvg > g.svg`."
    )]
    Graph {
        #[arg(value_name = "NAME|FILE")]
        pipeline: String,
        /// Graphviz's dot language instead of text
        #[arg(long)]
        dot: bool,
    },
    /// Check a pipeline (and the pipelines it runs) without running anything
    Validate {
        #[arg(value_name = "NAME|FILE")]
        pipeline: String,
    },
    /// List the jobs the project defines
    Jobs,
    /// List recent runs, newest first
    Runs {
        /// How many runs to show
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Show these metrics (comma-separated names, e.g. acc,loss) and the parameters that
        /// differ among the runs, as columns
        #[arg(long, value_name = "NAMES", value_delimiter = ',')]
        metrics: Vec<String>,
    },
    /// Show a run's stages and jobs
    Status {
        #[arg(value_name = "RUN_ID")]
        run_id: String,
        /// Print the whole record as JSON: `run.json` with the changes of its journal applied
        /// (a running or killed run's `run.json` alone is as of its start)
        #[arg(long)]
        json: bool,
    },
    /// Compare the parameters two runs used (`params` of their jobs, `--set` applied)
    Params {
        #[command(subcommand)]
        action: ParamsAction,
    },
    /// Show a run's metrics, or compare two runs' (`metrics` files of their jobs)
    Metrics {
        #[command(subcommand)]
        action: MetricsAction,
    },
    /// Write a run's timeline as a self-contained HTML page, or (--compare) runs compared
    Report {
        #[arg(value_name = "RUN_ID", required_unless_present = "compare")]
        run_id: Option<String>,
        /// Compare these runs on one page instead: the parameters that differ and a chart of
        /// each metric across them [default: the recent runs of the newest run's pipeline]
        #[arg(long, value_name = "RUN_ID", num_args = 0.., conflicts_with = "run_id")]
        compare: Option<Vec<String>>,
        /// Where to write the page
        #[arg(short, long, value_name = "FILE.html")]
        output: PathBuf,
    },
    #[command(long_about = fanout_cli::COMPLETIONS_HELP.replace("<tool>", "lorchestra"))]
    /// Print a shell completion script (bash, zsh, fish, powershell)
    Completions(CompletionsArgs),
}

/// `--halt`: what a failure in a `stop_on_failure` stage does to the jobs still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Halt {
    /// Start no queued job of the stage; let running jobs finish.
    Soon,
    /// Also terminate the running jobs (their whole process trees).
    Now,
}

/// `lorchestra pipeline`'s arguments.
#[derive(Debug, Subcommand)]
pub enum MetricsAction {
    /// A run's metrics by job [default: the newest run]
    Show {
        #[arg(value_name = "RUN_ID")]
        run: Option<String>,
    },
    /// The metrics that differ between two runs, with the absolute and relative change
    /// [default: the newest run and the one before it of the same pipeline]
    Diff(DiffArgs),
}

/// Two runs to compare.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier run
    #[arg(value_name = "RUN_A")]
    pub a: Option<String>,
    /// The later run
    #[arg(value_name = "RUN_B")]
    pub b: Option<String>,
    /// Show the values that did not change too
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum ParamsAction {
    /// The parameters that differ between two runs [default: the newest run and the one before
    /// it of the same pipeline]
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// A pipeline name (pipelines/NAME.toml or .yaml) or a pipeline file
    #[arg(value_name = "NAME|FILE")]
    pub pipeline: String,
    #[command(flatten)]
    pub run: RunArgs<Lorchestra>,
    /// Resume a run: jobs recorded as succeeded are skipped, the others run again
    #[arg(long, value_name = "RUN_ID")]
    pub resume: Option<String>,
    /// After a failure in a `stop_on_failure` stage: start nothing new (soon), or also kill the
    /// running jobs (now)
    #[arg(long, value_enum, default_value_t = Halt::Soon)]
    pub halt: Halt,
    /// Run jobs even if they are up to date: all of them, or JOB and every job that
    /// depends on it
    #[arg(long, value_name = "JOB", num_args = 0..=1, require_equals = true)]
    pub force: Option<Option<String>>,
    /// Say for every job whether it would run and why, and run nothing (implies --dry-run)
    #[arg(long)]
    pub explain: bool,
    /// A value for the jobs (repeatable): in their environment as
    /// `LORCHESTRA_PAYLOAD_<KEY>` (and all of them as JSON in `LORCHESTRA_PAYLOAD`), and in
    /// `{{payload.KEY}}` in a job's command, env and cwd (in a command, a reference to that
    /// variable: a value never runs as code)
    #[arg(long = "payload", value_name = "KEY=VALUE")]
    pub payload: Vec<String>,
    /// Payload values from a JSON object; --payload values win over it
    #[arg(long, value_name = "FILE.json")]
    pub payload_file: Option<PathBuf>,
    /// Override a parameter for this run without editing its file (repeatable): a key path of
    /// the jobs' `params` (`train.lr=0.05`; JSON values are typed). It changes the up-to-date
    /// key of the jobs that track it, is in their `LORCHESTRA_PARAMS`, and is recorded
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// What the run has of the resources jobs declare (`cpus`, `mem`, `gpus`, `resources =
    /// {db = 1}`): a job starts only when its needs fit what running jobs left. Defaults: cpus
    /// = cores, mem = available memory, gpus = 0, named ones from the pipeline's `resources`
    #[arg(long, value_name = "NAME=AMOUNT,...", value_parser = parse_resources)]
    pub resources: Option<crate::resources::Amounts>,
    /// When another lorchestra run is using the project, wait for it to end (without:
    /// refuse, naming its pid)
    #[arg(long)]
    pub wait: bool,
}

fn parse_resources(text: &str) -> Result<crate::resources::Amounts, String> {
    crate::resources::parse_flag(text)
}
