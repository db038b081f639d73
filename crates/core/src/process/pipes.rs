//! The child's stdout and stderr: wired to their sinks, and captured pipes read on threads of
//! their own into bounded tails.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::command::{Command, Sink, Stderr};
use super::output::{Captured, ProcessError};

/// How long to wait for a stream to close after the process tree is gone before giving up on
/// the rest of its output.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// The reading side of a job's captured streams.
pub(super) struct Streams {
    stdout: Option<Arc<Mutex<Tail>>>,
    stderr: Option<Arc<Mutex<Tail>>>,
    done: Vec<mpsc::Receiver<()>>,
}

impl Streams {
    /// What the streams hold once the tree is gone, waiting a bounded time for the pipes to
    /// close (an escaped process may hold one open forever).
    pub(super) fn collect(self) -> (Captured, Captured) {
        let deadline = Instant::now() + DRAIN_GRACE;
        let complete = self.done.iter().all(|done| {
            done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok()
        });
        let take = |tail: Option<Arc<Mutex<Tail>>>| {
            tail.map(|t| t.lock().expect("tail lock").snapshot(complete))
                .unwrap_or_default()
        };
        (take(self.stdout), take(self.stderr))
    }
}

/// Point the child's stdout and stderr at their sinks; start a reader thread per captured pipe.
pub(super) fn wire_streams(
    cmd: &Command,
    command: &mut std::process::Command,
    program: &str,
) -> Result<Streams, ProcessError> {
    let mut streams = Streams {
        stdout: None,
        stderr: None,
        done: Vec::new(),
    };
    let mut capture = |reader: Option<(os_pipe::PipeReader, usize)>| {
        reader.map(|(r, max)| {
            let (tail, done) = spawn_reader(r, max);
            streams.done.push(done);
            tail
        })
    };
    let spawn_error = |source| ProcessError::Spawn {
        program: program.to_owned(),
        source,
    };
    let (target, reader) = open_sink(&cmd.stdout, program)?;
    let out = capture(reader);
    let err = match &cmd.stderr {
        Stderr::ToStdout => {
            // The same stream as stdout: a copy of its descriptor.
            command.stderr(target.try_clone().map_err(spawn_error)?);
            None
        }
        Stderr::Sink(sink) => {
            let (target, reader) = open_sink(sink, program)?;
            command.stderr(target.into_stdio());
            capture(reader)
        }
    };
    command.stdout(target.into_stdio());
    streams.stdout = out;
    streams.stderr = err;
    Ok(streams)
}

pub(super) enum Target {
    Null,
    File(File),
    Pipe(os_pipe::PipeWriter),
}

impl Target {
    /// The child's end of the stream.
    pub(super) fn into_stdio(self) -> std::process::Stdio {
        match self {
            Target::Null => super::sys::null_stdio(),
            Target::File(f) => f.into(),
            Target::Pipe(w) => w.into(),
        }
    }

    /// A second end of the same stream (stderr joining stdout).
    fn try_clone(&self) -> io::Result<std::process::Stdio> {
        Ok(match self {
            Target::Null => super::sys::null_stdio(),
            Target::File(f) => f.try_clone()?.into(),
            Target::Pipe(w) => w.try_clone()?.into(),
        })
    }
}

pub(super) fn open_sink(
    sink: &Sink,
    program: &str,
) -> Result<(Target, Option<(os_pipe::PipeReader, usize)>), ProcessError> {
    let open = |path: &Path, append: bool| {
        OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|source| ProcessError::OpenOutput {
                program: program.to_owned(),
                path: path.to_owned(),
                source,
            })
    };
    Ok(match sink {
        Sink::Null => (Target::Null, None),
        Sink::File(path) => (Target::File(open(path, false)?), None),
        Sink::AppendFile(path) => (Target::File(open(path, true)?), None),
        Sink::Capture { max_bytes } => {
            let (r, w) = os_pipe::pipe().map_err(|source| ProcessError::Spawn {
                program: program.to_owned(),
                source,
            })?;
            (Target::Pipe(w), Some((r, *max_bytes)))
        }
    })
}

/// The last bytes of a stream, bounded.
#[derive(Debug, Default)]
pub(super) struct Tail {
    buf: Vec<u8>,
    max: usize,
    dropped: u64,
}

impl Tail {
    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        // Trim in amortised steps: only when the buffer holds twice what it keeps.
        if self.buf.len() > self.max.saturating_mul(2).max(8192) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.max {
            let cut = self.buf.len() - self.max;
            self.buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    pub(super) fn snapshot(&self, complete: bool) -> Captured {
        let keep = self.buf.len().min(self.max);
        let cut = self.buf.len() - keep;
        Captured {
            bytes: self.buf[cut..].to_vec(),
            dropped_bytes: self.dropped + cut as u64,
            complete,
        }
    }
}

/// Read a pipe on its own thread, so a full pipe never blocks the child and a descendant that
/// keeps the pipe open never blocks us: we wait for `done` only for a bounded time.
pub(super) fn spawn_reader(
    mut reader: os_pipe::PipeReader,
    max: usize,
) -> (Arc<Mutex<Tail>>, mpsc::Receiver<()>) {
    let tail = Arc::new(Mutex::new(Tail {
        buf: Vec::new(),
        max,
        dropped: 0,
    }));
    let (done_tx, done_rx) = mpsc::channel();
    let for_thread = Arc::clone(&tail);
    std::thread::Builder::new()
        .name("fanout-pipe".to_owned())
        .spawn(move || {
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => for_thread.lock().expect("tail lock").push(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done_tx.send(());
        })
        .expect("spawn a pipe reader thread");
    (tail, done_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_and_counts_the_rest() {
        let mut t = Tail {
            max: 10,
            ..Tail::default()
        };
        for i in 0..10_000u32 {
            t.push(format!("{:04}", i % 10_000).as_bytes());
        }
        let c = t.snapshot(true);
        assert_eq!(c.bytes, b"9799989999");
        assert_eq!(c.dropped_bytes, 40_000 - 10);
    }
}
