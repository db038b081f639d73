//! `parallamr run`: the plan (`plan.rs`), then one pool batch over the experiments (`call.rs`);
//! each row is written by the owner thread as its experiment completes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use fanout::{
    CancelReason, CancelToken, Event, ExitStatus, Pool, PoolConfig, ProgressMode, Reporter,
    RetryPolicy, Task, Tee,
};
use fanout_cli::UsageResult;

use crate::call::{Done, Facts, Shared, run_one};
use crate::cost::Budget;
use crate::dryrun::dry_run;
use crate::experiments::{Experiment, Experiments};
use crate::judge::Judge;
use crate::limit::limits;
use crate::plan::{Flatten, Inputs, RunArgs, place_commands, prepare};
use crate::row::Row;
use crate::tally::{Tally, say_budget};
use crate::writer::Outputs;

mod output;

use output::{Opened, open_output, stopped_by, write_report, write_unplaced};

pub(crate) fn run(args: &RunArgs) -> Result<ExitStatus> {
    let inputs = prepare(args).usage()?;
    if args.dry_run {
        dry_run(&inputs, args.cache.as_ref(), args.batch.is_some());
        return Ok(ExitStatus::Success);
    }
    let experiments = &inputs.experiments;
    let budget = args.max_cost.map(Budget::new);
    let Opened {
        mut out,
        to,
        todo,
        unplaced,
        files,
    } = open_output(args, &inputs).usage()?;
    // Slurm is asked for the packed allocation once the inputs are checked and the results
    // file is taken, and only when some command row is left to run; a refusal leaves no file
    // made for this run.
    if todo.iter().any(|e| e.provider == "command")
        && let Err(e) = place_commands(args, &inputs)
    {
        out.discard_created();
        return Err(e);
    }
    tell_settings(args);
    let mut tally = Tally::new(unplaced.len(), inputs.shape);
    let placed = write_unplaced(args, inputs.shape.judged, &unplaced, &to, &mut out);
    tally.written += unplaced.len();
    if let Err(err) = placed {
        return Ok(stopped_by(&err, tally.written));
    }
    let limits = limits(args, &inputs.used);
    let interrupt = fanout::install_interrupt_handler()?;
    let (batcher, todo) = batches(args, &inputs, todo, budget.as_ref())?;
    let tasks: Vec<Task<&Experiment>> = todo.iter().map(|e| task(experiments, e)).collect();
    let pool = pool(args)?;
    let mut rows = Rows {
        out: &mut out,
        to: &to,
        todo: &todo,
        judge: inputs.judge.as_ref(),
        flatten: args.flatten.as_ref(),
        tally: &mut tally,
        write_error: None,
        interrupt: &interrupt,
    };
    let mut progress = args
        .progress
        .reporter_with_detail::<Done, Facts>(args.detail_lines);
    let started = Instant::now();
    let shared = Shared {
        inputs: &inputs,
        limits: &limits,
        cache: args.cache.as_ref(),
        budget: budget.as_ref(),
        grader: inputs.judge.as_ref().and_then(|j| j.grader.as_ref()),
        retries: args.retries,
        batcher: batcher.as_ref().map(|b| b as &dyn crate::call::Batched),
    };
    let mut tee = Tee(vec![
        &mut rows as &mut dyn Reporter<Done, Facts>,
        progress.as_mut(),
    ]);
    let result = run_pool(
        &pool,
        &tasks,
        &interrupt,
        &mut tee,
        (&shared, batcher.as_ref()),
    )?;
    drop(tee);
    let write_error = rows.write_error.take();
    drop(rows);
    if let Some(e) = write_error.map_or_else(|| out.finish().err(), Some) {
        return Ok(stopped_by(&e, tally.written));
    }
    if args.resume {
        // The summary, --report and --fail-on-assert are of every row, those kept included.
        tally.all = crate::view::records(&files).ok();
    }
    write_report(args.report.as_deref(), &result, &todo, &tally)?;
    tally.say(args, &files, todo.len() + unplaced.len(), started.elapsed());
    Ok(closing(
        args,
        &tally,
        &files,
        budget.as_ref(),
        interrupt.reason(),
    ))
}

