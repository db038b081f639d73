//! The one thread that writes the run record (and the cache with it).
//!
//! Cost and crash safety: `run.json` is written whole, atomically (temp file, fsync, rename),
//! only when a run starts or resumes and when it ends. In between, each change is a line
//! appended to the journal beside it (`journal.jsonl`, see `journal.rs`), so a change costs the
//! same however large the record is (30,000 jobs write 60,000 short lines, not 30,000 copies of
//! a growing file). `kill -9` at any instant leaves a complete `run.json` and a journal whose
//! last line may be torn; readers replay it. One thread owns the record: the run sends it
//! changes over a channel and never waits for the disk. While jobs are slow, each change is
//! appended and flushed at once; when they come faster, they are gathered and flushed (fsync)
//! at most every 50 ms.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use crate::cache::CacheFile;
use crate::store::journal::{self, Journal, Update, apply};
use crate::store::{RunRecord, RunStatus};

/// The cache's changes made by this run, written beside the record.
#[derive(Debug)]
pub(crate) struct CacheState {
    /// The project folder.
    pub(crate) project: PathBuf,
    /// Only this run's changes: written over what is on disk then.
    pub(crate) changed: CacheFile,
    pub(crate) dirty: bool,
}

impl CacheState {
    pub(crate) fn new(project: PathBuf) -> Self {
        CacheState {
            project,
            changed: CacheFile::default(),
            dirty: false,
        }
    }

    fn write(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        CacheFile::save_merged(&self.project, &self.changed)
    }
}

/// The cache first: a crash between the two leaves a job recorded as running whose success is
/// in the cache, never the reverse.
fn write_both(journal: &mut Journal, cache: Option<&mut CacheState>) -> Result<()> {
    if let Some(c) = cache {
        c.write()?;
    }
    journal.write()
}

fn write(record: &RunRecord, path: &Path) -> Result<()> {
    // Compact: a third smaller than pretty-printed, and faster to write; `lorchestra status` is
    // the human view.
    fanout::fsutil::write_json_atomic(path, record, false)?;
    Ok(())
}

/// The record's single writer.
#[derive(Debug)]
pub(crate) struct RecordWriter {
    tx: Option<Sender<Update>>,
    thread: Option<JoinHandle<(RunRecord, Result<()>, usize)>>,
}

