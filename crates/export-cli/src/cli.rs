//! The command line, as clap sees it. Values stay optional here: `config` merges them with
//! `[tool.export-nb]` in `pyproject.toml` (flags win) and validates the result.

use std::path::PathBuf;

use clap::Parser;

/// Export marimo notebooks to a static HTML site, many at once.
#[derive(Debug, Parser)]
#[command(
    name = "export-nb",
    version,
    long_about = "Export folders of marimo notebooks to a static HTML site, many at once.\n\n\
        Each notebook runs in a process of its own, with exactly the packages its inline \
        (PEP 723) header names, all of them through one bounded worker pool; then an index page \
        links the pages. Notebooks with the same header share one environment, built once with \
        uv and kept between runs, and a warm marimo worker per environment forks a process per \
        notebook, so no notebook pays for starting Python and importing marimo. Unchanged notebooks are not \
        exported again (the output folder keeps a manifest of content hashes), and pages of \
        deleted notebooks are removed.\n\n\
        Settings may also come from [tool.export-nb] in ./pyproject.toml, with the same names as \
        the long flags (e.g. max-workers = 4, folders = [\"notebooks\"]); flags win.",
    after_help = concat!(
        "Examples:\n",
        "  export-nb                          export ./notebooks to ./_site\n",
        "  export-nb -j 4 docs/notebooks      four exports at a time\n",
        "  export-nb notebooks --apps apps    static pages plus WebAssembly apps\n",
        "  export-nb --dry-run                show the export commands, run nothing\n\n",
        "Exit status:\n",
        "  0    every notebook exported (or up to date)\n",
        "  1    some notebook failed or timed out\n",
        "  2    usage or configuration error (nothing ran)\n",
        "  130  interrupted (Ctrl-C); a second Ctrl-C kills running exports at once",
    )
)]
pub struct Cli {
    /// Folders of notebooks to export as static HTML pages [default: notebooks]
    #[arg(value_name = "FOLDER")]
    pub folders: Vec<PathBuf>,

    /// Folder of notebooks to export as WebAssembly apps (run mode, code hidden); repeatable
    #[arg(long = "apps", value_name = "DIR")]
    pub apps: Vec<PathBuf>,

    /// Folder of notebooks to export as interactive WebAssembly notebooks (edit mode); repeatable
    #[arg(long = "wasm", value_name = "DIR")]
    pub wasm: Vec<PathBuf>,

    /// Where the site goes [default: _site]
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Exports running at once, 1 to 16 [default: the number of cores]
    #[arg(short = 'j', long, value_name = "N", conflicts_with = "sequential")]
    pub max_workers: Option<usize>,

    /// One export at a time (same as -j 1)
    #[arg(long)]
    pub sequential: bool,

    /// Seconds one export may take before its whole process tree is killed [default: 300]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,

    /// Run each notebook in its own environment from its inline dependencies (the default)
    #[arg(long, overrides_with = "no_sandbox")]
    pub sandbox: bool,

    /// Ignore the notebooks' inline dependencies: every notebook runs in one environment with
    /// marimo alone
    #[arg(long, overrides_with = "sandbox")]
    pub no_sandbox: bool,

    /// Where exports run: here, or on a Slurm cluster, each export a job step started with
    /// `srun`; the notebooks and the output folder must be on a file system the nodes share
    #[arg(long, value_name = "BACKEND",
          value_parser = clap::builder::PossibleValuesParser::new(fanout::Launcher::NAMES))]
    pub backend: Option<String>,

    /// An option for `srun` (with --backend slurm); repeatable: --slurm-arg=--partition=cpu
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub slurm_arg: Vec<String>,

    /// The uv executable that builds the environments [default: uv on PATH]
    #[arg(long, value_name = "PATH")]
    pub uv: Option<PathBuf>,

    /// The uvx executable, to find the uv beside it (older name of --uv)
    #[arg(long, value_name = "PATH", conflicts_with = "uv")]
    pub uvx: Option<PathBuf>,

    /// Where the notebooks' environments are kept between runs
    /// [default: $XDG_CACHE_HOME/export-nb/envs, else ~/.cache/export-nb/envs]
    #[arg(long, value_name = "DIR", env = "EXPORT_NB_ENV_DIR")]
    pub env_dir: Option<PathBuf>,

    /// Start `python -m marimo export` afresh for each notebook instead of forking it from a
    /// warm marimo worker (slower; the worker is used only with marimo versions it was tested
    /// with, and never on Slurm)
    #[arg(long)]
    pub no_worker: bool,

    /// Pin the marimo version (adds marimo==VER to every notebook's environment)
    #[arg(long, value_name = "VER")]
    pub marimo_version: Option<String>,

    /// A minijinja template for the index page instead of the bundled one
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,

    /// Title of the index page [default: Notebooks]
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,

    /// Leave out notebooks whose path (relative to their folder) matches; repeatable
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Export every notebook, even those that are up to date
    #[arg(long)]
    pub force: bool,

    /// Print the environments and export commands that would run, and run nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Write the run's report (JSON) to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Print only failures and the summary
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print marimo's output for failed notebooks
    #[arg(short, long)]
    pub verbose: bool,

    /// No progress bar: one line per notebook
    #[arg(long)]
    pub no_progress: bool,
}

impl Cli {
    /// `Some(true)` for `--sandbox`, `Some(false)` for `--no-sandbox`, `None` for neither.
    pub fn sandbox_flag(&self) -> Option<bool> {
        if self.no_sandbox {
            Some(false)
        } else if self.sandbox {
            Some(true)
        } else {
            None
        }
    }
}
