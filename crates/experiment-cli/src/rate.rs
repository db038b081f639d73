//! Rate limits: requests and tokens per minute per provider (`--rate openai=500rpm,200000tpm`),
//! and what the server says of its own limits (`x-ratelimit-remaining-*`,
//! `x-ratelimit-reset-*`), so a sweep slows down before the server answers 429, not after.
//!
//! Each provider has a [`Pacer`]. Requests per minute are spaced evenly (the next may start
//! `60 s / rpm` after the last: 100 requests at 600 rpm take about ten seconds), tokens per
//! minute likewise by each prompt's estimate. The server's word goes on top: once it said how
//! many requests (or tokens) remain until its window resets, no more than that start before the
//! reset, counting those already in flight as spent. Until the first answer of a provider
//! arrives only one request is sent to it (there is nothing to go by before), unless `--rate`
//! gives its pace.
//!
//! Hand-written rather than `governor`: one schedule has to combine two even rates with a
//! window the server moves with every answer, and wait on a cancel token; a GCRA crate covers
//! only the first part.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use fanout::{CancelToken, TaskError};

/// `--rate NAME=500rpm,200000tpm`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Rate {
    pub(crate) rpm: Option<f64>,
    pub(crate) tpm: Option<f64>,
}

/// `NAME=500rpm,200000tpm` (either part, in any order).
pub(crate) fn parse_rate(s: &str) -> Result<(String, Rate), String> {
    let (name, spec) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=RATE (e.g. openai=500rpm,200000tpm)"))?;
    let mut rate = Rate::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        // Bounds a pacer can keep: at least one request per 100 minutes, or a token a minute.
        let (number, slot, range) = if let Some(n) = lower.strip_suffix("rpm") {
            (n, &mut rate.rpm, (0.01, 1e9))
        } else if let Some(n) = lower.strip_suffix("tpm") {
            (n, &mut rate.tpm, (1.0, 1e12))
        } else {
            return Err(format!(
                "{s:?}: {part:?} is neither requests (500rpm) nor tokens (200000tpm) per minute"
            ));
        };
        let n: f64 = number
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{s:?}: {part:?} is not a number per minute"))?;
        if !(n.is_finite() && n > 0.0) {
            return Err(format!("{s:?}: {part:?} must be above 0"));
        }
        if !(range.0..=range.1).contains(&n) {
            return Err(format!(
                "{s:?}: {part:?} is out of range: between {} and {} per minute",
                range.0, range.1
            ));
        }
        *slot = Some(n);
    }
    if rate == Rate::default() {
        return Err(format!("{s:?}: give rpm, tpm or both (e.g. openai=500rpm)"));
    }
    Ok((name.trim().to_owned(), rate))
}

/// What a server said of its limits in one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ServerWord {
    requests: Option<(u64, Duration)>,
    tokens: Option<(u64, Duration)>,
    /// `x-ratelimit-limit-requests`: what a new window allows.
    request_limit: Option<u64>,
}

impl ServerWord {
    /// From the headers of an answer (`None` when it has none of them): OpenAI's
    /// `x-ratelimit-{remaining,reset,limit}-{requests,tokens}` (resets as durations, `6m0s`),
    /// else Anthropic's `anthropic-ratelimit-{requests,tokens}-{remaining,reset,limit}` (resets
    /// as RFC 3339 instants).
    pub(crate) fn from_headers(h: &ureq::http::HeaderMap) -> Option<Self> {
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| get(name).and_then(|v| v.trim().parse::<u64>().ok());
        let openai = |what: &str| -> Option<(u64, Duration)> {
            let remaining = number(&format!("x-ratelimit-remaining-{what}"))?;
            let reset = get(&format!("x-ratelimit-reset-{what}"))
                .and_then(parse_reset)
                .unwrap_or(Duration::from_secs(1));
            Some((remaining, reset))
        };
        let anthropic = |what: &str| -> Option<(u64, Duration)> {
            let remaining = number(&format!("anthropic-ratelimit-{what}-remaining"))?;
            let reset = get(&format!("anthropic-ratelimit-{what}-reset"))
                .and_then(parse_instant)
                .unwrap_or(Duration::from_secs(1));
            Some((remaining, reset))
        };
        let word = ServerWord {
            requests: openai("requests").or_else(|| anthropic("requests")),
            tokens: openai("tokens").or_else(|| anthropic("tokens")),
            request_limit: number("x-ratelimit-limit-requests")
                .or_else(|| number("anthropic-ratelimit-requests-limit")),
        };
        (word != ServerWord::default()).then_some(word)
    }
}

