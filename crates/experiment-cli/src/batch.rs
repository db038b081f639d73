//! `--batch`: the rows of providers with a batch API (OpenAI, Anthropic) that the cache cannot
//! answer are sent as a few batches, at half the price, instead of one request each.
//!
//! Before the pool starts, [`Batcher::prepare`] renders those rows' requests, leaves out what the
//! cache has, and submits the rest in batches within the provider's limits (and `--batch-size`);
//! each batch's id is written to the results' state file (`state.rs`) as soon as the provider
//! returns it, before anything else. A later `--batch --resume` (or a run killed and started
//! again) polls every batch recorded there: the requests it needs are not sent again, and the
//! answers no row waits for any more still go into the cache. While the pool runs,
//! [`Batcher::drive`] polls the batches on a thread of its own and, as each ends, puts its
//! answers in the cache and hands them to the rows waiting for them ([`Batched::wait`]). The
//! rows are ordered so the online ones run first and the batched ones by batch: a worker waits
//! only for a batch that has been sent. Ctrl-C stops waiting, not the batches: they stay
//! recorded, and `parallamr batch cancel` (`command.rs`) stops them.

mod command;
mod poll;
mod state;
mod submit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow};
use fanout::{CancelReason, CancelToken, TaskError};

pub(crate) use command::command;
pub(crate) use state::{State, state_path};

use crate::cache::{self, Cache, Entry};
use crate::call::{Batched, check_window, render, request};
use crate::cost::{Budget, Price, Reservation, batch_price};
use crate::experiments::Experiment;
use crate::plan::{BatchSettings as Settings, Inputs};
use crate::providers::{Answer, Provider, estimate_tokens, redact};
use poll::Watch;

/// `1 request`, `2 requests`.
fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// What the rows waiting for a request get.
#[derive(Debug)]
enum Slot {
    Pending,
    /// The answer, and whether a row has taken it (a second row with the same request is
    /// answered as from the cache: one request was paid for).
    Answered(Answer, bool),
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
    /// Each batched experiment's request, by the experiment's index.
    keys: Mutex<HashMap<usize, String>>,
    state: Mutex<State>,
    watched: Mutex<Vec<Watch>>,
    /// Set when the run no longer waits (its pool ended, or Ctrl-C).
    stop: CancelToken,
}

