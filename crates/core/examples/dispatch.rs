//! Per-job overhead of the pool and runner: `N` jobs of `true` at `J` workers.
//!
//! `cargo run --release -p fanout --example dispatch -- 2000 2`
#![expect(
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "an example shows its result and reads its two arguments"
)]

use std::time::Instant;

use fanout::{
    CancelToken, Command, MaxWorkers, Pool, PoolConfig, ProcessRunner, Silent, Sink, Task,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let j: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let tasks: Vec<_> = (0..n).map(|i| Task::new(format!("true-{i}"), ())).collect();
    let pool = Pool::new(PoolConfig::new(
        MaxWorkers::new(j, 1024).expect("valid worker count"),
    ));
    let runner = ProcessRunner::new();
    let cmd = Command::new("true").stdout(Sink::Null).stderr(Sink::Null);
    let start = Instant::now();
    let result = pool
        .run(&tasks, &CancelToken::new(), &mut Silent, |(), ctx| {
            runner
                .run(&cmd, ctx.cancel_token())?
                .into_result()
                .map(drop)
        })
        .expect("the pool runs");
    let wall = start.elapsed();
    assert!(result.all_ok());
    println!(
        "{n} jobs of `true` at {j} workers: {:.3} s, {:.0} us per job",
        wall.as_secs_f64(),
        wall.as_secs_f64() * 1e6 / n as f64
    );
}
