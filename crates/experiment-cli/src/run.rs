//! `parallamr run`: validate everything, then one pool batch over the experiments; each row is
//! written by the owner thread as its experiment completes.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fanout::{
    CancelReason, CancelToken, Event, ExitStatus, MaxWorkers, Pool, PoolConfig, ProgressMode,
    Reporter, RetryPolicy, Task, TaskError, Tee,
};
use fanout_cli::UsageResult;

use crate::cache::{self, Cache, Entry};
use crate::cost::{self, Budget, Prices};
use crate::experiments::{Experiment, Experiments, Template, join_prompt, read_input};
use crate::paths::{NoPath, PathTemplate};
use crate::providers::{self, CommandProvider, Http, Provider, Request, estimate_tokens};
use crate::rate::Pacers;
use crate::shell_template::ShellTemplate;
use crate::writer::{self, Flattening, Outputs, Row};

/// Share of the context window above which a row warns, and above which it is not sent.
const WARN_SHARE: f64 = 0.8;
const ERROR_SHARE: f64 = 0.9;

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
    /// `--backend`: where the command provider's experiments run.
    /// Where the command provider's experiments run, checked.
    pub(crate) launcher: fanout::Launcher,
    pub(crate) dry_run: bool,
    pub(crate) resume: bool,
    /// `--wait`: for another run writing the same results file.
    pub(crate) wait: fanout::runlock::Wait,
    pub(crate) report: Option<PathBuf>,
    pub(crate) progress: ProgressMode,
    /// Lines of a failure's detail shown under it (`-v`).
    pub(crate) detail_lines: usize,
}

/// A counting semaphore: at most `n` requests in flight to one provider.
#[derive(Debug)]
struct Limit {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Limit {
    fn new(n: usize) -> Self {
        Limit {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    /// Wait for a slot; `None` if cancelled while waiting.
    fn acquire<'a>(&'a self, cancel: &CancelToken) -> Option<LimitGuard<'a>> {
        let mut free = self.free.lock().expect("limit");
        while *free == 0 {
            if cancel.is_cancelled() {
                return None;
            }
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(50))
                .expect("limit")
                .0;
        }
        *free -= 1;
        Some(LimitGuard(self))
    }
}

struct LimitGuard<'a>(&'a Limit);

impl Drop for LimitGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("limit") += 1;
        self.0.freed.notify_one();
    }
}

/// What a row knows besides the answer: the work function's meta, delivered with its outcome
/// whether the experiment succeeded or failed.
#[derive(Debug, Clone, Default)]
struct Facts {
    input_tokens: Option<u64>,
    context_window: Option<u64>,
    warning: Option<String>,
}

/// A finished experiment's answer, its token counts filled in where the provider gave none.
#[derive(Debug, Clone)]
struct Done {
    text: String,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// Whether it came from the response cache (no request was sent).
    cached: bool,
    /// What the answer costs at the model's price, if it has one.
    cost: Option<f64>,
}

/// The validated inputs of a run.
struct Inputs {
    experiments: Experiments,
    /// The prompt templates: one, or with placeholders in `-p`/`-c` one per distinct set of
    /// files the rows name.
    templates: Vec<Template>,
    /// The template of each experiment, by its index.
    template_of: Vec<usize>,
    providers: HashMap<String, Box<dyn Provider>>,
    /// The providers the experiments use, sorted.
    used: Vec<String>,
    /// The price of each model that has one.
    prices: Prices,
    /// The HTTP agent, and the providers' rate schedules.
    http: Http,
    /// `-o`, checked (`None`: standard output).
    output: Option<PathTemplate>,
}

/// The names a path template may use: provider, model and the variables.
fn columns(experiments: &Experiments) -> Vec<String> {
    let mut c = vec!["provider".to_owned(), "model".to_owned()];
    c.extend(experiments.var_names.iter().cloned());
    c
}

