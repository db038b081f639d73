//! The terminal and machine reporters shared by all three tools.
//!
//! - [`Bar`]: an indicatif progress bar with ETA, for a terminal. Failures print above it.
//! - [`Plain`]: one line per finished task, for CI logs and pipes.
//! - [`JsonLines`]: one JSON object per event, for machines.
//! - [`Silent`], which prints nothing.
//!
//! [`ProgressMode::reporter`] picks one the way users expect: a bar on a terminal, plain lines
//! otherwise; `NO_COLOR` turns colour off everywhere.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::events::{Event, Reporter, Silent};
use crate::result::{Outcome, Status, TaskError};
use crate::time::fmt_duration;

/// How a tool shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    Bar,
    Plain,
    /// Only failures and the final summary.
    Quiet,
    JsonLines,
    /// Nothing at all.
    Silent,
}

impl ProgressMode {
    /// The reporter for this mode, writing to stderr.
    pub fn reporter<T, M>(self) -> Box<dyn Reporter<T, M> + Send> {
        self.reporter_with_detail(0)
    }

    /// The reporter for this mode, writing to stderr; under each failed task, the last
    /// `detail_lines` lines of its error's detail (a log or stderr tail).
    pub fn reporter_with_detail<T, M>(self, detail_lines: usize) -> Box<dyn Reporter<T, M> + Send> {
        let color = color_enabled(std::io::stderr().is_terminal());
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => {
                Box::new(Bar::stderr(color).with_detail(detail_lines))
            }
            ProgressMode::Bar => Box::new(Bar::stderr(color).with_detail(detail_lines)),
            ProgressMode::Auto | ProgressMode::Plain => {
                Box::new(Plain::new(std::io::stderr(), color).with_detail(detail_lines))
            }
            ProgressMode::Quiet => Box::new(
                Plain::new(std::io::stderr(), color)
                    .failures_only()
                    .with_detail(detail_lines),
            ),
            ProgressMode::JsonLines => Box::new(JsonLines::new(std::io::stderr())),
            ProgressMode::Silent => Box::new(Silent),
        }
    }
}

