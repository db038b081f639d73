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
        Each notebook is exported by its own `uvx marimo export` process, all of them through one \
        bounded worker pool; then an index page links the pages. Unchanged notebooks are not \
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

    /// Run notebooks in uvx's marimo environment instead of a sandbox
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

    /// The uvx executable [default: uvx on PATH]
    #[arg(long, value_name = "PATH")]
    pub uvx: Option<PathBuf>,

    /// Pin the marimo version (runs marimo@VER)
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

    /// Print the export commands that would run, and run nothing
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