/// The prompt templates and which one each experiment uses. Without placeholders in `-p` and
/// `-c` that is one template; with them, each file is read once and each distinct set of files
/// is one template. A file that cannot be read, or a row that leaves a path's variable empty, is
/// an error before anything runs.
fn prompt_templates(
    args: &RunArgs,
    experiments: &Experiments,
) -> Result<(Vec<Template>, Vec<usize>)> {
    let columns = columns(experiments);
    let mut paths = vec![PathTemplate::new("-p", &args.prompt, &columns)?];
    for c in &args.contexts {
        paths.push(PathTemplate::new("-c", c, &columns)?);
    }
    let mut texts: HashMap<PathBuf, String> = HashMap::new();
    let mut load = |files: &[PathBuf]| -> Result<Template> {
        let mut read = |p: &Path, what: &str| -> Result<String> {
            if let Some(t) = texts.get(p) {
                return Ok(t.clone());
            }
            let t = read_input(p, what)?;
            texts.insert(p.to_owned(), t.clone());
            Ok(t)
        };
        let prompt = read(&files[0], "prompt")?;
        let mut contexts = Vec::new();
        for c in &files[1..] {
            let name = c.file_name().map_or_else(
                || c.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            contexts.push((name, read(c, "context")?));
        }
        Template::new(
            &files[0].display().to_string(),
            join_prompt(&prompt, &contexts),
        )
    };
    if !paths.iter().any(PathTemplate::is_template) {
        let files: Vec<PathBuf> = paths.iter().map(|p| p.raw().to_owned()).collect();
        return Ok((vec![load(&files)?], vec![0; experiments.rows.len()]));
    }
    let mut templates = Vec::new();
    let mut by_files: HashMap<Vec<PathBuf>, usize> = HashMap::new();
    let mut of = Vec::with_capacity(experiments.rows.len());
    for e in &experiments.rows {
        let at = || format!("{} line {}", experiments.source, e.line);
        let mut files = Vec::with_capacity(paths.len());
        for (i, t) in paths.iter().enumerate() {
            let file = t.render(e).map_err(|NoPath::Missing(m)| {
                anyhow!(
                    "{}: {} {} needs {}, which this row leaves empty",
                    at(),
                    if i == 0 { "-p" } else { "-c" },
                    t.raw().display(),
                    m.join(", ")
                )
            })?;
            files.push(file);
        }
        let i = if let Some(i) = by_files.get(&files) {
            *i
        } else {
            templates.push(load(&files).with_context(at)?);
            by_files.insert(files, templates.len() - 1);
            templates.len() - 1
        };
        of.push(i);
    }
    Ok((templates, of))
}

/// Read and check everything.
fn prepare(args: &RunArgs) -> Result<Inputs> {
    if args.prompt == std::path::Path::new("-") && args.experiments == std::path::Path::new("-") {
        bail!("only one of the prompt (-p) and the experiments (-e) can come from standard input");
    }
    let exp_name = args.experiments.display().to_string();
    let exp_text = read_input(&args.experiments, "experiments")?;
    let mut experiments = Experiments::parse(&exp_text, &exp_name, providers::KNOWN)?;
    let param_columns =
        crate::params::columns(args.param_columns.as_deref(), &experiments.var_names)?;
    experiments.read_params(&param_columns)?;
    let (templates, template_of) = prompt_templates(args, &experiments)?;
    for (name, n) in &args.limits {
        if !providers::KNOWN.contains(&name.as_str()) {
            bail!(
                "--provider-limit {name}={n}: unknown provider; the known providers: {}",
                providers::KNOWN.join(", ")
            );
        }
    }
    for (name, _) in &args.rates {
        if !providers::KNOWN.contains(&name.as_str()) {
            bail!(
                "--rate {name}=...: unknown provider; the known providers: {}",
                providers::KNOWN.join(", ")
            );
        }
    }
    let mut used: Vec<&str> = experiments
        .rows
        .iter()
        .map(|e| e.provider.as_str())
        .collect();
    used.sort_unstable();
    used.dedup();
    let http = Http::new(args.timeout).with_pacers(std::sync::Arc::new(Pacers::new(
        &used,
        &args.rates,
        providers::tells_rate_limits,
    )));
    let launcher = args.launcher.clone();
    let command = match &args.command {
        Some(c) => Some(CommandProvider::new(
            ShellTemplate::new("--command", c.clone())?,
            args.timeout,
            launcher.clone(),
            args.settings.file_only(),
        )),
        None => None,
    };
    if let Some(command) = &command {
        // A placeholder refused where it stands is an input error, before anything runs.
        for e in experiments.rows.iter().filter(|e| e.provider == "command") {
            command
                .script(&e.vars, &e.model)
                .map_err(|why| anyhow!("{why} (rendering {} line {})", exp_name, e.line))?;
        }
    }
    if matches!(launcher, fanout::Launcher::Slurm(_)) && !used.contains(&"command") {
        bail!(
            "--backend slurm runs the command provider's experiments on Slurm, and these \
             experiments use none (providers: {}); HTTP requests are sent from here",
            used.join(", ")
        );
    }
    let providers = providers::build(&used, &http, command.as_ref(), &args.settings)?;
    let used: Vec<String> = used.into_iter().map(str::to_owned).collect();

    // A bad -o template is an input error like any other: before anything runs.
    let output = args
        .output
        .as_deref()
        .map(|o| PathTemplate::new("-o", o, &columns(&experiments)))
        .transpose()?;
    let prices = prices(args, &experiments, &providers)?;
    Ok(Inputs {
        experiments,
        templates,
        template_of,
        providers,
        used,
        prices,
        http,
        output,
    })
}

/// The price of each model used: `--prices`, else what the provider reports (OpenRouter). With
/// `--max-cost`, every model sent to must have one.
fn prices(
    args: &RunArgs,
    experiments: &Experiments,
    providers: &HashMap<String, Box<dyn Provider>>,
) -> Result<Prices> {
    let mut prices = match &args.prices {
        Some(p) => Prices::load(p)?,
        None => Prices::default(),
    };
    let mut models: Vec<(&str, &str)> = experiments
        .rows
        .iter()
        .map(|e| (e.provider.as_str(), e.model.as_str()))
        .collect();
    models.sort_unstable();
    models.dedup();
    let mut unpriced = Vec::new();
    for (provider, model) in models {
        if prices.known(provider, model) {
            continue;
        }
        match providers[provider].price(model) {
            Some(p) => prices.learn(provider, model, p),
            None => unpriced.push(format!("{provider}/{model}")),
        }
    }
    if args.max_cost.is_some() && !unpriced.is_empty() {
        bail!(
            "--max-cost needs the price of every model, and these have none: {} (give them in a \
             --prices file: \"MODEL\" = {{ input = USD, output = USD }} per million tokens)",
            unpriced.join(", ")
        );
    }
    Ok(prices)
}

/// What `--dry-run` says once everything checked out: the experiments, their variables, what
/// the prompt uses, and the variables no column gives (every row is then a warning).
fn dry_run_summary(experiments: &Experiments, templates: &[Template], used: &[String]) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let used_vars: BTreeSet<&String> = templates.iter().flat_map(|t| &t.uses).collect();
    let lacking: Vec<&str> = used_vars
        .iter()
        .copied()
        .filter(|u| !experiments.var_names.contains(u))
        .map(String::as_str)
        .collect();
    let verdict = if lacking.is_empty() {
        "all valid".to_owned()
    } else {
        format!(
            "valid, but no column gives {}: every row will be a warning (rendered without it)",
            lacking.join(", ")
        )
    };
    let prompts = if templates.len() > 1 {
        format!(" ({} prompts, by the rows' values)", templates.len())
    } else {
        String::new()
    };
    format!(
        "{}: {} experiment{} for {} ({} variable{}: {}); the prompt{prompts} uses: {}; {verdict}",
        experiments.source,
        experiments.rows.len(),
        plural(experiments.rows.len()),
        used.join(", "),
        experiments.var_names.len(),
        plural(experiments.var_names.len()),
        experiments.var_names.join(", "),
        used_vars
            .iter()
            .map(|u| u.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub(crate) fn run(args: &RunArgs) -> Result<ExitStatus> {
    let inputs = prepare(args).usage()?;
    if args.dry_run {
        dry_run(&inputs, args.cache.as_ref());
        return Ok(ExitStatus::Success);
    }
    let experiments = &inputs.experiments;
    let budget = args.max_cost.map(Budget::new);
    let Opened {
        mut out,
        to,
        todo,
        unplaced,
        files,
    } = open_output(args, &inputs).usage()?;
    tell_settings(args);
    let mut write_error: Option<anyhow::Error> = None;
    let mut tally = Tally {
        error_rows: unplaced.len(),
        ..Tally::default()
    };
    if let Err(err) = write_unplaced(args, &unplaced, &to, &mut out, &mut tally.written) {
        return Ok(stopped_by(&err, tally.written));
    }
    let limits = limits(args, &inputs.used);
    let tasks: Vec<Task<&Experiment>> = todo
        .iter()
        .map(|e| Task::new(format!("{} line {}", experiments.source, e.line), *e))
        .collect();
    let interrupt = fanout::install_interrupt_handler()?;
    let pool = pool(args)?;

    let mut rows = |event: &Event<'_, Done, Facts>| {
        let Event::TaskFinished { outcome, .. } = event else {
            return;
        };
        // An interrupted experiment, or one the budget stopped, has no result: no row, so
        // --resume runs it.
        if outcome.status == fanout::Status::Cancelled {
            return;
        }
        if outcome.status == fanout::Status::Skipped {
            tally.not_sent += 1;
            return;
        }
        let e = todo[outcome.index];
        let mut row = row_for(e, outcome);
        if let Some(f) = &args.flatten {
            flatten_row(&mut row, f);
        }
        tally.count(&row);
        if write_error.is_none()
            && let Err(err) = out.write(to[e.index], &row)
        {
            // Every later row would be lost while its request is still sent (and paid for):
            // stop the sweep now.
            write_error = Some(err);
            interrupt.cancel(CancelReason::Requested);
        }
    };
    let mut progress = args
        .progress
        .reporter_with_detail::<Done, Facts>(args.detail_lines);
    let mut tee = Tee(vec![
        &mut rows,
        progress.as_mut() as &mut dyn Reporter<Done, Facts>,
    ]);
    let started = Instant::now();
    let shared = Shared {
        inputs: &inputs,
        limits: &limits,
        cache: args.cache.as_ref(),
        budget: budget.as_ref(),
    };
    let result = pool.run_with_meta(&tasks, &interrupt, &mut tee, |e: &&Experiment, ctx| {
        let mut facts = Facts::default();
        let result = run_one(e, &shared, &mut facts, ctx.cancel_token());
        (result, facts)
    })?;
    drop(tee);
    if write_error.is_none()
        && let Err(e) = out.finish()
    {
        write_error = Some(e);
    }
    if let Some(e) = write_error {
        return Ok(stopped_by(&e, tally.written));
    }
    write_report(args.report.as_deref(), &result, &todo)?;
    tally.say(args, &files, todo.len() + unplaced.len(), started.elapsed());
    // The run's results are written: the cache's limits are kept now, once a day.
    if let Some(c) = &args.cache {
        c.prune_daily(args.cache_limits);
    }
    let stopped = budget
        .as_ref()
        .is_some_and(|b| say_budget(b, tally.not_sent));
    Ok(if interrupt.reason() == Some(CancelReason::Interrupted) {
        ExitStatus::Interrupted
    } else if tally.error_rows > 0 || stopped {
        ExitStatus::TaskFailed
    } else {
        ExitStatus::Success
    })
}

/// `--flatten` and its settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flatten {
    pub(crate) limits: crate::flatten::Limits,
    /// `--flatten-columns`: the columns, fixed from the start.
    pub(crate) columns: Option<Vec<String>>,
}

/// What `Outputs` needs to know of `--flatten`.
fn flatten_columns(args: &RunArgs) -> Flattening {
    match &args.flatten {
        None => Flattening::Off,
        Some(Flatten {
            columns: Some(c), ..
        }) => Flattening::Columns(c.clone()),
        Some(_) => Flattening::FromAnswers,
    }
}

/// The JSON of a finished row's answer as columns; an answer without JSON keeps empty cells
/// and says so as a warning.
fn flatten_row(row: &mut Row, f: &Flatten) {
    if row.status == "error" {
        row.flat = Some(Vec::new());
        return;
    }
    if let Some(v) = crate::flatten::extract(&row.output) {
        row.flat = Some(crate::flatten::flatten(&v, f.limits));
    } else {
        row.flat = Some(Vec::new());
        row.status = "warning";
        let msg = "--flatten: no JSON in the output";
        row.error_message = if row.error_message.is_empty() {
            msg.to_owned()
        } else {
            format!("{}; {msg}", row.error_message)
        };
    }
}

/// What the report (`--report`) adds to each experiment's entry.
#[derive(Debug, serde::Serialize)]
struct ReportExtra<'a> {
    provider: &'a str,
    model: &'a str,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cached: bool,
    cost_usd: Option<f64>,
}

