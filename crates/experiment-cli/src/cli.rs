//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Run a prompt template against many provider/model/variable rows of a CSV, in parallel.
#[derive(Debug, Parser)]
#[command(
    name = "parallamr",
    version,
    long_about = "Run experiment sweeps: a prompt template against many provider/model/variable \
        rows of a CSV, in parallel, with results streamed to CSV as they complete.\n\n\
        Providers: mock (no network), ollama, openrouter, openai (and OpenAI-compatible servers \
        via OPENAI_BASE_URL), command (a command template per row). `parallamr providers` shows \
        their settings and limits.",
    after_help = concat!(
        "Examples:\n",
        "  parallamr init\n",
        "  parallamr run -p prompt.txt -e experiments.csv -o results.csv -j 8\n",
        "  parallamr run -p prompt.txt -e experiments.csv -o results.csv --resume\n",
        "  parallamr models ollama\n\n",
        "Exit status:\n",
        "  0    every row is ok or warning\n",
        "  1    some rows errored (or timed out)\n",
        "  2    usage, file or configuration error (nothing ran)\n",
        "  130  interrupted (Ctrl-C); a second Ctrl-C stops at once",
    )
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the experiments
    Run(Box<RunCli>),
    /// List the providers, their settings and concurrency limits
    Providers,
    /// List the models a provider serves, with their context windows
    Models {
        #[arg(value_name = "PROVIDER")]
        provider: String,
    },
    /// Write an example prompt, experiments file and README snippet here (never overwrites)
    Init,
}

#[derive(Debug, clap::Args)]
pub struct RunCli {
    /// The prompt template file (`-`: standard input)
    #[arg(short, long, value_name = "PROMPT")]
    pub prompt: PathBuf,
    /// The experiments CSV: columns provider, model, and variables (`-`: standard input)
    #[arg(short, long, value_name = "EXPERIMENTS")]
    pub experiments: PathBuf,
    /// The results CSV [default: standard output]
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// A context file appended to the prompt under `## Document: <name>`; repeatable
    #[arg(short, long = "context", value_name = "CONTEXT")]
    pub contexts: Vec<PathBuf>,
    /// Experiments running at once, 1 to 256
    #[arg(
        short = 'j',
        long = "jobs",
        value_name = "N",
        default_value_t = 4,
        conflicts_with = "sequential"
    )]
    pub jobs: usize,
    /// One experiment at a time (same as -j 1)
    #[arg(long)]
    pub sequential: bool,
    /// Seconds a request (or command) may take, 1 to 31622400 (366 days)
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=fanout::MAX_TIMEOUT.as_secs()))]
    pub timeout: u64,
    /// Retries after rate limits (429), 502/503/504 and connection errors
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// At most N requests in flight to provider NAME (e.g. ollama=4); repeatable
    #[arg(long = "provider-limit", value_name = "NAME=N", value_parser = crate::run::parse_limit)]
    pub provider_limits: Vec<(String, usize)>,
    /// The command template for the command provider, rendered per row and run with sh -c.
    /// Each value is inserted as one shell word, quoted where needed, so a value never runs as
    /// code: write `--lr {{lr}}`, not `--lr '{{lr}}'`; `{{ var | safe }}` inserts a value raw
    #[arg(long, value_name = "TEMPLATE")]
    pub command: Option<String>,
    /// Where the command provider's experiments run: here, or on a Slurm cluster, each as a
    /// job step started with `srun` (the working folder must be on a file system the nodes share)
    #[arg(long, value_name = "BACKEND", default_value = "local",
          value_parser = clap::builder::PossibleValuesParser::new(fanout::Launcher::NAMES))]
    pub backend: String,
    /// An option for `srun` (with --backend slurm); repeatable: --slurm-arg=--partition=gpu
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub slurm_arg: Vec<String>,
    /// Check the inputs and configuration, run nothing
    #[arg(long)]
    pub validate_only: bool,
    /// Complete an existing results file: run only the experiments without an ok/warning row
    #[arg(long)]
    pub resume: bool,
    /// Write the run's report (JSON) to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// One line per experiment instead of a progress bar
    #[arg(short, long)]
    pub verbose: bool,
    /// Print only failures and the summary
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
}
