//! What a sweep counts as rows are written, and the lines it ends with: rows, errors, tokens and
//! cost per model, the budget.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fanout::ProgressMode;

use crate::cost::{self, Budget};
use crate::experiments::Experiment;
use crate::grade::Grade;
use crate::plan::RunArgs;
use crate::row::Row;
use crate::summary::{self, Record};

/// Whether the budget stopped the sweep, and if so say what it kept from being sent.
pub(crate) fn say_budget(b: &Budget, not_sent: usize) -> bool {
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
pub(crate) struct Tally {
    pub(crate) written: usize,
    pub(crate) error_rows: usize,
    pub(crate) from_cache: usize,
    /// Experiments the budget kept from being sent.
    pub(crate) not_sent: usize,
    /// What the summary per model needs of each row.
    pub(crate) records: Vec<Record>,
    /// Whether the rows are repeats (`--repeat`), and judged.
    pub(crate) kind: summary::Kind,
    /// With `--resume`: every row of the results files, those kept from before included (the
    /// summary and `--fail-on-assert` are of all of them).
    pub(crate) all: Option<Vec<Record>>,
    /// `--grader`: its requests, tokens and cost, apart from the answers'.
    pub(crate) grading: Grading,
}

/// What grading the answers came to.
#[derive(Debug, Default)]
pub(crate) struct Grading {
    pub(crate) verdicts: usize,
    pub(crate) from_cache: usize,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    /// Spent on grading requests sent; `None` while none had a price.
    pub(crate) spent: Option<f64>,
}

impl Tally {
    /// A sweep's tally, its rows shaped as `shape`, `unplaced` rows written as errors already.
    pub(crate) fn new(unplaced: usize, shape: crate::row::Shape) -> Self {
        Tally {
            error_rows: unplaced,
            kind: summary::Kind {
                repeated: shape.repeat,
                judged: shape.judged,
            },
            ..Tally::default()
        }
    }

    pub(crate) fn count(&mut self, e: &Experiment, row: &Row, grade: Option<&Grade>) {
        self.written += 1;
        self.from_cache += usize::from(row.cached);
        self.error_rows += usize::from(row.status == "error");
        self.records.push(Record {
            provider: e.provider.clone(),
            model: e.model.clone(),
            vars: e.vars.iter().map(|(_, v)| v.clone()).collect(),
            status: row.status.to_owned(),
            pass: row.verdict.as_ref().map(|v| v.pass),
            seconds: row.duration_seconds,
            input_tokens: row.input_tokens.unwrap_or(0),
            output_tokens: row.output_tokens.unwrap_or(0),
            cost: row.cost_usd,
            cached: row.cached,
        });
        if let Some(g) = grade {
            let t = &mut self.grading;
            t.verdicts += 1;
            t.from_cache += usize::from(g.cached);
            t.input_tokens += g.input_tokens;
            t.output_tokens += g.output_tokens;
            if let (Some(c), false) = (g.cost, g.cached) {
                *t.spent.get_or_insert(0.0) += c;
            }
        }
    }

    /// The rows the summary is of: all of the results files' when resuming, else this run's.
    pub(crate) fn rows(&self) -> &[Record] {
        self.all.as_deref().unwrap_or(&self.records)
    }

    /// The rows of the summary whose answer failed a check (errors are counted apart).
    pub(crate) fn failed(&self) -> usize {
        self.rows().iter().filter(|r| r.pass == Some(false)).count()
    }

    /// The summary per model as a table, then the totals: tokens, spent, saved by the cache,
    /// and the grader's share.
    pub(crate) fn say_usage(&self) {
        if self.rows().is_empty() {
            return;
        }
        match &self.all {
            Some(all) => eprintln!(
                "per model (every row of the results, {} kept from before):",
                all.len().saturating_sub(self.records.len())
            ),
            None => eprintln!("per model:"),
        }
        eprint!(
            "{}",
            summary::table(&summary::summarize(self.rows(), self.kind))
        );
        let (mut inp, mut out, mut spent, mut saved) = (0, 0, 0.0, 0.0);
        for r in &self.records {
            inp += r.input_tokens;
            out += r.output_tokens;
            match (r.cost, r.cached) {
                (Some(c), true) => saved += c,
                (Some(c), false) => spent += c,
                (None, _) => {}
            }
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
        let g = &self.grading;
        if g.verdicts > 0 {
            let cached = if g.from_cache > 0 {
                format!(", {} from the cache", g.from_cache)
            } else {
                String::new()
            };
            eprintln!(
                "  grading: {} verdicts{cached}, {} in + {} out tokens, {}",
                g.verdicts,
                g.input_tokens,
                g.output_tokens,
                g.spent.map_or_else(|| "no price".to_owned(), cost::fmt_usd)
            );
        }
        let judged = self.rows().iter().filter(|r| r.pass.is_some()).count();
        if judged > 0 {
            eprintln!(
                "  checks: {} of {judged} answers passed",
                judged - self.failed()
            );
        }
    }

    /// The closing line: where the rows went, how many, how long, how many were not sent.
    pub(crate) fn say(&self, args: &RunArgs, files: &[PathBuf], total: usize, elapsed: Duration) {
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

/// Where the results went: the file, or how many files a template made.
pub(crate) fn where_(path: &Path, files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        many => format!("{} files by {}", many.len(), path.display()),
    }
}