/// How long until an RFC 3339 instant (`2026-12-04T12:00:05Z`), as Anthropic writes its resets:
/// zero when it has passed, capped at an hour.
pub(crate) fn parse_instant(s: &str) -> Option<Duration> {
    let at = humantime::parse_rfc3339_weak(s.trim()).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(3600)),
    )
}

/// A reset time as OpenAI and its imitators write it: `1s`, `6m0s`, `20ms`, `1h2m3.5s`, or
/// plain seconds. Capped at an hour.
pub(crate) fn parse_reset(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += n * unit;
        rest = &rest[len..];
    }
    Some(Duration::from_secs_f64(total.min(3600.0)))
}

/// One provider's schedule.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: Rate,
    state: Mutex<PacerState>,
    changed: Condvar,
}

#[derive(Debug)]
struct PacerState {
    /// When the next request may start, by the request rate and by the token rate.
    next_request: Instant,
    next_tokens: Instant,
    /// What the server allows until its window resets: (remaining, reset at).
    requests_left: Option<(u64, Instant)>,
    tokens_left: Option<(u64, Instant)>,
    /// What the server's window allows, once it said.
    request_limit: Option<u64>,
    /// `requests_left` is our guess for a new window: the next answer replaces it.
    fresh: bool,
    in_flight: u64,
    /// Whether an answer arrived yet: until then, one request at a time.
    heard: bool,
}

/// A request's place in the schedule; dropping it marks the request done.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    pacer: &'a Pacer,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.pacer.state.lock().expect("pacer");
        s.in_flight -= 1;
        // A request that ended without an answer (an error) still tells us the server is
        // there: do not hold the others back for ever.
        s.heard = true;
        drop(s);
        self.pacer.changed.notify_all();
    }
}

/// How often a waiting request looks at its cancel token.
const POLL: Duration = Duration::from_millis(50);

impl Pacer {
    /// `first_alone`: until the first answer, one request at a time (a remote server whose
    /// limits are not known yet); a `--rate` pace lifts it.
    pub(crate) fn new(rate: Rate, first_alone: bool) -> Self {
        let now = Instant::now();
        Pacer {
            rate,
            state: Mutex::new(PacerState {
                next_request: now,
                next_tokens: now,
                requests_left: None,
                tokens_left: None,
                request_limit: None,
                fresh: false,
                in_flight: 0,
                // A pace given by the user governs the first requests too; without one, the
                // first answer of a remote server is waited for.
                heard: !first_alone || rate != Rate::default(),
            }),
            changed: Condvar::new(),
        }
    }

