//! `--dry-run`: every prompt as it would be sent (or command as it would run), with its size and
//! whether the cache has its answer; nothing is sent.

use crate::cache::Cache;
use crate::call::{cache_entry, render, request};
use crate::cost::{self};
use crate::plan::{Inputs, dry_run_summary};
use crate::providers::estimate_tokens;

/// `--dry-run`: the summary, and on standard output every prompt as it would be sent (the
/// command, for the command provider) with its size, its warning and whether the cache has its
/// answer (and with `--batch`, whether it would go in a batch). Nothing is sent.
pub(crate) fn dry_run(inputs: &Inputs, cache: Option<&Cache>, batch: bool) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let mut in_cache = 0usize;
    let mut batched = 0usize;
    let mut tokens = 0u64;
    let mut prompt_cost = 0.0;
    for e in &inputs.experiments.rows {
        let provider = inputs.providers[e.provider.as_str()].as_ref();
        let template = &inputs.templates[inputs.template_of[e.index]];
        let vars: Vec<String> = e.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let (text, note) = match render(e, provider, template) {
            Ok((prompt, warning)) => {
                let req = request(e, &prompt, inputs);
                let cached =
                    cache_entry(cache, provider, &req).is_some_and(|(c, k)| c.get(&k).is_some());
                in_cache += usize::from(cached);
                let n = estimate_tokens(&prompt);
                tokens += n;
                let in_batch = batch && !cached && provider.batch().is_some();
                batched += usize::from(in_batch);
                if let Some(p) = inputs.prices.get(&e.provider, &e.model) {
                    let p = if in_batch { cost::batch_price(p) } else { p };
                    prompt_cost += p.cost(n, 0);
                }
                let mut facts = vec![if provider.name() == "command" {
                    "a command".to_owned()
                } else {
                    format!("about {n} tokens")
                }];
                if cached {
                    facts.push("answer in the cache".to_owned());
                }
                if in_batch {
                    facts.push("in a batch".to_owned());
                }
                let preview = provider
                    .preview(&req)
                    .unwrap_or_else(|e| format!("(cannot render: {e})"));
                (preview, (facts.join("; "), warning))
            }
            Err(err) => (String::new(), ("cannot render".to_owned(), Some(err))),
        };
        let _ = writeln!(
            out,
            "--- {} line {}: {}/{}{}{} ({}) ---",
            inputs.experiments.source,
            e.line,
            e.provider,
            e.model,
            if vars.is_empty() { "" } else { ", " },
            vars.join(", "),
            note.0
        );
        let _ = writeln!(out, "{}", text.trim_end_matches('\n'));
        if let Some(w) = note.1 {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    drop(out);
    say_totals(
        inputs,
        cache.is_some(),
        (in_cache, batched),
        (tokens, prompt_cost),
        batch,
    );
}

/// The dry run's totals on standard error: the summary, the prompt tokens and their cost, what
/// the cache answers and what would go in batches, and the checks.
fn say_totals(
    inputs: &Inputs,
    cache: bool,
    (in_cache, batched): (usize, usize),
    (tokens, prompt_cost): (u64, f64),
    batch: bool,
) {
    eprintln!(
        "{}",
        dry_run_summary(&inputs.experiments, &inputs.templates, &inputs.used)
    );
    let cost = if prompt_cost > 0.0 {
        format!(
            " (about {} at the models' input prices)",
            cost::fmt_usd(prompt_cost)
        )
    } else {
        String::new()
    };
    let cached = if cache {
        format!(
            "; {in_cache} of {} answers are in the cache (not sent)",
            inputs.experiments.rows.len()
        )
    } else {
        String::new()
    };
    eprintln!("about {tokens} prompt tokens{cost}{cached}");
    if batch {
        eprintln!(
            "--batch: {} (only openai and anthropic rows the cache does not answer go in \
             batches, at half the price; the others are sent one by one)",
            match batched {
                0 => "no request would go in a batch".to_owned(),
                1 => "1 request would go in a batch".to_owned(),
                n => format!("{n} requests would go in batches"),
            }
        );
    }
    if let Some(j) = &inputs.judge {
        eprintln!("each answer is judged by: {}", j.describe());
    }
}
