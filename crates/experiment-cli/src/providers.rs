//! Providers: where a rendered prompt goes. All HTTP goes through one shared `ureq` agent
//! (connection pooling); errors are mapped once, here, to what a user can act on and to whether
//! the core's retry policy should try again.

mod command;
mod mock;
mod ollama;
mod openai;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, bail};
use fanout::{CancelToken, TaskError};

pub(crate) use command::CommandProvider;

use crate::rate::{Pacers, ServerWord};
use crate::settings::Settings;

/// The provider names, as written in the experiments file.
pub(crate) const KNOWN: &[&str] = &["mock", "ollama", "openrouter", "openai", "command"];

/// Whether a provider's server may tell its rate limits in its answers' headers (hosted APIs
/// and the servers that imitate them): its first request then goes alone.
pub(crate) fn tells_rate_limits(provider: &str) -> bool {
    matches!(provider, "openai" | "openrouter")
}

/// Default limit of requests in flight per provider (`--provider-limit NAME=N` overrides).
pub(crate) fn default_limit(provider: &str, max_workers: usize) -> usize {
    match provider {
        "openrouter" | "openai" => 10,
        "ollama" => 1,
        "mock" => 50,
        _ => max_workers,
    }
}

/// What a model answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) text: String,
    /// Token counts as the provider reported them, if it did.
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
}

/// A model served by a provider.
#[derive(Debug, Clone)]
pub(crate) struct ModelInfo {
    pub(crate) name: String,
    pub(crate) context_window: Option<u64>,
    /// USD per million tokens, when the provider says (OpenRouter).
    pub(crate) price: Option<crate::cost::Price>,
}

/// What is sent for one experiment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) model: &'a str,
    /// The rendered prompt (empty for the command provider, which renders its own).
    pub(crate) prompt: &'a str,
    /// The row's variables.
    pub(crate) vars: &'a [(String, String)],
    /// Request parameters (`temperature`...), sent as the provider's API names them.
    pub(crate) params: &'a [(String, serde_json::Value)],
    /// With `--repeat`: which send of the same request this is (1 to N); its answer is kept
    /// apart from the others' in the cache.
    pub(crate) repeat: u32,
}

pub(crate) trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    /// Settings shown by `parallamr providers`.
    fn settings(&self) -> String;
    fn generate(&self, req: &Request<'_>, cancel: &CancelToken) -> Result<Answer, TaskError>;
    /// What `--dry-run` shows of a request: the prompt (the command provider: its command).
    fn preview(&self, req: &Request<'_>) -> Result<String, String> {
        Ok(req.prompt.to_owned())
    }
    /// The model's context window in tokens, when the provider says.
    fn context_window(&self, model: &str) -> Result<Option<u64>, TaskError>;
    /// Where requests go, as part of the response cache's key; `None`: answers are not cached
    /// (a command's output may depend on more than its inputs, and running it may be the point).
    fn cache_endpoint(&self) -> Option<String>;
    fn models(&self) -> Result<Vec<ModelInfo>, TaskError>;
    /// The model's price, when the provider publishes it (OpenRouter's `/models`).
    fn price(&self, _model: &str) -> Option<crate::cost::Price> {
        None
    }
}

/// How long a connection may take to open (at most half of `--timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a request in flight looks at its cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Settings shared by every HTTP provider.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    pub(crate) agent: ureq::Agent,
    /// Told what each answer's headers say of the server's rate limits.
    pacers: std::sync::Arc<Pacers>,
}

