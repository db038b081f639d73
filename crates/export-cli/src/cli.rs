//! The command line, as clap sees it. Values stay optional here: `config` merges them with
//! `[tool.export-nb]` in `pyproject.toml` (flags win) and validates the result.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fanout_cli::{CompletionsArgs, RunArgs, Tool, Workers};

/// export-nb's words for the shared flags (see `fanout_cli`).
#[derive(Debug, Clone, Default)]
pub struct ExportNb;

impl Tool for ExportNb {
    const NAME: &'static str = "export-nb";
    const NOUN: (&'static str, &'static str) = ("notebook", "notebooks");
    // Each export is a CPU-heavy Python process.
    const MAX_WORKERS_CAP: usize = 16;
    const MAX_WORKERS_DEFAULT: Workers = Workers::Cores;
    const TIMEOUT_HELP: &'static str =
        "one export may take before its whole process tree is killed [default: 300]";
    const DRY_RUN_HELP: &'static str = "the environments and export commands that would run";
    const OUTPUT_NAME: &'static str = "marimo output";
}

const EXAMPLES: &str = "  export-nb                          export ./notebooks to ./_site
  export-nb -j 4 docs/notebooks      four exports at a time
  export-nb notebooks/intro.py       one notebook (its page as when its folder is exported)
  export-nb notebooks --apps apps    static pages plus WebAssembly apps
  export-nb --dry-run                show the export commands, run nothing
  export-nb completions bash > ~/.local/share/bash-completion/completions/export-nb";

/// Export marimo notebooks to a static HTML site, many at once.
#[derive(Debug, Parser)]
#[command(
    name = "export-nb",
    version = fanout_cli::VERSION,
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
    after_help = fanout_cli::after_help(EXAMPLES, ExportNb::NOUN),
    args_conflicts_with_subcommands = true,
)]
pub struct Cli {
    #[command(flatten)]
    pub export: ExportArgs,

    #[command(subcommand)]
    pub command: Option<Commands>,
}

/// What to export and how: the arguments of `export-nb` and of `export-nb watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Folders of notebooks to export as static HTML pages, or notebook files, or globs
    /// (`'nbs/**/*.py'`); a page goes where exporting its folder puts it [default: notebooks]
    #[arg(value_name = "PATH")]
    pub folders: Vec<PathBuf>,

    /// Folder of notebooks (or a notebook, or a glob) to export as WebAssembly apps (run mode,
    /// code hidden); repeatable
    #[arg(long = "apps", value_name = "DIR")]
    pub apps: Vec<PathBuf>,

    /// Folder of notebooks (or a notebook, or a glob) to export as interactive WebAssembly
    /// notebooks (edit mode); repeatable
    #[arg(long = "wasm", value_name = "DIR")]
    pub wasm: Vec<PathBuf>,

    /// Where the site goes [default: _site]
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Run each notebook in its own environment from its inline dependencies (the default)
    #[arg(long, overrides_with = "no_sandbox")]
    pub sandbox: bool,

    /// Ignore the notebooks' inline dependencies: every notebook runs in one environment with
    /// marimo alone
    #[arg(long, overrides_with = "sandbox")]
    pub no_sandbox: bool,

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

    /// The address the site is published at (an `http(s)://` URL): link previews get absolute
    /// URLs, pages a canonical link, and the site a sitemap.xml
    #[arg(long, value_name = "URL", value_parser = parse_base_url)]
    pub base_url: Option<String>,

    /// Photograph each exported page in headless Chromium for its card and link previews (a
    /// notebook with a picture of its own keeps it); an unchanged page keeps its photograph
    #[arg(long)]
    pub thumbnails: bool,

    /// The Chromium (or Chrome) for --thumbnails [default: chromium on PATH]
    #[arg(long, value_name = "PATH")]
    pub chromium: Option<PathBuf>,

    /// Leave out notebooks whose path (relative to their folder) matches; repeatable
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Export every notebook, even those that are up to date
    #[arg(long)]
    pub force: bool,

    /// Publish the page of a notebook whose cells raised errors (marimo still writes it, with
    /// the errors shown in their cells); the index marks it "cell errors" and the run still
    /// exits 1. Without it such a page is not published (the last good page, if any, stays)
    #[arg(long)]
    pub keep_failed_pages: bool,

    /// When another export-nb run (or watch) is using the output folder, wait for it to end
    /// (without: refuse, naming its pid)
    #[arg(long)]
    pub wait: bool,

    /// Where pages load marimo's frontend from: `local` copies it once into the site
    /// (`_marimo/<version>/`, about 27 MB), so pages work without internet access from any web
    /// server; `cdn` leaves pages as marimo writes them, loading it from cdn.jsdelivr.net (they
    /// also open from disk) [default: local]
    #[arg(long, value_name = "MODE", value_enum)]
    pub assets: Option<Assets>,

    // The shared flags (settings in pyproject.toml: max-workers, timeout, backend, slurm-args).
    #[command(flatten)]
    pub run: RunArgs<ExportNb>,
}

/// `export-nb watch`: the export arguments, and where to serve the site.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub export: ExportArgs,

    /// Serve the output folder over HTTP while watching, at 127.0.0.1:8000 or --serve=ADDR;
    /// open pages reload themselves when they are exported again (only this machine can
    /// connect unless ADDR says otherwise, e.g. --serve=0.0.0.0:8000)
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "127.0.0.1:8000"
    )]
    pub serve: Option<String>,
}

/// Where exported pages load marimo's frontend from (`--assets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assets {
    /// A copy in the site, `_marimo/<version>/`, shared by every page.
    Local,
    /// marimo's CDN, cdn.jsdelivr.net.
    Cdn,
}

impl Assets {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Assets::Local => "local",
            Assets::Cdn => "cdn",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Export, then export again whatever changes, until Ctrl-C
    #[command(
        long_about = "Export incrementally, then watch the notebook folders, the index template \
            and pyproject.toml and export again after every change, until Ctrl-C.\n\n\
            Only notebooks whose content, local modules or settings changed are exported; a \
            deleted notebook's page is removed and a new one added; the index is written after \
            every round. A burst of saves is one change. A notebook that changes while it is \
            being exported is stopped (its processes killed) and exported again. A changed \
            pyproject.toml is read again; if it is invalid, the last good settings stay. \
            Takes the same arguments as export-nb itself, and --serve to look at the site \
            while you write: pages open in a browser reload themselves when they are exported \
            again.",
        args_conflicts_with_subcommands = true
    )]
    Watch(Box<WatchArgs>),
    #[command(long_about = fanout_cli::COMPLETIONS_HELP.replace("<tool>", "export-nb"))]
    /// Print a shell completion script (bash, zsh, fish, powershell)
    Completions(CompletionsArgs),
}

impl ExportArgs {
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

/// `--base-url`: an `http(s)://` URL, made to end in `/`.
pub(crate) fn parse_base_url(url: &str) -> Result<String, String> {
    let u = url.trim();
    let ok = (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() > "https://".len()
        && !u
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'));
    if !ok {
        return Err(format!(
            "{url:?} is not an http(s) URL (e.g. https://me.github.io/notebooks/)"
        ));
    }
    Ok(if u.ends_with('/') {
        u.to_owned()
    } else {
        format!("{u}/")
    })
}
