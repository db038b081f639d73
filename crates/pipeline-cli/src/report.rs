//! `lorchestra report`: a run's timeline as one self-contained HTML page with an SVG chart —
//! one bar per job on a time axis, grouped by stage, coloured by status. Colour is never the
//! only carrier: each job's label starts with a status mark, and the legend, each bar's tooltip
//! and the table name the status in words.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use minijinja::Environment;
use serde::Serialize;

use crate::store::{JobStatus, RunRecord};

const TEMPLATE: &str = include_str!("../templates/timeline.html");
const WIDTH: f64 = 1000.0;
const LABEL_WIDTH: f64 = 220.0;
const ROW_HEIGHT: f64 = 22.0;
const TOP: f64 = 24.0;

#[derive(Serialize)]
struct Tick {
    x: f64,
    label: String,
}

#[derive(Serialize)]
struct Bar {
    x: f64,
    w: f64,
}

#[derive(Serialize)]
struct Row {
    stage: bool,
    y: f64,
    label: String,
    status: &'static str,
    /// A mark for the status, readable without colour (see [`mark`]).
    mark: &'static str,
    title: String,
    bar: Option<Bar>,
}

/// A status in the legend: its class (the colour), mark and words.
#[derive(Serialize)]
struct LegendEntry {
    status: &'static str,
    mark: &'static str,
    words: String,
}

/// Marks that common fonts have (Debian's fonts-dejavu, system UI fonts), distinct in shape.
fn mark(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Succeeded => "\u{2713}", // check mark
        JobStatus::Failed => "\u{2717}",    // ballot x
        JobStatus::TimedOut => "\u{25F7}",  // clock face
        JobStatus::Cancelled => "\u{2298}", // circled slash
        JobStatus::Running => "\u{25B6}",   // play
        JobStatus::Skipped => "\u{2013}",   // en dash
        JobStatus::Pending => "\u{25CB}",   // circle
    }
}

/// Render the page for `record` and write it atomically to `output`.
pub(crate) fn write(record: &RunRecord, output: &Path) -> Result<()> {
    let html = render(record)?;
    fanout::fsutil::write_atomic(output, html.as_bytes())?;
    Ok(())
}

pub(crate) fn render(record: &RunRecord) -> Result<String> {
    let t0 = record.started_at_unix;
    let end = record
        .stages
        .iter()
        .flat_map(|s| &s.jobs)
        .filter_map(|j| j.finished_at_unix.or(j.started_at_unix))
        .chain(record.finished_at_unix)
        .fold(t0, f64::max);
    let span = (end - t0).max(0.001);
    // Room on the right for the last tick label, centred on the end of the axis.
    let plot = WIDTH - LABEL_WIDTH - 30.0;
    let x_of = |t: f64| LABEL_WIDTH + (t - t0) / span * plot;

    let mut rows = Vec::new();
    let mut y = TOP;
    for stage in &record.stages {
        rows.push(Row {
            stage: true,
            y,
            label: stage.name.clone(),
            status: "",
            mark: "",
            title: String::new(),
            bar: None,
        });
        y += ROW_HEIGHT;
        for job in &stage.jobs {
            let bar = job.started_at_unix.map(|s| {
                let f = job.finished_at_unix.unwrap_or(end);
                Bar {
                    x: round(x_of(s)),
                    w: round((x_of(f) - x_of(s)).max(2.0)),
                }
            });
            let title = tooltip(job, &stage.name, t0);
            rows.push(Row {
                stage: false,
                y,
                label: job.job_id.clone(),
                status: job.status.as_str(),
                mark: mark(job.status),
                title,
                bar,
            });
            y += ROW_HEIGHT;
        }
    }
    let ticks = (0..=5)
        .map(|i| {
            let t = span * f64::from(i) / 5.0;
            Tick {
                x: round(LABEL_WIDTH + t / span * plot),
                label: format!("{t:.1} s"),
            }
        })
        .collect::<Vec<_>>();
    let legend: Vec<LegendEntry> = [
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::TimedOut,
        JobStatus::Cancelled,
        JobStatus::Skipped,
        JobStatus::Running,
        JobStatus::Pending,
    ]
    .iter()
    .filter(|s| {
        record
            .stages
            .iter()
            .flat_map(|st| &st.jobs)
            .any(|j| j.status == **s)
    })
    .map(|s| LegendEntry {
        status: s.as_str(),
        mark: mark(*s),
        words: s.as_str().replace('_', " "),
    })
    .collect();

    let mut env = Environment::new();
    env.add_template("timeline.html", TEMPLATE)?;
    let html = env
        .get_template("timeline.html")?
        .render(minijinja::context! {
            run => record,
            duration => record.duration_seconds.map(fanout::fmt_seconds),
            span => format!("{span:.1} s"),
            width => WIDTH,
            height => y + 4.0,
            label_width => LABEL_WIDTH,
            row_height => ROW_HEIGHT,
            ticks => ticks,
            rows => rows,
            legend => legend,
        })?;
    Ok(html)
}

/// The words of a job's bar: status, times, attempts, error.
fn tooltip(job: &crate::store::JobRecord, stage: &str, t0: f64) -> String {
    let mut title = format!(
        "{} ({}): {}",
        job.job_id,
        stage,
        job.status.as_str().replace('_', " ")
    );
    if let (Some(s), Some(st)) = (job.started_at_unix, &job.started_at) {
        let _ = write!(title, ", started {st} (+{:.2} s)", s - t0);
    }
    if let Some(f) = &job.finished_at {
        let _ = write!(title, ", finished {f}");
    }
    if let Some(d) = job.duration_seconds {
        let _ = write!(title, ", took {d:.2} s");
    }
    if job.attempts > 1 {
        let _ = write!(title, ", {} attempts", job.attempts);
    }
    if let Some(id) = job.slurm_job_id {
        let _ = write!(title, ", Slurm job {id}");
    }
    if let Some(e) = &job.error {
        let _ = write!(title, ": {e}");
    }
    title
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
