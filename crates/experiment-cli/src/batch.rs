//! `--batch`: the rows of providers with a batch API (OpenAI, Anthropic) that the cache cannot
//! answer are sent as a few batches, at half the price, instead of one request each.
//!
//! Before the pool starts, [`Batcher::prepare`] renders those rows' requests, leaves out what the
//! cache has, and submits the rest in batches within the provider's limits (and `--batch-size`);
//! each batch's id is written to the results' state file (`.NAME.batches.json` beside the
//! results) as soon as the provider returns it, before anything else. A later run (`--resume`,
//! or a run killed and started again) finds the requests it needs in the batches recorded there
//! and polls those instead of sending them again. While the pool runs, [`Batcher::drive`] polls
//! the batches on a thread of its own and, as each ends, puts its answers in the cache and hands
//! them to the rows waiting for them ([`Batcher::wait`]): rows stream as batches finish, and a
//! request that failed inside a batch is an error row. Ctrl-C stops waiting, not the batches:
//! they stay recorded for `--resume`, and `parallamr batch cancel` stops them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use fanout::{CancelReason, CancelToken, TaskError};
use serde::{Deserialize, Serialize};

use crate::cache::{self, Cache, Entry};
use crate::call::{Batched, check_window, render, request};
use crate::cost::{Budget, Price, Reservation, batch_price};
use crate::experiments::Experiment;
use crate::plan::{BatchSettings as Settings, Inputs};
use crate::providers::{Answer, BatchApi, BatchState, Provider, estimate_tokens};

/// The state file of the results file `output`: `.NAME.batches.json` in its folder (with a path
/// template, in the fixed folder before the first placeholder).
pub(crate) fn state_path(output: &Path) -> PathBuf {
    let text = output.to_string_lossy();
    let fixed = text.split("{{").next().unwrap_or_default();
    let folder = if fixed.len() == text.len() {
        output.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        Path::new(&fixed[..fixed.rfind('/').map_or(0, |i| i + 1)]).to_path_buf()
    };
    let name: String = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    folder.join(format!(".{name}.batches.json"))
}

/// `1 request`, `2 requests`.
fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// The batches a results file has in flight at the providers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) batches: Vec<Recorded>,
}

/// One batch, as soon as its provider named it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Recorded {
    pub(crate) provider: String,
    /// Where it was sent (the provider's base URL): a later run polls it there.
    pub(crate) endpoint: String,
    pub(crate) id: String,
    /// With `--schema`, the structured answer's name.
    pub(crate) schema: Option<String>,
    /// Seconds since the Unix epoch.
    pub(crate) submitted: u64,
    /// The requests in it, by their cache keys (their names in the batch).
    pub(crate) keys: Vec<String>,
}

impl State {
    /// The state file at `path`; none is an empty state.
    pub(crate) fn load(path: &Path) -> Result<State> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a batch state file parallamr can read (remove it only if no \
                     batch of it is still running)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Written whole and atomically; with no batch left, removed.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        if self.batches.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(anyhow!("cannot remove {}: {e}", path.display()))
                }
                _ => Ok(()),
            };
        }
        let text = serde_json::to_vec_pretty(self).expect("a state serializes");
        fanout::fsutil::write_atomic(path, &text)
            .with_context(|| format!("cannot write the batch state file {}", path.display()))
    }
}

/// What the rows waiting for a request get.
#[derive(Debug)]
enum Slot {
    Pending,
    Answered(Answer),
    Failed(String),
    /// `--max-cost` left no room for it: it was not sent.
    NotSent(String),
}

/// What the cache entry and the budget need of a request once its answer comes.
#[derive(Debug)]
struct Meta {
    provider: String,
    model: String,
    window: Option<u64>,
    price: Option<Price>,
    input_estimate: u64,
    reservation: Option<Reservation>,
}

/// The batches of a run and the rows waiting for their answers.
pub(crate) struct Batcher<'a> {
    inputs: &'a Inputs,
    cache: &'a Cache,
    budget: Option<&'a Budget>,
    /// The results file (`-o`) and its state file.
    output: PathBuf,
    path: PathBuf,
    poll: Duration,
    quiet: bool,
    slots: Mutex<HashMap<String, Slot>>,
    changed: Condvar,
    meta: Mutex<HashMap<String, Meta>>,
    state: Mutex<State>,
    /// The batches this run waits for (their ids), and what each last said.
    watched: Mutex<Vec<(String, Option<BatchState>, u32)>>,
    /// Set when the run no longer waits (its pool ended, or Ctrl-C).
    stop: CancelToken,
}

