//! What a sweep counts as rows are written, and the lines it ends with: rows, errors, tokens and
//! cost per model, the budget.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fanout::ProgressMode;

use crate::cost::{self, Budget};
use crate::plan::RunArgs;
use crate::row::Row;

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
    /// Tokens and cost per provider/model.
    pub(crate) by_model: std::collections::BTreeMap<(String, String), Usage>,
}

/// What the rows of one provider/model came to.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub(crate) rows: usize,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    /// Spent on requests sent; `None` while no row had a price.
    pub(crate) spent: Option<f64>,
    /// What the answers from the cache cost when they were sent.
    pub(crate) saved: f64,
}

impl Tally {
    pub(crate) fn count(&mut self, row: &Row) {
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
    pub(crate) fn say_usage(&self) {
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
