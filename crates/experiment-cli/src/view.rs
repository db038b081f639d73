//! `parallamr view RESULTS... [--compare OLD...] -o page.html` (and `run --html`): the results
//! as one self-contained HTML page. A matrix of experiments (rows) by models (columns), each
//! cell the answers (expandable), marked pass/fail in words and colour, with cost and latency;
//! the summary per model with bars; filters (failed only, a model, text). With `--compare`, the
//! cells whose verdict or answer changed, with a word diff.
//!
//! Every value from the files is data: the page is rendered by minijinja with HTML escaping, and
//! its script only shows and hides what is there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::summary::{self, ModelSummary, Record};

mod results;

use results::{Answer, Results, read};

/// The page's template (HTML, CSS and the filters' script, all inline).
const PAGE: &str = include_str!("view.html");

/// The page must not be written over a results file: refuse a page path that is one of
/// `results` (or a path template's), or that is named like results (`.csv`, `.jsonl`).
pub(crate) fn check_page_path(page: &Path, results: &[PathBuf], flag: &str) -> Result<()> {
    let named_like_results = page
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["csv", "jsonl", "ndjson"].contains(&e.to_ascii_lowercase().as_str()));
    let same = |r: &PathBuf| {
        std::path::absolute(r).ok() == std::path::absolute(page).ok()
            || r.canonicalize()
                .ok()
                .is_some_and(|r| Some(r) == page.canonicalize().ok())
    };
    if named_like_results || results.iter().any(same) {
        bail!(
            "{flag} {}: the page would be written over results; name it .html",
            page.display()
        );
    }
    Ok(())
}

/// What the summary needs of every row of `files`.
pub(crate) fn records(files: &[PathBuf]) -> Result<Vec<Record>> {
    Ok(read(files)?.answers.iter().map(record).collect())
}

