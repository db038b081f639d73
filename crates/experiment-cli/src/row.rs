//! A result row and how it is written: the columns, a row's cells, CSV and JSON Lines.

use std::collections::HashMap;
use std::path::Path;

/// The columns after the variables, in order.
pub(crate) const RESULT_COLUMNS: [&str; 9] = [
    "status",
    "input_tokens",
    "context_window",
    "output_tokens",
    "duration_seconds",
    "output",
    "error_message",
    "cached",
    "cost_usd",
];

/// The last column of a flattened CSV: the answer's keys that have no column of their own.
pub(crate) const EXTRA: &str = "json_extra";

/// The columns judging adds after `cost_usd`.
pub(crate) const JUDGE_COLUMNS: [&str; 3] = ["pass", "score", "reason"];

/// Which columns a run's rows have besides provider, model, the variables and the results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// `--repeat`: a `repeat` column after the variables (part of the row's key).
    pub(crate) repeat: bool,
    /// Checks are on: `pass`, `score`, `reason` after `cost_usd`.
    pub(crate) judged: bool,
}

/// `provider, model, <variables...>, [repeat,] status, ..., cost_usd[, pass, score, reason]`.
pub(crate) fn header(var_names: &[String], shape: Shape) -> Vec<String> {
    let mut h = vec!["provider".to_owned(), "model".to_owned()];
    h.extend(var_names.iter().cloned());
    if shape.repeat {
        h.push("repeat".to_owned());
    }
    h.extend(RESULT_COLUMNS.iter().map(|c| (*c).to_owned()));
    if shape.judged {
        h.extend(JUDGE_COLUMNS.iter().map(|c| (*c).to_owned()));
    }
    h
}

/// The position of the result's `status` in a header: the key's columns come before it.
pub(crate) fn status_col(header: &[String]) -> usize {
    let judged = header.ends_with(&JUDGE_COLUMNS.map(str::to_owned));
    header.len() - RESULT_COLUMNS.len() - if judged { JUDGE_COLUMNS.len() } else { 0 }
}

/// A finished row's verdict on its checks (`judge`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) pass: bool,
    pub(crate) score: f64,
    pub(crate) reason: String,
}

/// One result row.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// provider, model and the variable values: the experiment's key.
    pub(crate) key: Vec<String>,
    pub(crate) status: &'static str,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) context_window: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) duration_seconds: f64,
    pub(crate) output: String,
    pub(crate) error_message: String,
    /// The answer came from the response cache.
    pub(crate) cached: bool,
    /// What the answer costs at the model's price (also when it came from the cache).
    pub(crate) cost_usd: Option<f64>,
    /// `--flatten`: the columns of the JSON in the output (`None` without `--flatten`).
    pub(crate) flat: Option<Vec<(String, serde_json::Value)>>,
    /// With checks on: the row's verdict (`None` for a row not judged, an error).
    pub(crate) verdict: Option<Verdict>,
    /// Whether the rows have the judging columns.
    pub(crate) judged: bool,
}

/// A value of a row, typed so JSON Lines keeps numbers numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Text(String),
    Count(Option<u64>),
    Seconds(f64),
    Flag(bool),
    Usd(Option<f64>),
    /// A verdict: `true`, `false`, or empty for a row not judged.
    Pass(Option<bool>),
    /// A score from 0 to 1.
    Score(Option<f64>),
    /// A value from the answer's JSON (`--flatten`).
    Json(serde_json::Value),
}

impl Cell {
    pub(crate) fn csv(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Count(n) => n.map(|n| n.to_string()).unwrap_or_default(),
            Cell::Seconds(s) => format!("{s:.3}"),
            Cell::Flag(b) => b.to_string(),
            Cell::Usd(x) => x.map(|x| format!("{x:.6}")).unwrap_or_default(),
            Cell::Pass(p) => p.map(|p| p.to_string()).unwrap_or_default(),
            Cell::Score(s) => s.map(|s| s.to_string()).unwrap_or_default(),
            Cell::Json(v) => crate::flatten::cell(v),
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        match self {
            Cell::Text(s) => s.clone().into(),
            Cell::Count(n) => n.map_or(serde_json::Value::Null, Into::into),
            // Milliseconds are what the CSV shows too.
            Cell::Seconds(s) => ((s * 1000.0).round() / 1000.0).into(),
            Cell::Flag(b) => (*b).into(),
            Cell::Usd(x) => x.map_or(serde_json::Value::Null, |x| {
                ((x * 1e6).round() / 1e6).into()
            }),
            Cell::Pass(p) => p.map_or(serde_json::Value::Null, Into::into),
            Cell::Score(s) => s.map_or(serde_json::Value::Null, Into::into),
            Cell::Json(v) => v.clone(),
        }
    }
}

impl Row {
    pub(crate) fn cells(&self) -> Vec<Cell> {
        let mut f: Vec<Cell> = self.key.iter().cloned().map(Cell::Text).collect();
        f.extend([
            Cell::Text(self.status.to_owned()),
            Cell::Count(self.input_tokens),
            Cell::Count(self.context_window),
            Cell::Count(self.output_tokens),
            Cell::Seconds(self.duration_seconds),
            Cell::Text(self.output.clone()),
            Cell::Text(self.error_message.clone()),
            Cell::Flag(self.cached),
            Cell::Usd(self.cost_usd),
        ]);
        if self.judged {
            let v = self.verdict.as_ref();
            f.extend([
                Cell::Pass(v.map(|v| v.pass)),
                Cell::Score(v.map(|v| v.score)),
                Cell::Text(v.map(|v| v.reason.clone()).unwrap_or_default()),
            ]);
        }
        f
    }
}

/// How a results file is written: by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// `.jsonl` and `.ndjson` are JSON Lines; everything else is CSV.
    pub(crate) fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson") => {
                Format::JsonLines
            }
            _ => Format::Csv,
        }
    }

    /// The bytes of one record: a CSV record, or a JSON object and a newline.
    pub(crate) fn encode(self, header: &[String], cells: &[Cell]) -> Vec<u8> {
        match self {
            Format::Csv => encode_csv(&cells.iter().map(Cell::csv).collect::<Vec<_>>()),
            Format::JsonLines => {
                // Written by hand to keep the fields in column order (serde_json's map sorts).
                let mut line = String::from("{");
                for (i, (name, cell)) in header.iter().zip(cells).enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    line.push_str(&serde_json::Value::from(name.as_str()).to_string());
                    line.push(':');
                    line.push_str(&cell.json().to_string());
                }
                line.push_str("}\n");
                line.into_bytes()
            }
        }
    }

    /// What a new file starts with.
    pub(crate) fn preamble(self, header: &[String]) -> Vec<u8> {
        match self {
            Format::Csv => encode_csv(header),
            Format::JsonLines => Vec::new(),
        }
    }
}

/// Encode one record as CSV bytes (quoting as needed).
pub(crate) fn encode_csv(fields: &[String]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields).expect("writing to memory");
    w.into_inner().expect("flushing to memory")
}

/// How many times each experiment key already has a finished row.
pub(crate) type Done = HashMap<Vec<String>, usize>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_ends_where_the_status_is() {
        let vars = ["topic".to_owned()];
        for (repeat, judged) in [(false, false), (true, false), (false, true), (true, true)] {
            let h = header(&vars, Shape { repeat, judged });
            assert_eq!(h[status_col(&h)], "status", "{h:?}");
            assert_eq!(status_col(&h), 3 + usize::from(repeat));
        }
    }
}
