//! A batch of real subprocesses through the pool, with progress, a failure, a timeout whose
//! escaped grandchild is killed, retries, and the shared JSON report.
//!
//! `cargo run -p fanout --example batch -- [REPORT.json]`
#![expect(clippy::print_stdout, reason = "an example shows its result")]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fanout::{
    Command, ExitStatus, MaxWorkers, Pool, PoolConfig, ProcessRunner, ProgressMode, RetryPolicy,
    Task, TaskError, install_interrupt_handler,
};

fn main() -> ExitCode {
    let report: PathBuf = std::env::var_os("FANOUT_DEMO_REPORT")
        .map_or_else(|| "target/demo/report.json".into(), PathBuf::from);
    let interrupt = install_interrupt_handler().expect("install the Ctrl-C handler");

    let mut jobs: Vec<Task<Command>> = (1..=8)
        .map(|i| {
            Task::new(
                format!("sleep-{i}"),
                Command::shell(format!("sleep 0.{i}; echo job {i} done")),
            )
        })
        .collect();
    jobs.push(Task::new(
        "fails",
        Command::shell("echo 'cannot parse line 3' >&2; exit 3"),
    ));
    jobs.push(Task::new(
        "hangs",
        Command::shell("setsid sleep 600 & sleep 600").timeout(Some(Duration::from_secs(1))),
    ));

    let config = PoolConfig::new(MaxWorkers::new(4, 16).expect("4 is within 1..=16"))
        .retry(RetryPolicy::none())
        .with_env_overrides()
        .expect("FANOUT_STRATEGY is valid");
    let pool = Pool::new(config);
    let runner = ProcessRunner::new();
    let mut reporter = ProgressMode::Auto.reporter();
    let result = pool
        .run(&jobs, &interrupt, reporter.as_mut(), |cmd, ctx| {
            let out = runner.run(cmd, ctx.cancel_token())?.into_result()?;
            Ok::<_, TaskError>(out.stdout.text().trim().to_owned())
        })
        .expect("the pool starts");

    result.write_report(&report).expect("write the report");
    println!("report: {}", report.display());
    for failure in result.failures() {
        println!(
            "{}: {}",
            failure.name,
            failure.error_message().unwrap_or_default()
        );
    }
    ExitStatus::of_batch(&result.summary, &interrupt).into()
}