impl RecordWriter {
    /// Write `record` now, whole (so a valid file exists before any job starts; a resumed
    /// run's journal is compacted into it), start its journal, then own it on a thread of its
    /// own. Cache updates go to `cache`, written with the record (not at all without it).
    pub(crate) fn start(
        mut record: RunRecord,
        path: PathBuf,
        cache: Option<CacheState>,
    ) -> Result<Self> {
        record.generation += 1;
        write(&record, &path)?;
        let journal = Journal::create(&path, record.generation)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("lorchestra-record".to_owned())
            .spawn(move || writer_loop(record, cache, journal, &path, &rx))
            .context("starting the run record's writer")?;
        Ok(RecordWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn send(&self, update: Update) {
        if let Some(tx) = &self.tx {
            // The writer only stops when we drop the sender; a send cannot fail before that.
            let _ = tx.send(update);
        }
    }

    /// Apply what is queued, write the final record, and return it with the number of writes.
    /// A writer dropped without `finish` (the run stopped on an error) ends the run as failed:
    /// a record never stays `running` after its run is gone.
    pub(crate) fn finish(mut self) -> Result<(RunRecord, usize)> {
        drop(self.tx.take());
        let (record, result, writes) = self
            .thread
            .take()
            .expect("finish is called once")
            .join()
            .expect("the record writer does not panic");
        result.map(|()| (record, writes))
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        self.send(Update::RunFinished {
            status: RunStatus::Failed,
            at: SystemTime::now(),
        });
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One change: into the journal's next lines, into the record, a cache update into the cache.
fn take(
    record: &mut RunRecord,
    cache: Option<&mut CacheState>,
    journal: &mut Journal,
    update: Update,
) {
    journal.push(&update);
    if let Some(change) = apply(record, update)
        && let Some(cache) = cache
    {
        cache.changed.apply(*change);
        cache.dirty = true;
    }
}

fn writer_loop(
    mut record: RunRecord,
    mut cache: Option<CacheState>,
    mut journal: Journal,
    path: &Path,
    rx: &Receiver<Update>,
) -> (RunRecord, Result<()>, usize) {
    let mut last_write = Instant::now();
    let mut min_gap = Duration::ZERO;
    let mut writes = 0;
    let mut result = Ok(());
    let mut open = true;
    while open {
        match rx.recv() {
            Ok(update) => take(&mut record, cache.as_mut(), &mut journal, update),
            Err(_) => break,
        }
        // Gather: take whatever else is queued, and if the last flush was recent, keep
        // gathering until the gap has passed.
        loop {
            let wait = (last_write + min_gap).saturating_duration_since(Instant::now());
            let next = if wait.is_zero() {
                rx.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                rx.recv_timeout(wait)
            };
            match next {
                Ok(update) => take(&mut record, cache.as_mut(), &mut journal, update),
                Err(RecvTimeoutError::Timeout) if wait.is_zero() => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !open {
            break;
        }
        let started = Instant::now();
        if let Err(e) = write_both(&mut journal, cache.as_mut()) {
            result = Err(e);
        }
        writes += 1;
        last_write = Instant::now();
        // A cache write costs more than a journal line: keep gathering at least five times as
        // long as the last write took.
        min_gap = (last_write - started)
            .saturating_mul(5)
            .max(Duration::from_millis(50));
        if writes == 1 {
            // The first transitions of a run are the ones people watch: write them promptly.
            min_gap = Duration::ZERO;
        }
    }
    // The end: what is held to the journal (if what follows fails, the journal still has it),
    // the cache, then the whole record (a new generation: the journal no longer applies), then
    // the journal goes.
    if let Err(e) = journal.write() {
        result = Err(e);
    }
    record.generation += 1;
    let compacted = cache
        .as_mut()
        .map_or(Ok(()), CacheState::write)
        .and_then(|()| write(&record, path));
    match compacted {
        Ok(()) => {
            let _ = std::fs::remove_file(journal::journal_path(path));
        }
        Err(e) => result = Err(e),
    }
    writes += 1;
    (record, result, writes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use std::io::Write as _;

    use crate::store::{JobRecord, JobStatus, StageRecord, new_run_id, timestamp};

    fn record(jobs: usize) -> RunRecord {
        let (s, u) = timestamp(SystemTime::now());
        RunRecord {
            run_id: new_run_id(),
            pipeline: "p".into(),
            pipeline_file: "pipelines/p.toml".into(),
            status: RunStatus::Running,
            started_at: s,
            started_at_unix: u,
            finished_at: None,
            finished_at_unix: None,
            duration_seconds: None,
            max_workers: 2,
            strategy: None,
            resumes: 0,
            payload: crate::payload::Payload::new(),
            params_set: BTreeMap::new(),
            params: BTreeMap::new(),
            generation: 0,
            stages: vec![StageRecord {
                note: None,
                name: "s".into(),
                jobs: (0..jobs)
                    .map(|i| JobRecord::pending(&format!("j{i}"), "local"))
                    .collect(),
            }],
        }
    }

    fn started(job: usize) -> Update {
        Update::Started {
            stage: 0,
            job,
            attempt: 1,
            at: SystemTime::now(),
            waited: Duration::ZERO,
            resources: crate::resources::Amounts::new(),
        }
    }

    fn finished(job: usize) -> Update {
        Update::Finished {
            stage: 0,
            job,
            status: JobStatus::Succeeded,
            attempts: 1,
            exit_code: Some(0),
            slurm_job_id: None,
            slurm_node: None,
            error: Some("a \"quoted\" word\nand a line".to_owned()),
            duration: Duration::from_millis(1),
            at: SystemTime::now(),
        }
    }

    #[test]
    fn every_update_reaches_the_journal_and_the_end_compacts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let n = 5000;
        let w = RecordWriter::start(record(n), path.clone(), None).unwrap();
        for job in 0..n {
            w.send(started(job));
            w.send(finished(job));
        }
        // While it runs, run.json is as of the start and the journal holds the rest.
        let journal = journal::journal_path(&path);
        fanout_wait(|| {
            journal::read(&path)
                .unwrap()
                .is_some_and(|r| r.stages[0].jobs.iter().all(|j| j.attempts == 1))
        });
        let at_start: RunRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(at_start.stages[0].jobs.iter().all(|j| j.attempts == 0));
        assert_eq!(
            std::fs::read_to_string(&journal).unwrap().lines().count(),
            1 + 2 * n,
            "a header and a line per change"
        );
        w.send(Update::RunFinished {
            status: RunStatus::Succeeded,
            at: SystemTime::now(),
        });
        let (_, writes) = w.finish().unwrap();
        assert!(writes < 2 * n, "{writes} writes for {} transitions", 2 * n);
        assert!(!journal.exists(), "compacted into run.json");
        let on_disk: RunRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk.status, RunStatus::Succeeded);
        assert!(on_disk.stages[0].jobs.iter().all(|j| {
            j.status == JobStatus::Succeeded
                && j.error.as_deref() == Some("a \"quoted\" word\nand a line")
        }));
    }

    /// Wait up to 20 s for `done`.
    fn fanout_wait(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_torn_last_line_and_a_stale_journal_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let mut r = record(3);
        r.generation = 7;
        std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
        let mut journal = Journal::create(&path, 7).unwrap();
        journal.push(&started(0));
        journal.push(&finished(0));
        journal.push(&started(1));
        journal.write().unwrap();
        // A kill -9 in the middle of the next append: half a line.
        let mut line = Vec::new();
        serde_json::to_writer(&mut line, &finished(1)).unwrap();
        let torn = &line[..line.len() / 2];
        std::fs::OpenOptions::new()
            .append(true)
            .open(journal::journal_path(&path))
            .unwrap()
            .write_all(torn)
            .unwrap();
        let replayed = journal::read(&path).unwrap().unwrap();
        let status: Vec<JobStatus> = replayed.stages[0].jobs.iter().map(|j| j.status).collect();
        assert_eq!(
            status,
            [JobStatus::Succeeded, JobStatus::Running, JobStatus::Pending]
        );
        // A journal of another generation (the crash after a compaction) is not applied.
        r.generation = 8;
        std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
        let replayed = journal::read(&path).unwrap().unwrap();
        assert!(
            replayed.stages[0]
                .jobs
                .iter()
                .all(|j| j.status == JobStatus::Pending)
        );
    }
}
