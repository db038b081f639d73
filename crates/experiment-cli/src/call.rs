//! One experiment: render its prompt, check the context window, answer from the cache or
//! call its provider (within its limit and budget), and keep the answer.

use std::collections::HashMap;

use anyhow::Result;
use fanout::{CancelToken, TaskError};

use crate::cache::{self, Cache, Entry};
use crate::cost::{self, Budget};
use crate::experiments::{Experiment, Template};
use crate::grade::{Grade, Grader, grading_error, verdict};
use crate::limit::Limit;
use crate::plan::Inputs;
use crate::providers::{Answer, Provider, Request, estimate_tokens};

/// Share of the context window above which a row warns, and above which it is not sent.
pub(crate) const WARN_SHARE: f64 = 0.8;
pub(crate) const ERROR_SHARE: f64 = 0.9;

/// What a row knows besides the answer: the work function's meta, delivered with its outcome
/// whether the experiment succeeded or failed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub(crate) input_tokens: Option<u64>,
    pub(crate) context_window: Option<u64>,
    pub(crate) warning: Option<String>,
}

/// A finished experiment's answer, its token counts filled in where the provider gave none.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    pub(crate) text: String,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    /// Whether it came from the response cache (no request was sent).
    pub(crate) cached: bool,
    /// What the answer costs at the model's price, if it has one.
    pub(crate) cost: Option<f64>,
    /// `--grader`: its verdict on the answer, or why there is none (the grading request
    /// failed after its retries, or the budget was spent): the answer is kept either way.
    pub(crate) grading: Option<Result<Grade, String>>,
    /// How long grading took: not part of the answer's latency.
    pub(crate) grading_seconds: f64,
}

/// The prompt of `e` (empty for the command provider, which renders its own), and a warning
/// naming the variables the template uses that the row lacks.
pub(crate) fn render(
    e: &Experiment,
    provider: &dyn Provider,
    template: &Template,
) -> Result<(String, Option<String>), String> {
    if provider.name() == "command" {
        return Ok((String::new(), None));
    }
    let (prompt, missing) = template.render(&e.vars, &[])?;
    let warning = (!missing.is_empty()).then(|| {
        format!(
            "the template uses {} that this row lacks: {}",
            if missing.len() == 1 {
                "a variable"
            } else {
                "variables"
            },
            missing.join(", ")
        )
    });
    Ok((prompt, warning))
}

/// Where the answer to `req` is kept: the cache and the key (none with `--no-cache`, or for a
/// provider whose answers are not cached).
pub(crate) fn cache_entry<'c>(
    cache: Option<&'c Cache>,
    provider: &dyn Provider,
    req: &Request<'_>,
) -> Option<(&'c Cache, String)> {
    let cache = cache?;
    let endpoint = provider.cache_endpoint()?;
    Some((cache, cache::key(provider.name(), &endpoint, req)))
}

/// What is sent for `e` with `prompt` (and `--schema`, as structured output).
pub(crate) fn request<'a>(e: &'a Experiment, prompt: &'a str, inputs: &'a Inputs) -> Request<'a> {
    Request {
        model: &e.model,
        prompt,
        vars: &e.vars,
        params: &e.params,
        repeat: e.repeat.unwrap_or(1),
        schema: inputs.judge.as_ref().and_then(|j| j.native_schema()),
    }
}

/// What every experiment of a run shares.
pub(crate) struct Shared<'a> {
    pub(crate) inputs: &'a Inputs,
    pub(crate) limits: &'a HashMap<&'a str, Limit>,
    pub(crate) cache: Option<&'a Cache>,
    pub(crate) budget: Option<&'a Budget>,
    /// `--grader`: asked about each answer.
    pub(crate) grader: Option<&'a Grader>,
    /// `--retries`: also how often a grading request is retried on its own.
    pub(crate) retries: u32,
    /// `--batch`: the batches that answer some of the experiments.
    pub(crate) batcher: Option<&'a dyn Batched>,
}

/// Where some experiments' answers come from instead of a request of their own (`--batch`).
pub(crate) trait Batched: Sync {
    /// The outcome of the request `key` once its batch has ended (waiting until then, or until
    /// `cancel` fires); `None` when no batch holds it.
    /// With the answer, whether this is its first row (a second row of the same request is
    /// answered as from the cache: one request was paid for).
    fn wait(&self, key: &str, cancel: &CancelToken) -> Option<Result<(Answer, bool), TaskError>>;
}

