//! What a bench run produces: the JSON report, the markdown table, the speedup chart, and the
//! comparison with a baseline.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The JSON file: `{"machine": {...}, "scenarios": [...]}` plus the run's settings and checks.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    /// `full` or `quick` (smaller sizes, no notebook export).
    pub(crate) mode: String,
    pub(crate) commit: String,
    pub(crate) date: String,
    pub(crate) scenarios: Vec<Scenario>,
    #[serde(default)]
    pub(crate) checks: Vec<Check>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu: String,
    pub(crate) memory_gib: f64,
    pub(crate) os: String,
    pub(crate) kernel: String,
    pub(crate) rustc: String,
    /// Versions of the anchors that ran, by name.
    pub(crate) anchors: Vec<(String, String)>,
}

/// One row: our figure, the anchor's, and the ideal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Scenario {
    /// Unique within a mode; baselines are matched by it.
    pub(crate) name: String,
    /// Which of the suite's scenarios this row belongs to (dispatch, io, ...).
    pub(crate) group: String,
    /// What we ran.
    pub(crate) ours: String,
    pub(crate) ours_seconds: f64,
    pub(crate) anchor: Option<String>,
    pub(crate) anchor_seconds: Option<f64>,
    /// `anchor_seconds / ours_seconds`: above 1 means we are faster.
    pub(crate) ratio: Option<f64>,
    pub(crate) ideal_seconds: Option<f64>,
    /// Jobs in the scenario, where it is a number of jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jobs: Option<usize>,
    /// Workers, where the scenario has a worker count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) workers: Option<usize>,
    /// Wall time per job, microseconds (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) per_job_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peak_rss_mib: Option<f64>,
    pub(crate) ours_runs: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) anchor_runs: Vec<f64>,
    /// Why the anchor did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

impl Scenario {
    pub(crate) fn set_anchor(&mut self, name: &str, seconds: f64, runs: Vec<f64>) {
        self.anchor = Some(name.to_owned());
        self.anchor_seconds = Some(seconds);
        self.ratio = Some(seconds / self.ours_seconds);
        self.anchor_runs = runs;
    }

    pub(crate) fn skip_anchor(&mut self, name: &str, reason: &str) {
        self.anchor = Some(name.to_owned());
        self.skipped = Some(reason.to_owned());
    }
}

/// A target the suite checks (Auto within 10% of the best strategy, say).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) passed: bool,
    pub(crate) detail: String,
}

fn secs(s: f64) -> String {
    if s < 0.1 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// The markdown table: scenario, ours, anchor, anchor's time, ratio, ideal.
pub(crate) fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let m = &report.machine;
    let _ = writeln!(
        md,
        "Machine: {} cores, {}, {:.0} GiB, {}, Linux {}; {}. Mode: {}, commit {}, {}.\n",
        m.cores,
        m.cpu,
        m.memory_gib,
        m.os,
        m.kernel,
        m.rustc,
        report.mode,
        report.commit,
        report.date
    );
    md.push_str("| scenario | ours | anchor | anchor's time | ratio | ideal | notes |\n");
    md.push_str("| --- | ---: | --- | ---: | ---: | ---: | --- |\n");
    for s in &report.scenarios {
        let mut notes = Vec::new();
        if let Some(us) = s.per_job_us {
            notes.push(if us < 10.0 {
                format!("{us:.2} µs/task")
            } else {
                format!("{us:.0} µs/job")
            });
        }
        if let Some(rss) = s.peak_rss_mib {
            notes.push(format!("peak RSS {rss:.1} MiB"));
        }
        if let Some(why) = &s.skipped {
            notes.push(format!("anchor skipped: {why}"));
        }
        if let Some(n) = &s.note {
            notes.push(n.clone());
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            secs(s.ours_seconds),
            s.anchor.as_deref().unwrap_or("—"),
            s.anchor_seconds.map_or_else(|| "—".to_owned(), secs),
            s.ratio
                .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}x")),
            s.ideal_seconds.map_or_else(|| "—".to_owned(), secs),
            notes.join("; ")
        );
    }
    if !report.checks.is_empty() {
        md.push('\n');
        for c in &report.checks {
            let mark = if c.passed { "pass" } else { "FAIL" };
            let _ = writeln!(md, "- {mark}: {} ({})", c.name, c.detail);
        }
    }
    md
}