impl Http {
    pub(crate) fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // A connection that is never accepted (a dropped packet, a dead host) should cost
            // seconds and a retry, not the whole --timeout. At most half of it: were the two
            // equal, the global timer would fire first and a connect that hung would read as a
            // server that did not answer (not retried).
            .timeout_connect(Some((timeout / 2).min(CONNECT_TIMEOUT)))
            // We read error bodies ourselves: they carry the server's explanation.
            .http_status_as_error(false)
            .build()
            .into();
        Http {
            agent,
            pacers: std::sync::Arc::default(),
        }
    }

    /// The same, telling `pacers` what the servers say of their limits.
    pub(crate) fn with_pacers(self, pacers: std::sync::Arc<Pacers>) -> Self {
        Http { pacers, ..self }
    }

    pub(crate) fn pacers(&self) -> &Pacers {
        &self.pacers
    }
}

/// Make every provider the experiments need. Missing API keys for public endpoints are
/// configuration errors, raised before anything runs.
pub(crate) fn build(
    names: &[&str],
    http: &Http,
    command: Option<&CommandProvider>,
    settings: &Settings,
) -> Result<HashMap<String, Box<dyn Provider>>> {
    let mut out: HashMap<String, Box<dyn Provider>> = HashMap::new();
    for &name in names {
        let provider: Box<dyn Provider> = match name {
            "mock" => Box::new(mock::Mock),
            "ollama" => Box::new(ollama::Ollama::from_env(http.clone(), settings)),
            "openai" => Box::new(openai::OpenAi::from_env(
                openai::Flavor::OpenAi,
                http.clone(),
                settings,
            )?),
            "openrouter" => Box::new(openai::OpenAi::from_env(
                openai::Flavor::OpenRouter,
                http.clone(),
                settings,
            )?),
            "command" => match command {
                Some(c) => Box::new(c.clone()),
                None => bail!(
                    "the experiments use the command provider, but no --command was given \
                     (e.g. --command 'python train.py --lr {{{{lr}}}}')"
                ),
            },
            other => bail!(
                "unknown provider {other:?}; the known providers: {}",
                KNOWN.join(", ")
            ),
        };
        out.insert(name.to_owned(), provider);
    }
    Ok(out)
}

/// One provider by name, for `parallamr models`.
pub(crate) fn one(name: &str, http: &Http, settings: &Settings) -> Result<Box<dyn Provider>> {
    if name == "command" {
        bail!("the command provider runs programs; it serves no models");
    }
    let mut all = build(&[name], http, None, settings)?;
    Ok(all.remove(name).expect("built"))
}

/// A JSON request to `url`; maps the transport and HTTP status to what the run should do.
pub(crate) fn post_json(
    http: &Http,
    provider: &str,
    url: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> Result<serde_json::Value, TaskError> {
    let mut req = http
        .agent
        .post(url)
        .header("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let resp = req.send(body.to_string().as_bytes());
    read_json(http, provider, url, resp)
}

/// [`post_json`] that gives up at once when `cancel` fires (Ctrl-C): the request goes on a
/// thread of its own, which finishes (or times out) unobserved. Without this the first Ctrl-C
/// waited for every request in flight, up to `--timeout`.
pub(crate) fn post_json_cancellable(
    http: &Http,
    provider: &'static str,
    url: &str,
    key: Option<&str>,
    body: &serde_json::Value,
    cancel: &fanout::CancelToken,
) -> Result<serde_json::Value, TaskError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (http, url, key, body) = (
        http.clone(),
        url.to_owned(),
        key.map(str::to_owned),
        body.clone(),
    );
    std::thread::Builder::new()
        .name("parallamr-request".to_owned())
        .spawn(move || {
            let _ = tx.send(post_json(&http, provider, &url, key.as_deref(), &body));
        })
        .map_err(|e| TaskError::failed(format!("could not start a request: {e}")))?;
    loop {
        match rx.recv_timeout(CANCEL_POLL) {
            Ok(result) => return result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if cancel.is_cancelled() => {
                return Err(TaskError::Cancelled);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(TaskError::failed(
                    "the request's thread ended without an answer",
                ));
            }
        }
    }
}

/// `url` with any `user:password@` replaced by `***@`, for messages that end up in results
/// files and reports.
pub(crate) fn redact(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]).into(),
        None => url.into(),
    }
}