    /// Wait for the turn of a request of about `tokens` prompt tokens; `Cancelled` if the run
    /// is cancelled while waiting.
    pub(crate) fn acquire(
        &self,
        tokens: u64,
        cancel: &CancelToken,
    ) -> Result<Permit<'_>, TaskError> {
        let mut s = self.state.lock().expect("pacer");
        loop {
            if cancel.is_cancelled() {
                return Err(TaskError::Cancelled);
            }
            let now = Instant::now();
            if s.tokens_left.is_some_and(|(_, reset)| reset <= now) {
                s.tokens_left = None;
            }
            if s.requests_left.is_some_and(|(_, reset)| reset <= now) {
                // A new window: what the server said it allows until its next answer says
                // more (a minute at most), else one request to hear from it again.
                s.requests_left = s.request_limit.map(|l| (l, now + Duration::from_secs(60)));
                s.fresh = true;
                s.heard = s.request_limit.is_some();
            }
            let mut start = now.max(s.next_request).max(s.next_tokens);
            if let Some((0, reset)) = s.requests_left {
                start = start.max(reset);
            }
            if let Some((left, reset)) = s.tokens_left
                && left < tokens
            {
                start = start.max(reset);
            }
            let probing = !s.heard && s.in_flight > 0;
            if start <= now && !probing {
                break;
            }
            let wait = if probing {
                POLL
            } else {
                (start - now).min(POLL)
            };
            s = self.changed.wait_timeout(s, wait).expect("pacer").0;
        }
        let now = Instant::now();
        // Rates are bounded when parsed; a wait is capped anyway, never a panic.
        let wait = |secs: f64| Duration::try_from_secs_f64(secs.min(86_400.0)).unwrap_or_default();
        if let Some(rpm) = self.rate.rpm {
            s.next_request = now + wait(60.0 / rpm);
        }
        if let Some(tpm) = self.rate.tpm {
            s.next_tokens = now + wait(tokens as f64 * 60.0 / tpm);
        }
        if let Some((left, _)) = &mut s.requests_left {
            *left = left.saturating_sub(1);
        }
        if let Some((left, _)) = &mut s.tokens_left {
            *left = left.saturating_sub(tokens);
        }
        s.in_flight += 1;
        Ok(Permit { pacer: self })
    }

    /// An answer arrived with what the server says of its limits. The requests still in flight
    /// (the one that answered aside) are counted as spent: the server may not have seen them.
    pub(crate) fn heard(&self, word: Option<ServerWord>) {
        let mut s = self.state.lock().expect("pacer");
        s.heard = true;
        if let Some(w) = word {
            let now = Instant::now();
            let others = s.in_flight.saturating_sub(1);
            if w.request_limit.is_some() {
                s.request_limit = w.request_limit;
            }
            if let Some((left, reset)) = w.requests {
                let known = if s.fresh { None } else { s.requests_left };
                s.requests_left = Some(merge(known, left.saturating_sub(others), now, reset));
                s.fresh = false;
            }
            if let Some((left, reset)) = w.tokens {
                s.tokens_left = Some(merge(s.tokens_left, left, now, reset));
            }
        }
        drop(s);
        self.changed.notify_all();
    }
}

/// What remains of a server's window after an answer said `left` until `reset` from `now`.
/// Answers arrive out of order: within the window already known, the smallest count wins (an
/// older answer never gives back what a newer one took); a reset past the known one is a new
/// window, and its count is taken as said.
fn merge(
    known: Option<(u64, Instant)>,
    left: u64,
    now: Instant,
    reset: Duration,
) -> (u64, Instant) {
    let at = now + reset;
    match known {
        Some((k, known_at)) if known_at > now && at <= known_at + WINDOW_SLACK => {
            (k.min(left), known_at)
        }
        _ => (left, at),
    }
}

/// How much later than the known reset an answer's reset may be and still be the same window
/// (the time between two answers of one window).
const WINDOW_SLACK: Duration = Duration::from_millis(250);

/// The pacers of a run, by provider.
#[derive(Debug, Default)]
pub(crate) struct Pacers(HashMap<String, Pacer>);

