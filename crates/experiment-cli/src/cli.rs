//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fanout_cli::{CompletionsArgs, RunArgs, Tool, Workers};

/// parallamr's words for the shared flags (see `fanout_cli`).
#[derive(Debug, Clone, Default)]
pub struct Parallamr;

impl Tool for Parallamr {
    const NAME: &'static str = "parallamr";
    const NOUN: (&'static str, &'static str) = ("experiment", "experiments");
    const MAX_WORKERS_CAP: usize = 256;
    const MAX_WORKERS_DEFAULT: Workers = Workers::Fixed(4);
    const TIMEOUT_HELP: &'static str = "a request (or a command) may take [default: 300]";
    const DRY_RUN_HELP: &'static str =
        "what would run after checking the inputs and configuration (no request is sent)";
    const OUTPUT_NAME: &'static str = "error (a provider's answer, a command's output)";
}

const EXAMPLES: &str = "  parallamr init
  parallamr run -p prompt.txt -e experiments.csv -o results.csv -j 8
  parallamr run -p prompt.txt -e experiments.csv -o results.csv --resume
  parallamr run -p prompt.txt -e experiments.csv -o results.csv --batch
  parallamr models ollama
  parallamr completions zsh > ~/.zfunc/_parallamr";

/// Run a prompt template against many provider/model/variable rows of a CSV, in parallel.
#[derive(Debug, Parser)]
#[command(
    name = "parallamr",
    version = fanout_cli::VERSION,
    long_about = "Run experiment sweeps: a prompt template against many provider/model/variable \
        rows of a CSV, in parallel, with results streamed to CSV as they complete.\n\n\
        Providers: mock (no network), ollama, openrouter, openai (and OpenAI-compatible servers \
        via OPENAI_BASE_URL), anthropic, gemini, command (a command template per row). \
        --batch sends the openai and anthropic rows through their batch APIs at half the price. `parallamr providers` shows \
        their settings and limits.",
    after_help = fanout_cli::after_help(EXAMPLES, Parallamr::NOUN),
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
    /// Show or empty the response cache
    Cache(CacheCli),
    /// Show or cancel the batches of a `run --batch` still at the providers
    Batch(BatchCli),
    /// Write an example prompt, experiments file and README snippet here (never overwrites)
    Init,
    /// Write the results as one self-contained HTML page: a matrix of rows by models, pass and
    /// fail, cost and latency, a summary per model, filters; with --compare, what changed
    View(ViewCli),
    #[command(long_about = fanout_cli::COMPLETIONS_HELP.replace("<tool>", "parallamr"))]
    /// Print a shell completion script (bash, zsh, fish, powershell)
    Completions(CompletionsArgs),
}

/// `--batch-poll`: a duration of at least 100 ms.
fn parse_poll(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration (e.g. 30s, 2m): {e}"))?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("{s:?} is too often: at least 100ms"));
    }
    Ok(d)
}

#[derive(Debug, clap::Args)]
pub struct BatchCli {
    #[command(subcommand)]
    pub action: BatchAction,
}

#[derive(Debug, Subcommand)]
pub enum BatchAction {
    /// Where each batch of a results file is (as its provider says)
    Status {
        /// The results file of a `run --batch`
        #[arg(value_name = "RESULTS")]
        results: PathBuf,
    },
    /// Stop every batch of a results file; the answers given so far are collected by the next
    /// `run --resume`
    Cancel {
        /// The results file of a `run --batch`
        #[arg(value_name = "RESULTS")]
        results: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ViewCli {
    /// The results file(s) of a run (CSV or JSON Lines)
    #[arg(value_name = "RESULTS", required = true)]
    pub results: Vec<PathBuf>,
    /// Earlier results of the same sweep: mark the answers that changed, newly pass or fail
    #[arg(long, value_name = "OLD")]
    pub compare: Vec<PathBuf>,
    /// The page to write
    #[arg(short, long, value_name = "FILE", default_value = "results.html")]
    pub output: PathBuf,
    /// The page's title [default: from the results file's name]
    #[arg(long)]
    pub title: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CacheCli {
    #[command(subcommand)]
    pub action: CacheAction,
    /// The response cache folder [default: parallamr in `$XDG_CACHE_HOME`, else `~/.cache`]
    #[arg(long, value_name = "DIR", global = true, env = "PARALLAMR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Where the cache is, and how many answers it keeps
    Info,
    /// Remove every kept answer
    Clear,
    /// Remove answers not used for longer than --max-age, then the least recently used until
    /// the cache is at most --max-size (a run does this once a day with the same limits)
    Prune(PruneArgs),
}

/// The response cache's limits: what `cache prune`, and a run once a day, keep.
#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// Keep at most this much (e.g. 500M, 2G)
    #[arg(long, value_name = "SIZE", env = "PARALLAMR_CACHE_MAX_SIZE", default_value = "1G",
          value_parser = crate::cache::parse_size)]
    pub max_size: u64,
    /// Remove answers not used for longer than this (e.g. 30d, 12h)
    #[arg(long, value_name = "AGE", env = "PARALLAMR_CACHE_MAX_AGE", default_value = "90d",
          value_parser = crate::cache::parse_age)]
    pub max_age: std::time::Duration,
}