/// A scenario that got slower than its baseline.
#[derive(Debug)]
pub(crate) struct Regression {
    pub(crate) name: String,
    pub(crate) baseline: f64,
    pub(crate) now: f64,
}

/// How much slower counts as a regression (the seeds' 1.1x threshold).
pub(crate) const THRESHOLD: f64 = 1.10;
/// Differences smaller than this are noise on a shared machine, whatever the ratio.
pub(crate) const NOISE_FLOOR_SECONDS: f64 = 0.02;

/// Scenarios more than [`THRESHOLD`] slower than in `baseline` (and by more than the noise
/// floor). Scenarios only one side has are not compared.
pub(crate) fn regressions(baseline: &Report, now: &Report) -> Vec<Regression> {
    now.scenarios
        .iter()
        .filter_map(|s| {
            let b = baseline.scenarios.iter().find(|b| b.name == s.name)?;
            let slower = s.ours_seconds > b.ours_seconds * THRESHOLD
                && s.ours_seconds - b.ours_seconds > NOISE_FLOOR_SECONDS;
            slower.then(|| Regression {
                name: s.name.clone(),
                baseline: b.ours_seconds,
                now: s.ours_seconds,
            })
        })
        .collect()
}

/// Speedup over one worker against the worker count, for ours, the anchor and the ideal: the
/// I/O-bound scenario's rows, drawn as an SVG line chart.
pub(crate) fn speedup_svg(report: &Report) -> Option<String> {
    let rows: Vec<&Scenario> = report
        .scenarios
        .iter()
        .filter(|s| s.group == "io" && s.workers.is_some())
        .collect();
    let one = rows.iter().find(|s| s.workers == Some(1))?;
    let point = |s: &Scenario, t: f64| (s.workers.unwrap_or(1) as f64, t);
    let ours: Vec<(f64, f64)> = rows
        .iter()
        .map(|s| point(s, one.ours_seconds / s.ours_seconds))
        .collect();
    let anchor: Vec<(f64, f64)> = match one.anchor_seconds {
        Some(a1) => rows
            .iter()
            .filter_map(|s| Some(point(s, a1 / s.anchor_seconds?)))
            .collect(),
        None => Vec::new(),
    };
    let ideal: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|s| Some(point(s, one.ideal_seconds? / s.ideal_seconds?)))
        .collect();
    let chart = Chart {
        max_x: ours.iter().map(|p| p.0).fold(1.0, f64::max),
        max_y: ours
            .iter()
            .chain(&ideal)
            .chain(&anchor)
            .map(|p| p.1)
            .fold(1.0, f64::max)
            .ceil(),
    };
    let title = format!(
        "Speedup over 1 worker: {} I/O-bound jobs ({} cores)",
        one.jobs.unwrap_or(0),
        report.machine.cores
    );
    let mut svg = chart.frame(&title);
    chart.series(&mut svg, &ideal, "#888888", "6 4", "ideal ceil(n/j) x t", 0);
    chart.series(&mut svg, &ours, "#1f5fbf", "", "fanout pool", 1);
    if let Some(name) = &one.anchor {
        // The anchor's name carries the worker count of the one-worker row ("xargs -P 1").
        let label = format!("{}j", name.trim_end_matches(|c: char| c.is_ascii_digit()));
        chart.series(&mut svg, &anchor, "#c0392b", "2 3", &label, 2);
    }
    svg.push_str("</svg>\n");
    Some(svg)
}

/// A line chart with a log2 x axis (worker counts) and a linear y axis (speedup).
struct Chart {
    max_x: f64,
    max_y: f64,
}

impl Chart {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 400.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;

    fn x(&self, workers: f64) -> f64 {
        Self::LEFT
            + (workers.log2() / self.max_x.log2().max(1.0))
                * (Self::WIDTH - Self::LEFT - Self::RIGHT)
    }

    fn y(&self, speedup: f64) -> f64 {
        Self::HEIGHT
            - Self::BOTTOM
            - (speedup / self.max_y) * (Self::HEIGHT - Self::TOP - Self::BOTTOM)
    }

