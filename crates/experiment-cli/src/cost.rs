//! What a sweep costs: prices per model (a `--prices` file, else what OpenRouter's `/models`
//! says), the cost of each row from its real token counts, and `--max-cost`, a budget that stops
//! new requests before the total (with what is in flight) would pass it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

/// USD per million tokens, in and out.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub(crate) struct Price {
    pub(crate) input: f64,
    pub(crate) output: f64,
}

impl Price {
    /// The cost of a call with these token counts.
    pub(crate) fn cost(self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input + output_tokens as f64 * self.output) / 1_000_000.0
    }
}

/// Prices by `provider/model` or by `model`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prices {
    by_name: HashMap<String, Price>,
}

/// The providers whose calls cost nothing unless a price file says otherwise.
const FREE: [&str; 3] = ["mock", "ollama", "command"];

impl Prices {
    /// A price file: TOML (`"gpt-4o" = { input = 2.5, output = 10 }`) or, for a `.csv` name,
    /// CSV with the columns `model,input,output`; USD per million tokens.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the price file {}", path.display()))?;
        let by_name = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            Self::parse_csv(&text, path)?
        } else {
            toml::from_str::<HashMap<String, Price>>(&text).map_err(|e| {
                anyhow!(
                    "{}: {}\n(expected lines like \"gpt-4o\" = {{ input = 2.5, output = 10 }}, \
                     USD per million tokens)",
                    path.display(),
                    e.to_string().trim_end()
                )
            })?
        };
        for (name, p) in &by_name {
            if !(p.input.is_finite() && p.output.is_finite() && p.input >= 0.0 && p.output >= 0.0) {
                bail!(
                    "{}: the price of {name} is not a positive number",
                    path.display()
                );
            }
        }
        Ok(Prices { by_name })
    }

    fn parse_csv(text: &str, path: &Path) -> Result<HashMap<String, Price>> {
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = r
            .headers()
            .with_context(|| format!("{}: no header row", path.display()))?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        if header != ["model", "input", "output"] {
            bail!(
                "{}: the columns must be model,input,output (USD per million tokens); found {}",
                path.display(),
                header.join(",")
            );
        }
        let mut out = HashMap::new();
        for rec in r.records() {
            let rec = rec.with_context(|| format!("reading {}", path.display()))?;
            let line = rec.position().map_or(0, csv::Position::line);
            let num = |i: usize| -> Result<f64> {
                rec[i].trim().parse::<f64>().map_err(|_| {
                    anyhow!(
                        "{} line {line}: {} {:?} is not a number",
                        path.display(),
                        header[i],
                        &rec[i]
                    )
                })
            };
            out.insert(
                rec[0].trim().to_owned(),
                Price {
                    input: num(1)?,
                    output: num(2)?,
                },
            );
        }
        Ok(out)
    }

    /// Add a price the provider reported, unless the file gave one.
    pub(crate) fn learn(&mut self, provider: &str, model: &str, price: Price) {
        self.by_name
            .entry(format!("{provider}/{model}"))
            .or_insert(price);
    }

    /// The price of `model` at `provider`: `provider/model`, else `model`; the local providers
    /// cost nothing unless priced.
    pub(crate) fn get(&self, provider: &str, model: &str) -> Option<Price> {
        self.by_name
            .get(&format!("{provider}/{model}"))
            .or_else(|| self.by_name.get(model))
            .copied()
            .or_else(|| {
                FREE.contains(&provider).then_some(Price {
                    input: 0.0,
                    output: 0.0,
                })
            })
    }

    /// Whether the user gave this model a price (free providers count as priced).
    pub(crate) fn known(&self, provider: &str, model: &str) -> bool {
        self.get(provider, model).is_some()
    }
}

/// What a batch answer costs, as a share of the same answer online (`--batch`): OpenAI and
/// Anthropic both sell batches at half the price.
pub(crate) const BATCH_DISCOUNT: f64 = 0.5;

/// `price` at the batch discount.
pub(crate) fn batch_price(price: Price) -> Price {
    Price {
        input: price.input * BATCH_DISCOUNT,
        output: price.output * BATCH_DISCOUNT,
    }
}

