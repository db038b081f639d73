//! Reading results files for the page: CSV or JSON Lines, one or more of the same sweep, each
//! row an [`Answer`] whatever the file's column order.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::row::{JUDGE_COLUMNS, RESULT_COLUMNS};

/// One row of a results file.
#[derive(Debug, Clone, Default)]
pub(super) struct Answer {
    pub(super) provider: String,
    pub(super) model: String,
    pub(super) vars: Vec<String>,
    pub(super) repeat: u32,
    pub(super) status: String,
    pub(super) output: String,
    pub(super) error: String,
    pub(super) pass: Option<bool>,
    pub(super) reason: String,
    pub(super) seconds: f64,
    pub(super) input_tokens: u64,
    pub(super) output_tokens: u64,
    pub(super) cost: Option<f64>,
    pub(super) cached: bool,
}

/// The rows of one or more results files of the same sweep.
#[derive(Debug, Default)]
pub(super) struct Results {
    pub(super) var_names: Vec<String>,
    pub(super) answers: Vec<Answer>,
    pub(super) repeated: bool,
    pub(super) judged: bool,
}

/// Where the columns are in a header: the variables, the repeat, the results, the verdict.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    var_names: Vec<String>,
    repeat: Option<usize>,
    /// The position of `status`; the other results follow in `RESULT_COLUMNS` order.
    status: usize,
    judged: bool,
}

impl Layout {
    fn of(header: &[String], file: &Path) -> Result<Layout> {
        let status = (2..header.len())
            .find(|&i| {
                header.len() >= i + RESULT_COLUMNS.len()
                    && header[i..i + RESULT_COLUMNS.len()]
                        .iter()
                        .zip(RESULT_COLUMNS)
                        .all(|(a, b)| a == b)
            })
            .filter(|_| header[0] == "provider" && header[1] == "model")
            .ok_or_else(|| {
                anyhow!(
                    "{} is not a parallamr results file: its columns are not provider, model, \
                     the variables, then {}",
                    file.display(),
                    RESULT_COLUMNS.join(", ")
                )
            })?;
        let repeat = (header[status - 1] == "repeat" && status > 2).then_some(status - 1);
        let after = status + RESULT_COLUMNS.len();
        let judged = header.len() >= after + JUDGE_COLUMNS.len()
            && header[after..after + JUDGE_COLUMNS.len()] == JUDGE_COLUMNS;
        Ok(Layout {
            var_names: header[2..repeat.unwrap_or(status)].to_vec(),
            repeat,
            status,
            judged,
        })
    }

    fn answer(&self, cells: &[String]) -> Answer {
        let at = |i: usize| cells.get(i).map_or("", String::as_str);
        let r = |name: &str| {
            at(self.status + RESULT_COLUMNS.iter().position(|c| *c == name).unwrap_or(0))
        };
        let after = self.status + RESULT_COLUMNS.len();
        Answer {
            provider: at(0).to_owned(),
            model: at(1).to_owned(),
            vars: (2..2 + self.var_names.len())
                .map(|i| at(i).to_owned())
                .collect(),
            repeat: self.repeat.map_or(1, |i| at(i).parse().unwrap_or(1)),
            status: r("status").to_owned(),
            output: r("output").to_owned(),
            error: r("error_message").to_owned(),
            pass: if self.judged {
                match at(after) {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }
            } else {
                None
            },
            reason: if self.judged { at(after + 2) } else { "" }.to_owned(),
            seconds: r("duration_seconds").parse().unwrap_or(0.0),
            input_tokens: r("input_tokens").parse().unwrap_or(0),
            output_tokens: r("output_tokens").parse().unwrap_or(0),
            cost: r("cost_usd").parse().ok(),
            cached: r("cached") == "true",
        }
    }
}

/// A JSON Lines record with its fields in the file's order.
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    fields.push(entry);
                }
                Ok(Ordered(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// Read results files (CSV, or JSON Lines by the name), all of one sweep: the same variables.
pub(super) fn read(files: &[PathBuf]) -> Result<Results> {
    let mut results = Results::default();
    let mut layout_seen: Option<Layout> = None;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the results file {}", file.display()))?;
        let mut take = |header: &[String], cells: &[String]| -> Result<()> {
            let layout = Layout::of(header, file)?;
            if let Some(seen) = &layout_seen
                && seen.var_names != layout.var_names
            {
                bail!(
                    "{} has the variables {}, and the other results {}: a page shows one sweep",
                    file.display(),
                    layout.var_names.join(", "),
                    seen.var_names.join(", ")
                );
            }
            results.repeated |= layout.repeat.is_some();
            results.judged |= layout.judged;
            results.answers.push(layout.answer(cells));
            layout_seen = Some(layout);
            Ok(())
        };
        if crate::row::Format::of(file) == crate::row::Format::JsonLines {
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let Ok(Ordered(fields)) = serde_json::from_str::<Ordered>(line) else {
                    // A torn last line (a run killed mid-write) is left out; another is an error.
                    if n + 1 == text.lines().count() {
                        continue;
                    }
                    bail!("{} line {}: not a JSON object", file.display(), n + 1);
                };
                let header: Vec<String> = fields.iter().map(|(k, _)| k.clone()).collect();
                let cells: Vec<String> = fields
                    .into_iter()
                    .map(|(_, v)| match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    })
                    .collect();
                take(&header, &cells)?;
            }
        } else {
            let mut r = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(text.as_bytes());
            let header: Vec<String> = r
                .headers()
                .with_context(|| format!("{}: no header row", file.display()))?
                .iter()
                .map(str::to_owned)
                .collect();
            Layout::of(&header, file)?;
            for record in r.records() {
                // A torn last row is left out, as --resume leaves it out.
                let Ok(record) = record else { continue };
                if record.len() != header.len() {
                    continue;
                }
                let cells: Vec<String> = record.iter().map(str::to_owned).collect();
                take(&header, &cells)?;
            }
        }
    }
    results.var_names = layout_seen.map(|l| l.var_names).unwrap_or_default();
    Ok(results)
}