#[derive(Debug, clap::Args)]
#[command(mut_arg("dry_run", |a| a.alias("validate-only")))]
pub struct RunCli {
    /// The prompt template file (`-`: standard input); `{{var}}` in the path picks a file per row
    #[arg(short, long, value_name = "PROMPT")]
    pub prompt: PathBuf,
    /// The experiments CSV: columns provider, model, and variables (`-`: standard input)
    #[arg(short, long, value_name = "EXPERIMENTS")]
    pub experiments: PathBuf,
    /// The results file: CSV, or JSON Lines if it ends in .jsonl [default: standard output];
    /// `{{var}}` in the path writes a file per value (e.g. 'results/{{provider}}.csv')
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// A context file appended to the prompt under `## Document: <name>`; repeatable;
    /// `{{var}}` in the path picks a file per row
    #[arg(short, long = "context", value_name = "CONTEXT")]
    pub contexts: Vec<PathBuf>,
    /// Retries after rate limits (429), 502/503/504 and connection errors
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// At most N requests in flight to provider NAME (e.g. ollama=4); repeatable
    #[arg(long = "provider-limit", value_name = "NAME=N", value_parser = parse_limit)]
    pub provider_limits: Vec<(String, usize)>,
    /// At most this rate of requests and prompt tokens per minute to provider NAME, spaced
    /// evenly (e.g. openai=500rpm,200000tpm); repeatable. The server's x-ratelimit headers are
    /// followed too, with or without it
    #[arg(long = "rate", value_name = "NAME=RATE", value_parser = check_rate)]
    pub rates: Vec<String>,
    /// The command template for the command provider, rendered per row and run with sh -c.
    /// A value never runs as code, in quotes or not: each becomes a reference to a variable
    /// holding it (`"${PARALLAMR_V1}"`); a placeholder where none can keep it data (inside
    /// backticks, after eval...) is refused before anything runs. `{{ var | safe }}` inserts a
    /// value as code
    #[arg(long, value_name = "TEMPLATE")]
    pub command: Option<String>,
    /// Columns sent as request parameters, not only as template variables (comma-separated;
    /// empty for none) [default: those of `temperature`, `max_tokens`, `top_p`, `seed` present]
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    pub param_columns: Option<Vec<String>>,
    /// Model prices, USD per million tokens: TOML (`"gpt-4o" = { input = 2.5, output = 10 }`) or
    /// CSV (model,input,output); a name may be `provider/model`. OpenRouter's own prices are
    /// used for models the file does not name; ollama and mock cost nothing
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Stop sending requests when the cost so far, with what is in flight, would pass USD
    /// (every model needs a price); what was not sent has no row, for --resume
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<f64>,
    /// Add the JSON in each answer (a fenced json block, else the first object or list) as
    /// columns: `a_b` for nested keys, `items_0` for list items. A CSV's columns are those of
    /// the first answer with JSON; later keys go to `json_extra`
    #[arg(long)]
    pub flatten: bool,
    /// The flattened columns, fixed from the start (implies --flatten); other keys go to
    /// `json_extra`
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    pub flatten_columns: Option<Vec<String>>,
    /// How deep --flatten goes; deeper values stay whole, as JSON
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub flatten_depth: usize,
    /// How many items of a list --flatten makes columns of; the rest go to `<list>_rest`
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub flatten_items: usize,
    /// Neither read nor keep answers in the response cache
    #[arg(long)]
    pub no_cache: bool,
    /// The response cache folder [default: parallamr in `$XDG_CACHE_HOME`, else `~/.cache`]
    #[arg(long, value_name = "DIR", env = "PARALLAMR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Complete an existing results file: run only the experiments without an ok/warning row
    #[arg(long)]
    pub resume: bool,
    /// When another parallamr run is writing the same results file, wait for it to end
    /// (without: refuse, naming its pid)
    #[arg(long)]
    pub wait: bool,
    /// Send the rows for openai and anthropic through their batch APIs: a few batches at half
    /// the price, answered within 24 h (usually minutes); other providers' rows go online.
    /// Batch ids are kept beside the results (.NAME.batches.json): a killed run, run again with
    /// --resume, polls them instead of sending again. Needs -o and the response cache
    #[arg(long, conflicts_with = "no_cache")]
    pub batch: bool,
    /// With --batch: at most N requests per batch [default: the provider's limit, 50000
    /// for openai, 100000 for anthropic]
    #[arg(long, value_name = "N", requires = "batch",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,
    /// With --batch: how often each batch is asked where it is (e.g. 30s, 2m)
    #[arg(long, value_name = "DURATION", default_value = "30s", requires = "batch",
          value_parser = parse_poll)]
    pub batch_poll: std::time::Duration,
    /// Send each experiment N times (a `repeat` column numbers them 1 to N); each is cached
    /// apart, so a re-run with a larger N sends only the new ones
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub repeat: Option<u32>,
    /// Also write the results page (as `parallamr view`) to FILE when the sweep ends
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    // The shared flags. --backend slurm runs the command provider's experiments as Slurm job
    // steps; HTTP requests are always sent from here.
    #[command(flatten)]
    pub run: RunArgs<Parallamr>,
    // After the shared flags: its heading would otherwise take them in.
    #[command(flatten)]
    pub judge: JudgeCli,
}

