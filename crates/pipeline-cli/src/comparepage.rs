//! `lorchestra report --compare RUN...`: runs compared on one self-contained HTML page — the
//! parameters that differ, and a chart per metric (a line across the runs, a labelled point per
//! run), drawn as inline SVG with no script and nothing fetched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Result, bail};
use minijinja::Environment;
use serde::Serialize;

use crate::store::RunRecord;

const TEMPLATE: &str = include_str!("../templates/compare.html");

/// A chart's size in SVG units; it scales to the page's width.
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 220.0;
/// Room for the value axis on the left and the run labels below.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;

#[derive(Serialize)]
struct Point {
    x: f64,
    y: f64,
    value: String,
    title: String,
}

#[derive(Serialize)]
struct Tick {
    y: f64,
    label: String,
}

#[derive(Serialize)]
struct RunLabel {
    x: f64,
    label: String,
}

#[derive(Serialize)]
struct Chart {
    /// `job / metric`.
    name: String,
    /// The polyline through the points, in run order (a run without the metric breaks it).
    lines: Vec<String>,
    points: Vec<Point>,
    ticks: Vec<Tick>,
    /// What changed from the first run with the metric to the last, in words.
    change: String,
}

#[derive(Serialize)]
struct RunRow {
    run_id: String,
    label: String,
    started_at: String,
    status: &'static str,
    duration: String,
    /// The values of the parameters that differ among the runs, in `params` order.
    params: Vec<String>,
}

/// Write the page comparing `runs` (oldest first) to `output`, atomically.
pub(crate) fn write(runs: &[RunRecord], output: &Path) -> Result<()> {
    let html = render(runs)?;
    fanout::fsutil::write_atomic(output, html.as_bytes())?;
    Ok(())
}

pub(crate) fn render(runs: &[RunRecord]) -> Result<String> {
    if runs.is_empty() {
        bail!("no runs to compare");
    }
    let names: BTreeSet<&String> = runs.iter().flat_map(|r| r.params.keys()).collect();
    let params: Vec<&String> = names
        .into_iter()
        .filter(|n| {
            runs.iter()
                .any(|r| r.params.get(*n) != runs[0].params.get(*n))
        })
        .collect();
    let rows: Vec<RunRow> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| RunRow {
            run_id: r.run_id.clone(),
            label: label(i),
            started_at: r.started_at.clone(),
            status: r.status.as_str(),
            duration: r
                .duration_seconds
                .map_or_else(String::new, |d| format!("{d:.1} s")),
            params: params
                .iter()
                .map(|n| {
                    r.params
                        .get(*n)
                        .map_or_else(|| "-".to_owned(), crate::params::show)
                })
                .collect(),
        })
        .collect();
    let charts = charts(runs);
    let pipelines: BTreeSet<&str> = runs.iter().map(|r| r.pipeline.as_str()).collect();
    let mut env = Environment::new();
    env.add_template("compare.html", TEMPLATE)?;
    let html = env
        .get_template("compare.html")?
        .render(minijinja::context! {
            pipelines => pipelines.into_iter().collect::<Vec<_>>().join(", "),
            runs => rows,
            params => params,
            charts => charts,
            width => WIDTH,
            height => HEIGHT,
            left => LEFT,
            right => WIDTH - RIGHT,
            bottom => HEIGHT - BOTTOM,
            labels => run_labels(runs.len()),
        })?;
    Ok(html)
}

/// Run `i`'s short name on the charts: A, B, ... Z, then R27, R28...
fn label(i: usize) -> String {
    u8::try_from(i).ok().filter(|&i| i < 26).map_or_else(
        || format!("R{}", i + 1),
        |i| char::from(b'A' + i).to_string(),
    )
}

/// Where run `i` of `n` is, inset from the axis so the first point's label clears the ticks'.
fn x_of(i: usize, n: usize) -> f64 {
    const INSET: f64 = 24.0;
    let plot = WIDTH - LEFT - RIGHT - 2.0 * INSET;
    if n <= 1 {
        return LEFT + INSET + plot / 2.0;
    }
    #[expect(clippy::cast_precision_loss, reason = "a handful of runs")]
    let x = LEFT + INSET + plot * i as f64 / (n - 1) as f64;
    round(x)
}

fn run_labels(n: usize) -> Vec<RunLabel> {
    (0..n)
        .map(|i| RunLabel {
            x: x_of(i, n),
            label: label(i),
        })
        .collect()
}