impl<'a> Batcher<'a> {
    /// Find or submit a batch for every request of `todo` that a provider with a batch API
    /// would get and the cache cannot answer, and watch every batch recorded before. `None`
    /// when there is nothing to wait for.
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
            keys: Mutex::default(),
            state: Mutex::new(state),
            watched: Mutex::default(),
            stop: CancelToken::new(),
        };
        let fresh = b.plan(todo);
        b.watch_recorded();
        for (provider, lines) in fresh {
            b.submit_all(&provider, lines, settings.size)?;
        }
        let waits = !b.slots.lock().expect("slots").is_empty()
            || !b.watched.lock().expect("watched").is_empty();
        Ok(waits.then_some(b))
    }

    /// The requests to batch: each gets a slot (a recorded batch may have it already); the
    /// lines of those to send, by provider.
    fn plan(&self, todo: &[&Experiment]) -> Vec<(String, Vec<(String, serde_json::Value)>)> {
        let recorded: std::collections::HashSet<String> = self
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
        let mut keys = self.keys.lock().expect("keys");
        for e in todo {
            let Some(planned) = self.batch_line(e) else {
                continue;
            };
            let req_key = planned.key;
            keys.insert(e.index, req_key.clone());
            if slots.contains_key(&req_key) {
                continue;
            }
            let price = self
                .inputs
                .prices
                .get(&e.provider, &e.model)
                .map(batch_price);
            let sent = recorded.contains(&req_key);
            // A request already sent is paid for whatever the budget says: it is charged when
            // answered, not held.
            let reservation = match (sent, self.budget, price) {
                (false, Some(b), Some(p)) => {
                    match b.hold(p, planned.input_estimate, e.max_tokens()) {
                        Ok(r) => Some(r),
                        Err(why) => {
                            slots.insert(req_key, Slot::NotSent(why));
                            continue;
                        }
                    }
                }
                _ => None,
            };
            meta.insert(
                req_key.clone(),
                Meta {
                    provider: planned.provider.name().to_owned(),
                    model: e.model.clone(),
                    window: planned.window,
                    price,
                    input_estimate: planned.input_estimate,
                    reservation,
                },
            );
            slots.insert(req_key.clone(), Slot::Pending);
            if !sent {
                let entry = (req_key, planned.line);
                match fresh.iter_mut().find(|(p, _)| p == &e.provider) {
                    Some((_, lines)) => lines.push(entry),
                    None => fresh.push((e.provider.clone(), vec![entry])),
                }
            }
        }
        fresh
    }

    /// The batch line of `e`. `None` when it goes online: its provider has no batch API, the
    /// cache answers it, or it fails before any sending (it cannot be rendered, or is too long
    /// for its model), as it would without `--batch`.
    fn batch_line(&self, e: &Experiment) -> Option<Planned<'a>> {
        let provider = self.inputs.providers[e.provider.as_str()].as_ref();
        let api = provider.batch()?;
        let template = &self.inputs.templates[self.inputs.template_of[e.index]];
        let (prompt, _) = render(e, provider, template).ok()?;
        let endpoint = provider.cache_endpoint()?;
        let req = request(e, &prompt, self.inputs);
        let key = cache::key(provider.name(), &endpoint, &req);
        if self.cache.get(&key).is_some() {
            return None;
        }
        let input_estimate = estimate_tokens(&prompt);
        let window = provider.context_window(&e.model).ok().flatten();
        check_window(&e.model, input_estimate, window, &mut None).ok()?;
        Some(Planned {
            provider,
            line: api.line(&key, &req),
            key,
            input_estimate,
            window,
        })
    }
}

/// A request that goes in a batch.
struct Planned<'a> {
    provider: &'a dyn Provider,
    /// Its cache key: its name in the batch.
    key: String,
    line: serde_json::Value,
    input_estimate: u64,
    window: Option<u64>,
}