/// How an answer is held against the `expected` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExpectMode {
    // (No doc comments on the values: clap would switch `run --help` to its long layout.)
    // The answer contains it, ignoring case.
    Contains,
    // The answer, trimmed, is exactly it.
    Exact,
    // It is a regular expression the answer matches somewhere.
    Regex,
    // The last number in the answer is within --tolerance of it.
    Number,
}

/// How the answers are judged. Each check adds to the row's `pass` (all passed), `score` (their
/// mean) and `reason` (what failed) columns; a failed check is not an error.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Judging the answers")]
pub struct JudgeCli {
    /// How an `expected` column is held against the answer: contains (ignoring case; the
    /// default), exact (trimmed), regex (matches somewhere), number (the answer's last number,
    /// within --tolerance). A column `expect_mode` may set it per row
    #[arg(long, value_name = "MODE", value_enum)]
    pub expect: Option<ExpectMode>,
    /// The `expected` column is a variable only, not a check
    #[arg(long, conflicts_with = "expect")]
    pub no_expect: bool,
    /// `--expect number`: how far the answer's last number may be from the expected one
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    pub tolerance: f64,
    /// A check per row, as a minijinja expression that must be true; repeatable. It sees the
    /// row's variables, `output`, `json` (the JSON in the answer), `latency_ms`, `cost_usd`,
    /// `input_tokens`, `output_tokens`, `provider`, `model`, `repeat`. E.g. 'output | lower is
    /// containing "paris"' or 'json.score >= 0.8'
    #[arg(long = "assert", value_name = "EXPR")]
    pub asserts: Vec<String>,
    /// The answer must hold JSON (a fenced json block, else the first object or list)
    #[arg(long)]
    pub is_json: bool,
    /// The JSON in the answer must be valid against this JSON Schema; the schema is also sent
    /// as the provider's structured output (OpenAI `response_format`, Anthropic a forced tool,
    /// Gemini `responseJsonSchema`, Ollama `format`)
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Ask this model whether each answer meets the rubric (a second request per row, cached
    /// like any other; its tokens and cost are counted apart)
    #[arg(long, value_name = "PROVIDER/MODEL")]
    pub grader: Option<String>,
    /// The grader's instructions: a template that sees the row's variables, `prompt` and
    /// `output` [default: is the answer correct, complete and responsive]
    #[arg(long, value_name = "FILE")]
    pub rubric: Option<PathBuf>,
    /// Exit 1 when any answer failed a check (without it, only errors fail the run)
    #[arg(long)]
    pub fail_on_assert: bool,
}

/// `--max-cost`: a positive amount of dollars (`0.50`, `$2`).
fn parse_usd(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .trim_start_matches('$')
        .parse()
        .map_err(|_| format!("{s:?} is not an amount of dollars (e.g. 0.50)"))?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("{s:?}: the budget must be above 0"))
    }
}

/// `--rate`: checked here, so a bad one is a usage error naming the flag.
fn check_rate(s: &str) -> Result<String, String> {
    crate::rate::parse_rate(s).map(|_| s.to_owned())
}

/// `--provider-limit NAME=N`.
fn parse_limit(s: &str) -> Result<(String, usize), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=N (e.g. ollama=4)"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {n:?} is not a whole number"))?;
    if n == 0 {
        return Err(format!("{s:?}: a provider limit must be at least 1"));
    }
    Ok((name.trim().to_owned(), n))
}