/// The pool over `tasks`. With --batch, the batches are polled beside it on a thread of their
/// own, and the rows they answer wait in it; those still running at the end are named.
fn run_pool(
    pool: &Pool,
    tasks: &[Task<&Experiment>],
    interrupt: &CancelToken,
    tee: &mut Tee<'_, Done, Facts>,
    (shared, batcher): (&Shared<'_>, Option<&crate::batch::Batcher<'_>>),
) -> Result<fanout::BatchResult<Done, Facts>> {
    /// Stops the batches' driver when the pool is done, even by a panic.
    struct StopOnDrop<'b, 'a>(Option<&'b crate::batch::Batcher<'a>>);
    impl Drop for StopOnDrop<'_, '_> {
        fn drop(&mut self) {
            if let Some(b) = self.0 {
                b.stop();
            }
        }
    }
    let result = std::thread::scope(|scope| {
        if let Some(b) = batcher {
            scope.spawn(|| b.drive(interrupt));
        }
        let _stop = StopOnDrop(batcher);
        pool.run_with_meta(tasks, interrupt, tee, |e: &&Experiment, ctx| {
            let mut facts = Facts::default();
            let result = run_one(e, shared, &mut facts, ctx.cancel_token());
            (result, facts)
        })
    })?;
    if let Some(left) = batcher.and_then(crate::batch::Batcher::left) {
        eprintln!("parallamr: {left}");
    }
    Ok(result)
}

/// The experiments' order in the pool. With `--batch`: the batches that answer some of them,
/// found in the state file or sent now (before any row runs), and the online rows first, the
/// batched ones batch by batch (see batch.rs).
fn batches<'a, 'e>(
    args: &'a RunArgs,
    inputs: &'a Inputs,
    mut todo: Vec<&'e Experiment>,
    budget: Option<&'a Budget>,
) -> Result<(Option<crate::batch::Batcher<'a>>, Vec<&'e Experiment>)> {
    let Some(settings) = args.batch else {
        if let Some(output) = &args.output {
            crate::batch::refuse_without_batch(output).usage()?;
        }
        return Ok((None, todo));
    };
    let (Some(output), Some(cache)) = (&args.output, &args.cache) else {
        // -o and the cache are checked before anything runs (plan.rs).
        return Ok((None, todo));
    };
    let quiet = matches!(args.progress, ProgressMode::Quiet | ProgressMode::Silent);
    let batcher =
        crate::batch::Batcher::prepare(inputs, &todo, (cache, budget), (settings, output, quiet))?;
    if let Some(b) = &batcher {
        b.order(&mut todo);
    }
    Ok((batcher, todo))
}

/// After the results are written: the results page, the cache's limits, what the budget and
/// the checks came to, and the exit status.
fn closing(
    args: &RunArgs,
    tally: &Tally,
    files: &[PathBuf],
    budget: Option<&Budget>,
    reason: Option<CancelReason>,
) -> ExitStatus {
    let page_failed =
        args.html
            .as_deref()
            .is_some_and(|page| match crate::view::write(files, &[], page, None) {
                Ok(()) => {
                    if !matches!(args.progress, ProgressMode::Quiet | ProgressMode::Silent) {
                        eprintln!("results page: {}", page.display());
                    }
                    false
                }
                Err(e) => {
                    eprintln!("parallamr: error: the results page was not written: {e:#}");
                    true
                }
            });
    // The run's results are written: the cache's limits are kept now, once a day.
    if let Some(c) = &args.cache {
        c.prune_daily(args.cache_limits);
    }
    let stopped = budget.is_some_and(|b| say_budget(b, tally.not_sent));
    let failed_checks = args.fail_on_assert && tally.failed() > 0;
    if failed_checks {
        eprintln!(
            "parallamr: {} of {} answers failed a check (--fail-on-assert): exit 1",
            tally.failed(),
            tally.rows().iter().filter(|r| r.pass.is_some()).count()
        );
    }
    if reason == Some(CancelReason::Interrupted) {
        if let Some(output) = &args.output {
            eprintln!(
                "parallamr: interrupted; the rows written are kept: {} to run the rest into {}",
                if args.resume {
                    "run the same command again"
                } else {
                    "add --resume to the same command"
                },
                output.display()
            );
        }
        ExitStatus::Interrupted
    } else if tally.error_rows > 0 || stopped || failed_checks || page_failed {
        ExitStatus::TaskFailed
    } else {
        ExitStatus::Success
    }
}

/// An experiment's task, named by its line (and its repeat: `line 4 #2`).
fn task<'e>(experiments: &Experiments, e: &'e Experiment) -> Task<&'e Experiment> {
    let repeat = e.repeat.map(|r| format!(" #{r}")).unwrap_or_default();
    Task::new(format!("{} line {}{repeat}", experiments.source, e.line), e)
}