    /// The SVG's opening, title, grid and axis labels.
    fn frame(&self, title: &str) -> String {
        let (width, height, left, bottom) = (Self::WIDTH, Self::HEIGHT, Self::LEFT, Self::BOTTOM);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="13" role="img" aria-labelledby="t">
<title id="t">{title}</title><rect width="100%" height="100%" fill="#fff"/>
<text x="{left}" y="22" font-size="15" fill="#111">{title}</text>"##
        );
        let mut tick = 1.0;
        while tick <= self.max_x {
            let _ = writeln!(
                svg,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle" fill="#333">{4}</text>"##,
                self.x(tick),
                Self::TOP,
                height - bottom,
                height - bottom + 18.0,
                tick
            );
            tick *= 2.0;
        }
        let step = (self.max_y / 8.0).ceil().max(1.0);
        let mut v = 0.0;
        while v <= self.max_y {
            let _ = writeln!(
                svg,
                r##"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end" fill="#333">{4}x</text>"##,
                self.y(v),
                width - Self::RIGHT,
                left - 6.0,
                self.y(v) + 4.0,
                v
            );
            v += step;
        }
        let _ = writeln!(
            svg,
            r##"<text x="{0}" y="{1}" text-anchor="middle" fill="#333">workers</text>"##,
            f64::midpoint(left, width - Self::RIGHT),
            height - 12.0
        );
        svg
    }

    /// One line with a dot per point (hover shows the value) and its legend entry, the `n`th.
    fn series(
        &self,
        svg: &mut String,
        points: &[(f64, f64)],
        colour: &str,
        dash: &str,
        label: &str,
        n: usize,
    ) {
        if points.is_empty() {
            return;
        }
        let d: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", self.x(p.0), self.y(p.1)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2.5" stroke-dasharray="{dash}"/>"#,
            d.join(" ")
        );
        for p in points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{label}: {:.2}x at {} workers</title></circle>"#,
                self.x(p.0),
                self.y(p.1),
                p.1,
                p.0
            );
        }
        let legend_y = Self::TOP + 8.0 + 18.0 * n as f64;
        let _ = writeln!(
            svg,
            r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{colour}" stroke-width="2.5" stroke-dasharray="{dash}"/><text x="{3}" y="{4}" fill="#111">{label}</text>"##,
            Self::LEFT + 16.0,
            legend_y,
            Self::LEFT + 44.0,
            Self::LEFT + 50.0,
            legend_y + 4.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rows: &[(&str, f64)]) -> Report {
        Report {
            machine: Machine {
                cores: 2,
                cpu: "cpu".into(),
                memory_gib: 1.0,
                os: "os".into(),
                kernel: "k".into(),
                rustc: "rustc".into(),
                anchors: Vec::new(),
            },
            mode: "quick".into(),
            commit: "abc".into(),
            date: "today".into(),
            scenarios: rows
                .iter()
                .map(|(name, s)| Scenario {
                    name: (*name).to_owned(),
                    ours_seconds: *s,
                    ..Scenario::default()
                })
                .collect(),
            checks: Vec::new(),
        }
    }

    #[test]
    fn a_regression_is_over_ten_percent_and_over_the_noise_floor() {
        let base = report(&[("a", 1.0), ("b", 1.0), ("c", 0.010), ("d", 1.0)]);
        let now = report(&[("a", 1.09), ("b", 1.2), ("c", 0.015), ("e", 9.0)]);
        let r = regressions(&base, &now);
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        // a: 9% slower; c: 50% slower but 5 ms; d, e: on one side only.
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn the_table_has_a_row_per_scenario_and_the_ratio() {
        let mut r = report(&[("dispatch", 2.0)]);
        r.scenarios[0].set_anchor("xargs -P 2", 3.0, vec![3.0]);
        let md = markdown(&r);
        assert!(
            md.contains("| dispatch | 2.00 s | xargs -P 2 | 3.00 s | 1.50x |"),
            "{md}"
        );
    }

    #[test]
    fn the_chart_draws_the_io_rows() {
        let mut r = report(&[]);
        for (j, t) in [(1, 8.0), (2, 4.1), (4, 2.1)] {
            r.scenarios.push(Scenario {
                name: format!("io -j{j}"),
                group: "io".into(),
                workers: Some(j),
                ours_seconds: t,
                ideal_seconds: Some(8.0 / j as f64),
                ..Scenario::default()
            });
        }
        let svg = speedup_svg(&r).expect("a chart");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2, "ideal and ours");
        assert!(svg.contains("fanout pool: 3.81x at 4 workers"), "{svg}");
    }
}