/// A `Retry-After` value: seconds (`120`, even `1.5`) or an HTTP date; capped at a day (the
/// retry policy caps it further), never negative.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(86_400)),
    )
}

pub(crate) fn get_json(
    http: &Http,
    provider: &str,
    url: &str,
    key: Option<&str>,
) -> Result<serde_json::Value, TaskError> {
    let mut req = http.agent.get(url);
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    read_json(http, provider, url, req.call())
}

fn read_json(
    http: &Http,
    provider: &str,
    url: &str,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<serde_json::Value, TaskError> {
    let url = &*redact(url);
    let mut resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Timeout(ureq::Timeout::Connect)) => {
            // Maybe a dropped packet: worth another try.
            return Err(TaskError::retryable(format!(
                "{provider} at {url} did not accept a connection in time"
            )));
        }
        Err(ureq::Error::Timeout(_)) => {
            return Err(TaskError::failed(format!(
                "{provider} at {url} did not answer in time"
            )));
        }
        Err(
            e @ (ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound),
        ) => {
            // A server that is down or restarting may be back soon: retry, then say so.
            return Err(TaskError::retryable(format!(
                "{provider} at {url} is unreachable: {e}"
            )));
        }
        Err(e) => {
            return Err(TaskError::failed(format!(
                "request to {provider} at {url} failed: {e}"
            )));
        }
    };
    // Only an answer that speaks of limits counts: `/models` without them says nothing of how
    // many generations the server takes (the first generation's end lets the rest go).
    if let Some(p) = http.pacers.get(provider)
        && let Some(word) = ServerWord::from_headers(resp.headers())
    {
        p.heard(Some(word));
    }
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    let says = || server_message(&body);
    match status {
        200..=299 => serde_json::from_str(&body).map_err(|e| {
            TaskError::failed(format!("malformed answer from {provider}: {e}"))
                .with_detail(body.chars().take(500).collect::<String>())
        }),
        429 | 502 | 503 | 504 => {
            let e = TaskError::retryable(format!("{provider} answered {status}{}", says()));
            Err(match retry_after {
                Some(d) => e.with_retry_after(d),
                None => e,
            })
        }
        401 | 403 => Err(TaskError::failed(format!(
            "{provider} refused the credentials ({status}){}; check the API key",
            says()
        ))),
        404 => Err(TaskError::failed(format!(
            "{provider}: not found (404){}",
            says()
        ))),
        _ => Err(TaskError::failed(format!(
            "{provider} answered {status}{}",
            says()
        ))),
    }
}

/// `: <message>` from an error body (`{"error": "..."}` or `{"error": {"message": "..."}}`).
fn server_message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let msg = v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .map_or_else(|| body.trim().chars().take(200).collect(), str::to_owned);
    if msg.is_empty() {
        String::new()
    } else {
        format!(": {msg}")
    }
}

/// A per-model cache of context windows (looked up once per run).
#[derive(Debug, Default)]
pub(crate) struct WindowCache(Mutex<HashMap<String, Option<u64>>>);

impl WindowCache {
    pub(crate) fn get_or(
        &self,
        model: &str,
        lookup: impl FnOnce() -> Result<Option<u64>, TaskError>,
    ) -> Result<Option<u64>, TaskError> {
        if let Some(w) = self.0.lock().expect("cache").get(model) {
            return Ok(*w);
        }
        let w = lookup()?;
        self.0.lock().expect("cache").insert(model.to_owned(), w);
        Ok(w)
    }
}

/// Characters / 4: the usual estimate when a provider gives no count.
pub(crate) fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact("http://user:s3cret@host:8080/v1?x=1"),
            "http://***@host:8080/v1?x=1"
        );
        assert_eq!(redact("https://host/v1/a@b"), "https://host/v1/a@b");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date_and_never_panics() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("1e20"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_retry_after("-3"), None);
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: at once"
        );
    }
}