/// `parallamr view`: read, build, write the page.
pub(crate) fn write(
    files: &[PathBuf],
    compare: &[PathBuf],
    page: &Path,
    title: Option<&str>,
) -> Result<()> {
    let now = read(files)?;
    let old = if compare.is_empty() {
        None
    } else {
        Some(read(compare)?)
    };
    let names = |fs: &[PathBuf]| {
        fs.iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let title = title.map_or_else(
        || {
            let stem = files
                .first()
                .and_then(|f| f.file_name())
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            format!("Results: {stem}")
        },
        str::to_owned,
    );
    let view = build(&now, old.as_ref(), title, names(files), names(compare));
    let mut env = minijinja::Environment::new();
    env.add_template("view.html", PAGE)
        .expect("the page template parses");
    let html = env
        .get_template("view.html")
        .and_then(|t| t.render(&view))
        .map_err(|e| anyhow!("rendering the results page: {e:#}"))?;
    if let Some(dir) = page.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fanout::fsutil::write_atomic(page, html.as_bytes())
        .with_context(|| format!("writing {}", page.display()))?;
    Ok(())
}

/// The page, ready for the template.
#[derive(Debug, Serialize)]
struct View {
    title: String,
    source: String,
    compared_with: String,
    lede: String,
    changes: String,
    judged: bool,
    var_names: Vec<String>,
    models: Vec<ModelView>,
    groups: Vec<GroupView>,
}

#[derive(Debug, Serialize)]
struct ModelView {
    name: String,
    rows: usize,
    errors: usize,
    pass: String,
    pass_width: f64,
    all_repeats: String,
    cost: String,
    cost_width: f64,
    tokens: String,
    p50: String,
    p95: String,
}

#[derive(Debug, Serialize)]
struct GroupView {
    vars: Vec<String>,
    cells: Vec<CellView>,
}

#[derive(Debug, Serialize)]
struct CellView {
    model: String,
    /// pass, fail, mixed, error, ok or none: the colour.
    class: &'static str,
    /// The verdict in words.
    label: String,
    /// What changed since the compared results, in words (empty: nothing, or no comparison).
    change: String,
    failed: bool,
    cost: String,
    latency: String,
    answers: Vec<AnswerView>,
}

#[derive(Debug, Serialize)]
struct AnswerView {
    heading: String,
    snippet: String,
    text: String,
    reason: String,
    error: String,
    /// With --compare and a different answer: the word diff from the old one.
    diff: Vec<Segment>,
}

#[derive(Debug, Serialize)]
struct Segment {
    /// same, del or ins.
    kind: &'static str,
    text: String,
}

/// The answers of one experiment, by model.
type ByModel<'a> = HashMap<String, Vec<&'a Answer>>;

/// The key of an answer across runs.
type Key = (String, String, Vec<String>, u32);

fn key(a: &Answer) -> Key {
    (
        a.provider.clone(),
        a.model.clone(),
        a.vars.clone(),
        a.repeat,
    )
}

fn build(
    now: &Results,
    old: Option<&Results>,
    title: String,
    source: String,
    compared_with: String,
) -> View {
    let records: Vec<Record> = now.answers.iter().map(record).collect();
    let summaries = summary::summarize(
        &records,
        summary::Kind {
            repeated: now.repeated,
            judged: now.judged,
        },
    );
    let models: Vec<String> = summaries
        .iter()
        .map(|m| format!("{}/{}", m.provider, m.model))
        .collect();
    let mut groups: Vec<(Vec<String>, ByModel<'_>)> = Vec::new();
    let mut index: HashMap<&[String], usize> = HashMap::new();
    for a in &now.answers {
        let i = *index.entry(&a.vars).or_insert_with(|| {
            groups.push((a.vars.clone(), HashMap::new()));
            groups.len() - 1
        });
        groups[i]
            .1
            .entry(format!("{}/{}", a.provider, a.model))
            .or_default()
            .push(a);
    }
    let before: HashMap<Key, &Answer> = old
        .map(|o| o.answers.iter().map(|a| (key(a), a)).collect())
        .unwrap_or_default();
    let mut tally = Changes::default();
    let groups: Vec<GroupView> = groups
        .into_iter()
        .map(|(vars, mut cells)| GroupView {
            vars,
            cells: models
                .iter()
                .map(|m| {
                    let mut answers = cells.remove(m).unwrap_or_default();
                    answers.sort_by_key(|a| a.repeat);
                    cell(m, &answers, old.map(|_| &before), now.judged, &mut tally)
                })
                .collect(),
        })
        .collect();
    let max_cost = summaries
        .iter()
        .filter_map(|m| m.cost)
        .fold(0.0_f64, f64::max);
    View {
        lede: lede(&summaries, now),
        changes: if old.is_some() {
            tally.say()
        } else {
            String::new()
        },
        title,
        source,
        compared_with,
        judged: now.judged,
        var_names: now.var_names.clone(),
        models: summaries.iter().map(|m| model_view(m, max_cost)).collect(),
        groups,
    }
}

fn record(a: &Answer) -> Record {
    Record {
        provider: a.provider.clone(),
        model: a.model.clone(),
        vars: a.vars.clone(),
        status: a.status.clone(),
        pass: a.pass,
        seconds: a.seconds,
        input_tokens: a.input_tokens,
        output_tokens: a.output_tokens,
        cost: a.cost,
        cached: a.cached,
    }
}

/// The line under the title: rows, models, pass rate, cost.
fn lede(models: &[ModelSummary], now: &Results) -> String {
    let rows = now.answers.len();
    let errors: usize = models.iter().map(|m| m.errors).sum();
    let judged: usize = models.iter().map(|m| m.judged).sum();
    let passed: usize = models.iter().map(|m| m.passed).sum();
    let cost: f64 = models.iter().filter_map(|m| m.cost).sum();
    let mut parts = vec![
        format!("{rows} answer{}", if rows == 1 { "" } else { "s" }),
        format!(
            "{} model{}",
            models.len(),
            if models.len() == 1 { "" } else { "s" }
        ),
    ];
    if judged > 0 {
        parts.push(format!(
            "{passed} of {judged} passed ({})",
            summary::pct(passed as f64 / judged as f64)
        ));
    }
    parts.push(format!(
        "{errors} error{}",
        if errors == 1 { "" } else { "s" }
    ));
    parts.push(format!("{} in all", crate::cost::fmt_usd(cost)));
    parts.join(" · ")
}

fn model_view(m: &ModelSummary, max_cost: f64) -> ModelView {
    let secs = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |s| format!("{s:.2} s"));
    ModelView {
        name: format!("{}/{}", m.provider, m.model),
        rows: m.rows,
        errors: m.errors,
        pass: match (m.pass_rate, m.pass_low, m.pass_high) {
            (Some(r), Some(lo), Some(hi)) => format!(
                "{} ({} of {}; 95% CI {}-{})",
                summary::pct(r),
                m.passed,
                m.judged,
                summary::pct(lo),
                summary::pct(hi)
            ),
            _ => "not judged".to_owned(),
        },
        pass_width: (m.pass_rate.unwrap_or(0.0) * 1000.0).round() / 10.0,
        all_repeats: m
            .all_passed
            .map_or_else(String::new, |(k, n)| format!("{k} of {n}")),
        cost: m
            .cost
            .map_or_else(|| "no price".to_owned(), crate::cost::fmt_usd),
        cost_width: if max_cost > 0.0 {
            (m.cost.unwrap_or(0.0) / max_cost * 1000.0).round() / 10.0
        } else {
            0.0
        },
        tokens: format!("{} in, {} out", m.input_tokens, m.output_tokens),
        p50: secs(m.p50_seconds),
        p95: secs(m.p95_seconds),
    }
}

/// What changed since the compared results.
#[derive(Debug, Default)]
struct Changes {
    newly_failing: usize,
    newly_passing: usize,
    changed: usize,
    new: usize,
}

impl Changes {
    fn say(&self) -> String {
        format!(
            "{} newly failing, {} newly passing, {} other answers changed, {} new",
            self.newly_failing, self.newly_passing, self.changed, self.new
        )
    }
}

/// A cell: the answers of one experiment by one model (several with repeats).
fn cell(
    model: &str,
    answers: &[&Answer],
    before: Option<&HashMap<Key, &Answer>>,
    judged: bool,
    tally: &mut Changes,
) -> CellView {
    let n = answers.len();
    let passed = answers.iter().filter(|a| a.pass == Some(true)).count();
    let errors = answers.iter().filter(|a| a.status == "error").count();
    let (class, label) = match (n, judged) {
        (0, _) => ("none", "no answer".to_owned()),
        _ if errors == n => (
            "error",
            if n == 1 {
                "error".to_owned()
            } else {
                format!("{n} errors")
            },
        ),
        (1, true) if passed == 1 => ("pass", "pass".to_owned()),
        (1, true) => ("fail", "fail".to_owned()),
        (_, true) if passed == n => ("pass", format!("{passed}/{n} pass")),
        (_, true) if passed == 0 => ("fail", format!("0/{n} pass")),
        (_, true) => ("mixed", format!("{passed}/{n} pass")),
        _ if errors > 0 => ("mixed", format!("{errors} of {n} errors")),
        _ => (
            "ok",
            if n == 1 {
                "ok".to_owned()
            } else {
                format!("{n} answers")
            },
        ),
    };
    let mut changes = Vec::new();
    let views = answers
        .iter()
        .map(|a| {
            let old = before.and_then(|b| b.get(&key(a)));
            let change = before.map(|_| change(old.copied(), a));
            if let Some(c) = change {
                match c {
                    "newly failing" => tally.newly_failing += 1,
                    "newly passing" => tally.newly_passing += 1,
                    "answer changed" => tally.changed += 1,
                    "new" => tally.new += 1,
                    _ => {}
                }
                if !c.is_empty() {
                    changes.push(c);
                }
            }
            answer_view(a, n > 1, old.copied().filter(|o| o.output != a.output))
        })
        .collect();
    changes.sort_unstable();
    changes.dedup();
    let cost: f64 = answers.iter().filter_map(|a| a.cost).sum();
    let seconds: f64 = answers.iter().map(|a| a.seconds).sum::<f64>() / n.max(1) as f64;
    CellView {
        model: model.to_owned(),
        class,
        label,
        change: changes.join(", "),
        failed: matches!(class, "fail" | "mixed" | "error"),
        cost: if answers.iter().any(|a| a.cost.is_some()) {
            crate::cost::fmt_usd(cost)
        } else {
            String::new()
        },
        latency: if n > 0 {
            format!("{seconds:.2} s")
        } else {
            String::new()
        },
        answers: views,
    }
}

/// How an answer differs from the same experiment's in the compared results.
fn change(old: Option<&Answer>, now: &Answer) -> &'static str {
    let Some(old) = old else { return "new" };
    let good = |a: &Answer| a.status != "error" && a.pass != Some(false);
    match (good(old), good(now)) {
        (true, false) => "newly failing",
        (false, true) => "newly passing",
        _ if old.output != now.output => "answer changed",
        _ => "",
    }
}