/// Colour is on for a terminal unless `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>).
pub fn color_enabled(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn paint(color: bool, status: Status, text: &str) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match status {
        Status::Succeeded => "32",
        Status::Failed | Status::TimedOut => "31",
        Status::Cancelled | Status::Skipped => "33",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The line both human reporters print for a finished task:
/// `[ 3/10] FAILED     name (1.2s): message`.
/// The items of a chunk that did not succeed: `(index, error)`.
fn failed_items<T>(
    first: usize,
    items: &[crate::result::ItemResult<T>],
) -> impl Iterator<Item = (usize, &TaskError)> {
    items
        .iter()
        .enumerate()
        .filter_map(move |(i, r)| r.as_ref().err().map(|e| (first + i, &**e)))
}

/// `[  17/1000] FAILED    item 18: why`: an item of [`Pool::map`](crate::Pool::map) that did
/// not succeed.
pub fn item_line(
    index: usize,
    error: &TaskError,
    finished: usize,
    total: usize,
    color: bool,
) -> String {
    let width = total.to_string().len();
    let status = error.status();
    let label = status_label(status);
    format!(
        "[{finished:>width$}/{total}] {} item {}: {error}",
        paint(color, status, &format!("{label:<9}")),
        index + 1
    )
}

/// How a status reads in a task's line.
fn status_label(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "ok",
        Status::Failed => "FAILED",
        Status::TimedOut => "TIMED OUT",
        Status::Cancelled => "cancelled",
        Status::Skipped => "skipped",
    }
}

pub fn task_line<T, M>(
    outcome: &Outcome<T, M>,
    finished: usize,
    total: usize,
    color: bool,
) -> String {
    let width = total.to_string().len();
    let label = status_label(outcome.status);
    let mut line = format!(
        "[{finished:>width$}/{total}] {} {} ({})",
        paint(color, outcome.status, &format!("{label:<9}")),
        outcome.label(),
        fmt_duration(outcome.duration),
    );
    if outcome.attempts > 1 {
        let _ = write!(line, " after {} attempts", outcome.attempts);
    }
    if let Some(err) = &outcome.error {
        line.push_str(": ");
        line.push_str(&err.to_string());
    }
    line
}

/// `line`, then for a failed task the last `lines` lines of its error's detail, indented.
fn with_detail<T, M>(mut line: String, outcome: &Outcome<T, M>, lines: usize) -> String {
    let detail = outcome
        .error
        .as_ref()
        .and_then(crate::result::TaskError::detail);
    if let (true, Some(detail)) = (lines > 0 && outcome.status != Status::Succeeded, detail) {
        for l in crate::text::last_lines(detail, lines).lines() {
            line.push_str("\n    | ");
            line.push_str(l);
        }
    }
    line
}

/// One line per finished task and a summary at the end. For logs: every task shows up.
#[derive(Debug)]
pub struct Plain<W> {
    out: W,
    color: bool,
    failures_only: bool,
    detail_lines: usize,
}

impl<W: Write> Plain<W> {
    pub fn new(out: W, color: bool) -> Self {
        Plain {
            out,
            color,
            failures_only: false,
            detail_lines: 0,
        }
    }

    /// Print the last `lines` lines of a failed task's detail under its line.
    pub fn with_detail(mut self, lines: usize) -> Self {
        self.detail_lines = lines;
        self
    }

    /// Print only tasks that failed, timed out or were cancelled, and the summary (skips, such
    /// as up-to-date outputs, are not news).
    pub fn failures_only(mut self) -> Self {
        self.failures_only = true;
        self
    }

    /// The writer back (tests read what was printed).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<T, M, W: Write> Reporter<T, M> for Plain<W> {
    fn report(&mut self, event: &Event<'_, T, M>) {
        // A reporter that cannot write (closed stderr) must not fail the batch.
        let _ = match event {
            Event::TaskFinished {
                outcome,
                finished,
                total,
            } if !self.failures_only
                || outcome.status.is_failure()
                || outcome.status == Status::Cancelled =>
            {
                writeln!(
                    self.out,
                    "{}",
                    with_detail(
                        task_line(outcome, *finished, *total, self.color),
                        outcome,
                        self.detail_lines
                    )
                )
            }
            Event::TaskRetrying {
                name,
                attempt,
                delay,
                error,
                ..
            } if !self.failures_only => writeln!(
                self.out,
                "retry {name}: attempt {attempt} failed ({error}); next in {}",
                fmt_duration(*delay)
            ),
            // A chunk of map items: its failures (its successes are too many to list).
            Event::ChunkFinished {
                first,
                items,
                finished,
                total,
            } => failed_items(*first, items)
                .filter(|(_, e)| e.status() != Status::Skipped)
                .try_for_each(|(index, e)| {
                    writeln!(
                        self.out,
                        "{}",
                        item_line(index, e, *finished, *total, self.color)
                    )
                }),
            Event::BatchFinished { summary } => writeln!(self.out, "{}", summary.one_line()),
            _ => Ok(()),
        };
    }
}

/// A progress bar with ETA on stderr. Failures print above the bar as they happen.
#[derive(Debug)]
pub struct Bar {
    progress: ProgressBar,
    color: bool,
    running: usize,
    detail_lines: usize,
}

impl Bar {
    /// A bar drawn on stderr (hidden when stderr is not a terminal, as indicatif does).
    pub fn stderr(color: bool) -> Self {
        Self::with_target(ProgressDrawTarget::stderr(), color)
    }

    /// A bar drawn on the given target (tests use a hidden one).
    pub fn with_target(target: ProgressDrawTarget, color: bool) -> Self {
        let template = if color {
            "{spinner:.cyan} {elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} eta {eta} {msg}"
        } else {
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}"
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid progress template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar {
            progress: bar,
            color,
            running: 0,
            detail_lines: 0,
        }
    }

    /// Print the last `lines` lines of a failed task's detail under its line.
    pub fn with_detail(mut self, lines: usize) -> Self {
        self.detail_lines = lines;
        self
    }
}

impl<T, M> Reporter<T, M> for Bar {
    fn report(&mut self, event: &Event<'_, T, M>) {
        match event {
            // A tool's own news, for its own reporter.
            Event::TaskNote { .. } => {}
            Event::BatchStarted { total, .. } => {
                self.progress.set_length(*total as u64);
            }
            Event::TaskStarted { name, attempt, .. } => {
                if *attempt == 1 {
                    self.running += 1;
                }
                self.progress
                    .set_message(format!("{} running, last: {name}", self.running));
            }
            Event::TaskRetrying {
                name,
                attempt,
                delay,
                error,
                ..
            } => self.progress.println(format!(
                "retry {name}: attempt {attempt} failed ({error}); next in {}",
                fmt_duration(*delay)
            )),
            Event::TaskFinished {
                outcome,
                finished,
                total,
            } => {
                if outcome.attempts > 0 {
                    self.running = self.running.saturating_sub(1);
                }
                if outcome.status != Status::Succeeded {
                    self.progress.println(with_detail(
                        task_line(outcome, *finished, *total, self.color),
                        outcome,
                        self.detail_lines,
                    ));
                }
                self.progress.set_position(*finished as u64);
                self.progress
                    .set_message(format!("{} running", self.running));
            }
            Event::ChunkFinished {
                first,
                items,
                finished,
                total,
            } => {
                for (index, e) in failed_items(*first, items) {
                    self.progress
                        .println(item_line(index, e, *finished, *total, self.color));
                }
                self.progress.set_position(*finished as u64);
            }
            Event::BatchFinished { summary } => {
                self.progress.finish_and_clear();
                // Written after the bar is gone, so it stays on screen.
                let _ = writeln!(std::io::stderr(), "{}", summary.one_line());
            }
        }
    }
}

/// One JSON object per line and event, for machines:
/// `{"event":"task_finished","index":3,"name":"a","status":"failed",...}`.
#[derive(Debug)]
pub struct JsonLines<W> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines { out }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum JsonEvent<'a> {
    BatchStarted {
        total: usize,
        max_workers: usize,
        strategy: crate::strategy::Strategy,
    },
    TaskStarted {
        index: usize,
        name: &'a str,
        attempt: u32,
    },
    TaskRetrying {
        index: usize,
        name: &'a str,
        attempt: u32,
        delay_seconds: f64,
        error: String,
    },
    TaskFinished {
        index: usize,
        name: &'a str,
        status: Status,
        attempts: u32,
        duration_seconds: f64,
        queue_wait_seconds: f64,
        error: Option<String>,
        finished: usize,
        total: usize,
    },
    ChunkFinished {
        first: usize,
        count: usize,
        succeeded: usize,
        finished: usize,
        total: usize,
    },
    BatchFinished {
        summary: &'a crate::result::Summary,
    },
}

