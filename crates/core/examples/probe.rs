//! The measuring half of `cargo xtask bench`: runs one workload through the core and prints one
//! JSON line, `{"seconds": ..., "peak_rss_kib": ..., ...}`. The bench builds it in release mode
//! and times whole processes from outside where it compares with other programs; the in-process
//! workloads time themselves.
//!
//! ```text
//! probe dispatch N J          N jobs of `true` through the pool at J workers
//! probe floor N J             N spawn-and-wait of `true` on J bare threads (std::process)
//! probe sleep N J SECONDS     N jobs of `sleep SECONDS` through the pool at J workers
//! probe cpu tiny|heavy N STRATEGY|map-STRATEGY|rayon-iter|loop
//!                             N in-process CPU tasks under a pool strategy (serial, threads,
//!                             rayon, auto) at one worker per core, the same through `Pool::map`
//!                             (chunked), a bare rayon `par_iter`, or a bare serial loop
//! ```
#![expect(
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "a measuring tool: reads its arguments, spawns the floor's processes, prints JSON"
)]

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fanout::{
    CancelToken, Command, MaxWorkers, Pool, PoolConfig, ProcessRunner, Silent, Sink, Strategy,
    Task, TaskKind,
};

const USAGE: &str = "usage: probe dispatch N J | floor N J | sleep N J SECONDS | \
                     cpu tiny|heavy N [map-]serial|threads|rayon|auto|rayon-iter|loop";

fn main() -> ExitCode {
    // As in the tools: jobs are guarded by a guardian process (see fanout::process::init).
    fanout::process::init(&[]);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(report) => {
            println!(
                "{{\"seconds\":{:.6},\"peak_rss_kib\":{},\"checksum\":{}}}",
                report.elapsed.as_secs_f64(),
                peak_rss_kib(),
                report.checksum
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("probe: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

struct Measured {
    elapsed: Duration,
    /// Folded from the tasks' results so the compiler cannot drop the work.
    checksum: u64,
}

fn run(args: &[String]) -> Result<Measured, String> {
    let num = |i: usize| -> Result<usize, String> {
        let a = args.get(i).ok_or("missing argument")?;
        a.parse().map_err(|_| format!("not a number: {a}"))
    };
    match args.first().map(String::as_str) {
        Some("dispatch") => Ok(commands(
            num(1)?,
            num(2)?,
            &Command::new(std::env::var("PROBE_TRUE").unwrap_or("true".into())),
        )),
        Some("sleep") => {
            let secs = args.get(3).ok_or("missing SECONDS")?;
            Ok(commands(num(1)?, num(2)?, &Command::new("sleep").arg(secs)))
        }
        Some("floor") => Ok(floor(num(1)?, num(2)?)),
        Some("cpu") => {
            let work: fn(u64) -> u64 = match args.get(1).map(String::as_str) {
                Some("tiny") => tiny,
                Some("heavy") => heavy,
                other => return Err(format!("unknown cpu workload: {other:?}")),
            };
            let how = args.get(3).ok_or("missing strategy")?;
            cpu(num(2)?, how, work)
        }
        _ => Err("unknown workload".to_owned()),
    }
}

fn pool(workers: usize) -> Pool {
    Pool::new(PoolConfig::new(
        MaxWorkers::new(workers, 1024).expect("1..=1024 workers"),
    ))
}

/// `n` runs of `cmd` through the pool and the process runner, as the tools use them.
fn commands(n: usize, workers: usize, cmd: &Command) -> Measured {
    let tasks: Vec<_> = (0..n).map(|i| Task::new(format!("job-{i}"), ())).collect();
    let cmd = cmd.clone().stdout(Sink::Null).stderr(Sink::Null);
    let runner = ProcessRunner::new();
    let start = Instant::now();
    let result = pool(workers)
        .run(&tasks, &CancelToken::new(), &mut Silent, |(), ctx| {
            runner
                .run(&cmd, ctx.cancel_token())?
                .into_result()
                .map(drop)
        })
        .expect("the pool runs");
    let elapsed = start.elapsed();
    assert!(result.all_ok(), "every job succeeds");
    Measured {
        elapsed,
        checksum: result.outcomes.len() as u64,
    }
}

/// The floor: the least a program can do to run `n` processes on `workers` threads.
fn floor(n: usize, workers: usize) -> Measured {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let status = std::process::Command::new("true")
                        .status()
                        .expect("run true");
                    assert!(status.success());
                }
            });
        }
    });
    Measured {
        elapsed: start.elapsed(),
        checksum: n as u64,
    }
}

/// About 100 ns of arithmetic: less than the cost of handing a task to another thread.
fn tiny(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// A few milliseconds of arithmetic.
fn heavy(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..black_box(2_000_000) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn cpu(n: usize, how: &str, work: fn(u64) -> u64) -> Result<Measured, String> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let inputs: Vec<u64> = (0..n as u64).collect();
    if how == "rayon-iter" {
        use rayon::prelude::*;
        let start = Instant::now();
        let checksum = inputs
            .par_iter()
            .map(|&i| work(black_box(i)))
            .reduce(|| 0, u64::wrapping_add);
        return Ok(Measured {
            elapsed: start.elapsed(),
            checksum,
        });
    }
    if how == "loop" {
        // The floor for serial work: a bare loop on this thread.
        let start = Instant::now();
        let checksum = inputs
            .iter()
            .map(|&i| work(black_box(i)))
            .fold(0, u64::wrapping_add);
        return Ok(Measured {
            elapsed: start.elapsed(),
            checksum,
        });
    }
    if let Some(strategy) = how.strip_prefix("map-") {
        let strategy =
            Strategy::parse(strategy, "the strategy argument").map_err(|e| e.to_string())?;
        let pool = Pool::new(
            PoolConfig::new(MaxWorkers::new(cores, 1024).expect("1..=1024 workers"))
                .strategy(strategy)
                .kind(TaskKind::Cpu),
        );
        let start = Instant::now();
        let result = pool
            .map(&inputs, &CancelToken::new(), &mut Silent, |&i, _| {
                Ok(work(black_box(i)))
            })
            .expect("the pool runs");
        let elapsed = start.elapsed();
        assert!(result.all_ok(), "every item succeeds");
        let checksum = result.values().fold(0u64, |a, &v| a.wrapping_add(v));
        return Ok(Measured { elapsed, checksum });
    }
    let strategy = Strategy::parse(how, "the strategy argument").map_err(|e| e.to_string())?;
    let pool = Pool::new(
        PoolConfig::new(MaxWorkers::new(cores, 1024).expect("1..=1024 workers"))
            .strategy(strategy)
            .kind(TaskKind::Cpu),
    );
    let tasks: Vec<_> = inputs.iter().map(|&i| Task::new("", i)).collect();
    let start = Instant::now();
    let result = pool
        .run(&tasks, &CancelToken::new(), &mut Silent, |&i, _| {
            Ok(work(black_box(i)))
        })
        .expect("the pool runs");
    let elapsed = start.elapsed();
    let checksum = result
        .outcomes
        .iter()
        .map(|o| o.value.expect("every task succeeds"))
        .fold(0, u64::wrapping_add);
    Ok(Measured { elapsed, checksum })
}

/// The process's peak resident set (`VmHWM`), in KiB; 0 where /proc is missing.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