/// A chart per metric any run recorded (`job / metric`), in name order.
fn charts(runs: &[RunRecord]) -> Vec<Chart> {
    let mut series: BTreeMap<(String, String), Vec<Option<f64>>> = BTreeMap::new();
    for (i, r) in runs.iter().enumerate() {
        for j in r.stages.iter().flat_map(|s| &s.jobs) {
            for (name, v) in &j.metrics {
                series
                    .entry((j.job_id.clone(), name.clone()))
                    .or_insert_with(|| vec![None; runs.len()])[i] = Some(*v);
            }
        }
    }
    series
        .into_iter()
        .map(|((job, metric), values)| chart(runs, &format!("{job} / {metric}"), &values))
        .collect()
}

fn chart(runs: &[RunRecord], name: &str, values: &[Option<f64>]) -> Chart {
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    let (lo, hi) = known
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    // The axis runs between round numbers around the values (a flat series sits in the middle
    // of a small range around its value).
    let spread = if hi - lo > f64::EPSILON * hi.abs().max(1.0) {
        hi - lo
    } else {
        lo.abs().max(1.0) * 0.4
    };
    let step = nice_step(spread / 4.0);
    let (lo, hi) = if hi - lo > f64::EPSILON * hi.abs().max(1.0) {
        ((lo / step).floor() * step, (hi / step).ceil() * step)
    } else {
        (lo - 2.0 * step, hi + 2.0 * step)
    };
    let y_of = |v: f64| round(TOP + (hi - v) / (hi - lo) * (HEIGHT - TOP - BOTTOM));
    let n = runs.len();
    let points: Vec<Point> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let v = (*v)?;
            Some(Point {
                x: x_of(i, n),
                y: y_of(v),
                value: crate::metrics::show(v),
                title: format!(
                    "{name}: {} in run {} ({})",
                    crate::metrics::show(v),
                    label(i),
                    runs[i].run_id
                ),
            })
        })
        .collect();
    // Consecutive runs with the metric are joined; a run without it breaks the line.
    let mut lines = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            current.push(format!("{},{}", x_of(i, n), y_of(*v)));
        } else {
            if current.len() > 1 {
                lines.push(current.join(" "));
            }
            current.clear();
        }
    }
    if current.len() > 1 {
        lines.push(current.join(" "));
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a few ticks: the range over a round step"
    )]
    let steps = ((hi - lo) / step).round().clamp(1.0, 12.0) as u32;
    let ticks = (0..=steps)
        .map(|k| {
            let v = lo + step * f64::from(k);
            Tick {
                y: y_of(v),
                label: crate::metrics::show(round_to_step(v, step)),
            }
        })
        .collect();
    Chart {
        name: name.to_owned(),
        lines,
        points,
        ticks,
        change: change(&known),
    }
}

/// From the first value to the last, in words: `0.8 -> 0.9 (+0.1, +12.5%)`.
fn change(known: &[f64]) -> String {
    match (known.first(), known.last()) {
        (Some(a), Some(b)) if known.len() > 1 => {
            let show = crate::metrics::show;
            let rel = if *a == 0.0 {
                String::new()
            } else {
                format!(", {:+.1}%", (b - a) / a.abs() * 100.0)
            };
            let sign = if b >= a { "+" } else { "" };
            format!(
                "{} \u{2192} {} ({sign}{}{rel})",
                show(*a),
                show(*b),
                show(b - a)
            )
        }
        (Some(a), _) => format!("{} (one run)", crate::metrics::show(*a)),
        _ => String::new(),
    }
}

/// A round step near `raw`: 1, 2, 2.5 or 5 times a power of ten.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// `v` rounded to a tenth of `step` (tick labels without float noise).
fn round_to_step(v: f64, step: f64) -> f64 {
    if step <= 0.0 || !step.is_finite() {
        return v;
    }
    let unit = 10f64.powf((step / 10.0).log10().floor());
    (v / unit).round() * unit
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_as_numbers_and_labels_run_out_gracefully() {
        assert_eq!(change(&[0.8, 0.9]), "0.8 \u{2192} 0.9 (+0.1, +12.5%)");
        assert_eq!(change(&[2.0]), "2 (one run)");
        assert_eq!(label(0), "A");
        assert_eq!(label(25), "Z");
        assert_eq!(label(26), "R27");
        assert!((round_to_step(0.300_000_000_4, 0.05) - 0.3).abs() < 1e-12);
        assert!((nice_step(0.03) - 0.05).abs() < 1e-12);
        assert!((nice_step(0.018) - 0.02).abs() < 1e-12);
        assert!((nice_step(7.0) - 10.0).abs() < 1e-12);
    }
}
