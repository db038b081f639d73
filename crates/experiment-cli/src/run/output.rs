//! Where a sweep's rows go: the results files opened (one, or one per path a template gives)
//! before anything runs, the rows no file can be named for, the `--report` file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use fanout::ExitStatus;

use crate::call::{Done, Facts};
use crate::experiments::Experiment;
use crate::paths::NoPath;
use crate::plan::{Inputs, RunArgs, flatten_columns};
use crate::row::{self, Row};
use crate::tally::Tally;
use crate::writer::Outputs;

/// Rows that no -o file can be named for are sent nowhere: they are error rows, in the file
/// named with `_missing_` for the empty values.
pub(super) fn write_unplaced(
    args: &RunArgs,
    judged: bool,
    unplaced: &[(&Experiment, Vec<String>)],
    to: &[usize],
    out: &mut Outputs,
) -> Result<()> {
    for (e, missing) in unplaced {
        let mut row = Row {
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
            verdict: None,
            judged: false,
        };
        row.judged = judged;
        out.write(to[e.index], &row)?;
    }
    Ok(())
}

/// A results write failed, and the sweep was stopped: experiments ran, so this is not a usage
/// error. Say why, and fail.
pub(super) fn stopped_by(e: &anyhow::Error, written: usize) -> ExitStatus {
    eprintln!(
        "parallamr: error: the results could not be written, so the sweep was stopped \
         ({written} rows done): {e:#}"
    );
    ExitStatus::TaskFailed
}

/// `--report FILE`: the shared report, with each row's provider, model and tokens.
pub(super) fn write_report(
    path: Option<&Path>,
    result: &fanout::BatchResult<Done, Facts>,
    todo: &[&Experiment],
    tally: &Tally,
) -> Result<()> {
    /// The shared report, and the summary per model the run ended with.
    #[derive(serde::Serialize)]
    struct WithModels<'a, X: serde::Serialize> {
        #[serde(flatten)]
        report: fanout::Report<'a, X>,
        models: Vec<crate::summary::ModelSummary>,
    }
    if let Some(path) = path {
        let report = WithModels {
            report: result.report_with(|o| ReportExtra::of(todo[o.index], o)),
            models: crate::summary::summarize(tally.rows(), tally.kind),
        };
        let mut json = serde_json::to_vec_pretty(&report)?;
        json.push(b'\n');
        fanout::fsutil::write_atomic(path, &json)?;
    }
    Ok(())
}

/// Where the rows go, and what is still to run.
pub(super) struct Opened<'e> {
    pub(super) out: Outputs,
    /// The destination of each experiment's row, by its index.
    pub(super) to: Vec<usize>,
    /// The experiments to run: all, unless resuming, and not those in `unplaced`.
    pub(super) todo: Vec<&'e Experiment>,
    /// Experiments whose `-o` template needs values the row leaves empty, and those names.
    pub(super) unplaced: Vec<(&'e Experiment, Vec<String>)>,
    /// The results files (none for standard output).
    pub(super) files: Vec<PathBuf>,
}

/// Open the results: standard output, one file, or with a path template one file per distinct
/// path the rows give (all opened before anything runs: a file that exists without --resume
/// is refused first, and each is resumed on its own).
pub(super) fn open_output<'e>(args: &RunArgs, inputs: &'e Inputs) -> Result<Opened<'e>> {
    let experiments = &inputs.experiments;
    let header = row::header(&experiments.var_names, inputs.shape);
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

/// What the report (`--report`) adds to each experiment's entry.
#[derive(Debug, serde::Serialize)]
struct ReportExtra<'a> {
    provider: &'a str,
    model: &'a str,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cached: bool,
    cost_usd: Option<f64>,
    /// `--grader`: what grading this answer cost (apart from `cost_usd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    grading_cost_usd: Option<f64>,
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
            grading_cost_usd: d
                .and_then(|d| d.grading.as_ref())
                .and_then(|g| g.as_ref().ok())
                .and_then(|g| g.cost),
        }
    }
}