fn answer_view(a: &Answer, numbered: bool, old: Option<&Answer>) -> AnswerView {
    let verdict = match a.pass {
        Some(true) => "pass",
        Some(false) => "fail",
        None => a.status.as_str(),
    };
    let snippet: String = a.output.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = snippet.chars().take(90).collect();
    AnswerView {
        heading: if numbered {
            format!("#{} {verdict}", a.repeat)
        } else {
            String::new()
        },
        snippet: if short.len() < snippet.len() {
            format!("{short}…")
        } else if short.is_empty() {
            "(no answer)".to_owned()
        } else {
            short
        },
        text: a.output.clone(),
        reason: a.reason.clone(),
        error: a.error.clone(),
        diff: old.map(|o| diff(&o.output, &a.output)).unwrap_or_default(),
    }
}

/// The word diff of two answers, as runs of kept, removed and added text.
fn diff(old: &str, new: &str) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for c in similar::TextDiff::from_words(old, new).iter_all_changes() {
        let kind = match c.tag() {
            similar::ChangeTag::Equal => "same",
            similar::ChangeTag::Delete => "del",
            similar::ChangeTag::Insert => "ins",
        };
        match out.last_mut() {
            Some(last) if last.kind == kind => last.text.push_str(c.value()),
            _ => out.push(Segment {
                kind,
                text: c.value().to_owned(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "provider,model,q,repeat,status,input_tokens,context_window,\
        output_tokens,duration_seconds,output,error_message,cached,cost_usd,pass,score,reason";

    fn results(dir: &Path, name: &str, rows: &[&str]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("{HEADER}\n{}\n", rows.join("\n"))).unwrap();
        path
    }

    #[test]
    fn the_page_shows_every_cell_escaped_and_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let old = results(
            dir.path(),
            "old.csv",
            &[
                "mock,a,<b>capital</b>,1,ok,1,,1,0.5,Paris,,false,0.001,true,1,",
                "mock,b,<b>capital</b>,1,ok,1,,1,0.5,Paris,,false,,true,1,",
            ],
        );
        let new = results(
            dir.path(),
            "new.csv",
            &[
                "mock,a,<b>capital</b>,1,ok,1,,1,0.5,<script>alert(1)</script> Lyon,,false,0.001,false,0,expected Paris",
                "mock,b,<b>capital</b>,1,ok,1,,1,0.5,Paris,,false,,true,1,",
            ],
        );
        let page = dir.path().join("page.html");
        write(&[new], &[old], &page, None).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(!html.contains("<script>alert"), "a value ran as markup");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; Lyon"),
            "shown as text"
        );
        assert!(html.contains("&lt;b&gt;capital&lt;&#x2f;b&gt;"));
        assert!(html.contains("newly failing"));
        assert!(html.contains("1 newly failing, 0 newly passing, 0 other answers changed, 0 new"));
        assert!(html.contains("<title>Results: new.csv</title>"));
    }

    #[test]
    fn a_file_that_is_not_results_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.csv");
        std::fs::write(&f, "a,b\n1,2\n").unwrap();
        let e = format!(
            "{:#}",
            write(
                std::slice::from_ref(&f),
                &[],
                &dir.path().join("p.html"),
                None
            )
            .unwrap_err()
        );
        assert!(e.contains("x.csv is not a parallamr results file"), "{e}");
        assert!(!dir.path().join("p.html").exists());
    }

    #[test]
    fn json_lines_keep_their_column_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.jsonl");
        std::fs::write(
            &f,
            "{\"provider\":\"mock\",\"model\":\"m\",\"zeta\":\"1\",\"alpha\":\"2\",\"status\":\"ok\",\
             \"input_tokens\":1,\"context_window\":null,\"output_tokens\":2,\"duration_seconds\":0.1,\
             \"output\":\"hi\",\"error_message\":\"\",\"cached\":false,\"cost_usd\":null}\n{\"torn",
        )
        .unwrap();
        let r = read(&[f]).unwrap();
        assert_eq!(r.var_names, ["zeta", "alpha"]);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].output, "hi");
    }

    #[test]
    fn word_diffs() {
        let d = diff("the cat sat", "the dog sat");
        let kinds: Vec<(&str, &str)> = d.iter().map(|s| (s.kind, s.text.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("same", "the "),
                ("del", "cat"),
                ("ins", "dog"),
                ("same", " sat")
            ]
        );
    }
}
