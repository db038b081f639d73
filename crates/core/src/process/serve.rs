//! A worker of a Slurm allocation (see `packed.rs`): this program, started as a job step with
//! [`WORKER_ARG`], serving tasks instead of doing its own work.
//!
//! It says where it runs (a [`Hello`] line), then runs each task its stdin sends (one JSON line)
//! with a [`ProcessRunner`] and answers with one JSON line. While a task has run a second or
//! more, it says so with an empty line each [`BEAT`]; it answers an empty line on stdin with
//! one. A node that dies cannot say that it did: its silence is how the tool knows. No line
//! goes out just before an answer: srun's connection would hold the answer back for the first
//! one's acknowledgement (~40 ms). When its stdin closes (the tool ended, or was killed), the
//! task it runs is cancelled, its whole tree killed, and the worker exits.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::output::ProcessError;
use super::runner::ProcessRunner;
use super::wire::{BEAT, Hello, WORKER_ARG, command_of, response_of};
use crate::cancel::CancelToken;

/// The worker's stdout, and when it last wrote and took its task.
struct Out {
    stdout: std::io::Stdout,
    /// When the task it runs began; `None` between tasks.
    busy_since: Option<Instant>,
    last_line: Instant,
}

impl Out {
    fn say(&mut self, line: &str) -> std::io::Result<()> {
        self.last_line = Instant::now();
        writeln!(self.stdout, "{line}").and_then(|()| self.stdout.flush())
    }
}

/// If this program was started as a worker of a Slurm allocation (its first argument says
/// so), serve tasks until stdin closes, then exit; otherwise return at once. Call first thing
/// in `main`, before [`init`](super::init).
pub fn serve_worker_if_asked() {
    #[expect(
        clippy::disallowed_methods,
        reason = "not parsing: one exact first argument, the worker's mark, which srun's \
                  --export cannot take away as it can an environment variable"
    )]
    let first = std::env::args_os().nth(1);
    if first.is_none_or(|a| a != WORKER_ARG) {
        return;
    }
    let runner = ProcessRunner::new();
    let out = Arc::new(Mutex::new(Out {
        stdout: std::io::stdout(),
        busy_since: None,
        last_line: Instant::now(),
    }));
    let hello = serde_json::to_string(&Hello::here()).expect("a hello serializes");
    if out.lock().expect("stdout lock").say(&hello).is_err() {
        std::process::exit(0);
    }
    let beats = Arc::clone(&out);
    std::thread::spawn(move || beat(&beats));
    // Stdin read by a thread of its own: its end cancels the task running.
    let stdin_closed = CancelToken::new();
    let (tx, lines) = mpsc::channel();
    let closed = stdin_closed.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
        closed.cancel(crate::cancel::CancelReason::Requested);
    });
    while let Ok(line) = lines.recv() {
        // An empty line asks whether the worker is still there.
        if line.is_empty() {
            if out.lock().expect("stdout lock").say("").is_err() {
                break;
            }
            continue;
        }
        out.lock().expect("stdout lock").busy_since = Some(Instant::now());
        let result = match serde_json::from_str(&line) {
            Ok(request) => runner.run(&command_of(request), &stdin_closed),
            Err(e) => Err(ProcessError::Spawn {
                program: "the worker".to_owned(),
                source: std::io::Error::other(format!("an unreadable task: {e}")),
            }),
        };
        let answer = serde_json::to_string(&response_of(result)).expect("an answer serializes");
        // No longer busy before the answer, under the same lock: no beat follows an answer.
        let mut out = out.lock().expect("stdout lock");
        out.busy_since = None;
        if out.say(&answer).is_err() {
            break;
        }
    }
    // A worker is a process of its own making: ending it here is its whole purpose.
    std::process::exit(0);
}

/// Say "still running" while a task has run a second or more, at most once a second.
fn beat(out: &Mutex<Out>) {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut out = out.lock().expect("stdout lock");
        let due =
            out.busy_since.is_some_and(|t| t.elapsed() >= BEAT) && out.last_line.elapsed() >= BEAT;
        if due && out.say("").is_err() {
            return;
        }
    }
}