impl Pacers {
    /// A pacer for each provider in `names`, with its `--rate` if given; `remote` tells the
    /// providers whose servers may speak of their limits (their first request goes alone).
    pub(crate) fn new(
        names: &[&str],
        rates: &[(String, Rate)],
        remote: impl Fn(&str) -> bool,
    ) -> Self {
        Pacers(
            names
                .iter()
                .map(|n| {
                    let rate = rates
                        .iter()
                        .rev()
                        .find(|(name, _)| name == n)
                        .map(|(_, r)| *r)
                        .unwrap_or_default();
                    ((*n).to_owned(), Pacer::new(rate, remote(n)))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, provider: &str) -> Option<&Pacer> {
        self.0.get(provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_rate("openai=500rpm,200_000tpm").unwrap(),
            (
                "openai".to_owned(),
                Rate {
                    rpm: Some(500.0),
                    tpm: Some(200_000.0)
                }
            )
        );
        assert_eq!(parse_rate("mock=60RPM").unwrap().1.rpm, Some(60.0));
        assert!(
            parse_rate("openai")
                .unwrap_err()
                .contains("is not NAME=RATE")
        );
        assert!(
            parse_rate("openai=5rps")
                .unwrap_err()
                .contains("neither requests")
        );
        assert!(parse_rate("openai=0rpm").unwrap_err().contains("above 0"));
        // Issue 27: absurd rates once panicked a pacer (and poisoned its lock).
        for absurd in ["mock=1e-20rpm", "mock=1e300rpm", "mock=0.5tpm"] {
            assert!(
                parse_rate(absurd).unwrap_err().contains("is out of range"),
                "{absurd}"
            );
        }
        assert!(
            parse_rate("openai=")
                .unwrap_err()
                .contains("give rpm, tpm or both")
        );
    }

    #[test]
    fn anthropic_headers_are_read_as_openai_ones() {
        let mut h = ureq::http::HeaderMap::new();
        let at = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + Duration::from_secs(20),
        )
        .to_string();
        h.insert("anthropic-ratelimit-requests-limit", "50".parse().unwrap());
        h.insert(
            "anthropic-ratelimit-requests-remaining",
            "3".parse().unwrap(),
        );
        h.insert("anthropic-ratelimit-requests-reset", at.parse().unwrap());
        let w = ServerWord::from_headers(&h).unwrap();
        assert_eq!(w.request_limit, Some(50));
        let (remaining, reset) = w.requests.unwrap();
        assert_eq!(remaining, 3);
        assert!(
            reset > Duration::from_secs(15) && reset <= Duration::from_secs(20),
            "{reset:?}"
        );
        assert_eq!(w.tokens, None);
        assert_eq!(
            ServerWord::from_headers(&ureq::http::HeaderMap::new()),
            None
        );
    }

    #[test]
    fn reset_times_read_like_openai_writes_them() {
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_reset("2h"), Some(Duration::from_secs(3600)), "capped");
        assert_eq!(parse_reset("soon"), None);
        let soon = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + Duration::from_secs(30),
        )
        .to_string();
        let d = parse_instant(&soon).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_instant("2020-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert_eq!(parse_instant("tomorrow"), None);
        assert_eq!(parse_reset("5x"), None);
    }

    #[test]
    fn requests_are_spaced_and_the_server_word_holds_them() {
        let cancel = CancelToken::new();
        let p = Pacer::new(
            Rate {
                rpm: Some(60_000.0),
                tpm: None,
            },
            true,
        );
        let t0 = Instant::now();
        for _ in 0..5 {
            let permit = p.acquire(1, &cancel).unwrap();
            p.heard(None);
            drop(permit);
        }
        assert!(t0.elapsed() >= Duration::from_millis(4), "1 ms apart");

        // The server says no request remains for 200 ms.
        let p = Pacer::new(Rate::default(), true);
        let permit = p.acquire(1, &cancel).unwrap();
        p.heard(Some(ServerWord {
            requests: Some((0, Duration::from_millis(200))),
            tokens: None,
            request_limit: None,
        }));
        drop(permit);
        let t0 = Instant::now();
        drop(p.acquire(1, &cancel).unwrap());
        assert!(
            t0.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t0.elapsed()
        );
    }
}
