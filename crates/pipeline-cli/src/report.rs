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
    /// The time before its bar it waited for resources (a job, not a group).
    wait: Option<Bar>,
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
        JobStatus::UpToDate => "\u{2261}",  // identical to
        JobStatus::Pending => "\u{25CB}",   // circle
    }
}

/// Render the page for `record` and write it atomically to `output`.
pub(crate) fn write(record: &RunRecord, output: &Path) -> Result<()> {
    let html = render(record)?;
    fanout::fsutil::write_atomic(output, html.as_bytes())?;
    Ok(())
}

/// The run in the report shape all three tools share (`{"summary": ..., "tasks": [...]}`,
/// see `fanout::Report`): one task per job, stage by stage, with lorchestra's fields beside the
/// shared ones. Written atomically.
pub(crate) fn write_json(record: &RunRecord, path: &Path) -> Result<()> {
    #[derive(Serialize)]
    struct Extra<'a> {
        stage: &'a str,
        exit_code: Option<i32>,
        slurm_job_id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        slurm_node: Option<&'a str>,
        backend: &'a str,
        log: &'a str,
    }
    let jobs = || {
        record
            .stages
            .iter()
            .flat_map(|s| s.jobs.iter().map(move |j| (s.name.as_str(), j)))
    };
    let mut counts = [0usize; 5];
    for (_, j) in jobs() {
        let slot = match j.status {
            JobStatus::Succeeded | JobStatus::UpToDate => 0,
            JobStatus::Failed => 1,
            JobStatus::TimedOut => 2,
            // A job still pending or running in a finished record never finished: the run
            // ended under it.
            JobStatus::Cancelled | JobStatus::Pending | JobStatus::Running => 3,
            JobStatus::Skipped => 4,
        };
        counts[slot] += 1;
    }
    let busy: f64 = jobs().filter_map(|(_, j)| j.duration_seconds).sum();
    let wall = record.duration_seconds.unwrap_or(0.0).max(0.0);
    // As recorded; a record of an older version names none: what lorchestra always ran.
    let strategy = record.strategy.unwrap_or(fanout::Strategy::Threads);
    let started = std::time::UNIX_EPOCH
        + std::time::Duration::try_from_secs_f64(record.started_at_unix.max(0.0))
            .unwrap_or_default();
    let secs = |s: f64| std::time::Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default();
    let summary = fanout::Summary::from_counts(
        counts,
        secs(busy),
        secs(wall),
        record.max_workers.max(1),
        strategy,
        started,
    );
    let report = fanout::Report {
        summary: &summary,
        tasks: jobs()
            .map(|(stage, j)| fanout::result::TaskRecord {
                name: &j.job_id,
                status: match j.status {
                    JobStatus::Succeeded | JobStatus::UpToDate => fanout::Status::Succeeded,
                    JobStatus::Failed => fanout::Status::Failed,
                    JobStatus::TimedOut => fanout::Status::TimedOut,
                    JobStatus::Cancelled | JobStatus::Pending | JobStatus::Running => {
                        fanout::Status::Cancelled
                    }
                    JobStatus::Skipped => fanout::Status::Skipped,
                },
                duration_seconds: j.duration_seconds.unwrap_or(0.0),
                queue_wait_seconds: 0.0,
                started_after_seconds: j.started_at_unix.map(|t| t - record.started_at_unix),
                attempts: j.attempts,
                error: j.error.clone().filter(|_| j.status != JobStatus::Succeeded),
                error_detail: None,
                extra: Extra {
                    stage,
                    exit_code: j.exit_code,
                    slurm_job_id: j.slurm_job_id,
                    slurm_node: j.slurm_node.as_deref(),
                    backend: &j.backend,
                    log: &j.log,
                },
            })
            .collect(),
    };
    report
        .write_json(path)
        .map_err(|e| anyhow::anyhow!("writing the report: {e}"))
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

    let (rows, y) = chart_rows(record, t0, end, &x_of);
    let table: Vec<TableGroup<'_>> = record
        .stages
        .iter()
        .flat_map(|stage| {
            groups(&stage.jobs).into_iter().map(|g| TableGroup {
                stage: &stage.name,
                summary: g
                    .summary
                    .map(|s| format!("{} \u{d7}{}: {s}", g.base, g.jobs.len())),
                jobs: g.jobs,
            })
        })
        .collect();
    let ticks = (0..=5)
        .map(|i| {
            let t = span * f64::from(i) / 5.0;
            Tick {
                x: round(LABEL_WIDTH + t / span * plot),
                label: format!("{t:.1} s"),
            }
        })
        .collect::<Vec<_>>();
    let legend = legend(record);

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
            table => table,
            legend => legend,
        })?;
    Ok(html)
}

