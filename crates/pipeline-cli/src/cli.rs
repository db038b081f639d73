//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Run pipelines: stages in order, the independent jobs of each stage in parallel.
#[derive(Debug, Parser)]
#[command(
    name = "lorchestra",
    version,
    long_about = "Run a pipeline's stages in order; the independent jobs inside a stage run in \
        parallel through a bounded worker pool. Each job's output goes to its log; the run's \
        state is saved after every job in .lorchestra/runs/<RUN_ID>/run.json, so an interrupted \
        or crashed run can be resumed.\n\n\
        A project folder holds pipelines/<NAME>.toml (or .yaml) and, for jobs shared by several \
        pipelines, jobs/<JOB_ID>.toml.",
    after_help = concat!(
        "Examples:\n",
        "  lorchestra pipeline ingest --max-workers 4\n",
        "  lorchestra pipeline ingest --resume 20261123T014512.345Z-1a2b\n",
        "  lorchestra runs\n",
        "  lorchestra report <RUN_ID> -o timeline.html\n\n",
        "Exit status:\n",
        "  0    every job succeeded\n",
        "  1    some job failed or timed out\n",
        "  2    usage or configuration error (nothing ran)\n",
        "  130  interrupted (Ctrl-C); a second Ctrl-C kills running jobs at once",
    )
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
    Pipeline {
        /// A pipeline name (pipelines/NAME.toml or .yaml) or a pipeline file
        #[arg(value_name = "NAME|FILE")]
        pipeline: String,
        /// Jobs running at once within a stage [env: `LORCHESTRA_MAX_WORKERS`] [default: 1]
        #[arg(short = 'j', long, value_name = "N")]
        max_workers: Option<usize>,
        /// Print the stages and commands, run nothing
        #[arg(long)]
        dry_run: bool,
        /// Resume a run: jobs recorded as succeeded are skipped, the others run again
        #[arg(long, value_name = "RUN_ID")]
        resume: Option<String>,
        /// After a failure in a `stop_on_failure` stage: start nothing new (soon), or also kill the
        /// running jobs (now)
        #[arg(long, value_enum, default_value_t = Halt::Soon)]
        halt: Halt,
        /// Where jobs run: here, or on a Slurm cluster, each job a job step started with `srun`
        /// (the project folder must be on a file system the nodes share). A job's or its
        /// pipeline's `backend = "..."` in the pipeline file wins over this.
        #[arg(long, value_enum, default_value_t = crate::config::Backend::Local, value_name = "BACKEND")]
        backend: crate::config::Backend,
        /// An option for `srun`, for every job run on Slurm; repeatable
        /// (`--slurm-arg=--partition=gpu --slurm-arg=--qos=short`)
        #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
        slurm_arg: Vec<String>,
        /// Print only failures and summaries
        #[arg(short, long)]
        quiet: bool,
        /// No progress bar: one line per job
        #[arg(long)]
        no_progress: bool,
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
    },
    /// Show a run's stages and jobs
    Status {
        #[arg(value_name = "RUN_ID")]
        run_id: String,
    },
    /// Write a run's timeline as a self-contained HTML page
    Report {
        #[arg(value_name = "RUN_ID")]
        run_id: String,
        /// Where to write the page
        #[arg(short, long, value_name = "FILE.html")]
        output: PathBuf,
    },
}

/// `--halt`: what a failure in a `stop_on_failure` stage does to the jobs still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Halt {
    /// Start no queued job of the stage; let running jobs finish.
    Soon,
    /// Also terminate the running jobs (their whole process trees).
    Now,
}
