//! The summary per model of a sweep's rows: rows, errors, pass rate with its 95% interval, all
//! repeats passed (pass^N), tokens, cost, latency p50/p95. The same numbers close a run on the
//! terminal and head the results page (`view`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cost::fmt_usd;

/// What the summary needs of one row.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    pub(crate) provider: String,
    pub(crate) model: String,
    /// The variable values: rows with the same ones are repeats of one experiment.
    pub(crate) vars: Vec<String>,
    pub(crate) status: String,
    /// The verdict (`None`: not judged, or an error).
    pub(crate) pass: Option<bool>,
    pub(crate) seconds: f64,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) cost: Option<f64>,
    pub(crate) cached: bool,
}

/// The summary of one provider/model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ModelSummary {
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) rows: usize,
    pub(crate) errors: usize,
    /// Rows judged, and of those passed.
    pub(crate) judged: usize,
    pub(crate) passed: usize,
    /// passed / judged, and its Wilson 95% interval.
    pub(crate) pass_rate: Option<f64>,
    pub(crate) pass_low: Option<f64>,
    pub(crate) pass_high: Option<f64>,
    /// With repeats: the experiments all of whose repeats passed, of those judged.
    pub(crate) all_passed: Option<(usize, usize)>,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    /// What the rows' answers cost (also those from the cache); `None` while none has a price.
    pub(crate) cost: Option<f64>,
    pub(crate) p50_seconds: Option<f64>,
    pub(crate) p95_seconds: Option<f64>,
}

/// What kind of rows a summary is of.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Kind {
    /// `--repeat`: rows with the same variables are repeats.
    pub(crate) repeated: bool,
    /// Checks were on: every row counts in the pass rate, an error as not passed.
    pub(crate) judged: bool,
}

/// The summary of every model, best first: by pass rate (highest), then cost (lowest), then
/// name.
pub(crate) fn summarize(records: &[Record], kind: Kind) -> Vec<ModelSummary> {
    let mut by: BTreeMap<(&str, &str), Vec<&Record>> = BTreeMap::new();
    for r in records {
        by.entry((&r.provider, &r.model)).or_default().push(r);
    }
    let mut out: Vec<ModelSummary> = by
        .into_iter()
        .map(|((provider, model), rs)| one(provider, model, &rs, kind))
        .collect();
    out.sort_by(|a, b| {
        let rate = |m: &ModelSummary| m.pass_rate.unwrap_or(-1.0);
        rate(b)
            .total_cmp(&rate(a))
            .then(a.cost.unwrap_or(0.0).total_cmp(&b.cost.unwrap_or(0.0)))
            .then_with(|| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)))
    });
    out
}

fn one(provider: &str, model: &str, rs: &[&Record], kind: Kind) -> ModelSummary {
    // An error is an answer that did not pass: a model that mostly fails to answer must not
    // rank on its few answers.
    let judged: Vec<bool> = if kind.judged {
        rs.iter().map(|r| r.pass == Some(true)).collect()
    } else {
        Vec::new()
    };
    let passed = judged.iter().filter(|p| **p).count();
    let interval = wilson(passed, judged.len());
    // Latency is that of answers sent: one from the cache took no time.
    let mut seconds: Vec<f64> = rs
        .iter()
        .filter(|r| r.status != "error" && !r.cached)
        .map(|r| r.seconds)
        .collect();
    seconds.sort_by(f64::total_cmp);
    let priced: Vec<f64> = rs.iter().filter_map(|r| r.cost).collect();
    ModelSummary {
        provider: provider.to_owned(),
        model: model.to_owned(),
        rows: rs.len(),
        errors: rs.iter().filter(|r| r.status == "error").count(),
        judged: judged.len(),
        passed,
        pass_rate: (!judged.is_empty()).then(|| passed as f64 / judged.len() as f64),
        pass_low: interval.map(|i| i.0),
        pass_high: interval.map(|i| i.1),
        all_passed: (kind.repeated && !judged.is_empty()).then(|| all_passed(rs)),
        input_tokens: rs.iter().map(|r| r.input_tokens).sum(),
        output_tokens: rs.iter().map(|r| r.output_tokens).sum(),
        cost: (!priced.is_empty()).then(|| priced.iter().sum()),
        p50_seconds: percentile(&seconds, 50.0),
        p95_seconds: percentile(&seconds, 95.0),
    }
}

/// Of the experiments (rows with the same variables) with a verdict, how many passed every
/// repeat (an error counts as not passed), and how many there are.
fn all_passed(rs: &[&Record]) -> (usize, usize) {
    let mut by: BTreeMap<&[String], bool> = BTreeMap::new();
    for r in rs {
        let ok = r.pass == Some(true);
        by.entry(&r.vars).and_modify(|a| *a &= ok).or_insert(ok);
    }
    (by.values().filter(|a| **a).count(), by.len())
}