/// The vendors' list prices (USD per million tokens, standard tier, as published in 2025; Gemini
/// 2.5 Pro's for prompts up to 200k tokens), matched as [`list_price`] says. `--prices`
/// overrides them; a price change at a vendor is one line.
const LIST_PRICES: &[(&str, &str, f64, f64)] = &[
    ("openai", "gpt-5", 1.25, 10.0),
    ("openai", "gpt-5-mini", 0.25, 2.0),
    ("openai", "gpt-5-nano", 0.05, 0.40),
    ("openai", "gpt-4.1", 2.0, 8.0),
    ("openai", "gpt-4.1-mini", 0.40, 1.60),
    ("openai", "gpt-4.1-nano", 0.10, 0.40),
    ("openai", "gpt-4o", 2.50, 10.0),
    ("openai", "gpt-4o-mini", 0.15, 0.60),
    ("openai", "gpt-5-pro", 15.0, 120.0),
    ("openai", "o1", 15.0, 60.0),
    ("openai", "o1-mini", 1.10, 4.40),
    ("openai", "o1-pro", 150.0, 600.0),
    ("openai", "o3", 2.0, 8.0),
    ("openai", "o3-mini", 1.10, 4.40),
    ("openai", "o3-pro", 20.0, 80.0),
    ("openai", "o3-deep-research", 10.0, 40.0),
    ("openai", "o4-mini-deep-research", 2.0, 8.0),
    ("openai", "o4-mini", 1.10, 4.40),
    ("anthropic", "claude-opus-4-5", 5.0, 25.0),
    ("anthropic", "claude-opus-4", 15.0, 75.0),
    ("anthropic", "claude-3-opus", 15.0, 75.0),
    ("anthropic", "claude-sonnet-4", 3.0, 15.0),
    ("anthropic", "claude-3-7-sonnet", 3.0, 15.0),
    ("anthropic", "claude-3-5-sonnet", 3.0, 15.0),
    ("anthropic", "claude-haiku-4-5", 1.0, 5.0),
    ("anthropic", "claude-3-5-haiku", 0.80, 4.0),
    ("anthropic", "claude-3-haiku", 0.25, 1.25),
    ("gemini", "gemini-2.5-pro", 1.25, 10.0),
    ("gemini", "gemini-2.5-flash", 0.30, 2.50),
    ("gemini", "gemini-2.5-flash-lite", 0.10, 0.40),
    ("gemini", "gemini-2.0-flash", 0.10, 0.40),
    ("gemini", "gemini-2.0-flash-lite", 0.075, 0.30),
];

/// `model`'s list price at `provider` (see [`LIST_PRICES`]): its own line, or that of the name
/// it extends with a version or date (`-20250929`, `-2024-08-06`, `-5`, `-latest`). A name that
/// extends another with a word (`o1-pro`, `gpt-4o-mini`) is another model: its own line or none.
pub(crate) fn list_price(provider: &str, model: &str) -> Option<Price> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let extends = |base: &str| {
        model.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest == "-latest"
                || rest
                    .strip_prefix('-')
                    .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
    };
    LIST_PRICES
        .iter()
        .filter(|(p, m, ..)| *p == provider && extends(m))
        .max_by_key(|(_, m, ..)| m.len())
        .map(|&(_, _, input, output)| Price { input, output })
}

/// `--max-cost`: the spent total and what the requests in flight may add.
#[derive(Debug)]
pub(crate) struct Budget {
    max: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    spent: f64,
    reserved: f64,
    /// Output tokens of the answers so far, to estimate the next.
    outputs: (u64, u64),
    /// Whether a request was refused: the budget is spent.
    stopped: bool,
}

/// A request's share of the budget while it is in flight.
#[derive(Debug)]
pub(crate) struct Reservation {
    amount: f64,
}

impl Budget {
    pub(crate) fn new(max: f64) -> Self {
        Budget {
            max,
            state: Mutex::new(BudgetState::default()),
        }
    }

    pub(crate) fn max(&self) -> f64 {
        self.max
    }

    /// What a request may cost: its prompt, and as many output tokens as `max_tokens` allows,
    /// else the mean of the answers so far, else as many as the prompt has.
    pub(crate) fn estimate(&self, price: Price, input: u64, max_tokens: Option<u64>) -> f64 {
        let s = self.state.lock().expect("budget");
        let output = max_tokens.unwrap_or_else(|| {
            if s.outputs.1 > 0 {
                s.outputs.0.div_ceil(s.outputs.1)
            } else {
                input
            }
        });
        price.cost(input, output)
    }

    /// Hold `estimate` for a request, or `None` when the spent total, what is in flight and it
    /// would pass the budget (from then on every request is refused: the sweep stops).
    pub(crate) fn reserve(&self, estimate: f64) -> Option<Reservation> {
        let mut s = self.state.lock().expect("budget");
        if s.stopped || s.spent + s.reserved + estimate > self.max {
            s.stopped = true;
            return None;
        }
        s.reserved += estimate;
        Some(Reservation { amount: estimate })
    }

    /// Hold what a request of `input` tokens (answered in at most `max_tokens`) may cost at
    /// `price`, or say why it is not sent.
    pub(crate) fn hold(
        &self,
        price: Price,
        input: u64,
        max_tokens: Option<u64>,
    ) -> Result<Reservation, String> {
        self.reserve(self.estimate(price, input, max_tokens))
            .ok_or_else(|| {
                format!(
                    "not sent: the budget (--max-cost {}) is spent",
                    fmt_usd(self.max)
                )
            })
    }

