//! The batches polled beside the pool: each asked where it is every `--batch-poll` until it
//! has ended, then its answers collected (see `batch.rs`).

use std::collections::HashMap;

use fanout::CancelToken;

use super::Batcher;
use super::state::Recorded;
use crate::providers::{Answer, BatchApi, BatchState};

/// A batch this run polls, and what it last said.
#[derive(Debug)]
pub(super) struct Watch {
    id: String,
    last: Option<BatchState>,
    /// Polls in a row that failed, and fetches of its results that failed.
    poll_failures: u32,
    fetch_failures: u32,
}

/// After this many failed polls (or fetches of its results) in a row, a batch's rows fail;
/// the batch stays recorded for the next `--batch --resume`.
const MAX_FAILURES: u32 = 5;

impl Batcher<'_> {
    /// Poll the watched batches until each has ended or the run stops waiting (the pool ended,
    /// or Ctrl-C): runs on a thread of its own beside the pool.
    pub(crate) fn drive(&self, interrupt: &CancelToken) {
        let stopped = || interrupt.is_cancelled() || self.stop.is_cancelled();
        loop {
            let ids: Vec<String> = self
                .watched
                .lock()
                .expect("watched")
                .iter()
                .map(|w| w.id.clone())
                .collect();
            for id in &ids {
                if stopped() {
                    return;
                }
                self.poll_one(id);
            }
            if stopped()
                || self.watched.lock().expect("watched").is_empty()
                || !self.stop.sleep(self.poll)
            {
                return;
            }
        }
    }

    /// Ask where batch `id` is; when it has ended, collect its answers.
    fn poll_one(&self, id: &str) {
        let Some(rec) = self.recorded(id) else {
            return;
        };
        let api = self.inputs.providers[rec.provider.as_str()]
            .batch()
            .expect("watched batches are of batch providers");
        match api.poll(id) {
            Ok(s) => {
                self.tell(&rec, &s);
                if s.finished {
                    self.collect(&rec, api, s);
                }
            }
            Err(e) if e.to_string().contains("(404)") => {
                // The provider does not know it (another key or project, or long gone).
                self.forget(
                    &rec,
                    &format!(
                        "{} does not know batch {id} (404): it was forgotten; --batch --resume \
                         sends its requests again",
                        rec.provider
                    ),
                );
            }
            Err(e) => self.failed(
                &rec,
                |w| &mut w.poll_failures,
                &format!("could not be polled: {e}"),
            ),
        }
    }

    /// One more failure of batch `rec` (counted by `counter`); after [`MAX_FAILURES`] in a row
    /// its rows fail and the run stops watching it (it stays recorded).
    fn failed(&self, rec: &Recorded, counter: impl Fn(&mut Watch) -> &mut u32, what: &str) {
        let mut watched = self.watched.lock().expect("watched");
        let Some(w) = watched.iter_mut().find(|w| w.id == rec.id) else {
            return;
        };
        let n = counter(w);
        *n += 1;
        if *n < MAX_FAILURES {
            return;
        }
        watched.retain(|w| w.id != rec.id);
        drop(watched);
        let why = format!(
            "{} batch {} {what}; --batch --resume tries again",
            rec.provider, rec.id
        );
        self.say(&why);
        self.finish(&rec.keys, |_| Err(why.clone()));
    }

    /// Stop watching batch `rec` and remove it from the state file; its rows fail with `why`.
    fn forget(&self, rec: &Recorded, why: &str) {
        self.say(why);
        self.watched
            .lock()
            .expect("watched")
            .retain(|w| w.id != rec.id);
        self.finish(&rec.keys, |_| Err(why.to_owned()));
        let mut state = self.state.lock().expect("state");
        state.batches.retain(|r| r.id != rec.id);
        if let Err(e) = state.save(&self.path) {
            self.say(&format!("{e:#}"));
        }
    }

    fn recorded(&self, id: &str) -> Option<Recorded> {
        self.state
            .lock()
            .expect("state")
            .batches
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    /// Say what changed since the last poll.
    fn tell(&self, rec: &Recorded, s: &BatchState) {
        let mut watched = self.watched.lock().expect("watched");
        let Some(w) = watched.iter_mut().find(|w| w.id == rec.id) else {
            return;
        };
        w.poll_failures = 0;
        if w.last.as_ref() != Some(s) {
            w.last = Some(s.clone());
            drop(watched);
            self.say(&format!(
                "{} batch {}: {}, {} of {} answered, {} failed",
                rec.provider, rec.id, s.status, s.succeeded, s.total, s.failed
            ));
        }
    }

    /// The answers of an ended batch into the cache and the waiting rows (and those no row
    /// waits for any more into the cache); the batch then leaves the state file.
    fn collect(&self, rec: &Recorded, api: &dyn BatchApi, mut s: BatchState) {
        s.id.clone_from(&rec.id);
        let lines = match &s.error {
            Some(_) => Vec::new(),
            None => match api.results(&s, rec.schema.as_deref()) {
                Ok(lines) => lines,
                Err(e) => {
                    let what = format!("answered, but its results could not be fetched: {e}");
                    self.say(&format!("{} batch {}: {what}", rec.provider, rec.id));
                    self.failed(rec, |w| &mut w.fetch_failures, &what);
                    return;
                }
            },
        };
        let mut by_key: HashMap<String, Result<Answer, String>> = lines.into_iter().collect();
        self.finish(&rec.keys, |k| {
            by_key.remove(k).unwrap_or_else(|| {
                Err(s.error.clone().unwrap_or_else(|| {
                    format!(
                        "batch {} ended ({}) without an answer for this request; --batch \
                         --resume sends it again",
                        rec.id, s.status
                    )
                }))
            })
        });
        // What is left was answered for rows this run does not have: kept all the same.
        for (k, outcome) in by_key {
            if let (Ok(a), Some(model)) = (outcome, rec.model_of(&k)) {
                self.keep(&k, (&rec.provider, model), &a, None);
            }
        }
        self.watched
            .lock()
            .expect("watched")
            .retain(|w| w.id != rec.id);
        let mut state = self.state.lock().expect("state");
        state.batches.retain(|r| r.id != rec.id);
        if let Err(e) = state.save(&self.path) {
            self.say(&format!("{e:#}"));
        }
    }
}

impl Watch {
    pub(super) fn new(id: &str) -> Self {
        Watch {
            id: id.to_owned(),
            last: None,
            poll_failures: 0,
            fetch_failures: 0,
        }
    }
}
