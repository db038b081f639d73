//! The plan of a run: the command line's settings (`RunArgs`), and every input read and checked
//! before anything is sent: the experiments CSV, the prompt templates (a file per row with
//! `{{var}}` in `-p`), the providers, the `--command` template, the `-o` template and the prices.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::cost::Prices;
use crate::experiments::{Experiments, Template, join_prompt, read_input};
use crate::judge::Judge;
use crate::paths::{NoPath, PathTemplate};
use crate::providers::{self, CommandProvider, Http, Provider};
use crate::rate::Pacers;
use crate::row::Shape;
use crate::shell_template::ShellTemplate;

mod args;

pub(crate) use args::{BatchSettings, Flatten, RunArgs, flatten_columns};

/// The validated inputs of a run.
pub(crate) struct Inputs {
    pub(crate) experiments: Experiments,
    /// The prompt templates: one, or with placeholders in `-p`/`-c` one per distinct set of
    /// files the rows name.
    pub(crate) templates: Vec<Template>,
    /// The template of each experiment, by its index.
    pub(crate) template_of: Vec<usize>,
    pub(crate) providers: HashMap<String, Box<dyn Provider>>,
    /// `--command`'s provider (its copy in `providers` shares where it runs).
    pub(crate) command: Option<CommandProvider>,
    /// The providers the experiments use, sorted.
    pub(crate) used: Vec<String>,
    /// The price of each model that has one.
    pub(crate) prices: Prices,
    /// The HTTP agent, and the providers' rate schedules.
    pub(crate) http: Http,
    /// `-o`, checked (`None`: standard output).
    pub(crate) output: Option<PathTemplate>,
    /// The checks of each answer (`None`: none asked for).
    pub(crate) judge: Option<Judge>,
    /// The columns the rows have besides the usual ones.
    pub(crate) shape: Shape,
}

/// Flags that cannot go together.
fn check_flags(args: &RunArgs) -> Result<()> {
    if args.prompt == std::path::Path::new("-") && args.experiments == std::path::Path::new("-") {
        bail!("only one of the prompt (-p) and the experiments (-e) can come from standard input");
    }
    if args.batch.is_some() && args.output.is_none() {
        bail!(
            "--batch needs a results file (-o FILE): the batches in flight are recorded beside \
             it, for --resume"
        );
    }
    Ok(())
}

/// The names a path template may use: provider, model and the variables.
pub(crate) fn columns(experiments: &Experiments) -> Vec<String> {
    let mut c = vec!["provider".to_owned(), "model".to_owned()];
    c.extend(experiments.var_names.iter().cloned());
    c
}