/// The legend: the statuses the run's jobs have, in a fixed order.
fn legend(record: &RunRecord) -> Vec<LegendEntry> {
    [
        JobStatus::Succeeded,
        JobStatus::UpToDate,
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
    .chain(
        record
            .stages
            .iter()
            .flat_map(|st| &st.jobs)
            .any(|j| j.resource_wait_seconds.is_some())
            .then(|| LegendEntry {
                status: "waiting",
                mark: "",
                words: "waited for resources".to_owned(),
            }),
    )
    .collect()
}

/// The chart's rows: a row per stage, then per job (or per group of iterations), with its bar;
/// and the height they take.
fn chart_rows(record: &RunRecord, t0: f64, end: f64, x_of: &dyn Fn(f64) -> f64) -> (Vec<Row>, f64) {
    let mut rows = Vec::new();
    let mut y = TOP;
    for stage in &record.stages {
        rows.push(Row {
            stage: true,
            y,
            label: match &stage.note {
                Some(note) => format!("{} ({note})", stage.name),
                None => stage.name.clone(),
            },
            status: "",
            mark: "",
            title: String::new(),
            bar: None,
            wait: None,
        });
        y += ROW_HEIGHT;
        // In the order they started (those that did not, last, in pipeline order): with
        // `needs`, a job's row comes after the rows of the jobs it waited for. The many
        // iterations of a loop's or matrix's job are one row.
        let mut groups = groups(&stage.jobs);
        let first_start = |g: &Group<'_>| {
            g.jobs
                .iter()
                .filter_map(|j| j.started_at_unix)
                .fold(f64::INFINITY, f64::min)
        };
        groups.sort_by(|a, b| first_start(a).total_cmp(&first_start(b)));
        for g in groups {
            let start = first_start(&g);
            let finish = g
                .jobs
                .iter()
                .filter_map(|j| j.finished_at_unix.or(j.started_at_unix.map(|_| end)))
                .fold(f64::NEG_INFINITY, f64::max);
            let bar = start.is_finite().then(|| Bar {
                x: round(x_of(start)),
                w: round((x_of(finish.max(start)) - x_of(start)).max(2.0)),
            });
            let status = g.status();
            // The wait before its first attempt (a retry's wait is within its bar).
            let first_wait = g.jobs[0]
                .tries
                .first()
                .map_or(g.jobs[0].resource_wait_seconds, |t| Some(t.waited_seconds));
            let wait = match (&g.summary, first_wait) {
                (None, Some(w)) if start.is_finite() && w > 0.0 => {
                    let from = x_of((start - w).max(t0));
                    Some(Bar {
                        x: round(from),
                        w: round((x_of(start) - from).max(1.0)),
                    })
                }
                _ => None,
            };
            let (label, title) = match &g.summary {
                Some(summary) => (
                    format!("{} \u{d7}{}", g.base, g.jobs.len()),
                    format!("{} ({}): {summary}", g.base, stage.name),
                ),
                None => (
                    g.jobs[0].job_id.clone(),
                    tooltip(g.jobs[0], &stage.name, t0),
                ),
            };
            rows.push(Row {
                stage: false,
                y,
                label,
                status: status.as_str(),
                mark: mark(status),
                title,
                bar,
                wait,
            });
            y += ROW_HEIGHT;
        }
    }
    (rows, y)
}