impl<T, M, W: Write> Reporter<T, M> for JsonLines<W> {
    fn report(&mut self, event: &Event<'_, T, M>) {
        let json = match *event {
            // A tool's own news, in a shape only it knows.
            Event::TaskNote { .. } => return,
            Event::BatchStarted {
                total,
                max_workers,
                strategy,
            } => JsonEvent::BatchStarted {
                total,
                max_workers,
                strategy,
            },
            Event::TaskStarted {
                index,
                name,
                attempt,
            } => JsonEvent::TaskStarted {
                index,
                name,
                attempt,
            },
            Event::TaskRetrying {
                index,
                name,
                attempt,
                delay,
                error,
            } => JsonEvent::TaskRetrying {
                index,
                name,
                attempt,
                delay_seconds: delay.as_secs_f64(),
                error: error.to_string(),
            },
            Event::TaskFinished {
                outcome,
                finished,
                total,
            } => JsonEvent::TaskFinished {
                index: outcome.index,
                name: &outcome.name,
                status: outcome.status,
                attempts: outcome.attempts,
                duration_seconds: outcome.duration.as_secs_f64(),
                queue_wait_seconds: outcome.queue_wait.as_secs_f64(),
                error: outcome.error_message(),
                finished,
                total,
            },
            Event::ChunkFinished {
                first,
                items,
                finished,
                total,
            } => self.chunk(first, items, (finished, total)),
            Event::BatchFinished { summary } => JsonEvent::BatchFinished { summary },
        };
        self.line(&json);
    }
}

impl<W: Write> JsonLines<W> {
    /// A chunk of map items: a line per item that did not succeed, then the chunk's counts.
    fn chunk<'a, T>(
        &mut self,
        first: usize,
        items: &[crate::result::ItemResult<T>],
        (finished, total): (usize, usize),
    ) -> JsonEvent<'a> {
        // The items that did not succeed, one line each, then the chunk's counts.
        for (index, e) in failed_items(first, items) {
            let name = format!("item {}", index + 1);
            self.line(&JsonEvent::TaskFinished {
                index,
                name: &name,
                status: e.status(),
                attempts: 1,
                duration_seconds: 0.0,
                queue_wait_seconds: 0.0,
                error: Some(e.to_string()),
                finished,
                total,
            });
        }
        JsonEvent::ChunkFinished {
            first,
            count: items.len(),
            succeeded: items.iter().filter(|r| r.is_ok()).count(),
            finished,
            total,
        }
    }

    /// One event as a line (a reporter that cannot write must not fail the batch).
    fn line(&mut self, event: &JsonEvent<'_>) {
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(self.out, "{line}");
        }
    }
}