impl<'a> ReportExtra<'a> {
    fn of(e: &'a Experiment, o: &fanout::Outcome<Done, Facts>) -> Self {
        let d = o.value.as_ref();
        ReportExtra {
            provider: &e.provider,
            model: &e.model,
            input_tokens: d.and_then(|d| d.input_tokens).or(o.meta.input_tokens),
            output_tokens: d.and_then(|d| d.output_tokens),
            cached: d.is_some_and(|d| d.cached),
            cost_usd: d.and_then(|d| d.cost),
        }
    }
}

/// Whether the budget stopped the sweep, and if so say what it kept from being sent.
fn say_budget(b: &Budget, not_sent: usize) -> bool {
    let (spent, stopped) = b.outcome();
    if stopped {
        eprintln!(
            "stopped at the budget (--max-cost {}): {not_sent} experiments not sent; spent {} \
             (--resume with a larger --max-cost sends them)",
            cost::fmt_usd(b.max()),
            cost::fmt_usd(spent)
        );
    }
    stopped
}

/// What the rows of a run came to.
#[derive(Debug, Default)]
struct Tally {
    written: usize,
    error_rows: usize,
    from_cache: usize,
    /// Experiments the budget kept from being sent.
    not_sent: usize,
    /// Tokens and cost per provider/model.
    by_model: std::collections::BTreeMap<(String, String), Usage>,
}