impl<'a> Batcher<'a> {
    /// Find or submit a batch for every request of `todo` that a provider with a batch API
    /// would get and the cache cannot answer. `None` when there is none.
    pub(crate) fn prepare(
        inputs: &'a Inputs,
        todo: &[&Experiment],
        (cache, budget): (&'a Cache, Option<&'a Budget>),
        (settings, output, quiet): (Settings, &Path, bool),
    ) -> Result<Option<Batcher<'a>>> {
        let path = state_path(output);
        let state = State::load(&path)?;
        let b = Batcher {
            inputs,
            cache,
            budget,
            output: output.to_path_buf(),
            path,
            poll: settings.poll,
            quiet,
            slots: Mutex::default(),
            changed: Condvar::new(),
            meta: Mutex::default(),
            state: Mutex::new(state),
            watched: Mutex::default(),
            stop: CancelToken::new(),
        };
        let fresh = b.plan(todo);
        b.watch_recorded();
        for (provider, lines) in fresh {
            b.submit_all(&provider, lines, settings.size)?;
        }
        let any = !b.slots.lock().expect("slots").is_empty();
        Ok(any.then_some(b))
    }

    /// The requests to batch: each gets a slot (a recorded batch may have it already); the
    /// lines of those to send, by provider.
    fn plan(&self, todo: &[&Experiment]) -> Vec<(String, Vec<(String, serde_json::Value)>)> {
        let recorded: HashSet<String> = self
            .state
            .lock()
            .expect("state")
            .batches
            .iter()
            .flat_map(|r| r.keys.iter().cloned())
            .collect();
        let mut fresh: Vec<(String, Vec<(String, serde_json::Value)>)> = Vec::new();
        let mut slots = self.slots.lock().expect("slots");
        let mut meta = self.meta.lock().expect("meta");
        for e in todo {
            let Some((provider, api)) = self.batchable(e) else {
                continue;
            };
            let template = &self.inputs.templates[self.inputs.template_of[e.index]];
            // A row that cannot be rendered, or is too long for its model, fails online as it
            // would without --batch: nothing is sent for it either way.
            let Ok((prompt, _)) = render(e, provider, template) else {
                continue;
            };
            let req = request(e, &prompt, self.inputs);
            let Some(endpoint) = provider.cache_endpoint() else {
                continue;
            };
            let key = cache::key(provider.name(), &endpoint, &req);
            if slots.contains_key(&key) || self.cache.get(&key).is_some() {
                continue;
            }
            let input_estimate = estimate_tokens(&prompt);
            let window = provider.context_window(&e.model).ok().flatten();
            if check_window(&e.model, input_estimate, window, &mut None).is_err() {
                continue;
            }
            let price = self
                .inputs
                .prices
                .get(&e.provider, &e.model)
                .map(batch_price);
            let reservation = match self.reserve(e, price, input_estimate) {
                Ok(r) => r,
                Err(why) => {
                    slots.insert(key, Slot::NotSent(why));
                    continue;
                }
            };
            meta.insert(
                key.clone(),
                Meta {
                    provider: provider.name().to_owned(),
                    model: e.model.clone(),
                    window,
                    price,
                    input_estimate,
                    reservation,
                },
            );
            slots.insert(key.clone(), Slot::Pending);
            if !recorded.contains(&key) {
                let line = api.line(&key, &req);
                match fresh.iter_mut().find(|(p, _)| p == &e.provider) {
                    Some((_, lines)) => lines.push((key, line)),
                    None => fresh.push((e.provider.clone(), vec![(key, line)])),
                }
            }
        }
        fresh
    }

    fn batchable(&self, e: &Experiment) -> Option<(&'a dyn Provider, &'a dyn BatchApi)> {
        let provider = self.inputs.providers[e.provider.as_str()].as_ref();
        Some((provider, provider.batch()?))
    }

    /// With `--max-cost`, the request's estimate at the batch price held from the budget.
    fn reserve(
        &self,
        e: &Experiment,
        price: Option<Price>,
        input: u64,
    ) -> Result<Option<Reservation>, String> {
        let (Some(b), Some(p)) = (self.budget, price) else {
            return Ok(None);
        };
        b.hold(p, input, e.max_tokens()).map(Some)
    }

    /// Watch the recorded batches that hold a request this run waits for.
    fn watch_recorded(&self) {
        let slots = self.slots.lock().expect("slots");
        let state = self.state.lock().expect("state");
        let mut watched = self.watched.lock().expect("watched");
        for r in &state.batches {
            if r.keys
                .iter()
                .any(|k| matches!(slots.get(k), Some(Slot::Pending)))
            {
                self.say(&format!(
                    "{} batch {}: sent by an earlier run, polled again (not sent twice)",
                    r.provider, r.id
                ));
                watched.push((r.id.clone(), None, 0));
            }
        }
    }

    /// Send `lines` to `provider` in as few batches as its limits (and `--batch-size`) allow.
    fn submit_all(
        &self,
        provider: &str,
        lines: Vec<(String, serde_json::Value)>,
        size: Option<usize>,
    ) -> Result<()> {
        let p = self.inputs.providers[provider].as_ref();
        let api = p.batch().expect("batchable");
        let (max_count, max_bytes) = api.limits();
        let max_count = size.unwrap_or(max_count).clamp(1, max_count);
        let mut chunk: Vec<(String, serde_json::Value)> = Vec::new();
        let mut bytes = 0;
        for (key, line) in lines {
            let n = line.to_string().len() + 1;
            if !chunk.is_empty() && (chunk.len() == max_count || bytes + n > max_bytes) {
                self.submit(p, api, std::mem::take(&mut chunk))?;
                bytes = 0;
            }
            bytes += n;
            chunk.push((key, line));
        }
        if !chunk.is_empty() {
            self.submit(p, api, chunk)?;
        }
        Ok(())
    }

    /// Send one batch and record its id at once. A batch the provider refuses fails its rows.
    fn submit(
        &self,
        p: &dyn Provider,
        api: &dyn BatchApi,
        chunk: Vec<(String, serde_json::Value)>,
    ) -> Result<()> {
        let lines: Vec<serde_json::Value> = chunk.iter().map(|(_, l)| l.clone()).collect();
        let keys: Vec<String> = chunk.into_iter().map(|(k, _)| k).collect();
        let id = match api.submit(&lines) {
            Ok(id) => id,
            Err(e) => {
                let why = format!("the batch was not accepted: {e}");
                self.say(&format!(
                    "{} batch of {} requests: {why}",
                    p.name(),
                    keys.len()
                ));
                self.finish(&keys, |_| Err(why.clone()));
                return Ok(());
            }
        };
        {
            let mut state = self.state.lock().expect("state");
            state.batches.push(Recorded {
                provider: p.name().to_owned(),
                endpoint: p.cache_endpoint().unwrap_or_default(),
                id: id.clone(),
                schema: self
                    .inputs
                    .judge
                    .as_ref()
                    .and_then(|j| j.native_schema())
                    .map(|s| s.name.clone()),
                submitted: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                keys: keys.clone(),
            });
            // Before anything else: a run killed from here on polls this batch, never sends
            // its requests again.
            state.save(&self.path)?;
        }
        self.say(&format!(
            "{} batch {id}: {} sent (state in {})",
            p.name(),
            plural(keys.len(), "request"),
            self.path.display()
        ));
        self.watched.lock().expect("watched").push((id, None, 0));
        Ok(())
    }

    fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("parallamr: {line}");
        }
    }

    /// Give `keys` their outcome and wake the rows waiting for them; settle their budget.
    fn finish(&self, keys: &[String], mut outcome: impl FnMut(&str) -> Result<Answer, String>) {
        let mut slots = self.slots.lock().expect("slots");
        let mut meta = self.meta.lock().expect("meta");
        for k in keys {
            if !matches!(slots.get(k), Some(Slot::Pending)) {
                continue;
            }
            let result = outcome(k);
            if let Some(m) = meta.get_mut(k) {
                let cost = result.as_ref().ok().and_then(|a| {
                    m.price.map(|p| {
                        p.cost(
                            a.input_tokens.unwrap_or(m.input_estimate),
                            a.output_tokens.unwrap_or(0),
                        )
                    })
                });
                if let (Some(b), Some(r)) = (self.budget, m.reservation.take()) {
                    b.settle(r, cost, result.as_ref().ok().and_then(|a| a.output_tokens));
                }
                if let Ok(a) = &result {
                    let entry = Entry::answered(
                        (&m.provider, &m.model),
                        a.text.clone(),
                        (a.input_tokens, a.output_tokens),
                        m.window,
                    )
                    .in_batch();
                    self.cache.put_or_warn(k, &entry);
                }
            }
            slots.insert(
                k.clone(),
                match result {
                    Ok(a) => Slot::Answered(a),
                    Err(why) => Slot::Failed(why),
                },
            );
        }
        drop((slots, meta));
        self.changed.notify_all();
    }

    /// Poll the watched batches until each has ended or the run stops waiting (the pool ended,
    /// or Ctrl-C): runs on a thread of its own beside the pool.
    pub(crate) fn drive(&self, interrupt: &CancelToken) {
        loop {
            if interrupt.is_cancelled() || self.stop.is_cancelled() {
                return;
            }
            let ids: Vec<String> = self
                .watched
                .lock()
                .expect("watched")
                .iter()
                .map(|(id, ..)| id.clone())
                .collect();
            if ids.is_empty() {
                return;
            }
            for id in ids {
                if interrupt.is_cancelled() || self.stop.is_cancelled() {
                    return;
                }
                self.poll_one(&id);
            }
            if self.watched.lock().expect("watched").is_empty() || !self.stop.sleep(self.poll) {
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
            .expect("batchable");
        match api.poll(id) {
            Ok(s) => {
                self.tell(&rec, &s);
                if s.finished {
                    self.collect(&rec, api, &s);
                }
            }
            Err(e) => {
                let mut watched = self.watched.lock().expect("watched");
                let Some(w) = watched.iter_mut().find(|(i, ..)| i == id) else {
                    return;
                };
                w.2 += 1;
                // A provider that cannot be reached for a while fails the rows, not the run:
                // the batch stays recorded for --resume.
                if w.2 >= 5 {
                    watched.retain(|(i, ..)| i != id);
                    drop(watched);
                    let why = format!("batch {id} could not be polled: {e}; --resume tries again");
                    self.say(&format!("{} {why}", rec.provider));
                    self.finish(&rec.keys, |_| Err(why.clone()));
                }
            }
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
        let Some(w) = watched.iter_mut().find(|(i, ..)| *i == rec.id) else {
            return;
        };
        w.2 = 0;
        if w.1.as_ref() != Some(s) {
            w.1 = Some(s.clone());
            drop(watched);
            self.say(&format!(
                "{} batch {}: {}, {} of {} answered, {} failed",
                rec.provider, rec.id, s.status, s.succeeded, s.total, s.failed
            ));
        }
    }

    /// The answers of an ended batch into the cache and the waiting rows; the batch leaves the
    /// state file once they are in the cache.
    fn collect(&self, rec: &Recorded, api: &dyn BatchApi, s: &BatchState) {
        let lines = match &s.error {
            Some(why) => Ok(Vec::new()).map(|v: Vec<_>| (v, Some(why.clone()))),
            None => api.results(s, rec.schema.as_deref()).map(|v| (v, None)),
        };
        let (lines, refused) = match lines {
            Ok(l) => l,
            Err(e) => {
                // Try again at the next poll.
                self.say(&format!(
                    "{} batch {}: its results could not be fetched yet: {e}",
                    rec.provider, rec.id
                ));
                return;
            }
        };
        let mut by_key: HashMap<String, Result<Answer, String>> = lines.into_iter().collect();
        self.finish(&rec.keys, |k| {
            by_key.remove(k).unwrap_or_else(|| {
                Err(refused.clone().unwrap_or_else(|| {
                    format!(
                        "batch {} ended ({}) without an answer for this request; --resume sends \
                         it again",
                        rec.id, s.status
                    )
                }))
            })
        });
        self.watched
            .lock()
            .expect("watched")
            .retain(|(i, ..)| *i != rec.id);
        let mut state = self.state.lock().expect("state");
        state.batches.retain(|r| r.id != rec.id);
        if let Err(e) = state.save(&self.path) {
            self.say(&format!("{e:#}"));
        }
    }

    /// The run no longer waits: the driver returns at its next look.
    pub(crate) fn stop(&self) {
        self.stop.cancel(CancelReason::Requested);
        self.changed.notify_all();
    }

    /// After the run: the batches still in flight, and where they are recorded.
    pub(crate) fn left(&self) -> Option<String> {
        let state = self.state.lock().expect("state");
        (!state.batches.is_empty()).then(|| {
            let ids: Vec<String> = state
                .batches
                .iter()
                .map(|r| format!("{} {}", r.provider, r.id))
                .collect();
            format!(
                "{} batch{} still running at the provider ({}), recorded in {}: run again with \
                 --resume to collect the answers (nothing is sent twice), or `parallamr batch \
                 cancel {}` to stop {}",
                ids.len(),
                if ids.len() == 1 { " is" } else { "es are" },
                ids.join(", "),
                self.path.display(),
                self.output.display(),
                if ids.len() == 1 { "it" } else { "them" }
            )
        })
    }
}

/// `parallamr batch status|cancel RESULTS`: each recorded batch as its provider describes it
/// (and, for `cancel`, after asking it to stop). A batch its provider no longer knows is said
/// so and kept: `run --resume` ends its rows.
pub(crate) fn command(action: &crate::cli::BatchAction) -> Result<fanout::ExitStatus> {
    use crate::cli::BatchAction;
    use fanout_cli::UsageResult;
    let (results, cancel) = match action {
        BatchAction::Status { results } => (results, false),
        BatchAction::Cancel { results } => (results, true),
    };
    let path = state_path(results);
    let state = State::load(&path).usage()?;
    if state.batches.is_empty() {
        println!(
            "no batch of {} is in flight ({} does not exist)",
            results.display(),
            path.display()
        );
        return Ok(fanout::ExitStatus::Success);
    }
    let settings = crate::settings::Settings::load().usage()?;
    let http = crate::providers::Http::new(Duration::from_secs(60));
    let mut failed = false;
    println!(
        "{:<10} {:<32} {:<12} {:>9} {:>9} {:>9}  SENT",
        "PROVIDER", "BATCH", "STATUS", "REQUESTS", "ANSWERED", "FAILED"
    );
    for r in &state.batches {
        let described = crate::providers::one(&r.provider, &http, &settings)
            .map_err(|e| format!("{e:#}"))
            .and_then(|p| {
                let api = p
                    .batch()
                    .ok_or_else(|| format!("{} has no batch API", r.provider))?;
                if cancel {
                    api.cancel(&r.id)
                } else {
                    api.poll(&r.id)
                }
                .map_err(|e| e.to_string())
            });
        let sent = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(r.submitted),
        );
        match described {
            Ok(s) => println!(
                "{:<10} {:<32} {:<12} {:>9} {:>9} {:>9}  {sent}",
                r.provider, r.id, s.status, s.total, s.succeeded, s.failed
            ),
            Err(why) => {
                failed = true;
                println!(
                    "{:<10} {:<32} {:<12} {:>9} {:>9} {:>9}  {sent}",
                    r.provider,
                    r.id,
                    "?",
                    r.keys.len(),
                    "?",
                    "?"
                );
                eprintln!("parallamr: {} batch {}: {why}", r.provider, r.id);
            }
        }
    }
    if cancel {
        println!(
            "Asked to stop. `parallamr run ... --resume` collects what they answered and sends \
             the rest again."
        );
    }
    Ok(if failed {
        fanout::ExitStatus::TaskFailed
    } else {
        fanout::ExitStatus::Success
    })
}

impl Batched for Batcher<'_> {
    /// The outcome of the request `key`, once its batch has ended; `None` when it is not in a
    /// batch (it goes online). Gives up when `cancel` fires.
    fn wait(&self, key: &str, cancel: &CancelToken) -> Option<Result<Answer, TaskError>> {
        let mut slots = self.slots.lock().expect("slots");
        loop {
            match slots.get(key)? {
                Slot::Pending => {}
                Slot::Answered(a) => return Some(Ok(a.clone())),
                Slot::Failed(why) => return Some(Err(TaskError::failed(why.clone()))),
                Slot::NotSent(why) => {
                    return Some(Err(TaskError::Skipped {
                        reason: why.clone(),
                    }));
                }
            }
            if cancel.is_cancelled() || self.stop.is_cancelled() {
                return Some(Err(TaskError::Cancelled));
            }
            slots = self
                .changed
                .wait_timeout(slots, Duration::from_millis(100))
                .expect("slots")
                .0;
        }
    }
}