/// The owner thread's reporter: each finished experiment's row, written as it completes.
struct Rows<'a, 'e> {
    out: &'a mut Outputs,
    to: &'a [usize],
    todo: &'a [&'e Experiment],
    judge: Option<&'a Judge>,
    flatten: Option<&'a Flatten>,
    tally: &'a mut Tally,
    /// The first write that failed: the sweep stops at it.
    write_error: Option<anyhow::Error>,
    interrupt: &'a CancelToken,
}

impl Reporter<Done, Facts> for Rows<'_, '_> {
    fn report(&mut self, event: &Event<'_, Done, Facts>) {
        let Event::TaskFinished { outcome, .. } = event else {
            return;
        };
        // An interrupted experiment, or one the budget stopped, has no result: no row, so
        // --resume runs it.
        if outcome.status == fanout::Status::Cancelled {
            return;
        }
        if outcome.status == fanout::Status::Skipped {
            self.tally.not_sent += 1;
            return;
        }
        let e = self.todo[outcome.index];
        let mut row = row_for(e, outcome);
        let grading = outcome.value.as_ref().and_then(|d| d.grading.as_ref());
        if let Some(Err(why)) = grading {
            // The answer is kept; without its verdict the row is not finished: --resume grades
            // it again (the answer from the cache).
            row.status = "error";
            row.error_message.clone_from(why);
        }
        let grade = grading.and_then(|g| g.as_ref().ok());
        if let Some(j) = self.judge {
            row.judged = true;
            if row.status != "error" {
                row.verdict = Some(j.verdict(e, &row, grade));
            }
        }
        if let Some(f) = self.flatten {
            flatten_row(&mut row, f);
        }
        self.tally.count(e, &row, grade);
        if self.write_error.is_none()
            && let Err(err) = self.out.write(self.to[e.index], &row)
        {
            // Every later row would be lost while its request is still sent (and paid for):
            // stop the sweep now.
            self.write_error = Some(err);
            self.interrupt.cancel(CancelReason::Requested);
        }
    }
}

/// The JSON of a finished row's answer as columns; an answer without JSON keeps empty cells
/// and says so as a warning.
fn flatten_row(row: &mut Row, f: &Flatten) {
    if row.status == "error" {
        row.flat = Some(Vec::new());
        return;
    }
    if let Some(v) = crate::flatten::extract(&row.output) {
        row.flat = Some(crate::flatten::flatten(&v, f.limits));
    } else {
        row.flat = Some(Vec::new());
        row.status = "warning";
        let msg = "--flatten: no JSON in the output";
        row.error_message = if row.error_message.is_empty() {
            msg.to_owned()
        } else {
            format!("{}; {msg}", row.error_message)
        };
    }
}

/// The pool of a sweep: its workers, and retries with backoff.
fn pool(args: &RunArgs) -> Result<Pool> {
    Ok(Pool::new(
        PoolConfig::new(args.max_workers)
            .noun("experiment", "experiments")
            .retry(
                RetryPolicy::retries(args.retries).with_initial_backoff(Duration::from_millis(500)),
            )
            .with_env_overrides()
            .usage()?,
    ))
}

/// Which `.env` the settings came from, if one: a file found in a folder above can change
/// where requests go.
fn tell_settings(args: &RunArgs) {
    if let Some(file) = args.settings.file()
        && !matches!(args.progress, ProgressMode::Quiet | ProgressMode::Silent)
    {
        eprintln!(
            "parallamr: settings from {} (the environment wins over it)",
            file.display()
        );
    }
}

/// The result row of a finished experiment.
fn row_for(e: &Experiment, outcome: &fanout::Outcome<Done, Facts>) -> Row {
    let f = outcome.meta.clone();
    match (&outcome.value, &outcome.error) {
        (Some(d), _) => Row {
            key: e.key(),
            status: if f.warning.is_some() { "warning" } else { "ok" },
            input_tokens: d.input_tokens.or(f.input_tokens),
            context_window: f.context_window,
            output_tokens: d.output_tokens,
            // The answer's latency: grading is not part of it.
            duration_seconds: (outcome.duration.as_secs_f64() - d.grading_seconds).max(0.0),
            output: d.text.clone(),
            error_message: f.warning.unwrap_or_default(),
            cached: d.cached,
            cost_usd: d.cost,
            flat: None,
            verdict: None,
            judged: false,
        },
        (None, err) => Row {
            key: e.key(),
            status: "error",
            input_tokens: f.input_tokens,
            context_window: f.context_window,
            output_tokens: None,
            duration_seconds: outcome.duration.as_secs_f64(),
            output: String::new(),
            error_message: err.as_ref().map(ToString::to_string).unwrap_or_default(),
            cached: false,
            cost_usd: None,
            flat: None,
            verdict: None,
            judged: false,
        },
    }
}