/// What the rows of one provider/model came to.
#[derive(Debug, Default)]
struct Usage {
    rows: usize,
    input_tokens: u64,
    output_tokens: u64,
    /// Spent on requests sent; `None` while no row had a price.
    spent: Option<f64>,
    /// What the answers from the cache cost when they were sent.
    saved: f64,
}

impl Tally {
    fn count(&mut self, row: &Row) {
        self.written += 1;
        self.from_cache += usize::from(row.cached);
        self.error_rows += usize::from(row.status == "error");
        let u = self
            .by_model
            .entry((row.key[0].clone(), row.key[1].clone()))
            .or_default();
        u.rows += 1;
        u.input_tokens += row.input_tokens.unwrap_or(0);
        u.output_tokens += row.output_tokens.unwrap_or(0);
        if let Some(c) = row.cost_usd {
            if row.cached {
                u.saved += c;
            } else {
                *u.spent.get_or_insert(0.0) += c;
            }
        }
    }

    /// Tokens and cost per provider/model, and the totals.
    fn say_usage(&self) {
        if self
            .by_model
            .values()
            .all(|u| u.input_tokens + u.output_tokens == 0)
        {
            return;
        }
        eprintln!("tokens and cost:");
        let (mut inp, mut out, mut spent, mut saved) = (0, 0, 0.0, 0.0);
        for ((provider, model), u) in &self.by_model {
            let cost = u.spent.map_or_else(
                || {
                    if u.saved > 0.0 {
                        "$0".to_owned()
                    } else {
                        "no price".to_owned()
                    }
                },
                cost::fmt_usd,
            );
            eprintln!(
                "  {provider}/{model}: {} row{}, {} in + {} out tokens, {cost}",
                u.rows,
                if u.rows == 1 { "" } else { "s" },
                u.input_tokens,
                u.output_tokens
            );
            inp += u.input_tokens;
            out += u.output_tokens;
            spent += u.spent.unwrap_or(0.0);
            saved += u.saved;
        }
        let saved = if saved > 0.0 {
            format!(" ({} more answered from the cache)", cost::fmt_usd(saved))
        } else {
            String::new()
        };
        eprintln!(
            "  total: {inp} in + {out} out tokens, {} spent{saved}",
            cost::fmt_usd(spent)
        );
    }