/// One experiment: its answer, then (with `--grader`) the grader's verdict on it.
pub(crate) fn run_one(
    e: &Experiment,
    shared: &Shared<'_>,
    facts: &mut Facts,
    cancel: &CancelToken,
) -> Result<Done, TaskError> {
    let provider = shared.inputs.providers[e.provider.as_str()].as_ref();
    let template = &shared.inputs.templates[shared.inputs.template_of[e.index]];
    let (prompt, warning) = render(e, provider, template).map_err(TaskError::failed)?;
    let mut done = answer(e, &prompt, warning, shared, facts, cancel)?;
    if let Some(g) = shared.grader {
        let started = std::time::Instant::now();
        done.grading = Some(match grade(g, e, &prompt, &done.text, shared, cancel) {
            Ok(grade) => Ok(grade),
            Err(TaskError::Cancelled) => return Err(TaskError::Cancelled),
            Err(err) => Err(format!("not graded: {err}")),
        });
        done.grading_seconds = started.elapsed().as_secs_f64();
    }
    Ok(done)
}

/// The grader's verdict, its request retried on its own (a failed grading never sends the
/// answer again): after a retryable failure, wait the server's `Retry-After` or a backoff.
fn grade(
    g: &Grader,
    e: &Experiment,
    prompt: &str,
    answer: &str,
    shared: &Shared<'_>,
    cancel: &CancelToken,
) -> Result<Grade, TaskError> {
    let text = g
        .prompt(e, prompt, answer)
        .map_err(|m| TaskError::failed(format!("the grader's rubric: {m}")))?;
    let mut attempt = 0;
    loop {
        match ask_grader(g, &text, shared, cancel) {
            Err(TaskError::Failed {
                retryable: true,
                retry_after,
                ..
            }) if attempt < shared.retries => {
                let backoff = std::time::Duration::from_millis(500 << attempt.min(7));
                if !cancel.sleep(
                    retry_after
                        .unwrap_or(backoff)
                        .min(std::time::Duration::from_secs(120)),
                ) {
                    return Err(TaskError::Cancelled);
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The answer to `e`'s `prompt`: from the cache if it has it, else check the context window and
/// the budget and call (within the provider's limit), keeping a success in the cache.
fn answer(
    e: &Experiment,
    prompt: &str,
    mut warning: Option<String>,
    shared: &Shared<'_>,
    facts: &mut Facts,
    cancel: &CancelToken,
) -> Result<Done, TaskError> {
    let provider = shared.inputs.providers[e.provider.as_str()].as_ref();
    let price = shared.inputs.prices.get(&e.provider, &e.model);
    let input_tokens = estimate_tokens(prompt);
    let req = request(e, prompt, shared.inputs);
    let key = cache_entry(shared.cache, provider, &req);
    // A request in a batch waits for it (before the cache: the batch puts its answer there).
    if let (Some(b), Some((_, k))) = (shared.batcher, &key)
        && let Some(outcome) = b.wait(k, cancel)
    {
        let window = provider.context_window(&e.model).ok().flatten();
        let checked = check_window(&e.model, input_tokens, window, &mut warning);
        store(facts, Some(input_tokens), window, warning);
        checked?;
        return outcome.map(|(a, first)| answered_in_batch(a, input_tokens, price, first));
    }
    if let Some((c, k)) = &key
        && let Some(hit) = c.get(k)
    {
        return from_cache(&e.model, hit, input_tokens, price, warning, facts);
    }
    let _slot = shared.limits[e.provider.as_str()]
        .acquire(cancel)
        .ok_or(TaskError::Cancelled)?;
    let reservation = reserve(e, shared.budget, price, input_tokens)?;
    let paced = shared
        .inputs
        .http
        .pacers()
        .get(&e.provider)
        .map(|p| p.acquire(input_tokens, cancel));
    let answer = match paced {
        Some(Err(err)) => Err(err),
        Some(Ok(_permit)) => call(e, provider, &req, input_tokens, &mut warning, facts, cancel),
        None => call(e, provider, &req, input_tokens, &mut warning, facts, cancel),
    };
    let cost = answer.as_ref().ok().and_then(|(a, _)| {
        price.map(|p| {
            p.cost(
                a.input_tokens.unwrap_or(input_tokens),
                a.output_tokens.unwrap_or(0),
            )
        })
    });
    if let Some((b, r)) = reservation {
        b.settle(
            r,
            cost,
            answer.as_ref().ok().and_then(|(a, _)| a.output_tokens),
        );
    }
    let (answer, window) = answer?;
    if let Some((c, k)) = &key {
        let entry = Entry::new(
            &req,
            provider.name(),
            answer.text.clone(),
            (answer.input_tokens, answer.output_tokens),
            window,
        );
        c.put_or_warn(k, &entry);
    }
    Ok(Done { cost, ..answer })
}

/// An answer from a batch, at the batch price; a second row of the same request counts as
/// answered from the cache.
fn answered_in_batch(
    a: Answer,
    input_tokens: u64,
    price: Option<cost::Price>,
    first: bool,
) -> Done {
    let output_tokens = a.output_tokens.or_else(|| Some(estimate_tokens(&a.text)));
    Done {
        cost: price.map(|p| {
            cost::batch_price(p).cost(
                a.input_tokens.unwrap_or(input_tokens),
                output_tokens.unwrap_or(0),
            )
        }),
        text: a.text,
        input_tokens: a.input_tokens,
        output_tokens,
        cached: !first,
        grading: None,
        grading_seconds: 0.0,
    }
}

/// The answer the cache has, checked against the model's context window.
fn from_cache(
    model: &str,
    hit: Entry,
    input_tokens: u64,
    price: Option<cost::Price>,
    mut warning: Option<String>,
    facts: &mut Facts,
) -> Result<Done, TaskError> {
    let checked = check_window(model, input_tokens, hit.context_window, &mut warning);
    store(facts, Some(input_tokens), hit.context_window, warning);
    checked?;
    // An answer a batch gave cost the batch price.
    let price = price.map(|p| if hit.batch { cost::batch_price(p) } else { p });
    Ok(Done {
        cost: price.map(|p| {
            p.cost(
                hit.input_tokens.unwrap_or(input_tokens),
                hit.output_tokens.unwrap_or(0),
            )
        }),
        text: hit.text,
        input_tokens: hit.input_tokens,
        output_tokens: hit.output_tokens,
        cached: true,
        grading: None,
        grading_seconds: 0.0,
    })
}

/// With `--max-cost` and a price: the most this call can cost, reserved from the budget (it is
/// not sent when the budget cannot cover it).
fn reserve<'b>(
    e: &Experiment,
    budget: Option<&'b Budget>,
    price: Option<cost::Price>,
    input_tokens: u64,
) -> Result<Option<(&'b Budget, cost::Reservation)>, TaskError> {
    let (Some(b), Some(p)) = (budget, price) else {
        return Ok(None);
    };
    let reservation = b
        .hold(p, input_tokens, e.max_tokens())
        .map_err(|reason| TaskError::Skipped { reason })?;
    Ok(Some((b, reservation)))
}

/// Check the context window and send: the answer (token counts filled in) and the window.
pub(crate) fn call(
    e: &Experiment,
    provider: &dyn Provider,
    req: &Request<'_>,
    input_tokens: u64,
    warning: &mut Option<String>,
    facts: &mut Facts,
    cancel: &CancelToken,
) -> Result<(Done, Option<u64>), TaskError> {
    let window = provider.context_window(&e.model)?;
    let checked = check_window(&e.model, input_tokens, window, warning);
    store(
        facts,
        Some(input_tokens).filter(|_| provider.name() != "command"),
        window,
        warning.take(),
    );
    checked?;
    let answer = provider.generate(req, cancel)?;
    let output_tokens = answer
        .output_tokens
        .or_else(|| (provider.name() != "command").then(|| estimate_tokens(&answer.text)));
    Ok((
        Done {
            input_tokens: answer.input_tokens,
            output_tokens,
            text: answer.text,
            cached: false,
            cost: None,
            grading: None,
            grading_seconds: 0.0,
        },
        window,
    ))
}

/// The prompt against the model's context window: over 90% is not sent, over 80% a warning.
pub(crate) fn check_window(
    model: &str,
    input_tokens: u64,
    window: Option<u64>,
    warning: &mut Option<String>,
) -> Result<(), TaskError> {
    let Some(w) = window.filter(|w| *w > 0) else {
        return Ok(());
    };
    let share = input_tokens as f64 / w as f64;
    let pct = (share * 100.0).round();
    if share > ERROR_SHARE {
        return Err(TaskError::failed(format!(
            "the prompt is about {input_tokens} tokens, {pct}% of {model}'s {w}-token context \
             window (over 90%): not sent"
        )));
    }
    if share > WARN_SHARE {
        let w_msg = format!("the prompt fills {pct}% of the {w}-token context window");
        *warning = Some(
            warning
                .take()
                .map_or(w_msg.clone(), |m| format!("{m}; {w_msg}")),
        );
    }
    Ok(())
}

pub(crate) fn store(
    facts: &mut Facts,
    input_tokens: Option<u64>,
    window: Option<u64>,
    warning: Option<String>,
) {
    *facts = Facts {
        input_tokens,
        context_window: window,
        warning,
    };
}

/// `--grader`: its verdict, asked with `text` (the rubric rendered for an answer): from the
/// cache, else one request within the grader's provider limit, rate schedule and the budget.
fn ask_grader(
    g: &Grader,
    text: &str,
    shared: &Shared<'_>,
    cancel: &CancelToken,
) -> Result<Grade, TaskError> {
    let provider = shared.inputs.providers[g.provider.as_str()].as_ref();
    let price = shared.inputs.prices.get(&g.provider, &g.model);
    let req = Request {
        model: &g.model,
        prompt: text,
        vars: &[],
        params: &[],
        repeat: 1,
        schema: None,
    };
    let input_estimate = estimate_tokens(text);
    let key = cache_entry(shared.cache, provider, &req);
    if let Some((c, k)) = &key
        && let Some(hit) = c.get(k)
    {
        let (i, o) = (
            hit.input_tokens.unwrap_or(input_estimate),
            hit.output_tokens.unwrap_or(0),
        );
        return Ok(verdict(&hit.text, i, o, price.map(|p| p.cost(i, o)), true));
    }
    let _slot = shared.limits[g.provider.as_str()]
        .acquire(cancel)
        .ok_or(TaskError::Cancelled)?;
    let reservation = reserve_grading(shared.budget, price, input_estimate)?;
    let paced = shared
        .inputs
        .http
        .pacers()
        .get(&g.provider)
        .map(|p| p.acquire(input_estimate, cancel));
    let sent = match paced {
        Some(Err(err)) => Err(err),
        Some(Ok(_permit)) => provider.generate(&req, cancel),
        None => provider.generate(&req, cancel),
    };
    let tokens = sent.as_ref().ok().map(|a| {
        (
            a.input_tokens.unwrap_or(input_estimate),
            a.output_tokens.unwrap_or_else(|| estimate_tokens(&a.text)),
        )
    });
    let cost = tokens.and_then(|(i, o)| price.map(|p| p.cost(i, o)));
    if let Some((b, r)) = reservation {
        // Verdicts are short: they do not go into the mean answer that estimates answers.
        b.settle(r, cost, None);
    }
    let sent = sent.map_err(|err| grading_error(g, err))?;
    let (i, o) = tokens.unwrap_or_default();
    if let Some((c, k)) = &key {
        let entry = Entry::new(
            &req,
            provider.name(),
            sent.text.clone(),
            (Some(i), Some(o)),
            None,
        );
        c.put_or_warn(k, &entry);
    }
    Ok(verdict(&sent.text, i, o, cost, false))
}

/// With `--max-cost` and a price for the grader: the most a grading request can cost, reserved
/// (refused when the budget cannot cover it).
fn reserve_grading(
    budget: Option<&Budget>,
    price: Option<cost::Price>,
    input_estimate: u64,
) -> Result<Option<(&Budget, cost::Reservation)>, TaskError> {
    let (Some(b), Some(p)) = (budget, price) else {
        return Ok(None);
    };
    let r = b
        .reserve(b.estimate(p, input_estimate, None))
        .ok_or_else(|| {
            TaskError::failed(format!(
                "the budget (--max-cost {}) is spent",
                cost::fmt_usd(b.max())
            ))
        })?;
    Ok(Some((b, r)))
}