impl Batcher<'_> {
    /// Watch every recorded batch this run can poll: its provider is one the run uses and the
    /// settings still point where the batch was sent. The others stay recorded.
    fn watch_recorded(&self) {
        let state = self.state.lock().expect("state");
        let mut watched = self.watched.lock().expect("watched");
        for r in &state.batches {
            let here = self
                .inputs
                .providers
                .get(&r.provider)
                .filter(|p| p.batch().is_some())
                .and_then(|p| p.cache_endpoint())
                .map(|e| redact(&e).into_owned());
            match here {
                Some(endpoint) if endpoint == r.endpoint => {
                    self.say(&format!(
                        "{} batch {}: sent by an earlier run, polled again (not sent twice)",
                        r.provider, r.id
                    ));
                    watched.push(Watch::new(&r.id));
                }
                Some(endpoint) => self.say(&format!(
                    "{} batch {} was sent to {}, not {endpoint}: not polled (it stays in {})",
                    r.provider,
                    r.id,
                    r.endpoint,
                    self.path.display()
                )),
                None => {}
            }
        }
    }

    fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("parallamr: {line}");
        }
    }

    /// Give `keys` their outcome and wake the rows waiting for them; settle their budget and
    /// keep the answers in the cache.
    fn finish(&self, keys: &[String], mut outcome: impl FnMut(&str) -> Result<Answer, String>) {
        let mut slots = self.slots.lock().expect("slots");
        let mut meta = self.meta.lock().expect("meta");
        for k in keys {
            if !matches!(slots.get(k), Some(Slot::Pending)) {
                continue;
            }
            let result = outcome(k);
            if let Some(m) = meta.get_mut(k) {
                self.account(k, m, &result);
            }
            slots.insert(
                k.clone(),
                match result {
                    Ok(a) => Slot::Answered(a, false),
                    Err(why) => Slot::Failed(why),
                },
            );
        }
        drop((slots, meta));
        self.changed.notify_all();
    }

    /// What an outcome costs the budget, and its answer in the cache.
    fn account(&self, key: &str, m: &mut Meta, result: &Result<Answer, String>) {
        let answer = result.as_ref().ok();
        let cost = answer.and_then(|a| {
            m.price.map(|p| {
                p.cost(
                    a.input_tokens.unwrap_or(m.input_estimate),
                    a.output_tokens.unwrap_or(0),
                )
            })
        });
        if let Some(b) = self.budget {
            match m.reservation.take() {
                Some(r) => b.settle(r, cost, answer.and_then(|a| a.output_tokens)),
                None => b.charge(cost.unwrap_or(0.0)),
            }
        }
        if let Some(a) = answer {
            self.keep(key, (&m.provider, &m.model), a, m.window);
        }
    }

    fn keep(&self, key: &str, (provider, model): (&str, &str), a: &Answer, window: Option<u64>) {
        let entry = Entry::answered(
            (provider, model),
            a.text.clone(),
            (a.input_tokens, a.output_tokens),
            window,
        )
        .in_batch();
        self.cache.put_or_warn(key, &entry);
    }

    /// The rows in the order that keeps the workers busy: those sent online first, then the
    /// batched ones batch by batch (a worker waits only for a batch that was sent, and the
    /// rows of a batch come out together as it ends).
    pub(crate) fn order(&self, todo: &mut [&Experiment]) {
        let keys = self.keys.lock().expect("keys");
        let state = self.state.lock().expect("state");
        let rank: HashMap<&str, usize> = state
            .batches
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.keys.iter().map(move |k| (k.as_str(), i + 1)))
            .collect();
        todo.sort_by_key(|e| {
            keys.get(&e.index)
                .and_then(|k| rank.get(k.as_str()))
                .copied()
                .unwrap_or(0)
        });
    }

    /// The run no longer waits: the driver returns at its next look.
    pub(crate) fn stop(&self) {
        self.stop.cancel(CancelReason::Requested);
        self.changed.notify_all();
    }

    /// After the run: the batches still at the providers, and what to do about them.
    pub(crate) fn left(&self) -> Option<String> {
        let state = self.state.lock().expect("state");
        (!state.batches.is_empty()).then(|| {
            let ids: Vec<String> = state
                .batches
                .iter()
                .map(|r| format!("{} {}", r.provider, r.id))
                .collect();
            format!(
                "{} still at the provider ({}), recorded in {}: `parallamr run ... --batch \
                 --resume` collects the answers (nothing is sent twice), `parallamr batch cancel \
                 {}` stops {}",
                if ids.len() == 1 {
                    "1 batch is".to_owned()
                } else {
                    format!("{} batches are", ids.len())
                },
                ids.join(", "),
                self.path.display(),
                self.output.display(),
                if ids.len() == 1 { "it" } else { "them" }
            )
        })
    }
}

impl Batched for Batcher<'_> {
    fn wait(&self, key: &str, cancel: &CancelToken) -> Option<Result<(Answer, bool), TaskError>> {
        let mut slots = self.slots.lock().expect("slots");
        loop {
            match slots.get_mut(key)? {
                Slot::Pending => {}
                Slot::Answered(a, taken) => {
                    let first = !*taken;
                    *taken = true;
                    return Some(Ok((a.clone(), first)));
                }
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

/// Refuse a run without `--batch` on a results file whose batches are still at the providers:
/// it would send their requests again, at full price.
pub(crate) fn refuse_without_batch(output: &Path) -> Result<()> {
    let path = state_path(output);
    let state = State::load(&path)?;
    if state.batches.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "{} has {} still at the providers (recorded in {}): add --batch to collect their \
         answers instead of sending the requests again, or stop them with `parallamr batch \
         cancel {}` and collect what they answered with --batch --resume",
        output.display(),
        if state.batches.len() == 1 {
            "1 batch".to_owned()
        } else {
            format!("{} batches", state.batches.len())
        },
        path.display(),
        output.display()
    ))
}