    /// The closing line: where the rows went, how many, how long, how many were not sent.
    fn say(&self, args: &RunArgs, files: &[PathBuf], total: usize, elapsed: Duration) {
        let cached = if self.from_cache > 0 {
            format!("; {} from the cache, not sent", self.from_cache)
        } else {
            String::new()
        };
        match &args.output {
            Some(path) => eprintln!(
                "results: {} ({} of {total} rows written in {}{cached})",
                where_(path, files),
                self.written,
                fanout::fmt_duration(elapsed)
            ),
            None if self.from_cache > 0 => eprintln!("{} rows{cached}", self.written),
            None => {}
        }
        if !matches!(args.progress, ProgressMode::Quiet | ProgressMode::Silent) {
            self.say_usage();
        }
    }
}

/// The pool of a sweep: its workers, and retries with backoff.
fn pool(args: &RunArgs) -> Result<Pool> {
    Ok(Pool::new(
        PoolConfig::new(args.max_workers)
            .noun("experiment", "experiments")
            .retry(
                RetryPolicy::retries(args.retries).with_initial_backoff(Duration::from_millis(500)),
            )
            .with_env_overrides()
            .usage()?,
    ))
}

/// Where the results went: the file, or how many files a template made.
fn where_(path: &Path, files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        many => format!("{} files by {}", many.len(), path.display()),
    }
}

/// Rows that no -o file can be named for are sent nowhere: they are error rows, in the file
/// named with `_missing_` for the empty values.
fn write_unplaced(
    args: &RunArgs,
    unplaced: &[(&Experiment, Vec<String>)],
    to: &[usize],
    out: &mut Outputs,
    written: &mut usize,
) -> Result<()> {
    for (e, missing) in unplaced {
        let row = Row {
            key: e.key(),
            status: "error",
            input_tokens: None,
            context_window: None,
            output_tokens: None,
            duration_seconds: 0.0,
            output: String::new(),
            error_message: format!(
                "not sent: -o {} needs {}, which this row leaves empty",
                args.output.as_deref().unwrap_or(Path::new("-")).display(),
                missing.join(", ")
            ),
            cached: false,
            cost_usd: None,
            flat: None,
        };
        out.write(to[e.index], &row)?;
        *written += 1;
    }
    Ok(())
}

/// The concurrency limit of each provider used: `--provider-limit`, else its default.
fn limits<'a>(args: &RunArgs, used: &'a [String]) -> HashMap<&'a str, Limit> {
    used.iter()
        .map(|p| {
            let n = args.limits.iter().find(|(name, _)| name == p).map_or_else(
                || providers::default_limit(p, args.max_workers.get()),
                |(_, n)| *n,
            );
            (p.as_str(), Limit::new(n))
        })
        .collect()
}

/// A results write failed, and the sweep was stopped: experiments ran, so this is not a usage
/// error. Say why, and fail.
fn stopped_by(e: &anyhow::Error, written: usize) -> ExitStatus {
    eprintln!(
        "parallamr: error: the results could not be written, so the sweep was stopped \
         ({written} rows done): {e:#}"
    );
    ExitStatus::TaskFailed
}

/// `--report FILE`: the shared report, with each row's provider, model and tokens.
fn write_report(
    path: Option<&Path>,
    result: &fanout::BatchResult<Done, Facts>,
    todo: &[&Experiment],
) -> Result<()> {
    if let Some(path) = path {
        result
            .report_with(|o| ReportExtra::of(todo[o.index], o))
            .write_json(path)?;
    }
    Ok(())
}

/// Which `.env` the settings came from, if one: a file found in a folder above can change
/// where requests go.
fn tell_settings(args: &RunArgs) {
    if let Some(file) = args.settings.file()
        && !matches!(args.progress, ProgressMode::Quiet | ProgressMode::Silent)
    {
        eprintln!(
            "parallamr: settings from {} (the environment wins over it)",
            file.display()
        );
    }
}