    /// What a request sent before this run (a batch recorded by an earlier run) cost: spent,
    /// never refused.
    pub(crate) fn charge(&self, cost: f64) {
        self.state.lock().expect("budget").spent += cost;
    }

    /// A request ended: its estimate is released, and what it cost (if it was answered) spent.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "taken by value so that a reservation is settled once"
    )]
    pub(crate) fn settle(&self, r: Reservation, cost: Option<f64>, output_tokens: Option<u64>) {
        let mut s = self.state.lock().expect("budget");
        s.reserved = (s.reserved - r.amount).max(0.0);
        s.spent += cost.unwrap_or(0.0);
        if let Some(n) = output_tokens {
            s.outputs.0 += n;
            s.outputs.1 += 1;
        }
    }

    /// What was spent, and whether the budget stopped the sweep.
    pub(crate) fn outcome(&self) -> (f64, bool) {
        let s = self.state.lock().expect("budget");
        (s.spent, s.stopped)
    }
}

/// `$0.0123`: enough digits for a cent's fraction.
pub(crate) fn fmt_usd(x: f64) -> String {
    if x == 0.0 {
        "$0".to_owned()
    } else if x < 0.01 {
        format!("${x:.6}")
    } else {
        format!("${x:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_come_from_toml_or_csv_and_local_providers_are_free() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("prices.toml");
        std::fs::write(
            &toml,
            "\"gpt-4o\" = { input = 2.5, output = 10 }\n\"openrouter/x/y\" = { input = 1, output = 2 }\n",
        )
        .unwrap();
        let p = Prices::load(&toml).unwrap();
        let price = |input: f64, output: f64| Some(Price { input, output });
        assert_eq!(p.get("openai", "gpt-4o"), price(2.5, 10.0));
        assert_eq!(p.get("openrouter", "x/y"), price(1.0, 2.0));
        assert_eq!(p.get("openai", "x/y"), None);
        assert_eq!(p.get("ollama", "llama3"), price(0.0, 0.0));
        let cost = p.get("openai", "gpt-4o").unwrap().cost(1000, 500);
        assert!((cost - 0.0075).abs() < 1e-12, "{cost}");

        let csv = dir.path().join("prices.csv");
        std::fs::write(&csv, "model,input,output\ngpt-4o,2.5,10\nbad,x,1\n").unwrap();
        let e = Prices::load(&csv).unwrap_err().to_string();
        assert!(
            e.ends_with("prices.csv line 3: input \"x\" is not a number"),
            "{e}"
        );
        std::fs::write(&toml, "gpt = 3\n").unwrap();
        let e = Prices::load(&toml).unwrap_err().to_string();
        assert!(e.contains("expected lines like"), "{e}");
    }

    #[test]
    fn list_prices_match_the_longest_name() {
        let p = |provider, model| list_price(provider, model).map(|p| (p.input, p.output));
        assert_eq!(p("openai", "gpt-4o-2024-08-06"), Some((2.5, 10.0)));
        assert_eq!(p("openai", "gpt-4o-mini"), Some((0.15, 0.60)));
        assert_eq!(
            p("anthropic", "claude-sonnet-4-5-20250929"),
            Some((3.0, 15.0))
        );
        assert_eq!(
            p("gemini", "models/gemini-2.5-flash-lite"),
            Some((0.10, 0.40))
        );
        assert_eq!(p("openrouter", "gpt-4o"), None, "OpenRouter says its own");
        assert_eq!(
            p("anthropic", "claude-opus-4-1-20250805"),
            Some((15.0, 75.0))
        );
        assert_eq!(p("anthropic", "claude-opus-4-5"), Some((5.0, 25.0)));
        assert_eq!(p("anthropic", "claude-unknown"), None);
        // A word after the name is another model, priced on its own line or not at all.
        assert_eq!(p("openai", "o1-pro"), Some((150.0, 600.0)));
        assert_eq!(p("openai", "o3-pro-2025-06-10"), Some((20.0, 80.0)));
        assert_eq!(p("openai", "gpt-4o-audio-preview"), None);
        assert_eq!(
            p("anthropic", "claude-3-5-sonnet-latest"),
            Some((3.0, 15.0))
        );
    }

    #[test]
    fn the_budget_counts_what_is_in_flight_and_stops_for_good() {
        let b = Budget::new(1.0);
        let one = b.reserve(0.6).unwrap();
        assert!(b.reserve(0.5).is_none(), "0.6 in flight + 0.5 > 1");
        assert!(b.reserve(0.1).is_none(), "once stopped, stopped");
        b.settle(one, Some(0.3), Some(10));
        let (spent, stopped) = b.outcome();
        assert!((spent - 0.3).abs() < 1e-12 && stopped);
        let price = Price {
            input: 1.0,
            output: 1.0,
        };
        assert!((b.estimate(price, 1_000_000, None) - 1.00001).abs() < 1e-9);
        assert!((b.estimate(price, 0, Some(500_000)) - 0.5).abs() < 1e-9);
    }
}