/// A loop's or matrix's job with more iterations than this is one row of the chart, and one
/// expandable row of the table.
const GROUP_AT: usize = 10;

/// Jobs shown together: one job, or the iterations of one job (`base[...]`).
struct Group<'a> {
    base: String,
    jobs: Vec<&'a crate::store::JobRecord>,
    /// For a group of iterations: how they ended, in words.
    summary: Option<String>,
}

impl Group<'_> {
    /// The status the group shows: the worst of its jobs.
    fn status(&self) -> JobStatus {
        let rank = |s: JobStatus| match s {
            JobStatus::Failed => 0,
            JobStatus::TimedOut => 1,
            JobStatus::Cancelled => 2,
            JobStatus::Running => 3,
            JobStatus::Skipped => 4,
            JobStatus::Pending => 5,
            JobStatus::Succeeded => 6,
            JobStatus::UpToDate => 7,
        };
        self.jobs
            .iter()
            .map(|j| j.status)
            .min_by_key(|s| rank(*s))
            .unwrap_or(JobStatus::Pending)
    }
}

/// A stage's jobs in groups: a job's iterations together when there are more than
/// [`GROUP_AT`], every other job alone; in the stage's order.
fn groups(jobs: &[crate::store::JobRecord]) -> Vec<Group<'_>> {
    let base = |id: &str| {
        id.strip_suffix(']')
            .and_then(|s| s.split_once('['))
            .map(|(b, _)| b.to_owned())
    };
    let mut count: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for j in jobs {
        if let Some(b) = base(&j.job_id) {
            *count.entry(b).or_default() += 1;
        }
    }
    let mut out: Vec<Group<'_>> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for j in jobs {
        match base(&j.job_id).filter(|b| count[b] > GROUP_AT) {
            Some(b) => {
                if let Some(&i) = at.get(&b) {
                    out[i].jobs.push(j);
                } else {
                    at.insert(b.clone(), out.len());
                    out.push(Group {
                        base: b,
                        jobs: vec![j],
                        summary: Some(String::new()),
                    });
                }
            }
            None => out.push(Group {
                base: j.job_id.clone(),
                jobs: vec![j],
                summary: None,
            }),
        }
    }
    for g in &mut out {
        if g.summary.is_some() {
            let mut by: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
            for j in &g.jobs {
                *by.entry(j.status.as_str()).or_default() += 1;
            }
            let parts: Vec<String> = by
                .iter()
                .map(|(s, n)| format!("{n} {}", s.replace('_', " ")))
                .collect();
            g.summary = Some(format!("{} iterations: {}", g.jobs.len(), parts.join(", ")));
        }
    }
    out
}

/// A row of the table: one job, or a job's iterations (expandable).
#[derive(Serialize)]
struct TableGroup<'a> {
    stage: &'a str,
    summary: Option<String>,
    jobs: Vec<&'a crate::store::JobRecord>,
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
    if let Some(w) = job.resource_wait_seconds {
        let _ = write!(title, ", waited {w:.2} s for resources");
    }
    if let Some(last) = job.tries.last().filter(|t| !t.resources.is_empty()) {
        let had: Vec<String> = (last.resources.iter())
            .map(|(n, v)| format!("{n}={}", crate::resources::show(n, *v)))
            .collect();
        let _ = write!(title, " (had {})", had.join(", "));
    }
    if let Some(id) = job.slurm_job_id {
        let _ = write!(title, ", Slurm job {id}");
    }
    if let Some(node) = &job.slurm_node {
        let _ = write!(title, " on {node}");
    }
    if let Some(e) = &job.error {
        let _ = write!(title, ": {e}");
    }
    if let Some(r) = &job.reason {
        let _ = write!(title, " (why: {r})");
    }
    title
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