/// Where the rows go, and what is still to run.
struct Opened<'e> {
    out: Outputs,
    /// The destination of each experiment's row, by its index.
    to: Vec<usize>,
    /// The experiments to run: all, unless resuming, and not those in `unplaced`.
    todo: Vec<&'e Experiment>,
    /// Experiments whose `-o` template needs values the row leaves empty, and those names.
    unplaced: Vec<(&'e Experiment, Vec<String>)>,
    /// The results files (none for standard output).
    files: Vec<PathBuf>,
}

/// Open the results: standard output, one file, or with a path template one file per distinct
/// path the rows give (all opened before anything runs: a file that exists without --resume
/// is refused first, and each is resumed on its own).
fn open_output<'e>(args: &RunArgs, inputs: &'e Inputs) -> Result<Opened<'e>> {
    let experiments = &inputs.experiments;
    let header = writer::header(&experiments.var_names);
    let Some(template) = &inputs.output else {
        if args.resume {
            bail!("--resume needs the results file (-o FILE) to complete");
        }
        return Ok(Opened {
            out: Outputs::stdout(header, flatten_columns(args))?,
            to: vec![0; experiments.rows.len()],
            todo: experiments.rows.iter().collect(),
            unplaced: Vec::new(),
            files: Vec::new(),
        });
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut to = Vec::with_capacity(experiments.rows.len());
    let mut unplaced = Vec::new();
    for e in &experiments.rows {
        let file = template.render(e).unwrap_or_else(|NoPath::Missing(m)| {
            unplaced.push((e, m));
            template.render_lenient(e)
        });
        template.check_length(&file, e, &experiments.source)?;
        let i = *index.entry(file.clone()).or_insert_with(|| {
            files.push(file);
            files.len() - 1
        });
        to.push(i);
    }
    if !template.is_template() && files.is_empty() {
        files.push(template.raw().to_owned());
    }
    let (out, mut done) = Outputs::open(
        &files,
        header,
        args.resume,
        flatten_columns(args),
        args.wait,
    )?;
    let mut placeless = vec![false; experiments.rows.len()];
    for (e, _) in &unplaced {
        placeless[e.index] = true;
    }
    // With --resume, an experiment already done (as often as it appears in its file) is not
    // run again.
    let todo: Vec<&Experiment> = experiments
        .rows
        .iter()
        .filter(|e| !placeless[e.index])
        .filter(|e| match done[to[e.index]].get_mut(&e.key()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect();
    if args.resume {
        let of_files = if files.len() > 1 {
            format!(" in {} files", files.len())
        } else {
            String::new()
        };
        eprintln!(
            "resuming: {} of {} experiments already have a result{of_files}",
            experiments.rows.len() - todo.len() - unplaced.len(),
            experiments.rows.len()
        );
    }
    Ok(Opened {
        out,
        to,
        todo,
        unplaced,
        files,
    })
}

/// The result row of a finished experiment.
fn row_for(e: &Experiment, outcome: &fanout::Outcome<Done, Facts>) -> Row {
    let f = outcome.meta.clone();
    match (&outcome.value, &outcome.error) {
        (Some(d), _) => Row {
            key: e.key(),
            status: if f.warning.is_some() { "warning" } else { "ok" },
            input_tokens: d.input_tokens.or(f.input_tokens),
            context_window: f.context_window,
            output_tokens: d.output_tokens,
            duration_seconds: outcome.duration.as_secs_f64(),
            output: d.text.clone(),
            error_message: f.warning.unwrap_or_default(),
            cached: d.cached,
            cost_usd: d.cost,
            flat: None,
        },
        (None, err) => Row {
            key: e.key(),
            status: "error",
            input_tokens: f.input_tokens,
            context_window: f.context_window,
            output_tokens: None,
            duration_seconds: outcome.duration.as_secs_f64(),
            output: String::new(),
            error_message: err.as_ref().map(ToString::to_string).unwrap_or_default(),
            cached: false,
            cost_usd: None,
            flat: None,
        },
    }
}

/// The prompt of `e` (empty for the command provider, which renders its own), and a warning
/// naming the variables the template uses that the row lacks.
fn render(
    e: &Experiment,
    provider: &dyn Provider,
    template: &Template,
) -> Result<(String, Option<String>), String> {
    if provider.name() == "command" {
        return Ok((String::new(), None));
    }
    let (prompt, missing) = template.render(&e.vars, &[])?;
    let warning = (!missing.is_empty()).then(|| {
        format!(
            "the template uses {} that this row lacks: {}",
            if missing.len() == 1 {
                "a variable"
            } else {
                "variables"
            },
            missing.join(", ")
        )
    });
    Ok((prompt, warning))
}

/// Where the answer to `req` is kept: the cache and the key (none with `--no-cache`, or for a
/// provider whose answers are not cached).
fn cache_entry<'c>(
    cache: Option<&'c Cache>,
    provider: &dyn Provider,
    req: &Request<'_>,
) -> Option<(&'c Cache, String)> {
    let cache = cache?;
    let endpoint = provider.cache_endpoint()?;
    Some((cache, cache::key(provider.name(), &endpoint, req)))
}

/// What is sent for `e` with `prompt`.
fn request<'a>(e: &'a Experiment, prompt: &'a str) -> Request<'a> {
    Request {
        model: &e.model,
        prompt,
        vars: &e.vars,
        params: &e.params,
    }
}

/// `--dry-run`: the summary, and on standard output every prompt as it would be sent (the
/// command, for the command provider) with its size, its warning and whether the cache has its
/// answer. Nothing is sent.
fn dry_run(inputs: &Inputs, cache: Option<&Cache>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let mut in_cache = 0usize;
    let mut tokens = 0u64;
    let mut prompt_cost = 0.0;
    for e in &inputs.experiments.rows {
        let provider = inputs.providers[e.provider.as_str()].as_ref();
        let template = &inputs.templates[inputs.template_of[e.index]];
        let vars: Vec<String> = e.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let (text, note) = match render(e, provider, template) {
            Ok((prompt, warning)) => {
                let req = request(e, &prompt);
                let cached =
                    cache_entry(cache, provider, &req).is_some_and(|(c, k)| c.get(&k).is_some());
                in_cache += usize::from(cached);
                let n = estimate_tokens(&prompt);
                tokens += n;
                if let Some(p) = inputs.prices.get(&e.provider, &e.model) {
                    prompt_cost += p.cost(n, 0);
                }
                let mut facts = vec![if provider.name() == "command" {
                    "a command".to_owned()
                } else {
                    format!("about {n} tokens")
                }];
                if cached {
                    facts.push("answer in the cache".to_owned());
                }
                let preview = provider
                    .preview(&req)
                    .unwrap_or_else(|e| format!("(cannot render: {e})"));
                (preview, (facts.join("; "), warning))
            }
            Err(err) => (String::new(), ("cannot render".to_owned(), Some(err))),
        };
        let _ = writeln!(
            out,
            "--- {} line {}: {}/{}{}{} ({}) ---",
            inputs.experiments.source,
            e.line,
            e.provider,
            e.model,
            if vars.is_empty() { "" } else { ", " },
            vars.join(", "),
            note.0
        );
        let _ = writeln!(out, "{}", text.trim_end_matches('\n'));
        if let Some(w) = note.1 {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    drop(out);
    eprintln!(
        "{}",
        dry_run_summary(&inputs.experiments, &inputs.templates, &inputs.used)
    );
    let cost = if prompt_cost > 0.0 {
        format!(
            " (about {} at the models' input prices)",
            cost::fmt_usd(prompt_cost)
        )
    } else {
        String::new()
    };
    let cached = if cache.is_some() {
        format!(
            "; {in_cache} of {} answers are in the cache (not sent)",
            inputs.experiments.rows.len()
        )
    } else {
        String::new()
    };
    eprintln!("about {tokens} prompt tokens{cost}{cached}");
}

/// What every experiment of a run shares.
struct Shared<'a> {
    inputs: &'a Inputs,
    limits: &'a HashMap<&'a str, Limit>,
    cache: Option<&'a Cache>,
    budget: Option<&'a Budget>,
}

/// One experiment: render, answer from the cache if it has it, else check the context window
/// and the budget and call (within the provider's limit), keeping a success in the cache.
fn run_one(
    e: &Experiment,
    shared: &Shared<'_>,
    facts: &mut Facts,
    cancel: &CancelToken,
) -> Result<Done, TaskError> {
    let provider = shared.inputs.providers[e.provider.as_str()].as_ref();
    let template = &shared.inputs.templates[shared.inputs.template_of[e.index]];
    let price = shared.inputs.prices.get(&e.provider, &e.model);
    let (prompt, mut warning) = render(e, provider, template).map_err(TaskError::failed)?;
    let input_tokens = estimate_tokens(&prompt);
    let req = request(e, &prompt);
    let key = cache_entry(shared.cache, provider, &req);
    if let Some((c, k)) = &key
        && let Some(hit) = c.get(k)
    {
        let checked = check_window(&e.model, input_tokens, hit.context_window, &mut warning);
        store(facts, Some(input_tokens), hit.context_window, warning);
        checked?;
        return Ok(Done {
            cost: price.map(|p| {
                p.cost(
                    hit.input_tokens.unwrap_or(input_tokens),
                    hit.output_tokens.unwrap_or(0),
                )
            }),
            text: hit.text,
            input_tokens: hit.input_tokens,
            output_tokens: hit.output_tokens,
            cached: true,
        });
    }
    let _slot = shared.limits[e.provider.as_str()]
        .acquire(cancel)
        .ok_or(TaskError::Cancelled)?;
    let reservation = match (shared.budget, price) {
        (Some(b), Some(p)) => {
            let max_tokens = e
                .params
                .iter()
                .find(|(k, _)| k == "max_tokens")
                .and_then(|(_, v)| v.as_u64());
            let estimate = b.estimate(p, input_tokens, max_tokens);
            Some((
                b,
                b.reserve(estimate).ok_or_else(|| TaskError::Skipped {
                    reason: format!(
                        "not sent: the budget (--max-cost {}) is spent",
                        cost::fmt_usd(b.max())
                    ),
                })?,
            ))
        }
        _ => None,
    };
    let paced = shared
        .inputs
        .http
        .pacers()
        .get(&e.provider)
        .map(|p| p.acquire(input_tokens, cancel));
    let answer = match paced {
        Some(Err(err)) => Err(err),
        Some(Ok(_permit)) => call(e, provider, &req, input_tokens, &mut warning, facts, cancel),
        None => call(e, provider, &req, input_tokens, &mut warning, facts, cancel),
    };
    let cost = answer.as_ref().ok().and_then(|(a, _)| {
        price.map(|p| {
            p.cost(
                a.input_tokens.unwrap_or(input_tokens),
                a.output_tokens.unwrap_or(0),
            )
        })
    });
    if let Some((b, r)) = reservation {
        b.settle(
            r,
            cost,
            answer.as_ref().ok().and_then(|(a, _)| a.output_tokens),
        );
    }
    let (answer, window) = answer?;
    if let Some((c, k)) = &key {
        let entry = Entry::new(
            &req,
            provider.name(),
            answer.text.clone(),
            (answer.input_tokens, answer.output_tokens),
            window,
        );
        c.put_or_warn(k, &entry);
    }
    Ok(Done { cost, ..answer })
}

/// Check the context window and send: the answer (token counts filled in) and the window.
fn call(
    e: &Experiment,
    provider: &dyn Provider,
    req: &Request<'_>,
    input_tokens: u64,
    warning: &mut Option<String>,
    facts: &mut Facts,
    cancel: &CancelToken,
) -> Result<(Done, Option<u64>), TaskError> {
    let window = provider.context_window(&e.model)?;
    let checked = check_window(&e.model, input_tokens, window, warning);
    store(
        facts,
        Some(input_tokens).filter(|_| provider.name() != "command"),
        window,
        warning.take(),
    );
    checked?;
    let answer = provider.generate(req, cancel)?;
    let output_tokens = answer
        .output_tokens
        .or_else(|| (provider.name() != "command").then(|| estimate_tokens(&answer.text)));
    Ok((
        Done {
            input_tokens: answer.input_tokens,
            output_tokens,
            text: answer.text,
            cached: false,
            cost: None,
        },
        window,
    ))
}

/// The prompt against the model's context window: over 90% is not sent, over 80% a warning.
fn check_window(
    model: &str,
    input_tokens: u64,
    window: Option<u64>,
    warning: &mut Option<String>,
) -> Result<(), TaskError> {
    let Some(w) = window.filter(|w| *w > 0) else {
        return Ok(());
    };
    let share = input_tokens as f64 / w as f64;
    let pct = (share * 100.0).round();
    if share > ERROR_SHARE {
        return Err(TaskError::failed(format!(
            "the prompt is about {input_tokens} tokens, {pct}% of {model}'s {w}-token context \
             window (over 90%): not sent"
        )));
    }
    if share > WARN_SHARE {
        let w_msg = format!("the prompt fills {pct}% of the {w}-token context window");
        *warning = Some(
            warning
                .take()
                .map_or(w_msg.clone(), |m| format!("{m}; {w_msg}")),
        );
    }
    Ok(())
}

fn store(
    facts: &mut Facts,
    input_tokens: Option<u64>,
    window: Option<u64>,
    warning: Option<String>,
) {
    *facts = Facts {
        input_tokens,
        context_window: window,
        warning,
    };
}

/// `--provider-limit NAME=N`.
pub(crate) fn parse_limit(s: &str) -> Result<(String, usize), String> {
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

/// `parallamr init`: example files, refusing to overwrite.
pub(crate) fn init(dir: &std::path::Path) -> Result<()> {
    let files = [
        (
            "prompt.txt",
            "Write one sentence about {{ topic }} in a {{ tone }} tone.\n",
        ),
        (
            "experiments.csv",
            "provider,model,topic,tone\nmock,mock,octopuses,cheerful\nmock,mock,glaciers,solemn\nmock,mock-small,volcanoes,dry\n",
        ),
        (
            "PARALLAMR.md",
            "## Experiments with parallamr\n\n```sh\nparallamr run -p prompt.txt -e experiments.csv -o results.csv -j 8\n```\n\n\
             Each row of `experiments.csv` names a provider and a model; every other column is a\n\
             variable for `prompt.txt` (`{{ topic }}`). Results stream into `results.csv`; after an\n\
             interruption, `--resume` runs only the experiments without a result.\n",
        ),
    ];
    for (name, _) in &files {
        let p = dir.join(name);
        if p.exists() {
            bail!(
                "{} already exists; init writes nothing over existing files",
                p.display()
            );
        }
    }
    for (name, text) in &files {
        let p = dir.join(name);
        fanout::fsutil::write_atomic(&p, text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