/// The prompt templates and which one each experiment uses. Without placeholders in `-p` and
/// `-c` that is one template; with them, each file is read once and each distinct set of files
/// is one template. A file that cannot be read, or a row that leaves a path's variable empty, is
/// an error before anything runs.
pub(crate) fn prompt_templates(
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
pub(crate) fn prepare(args: &RunArgs) -> Result<Inputs> {
    check_flags(args)?;
    let exp_name = args.experiments.display().to_string();
    let exp_text = read_input(&args.experiments, "experiments")?;
    let mut experiments = Experiments::parse(&exp_text, &exp_name, providers::KNOWN)?;
    let param_columns =
        crate::params::columns(args.param_columns.as_deref(), &experiments.var_names)?;
    experiments.read_params(&param_columns)?;
    if let Some(n) = args.repeat {
        experiments.repeat(n)?;
    }
    let (templates, template_of) = prompt_templates(args, &experiments)?;
    check_provider_flags(args)?;
    let judge = Judge::new(&args.judge, &experiments)?;
    if let Some(page) = &args.html {
        let Some(out) = &args.output else {
            bail!("--html makes its page from the results file: give one with -o FILE");
        };
        crate::view::check_page_path(page, std::slice::from_ref(out), "--html")?;
    }
    if args.fail_on_assert && judge.is_none() {
        bail!(
            "--fail-on-assert needs a check: an `expected` column, --assert, --is-json, \
             --schema or --grader"
        );
    }
    let grader = judge.as_ref().and_then(|j| j.grader.as_ref());
    let mut used: Vec<&str> = experiments
        .rows
        .iter()
        .map(|e| e.provider.as_str())
        .chain(grader.map(|g| g.provider.as_str()))
        .collect();
    used.sort_unstable();
    used.dedup();
    let http = Http::new(args.timeout).with_pacers(std::sync::Arc::new(Pacers::new(
        &used,
        &args.rates,
        providers::tells_rate_limits,
    )));
    let command = command_provider(args, &experiments, &exp_name)?;
    let on_slurm = matches!(
        args.launcher,
        fanout::Launcher::Slurm(_) | fanout::Launcher::Packed(_)
    );
    if on_slurm && !used.contains(&"command") {
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
    let prices = prices(args, &experiments, &providers, grader)?;
    let shape = Shape {
        repeat: args.repeat.is_some(),
        judged: judge.is_some(),
    };
    Ok(Inputs {
        experiments,
        templates,
        template_of,
        providers,
        command,
        used,
        prices,
        http,
        output,
        judge,
        shape,
    })
}

/// `--provider-limit` and `--rate` name known providers.
fn check_provider_flags(args: &RunArgs) -> Result<()> {
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
    Ok(())
}

/// The `--command` provider, its template checked against every experiment that uses it (a
/// placeholder refused where it stands is an input error, before anything runs).
fn command_provider(
    args: &RunArgs,
    experiments: &Experiments,
    exp_name: &str,
) -> Result<Option<CommandProvider>> {
    let Some(c) = &args.command else {
        return Ok(None);
    };
    let command = CommandProvider::new(
        ShellTemplate::new("--command", c.clone())?,
        args.timeout,
        args.launcher.clone(),
        args.settings.file_only(),
    );
    for e in experiments.rows.iter().filter(|e| e.provider == "command") {
        command
            .script(&e.vars, &e.model)
            .map_err(|why| anyhow!("{why} (rendering {} line {})", exp_name, e.line))?;
    }
    Ok(Some(command))
}

/// With `--slurm-mode packed`: the command provider's allocation, asked of Slurm now. The run
/// calls it once every input is read and checked (a typo should not wait in Slurm's queue).
///
/// # Errors
/// Slurm did not give the allocation.
pub(crate) fn place_commands(args: &RunArgs, inputs: &Inputs) -> Result<()> {
    if let Some(command) = &inputs.command {
        command.place(fanout_cli::placed(
            args.launcher.clone(),
            args.slurm_mode,
            args.slurm_nodes,
            args.max_workers.get(),
        )?);
    }
    Ok(())
}

/// The price of each model used: `--prices`, else what the provider reports (OpenRouter), else
/// the vendors' list prices (OpenAI, Anthropic, Gemini models). With
/// `--max-cost`, every model sent to must have one.
pub(crate) fn prices(
    args: &RunArgs,
    experiments: &Experiments,
    providers: &HashMap<String, Box<dyn Provider>>,
    grader: Option<&crate::grade::Grader>,
) -> Result<Prices> {
    let mut prices = match &args.prices {
        Some(p) => Prices::load(p)?,
        None => Prices::default(),
    };
    let mut models: Vec<(&str, &str)> = experiments
        .rows
        .iter()
        .map(|e| (e.provider.as_str(), e.model.as_str()))
        .chain(grader.map(|g| (g.provider.as_str(), g.model.as_str())))
        .collect();
    models.sort_unstable();
    models.dedup();
    let mut unpriced = Vec::new();
    for (provider, model) in models {
        if prices.known(provider, model) {
            continue;
        }
        match providers[provider]
            .price(model)
            .or_else(|| crate::cost::list_price(provider, model))
        {
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
pub(crate) fn dry_run_summary(
    experiments: &Experiments,
    templates: &[Template],
    used: &[String],
) -> String {
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