/// The Wilson score interval at 95% for `k` successes in `n` trials.
pub(crate) fn wilson(k: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (k, n) = (k as f64, n as f64);
    let z = 1.959_964;
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

/// The `pct` percentile of sorted values (nearest rank).
pub(crate) fn percentile(sorted: &[f64], pct: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A share as a percentage with one decimal.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Seconds as the terminal shows them: `0.42s`, `12.3s`.
fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s"))
}

/// The summary as a table for the terminal.
pub(crate) fn table(models: &[ModelSummary]) -> String {
    let judged = models.iter().any(|m| m.judged > 0);
    let repeated = models.iter().any(|m| m.all_passed.is_some());
    let mut head = vec!["MODEL", "ROWS", "ERRORS"];
    if judged {
        head.push("PASS (95% CI)");
    }
    if repeated {
        head.push("ALL REPEATS");
    }
    head.extend(["TOKENS IN", "TOKENS OUT", "COST", "P50", "P95"]);
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
    for m in models {
        let mut l = vec![
            format!("{}/{}", m.provider, m.model),
            m.rows.to_string(),
            m.errors.to_string(),
        ];
        if judged {
            l.push(match (m.pass_rate, m.pass_low, m.pass_high) {
                (Some(r), Some(lo), Some(hi)) => {
                    format!("{} ({}-{})", pct(r), pct(lo), pct(hi))
                }
                _ => "-".to_owned(),
            });
        }
        if repeated {
            l.push(
                m.all_passed
                    .map_or_else(|| "-".to_owned(), |(k, n)| format!("{k}/{n}")),
            );
        }
        l.extend([
            m.input_tokens.to_string(),
            m.output_tokens.to_string(),
            m.cost.map_or_else(|| "-".to_owned(), fmt_usd),
            secs(m.p50_seconds),
            secs(m.p95_seconds),
        ]);
        lines.push(l);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(model: &str, var: &str, pass: Option<bool>, seconds: f64) -> Record {
        Record {
            provider: "p".into(),
            model: model.into(),
            vars: vec![var.into()],
            status: if pass.is_some() { "ok" } else { "error" }.into(),
            pass,
            seconds,
            input_tokens: 10,
            output_tokens: 5,
            cost: Some(0.001),
            cached: false,
        }
    }

    #[test]
    fn pass_rates_intervals_and_percentiles() {
        let mut rs = Vec::new();
        for (i, p) in [true, true, true, false, false].into_iter().enumerate() {
            rs.push(rec("a", "x", Some(p), i as f64 + 1.0));
            rs.push(rec("a", "y", Some(true), 0.5));
        }
        rs.push(rec("b", "x", None, 9.0));
        let s = summarize(
            &rs,
            Kind {
                repeated: true,
                judged: true,
            },
        );
        assert_eq!(s[0].model, "a", "the model with a pass rate first");
        let a = &s[0];
        assert_eq!((a.rows, a.errors, a.judged, a.passed), (10, 0, 10, 8));
        assert_eq!(a.pass_rate, Some(0.8));
        let (lo, hi) = (a.pass_low.unwrap(), a.pass_high.unwrap());
        assert!(
            (lo - 0.490).abs() < 0.001 && (hi - 0.943).abs() < 0.001,
            "{lo} {hi}"
        );
        assert_eq!(
            a.all_passed,
            Some((1, 2)),
            "y passed every repeat, x did not"
        );
        assert_eq!(a.p50_seconds, Some(0.5));
        assert_eq!(a.p95_seconds, Some(5.0));
        assert_eq!(a.input_tokens, 100);
        assert!((a.cost.unwrap() - 0.01).abs() < 1e-12);
        let b = &s[1];
        assert_eq!(
            (b.errors, b.pass_rate, b.p50_seconds),
            (1, Some(0.0), None),
            "an error is not a pass"
        );
        let t = table(&s);
        assert!(
            t.contains("p/a      10       0  80.0% (49.0%-94.3%)          1/2"),
            "{t}"
        );
        assert!(t.lines().next().unwrap().contains("ALL REPEATS"), "{t}");
        // Answers from the cache took no time: they are not in the latency.
        let mut cached = rec("c", "x", Some(true), 0.0);
        cached.cached = true;
        let s = summarize(&[cached, rec("c", "y", Some(true), 2.0)], Kind::default());
        assert_eq!(s[0].p50_seconds, Some(2.0));
        assert_eq!(s[0].pass_rate, None, "not judged");
    }

    #[test]
    fn wilson_bounds() {
        assert_eq!(wilson(0, 0), None);
        let (lo, hi) = wilson(0, 10).unwrap();
        assert!(lo.abs() < 1e-9 && (hi - 0.278).abs() < 0.001, "{lo} {hi}");
        let (lo, hi) = wilson(10, 10).unwrap();
        assert!(
            (lo - 0.722).abs() < 0.001 && (hi - 1.0).abs() < 1e-9,
            "{lo} {hi}"
        );
    }
}
