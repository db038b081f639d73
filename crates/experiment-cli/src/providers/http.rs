//! The HTTP every hosted provider shares: one `ureq` agent (connection pooling), where each API
//! is and the key it takes ([`Endpoint`]), JSON and file requests, and the mapping of transport
//! errors and HTTP statuses to what a run can act on and to whether the core's retry policy
//! should try again (the server's `Retry-After`, Gemini's `RetryInfo`).

use std::time::Duration;

use anyhow::{Result, bail};
use fanout::TaskError;

use crate::rate::{Pacers, ServerWord};
use crate::settings::Settings;

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

/// Where a hosted API is and the key it takes: `KEY_VAR` and `BASE_VAR` from the settings.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The base URL, without a trailing `/`.
    pub(crate) base: String,
    pub(crate) key: Option<String>,
    key_var: &'static str,
    base_var: &'static str,
    /// Where `base` and `key` came from, for `parallamr providers`.
    base_origin: String,
    key_origin: Option<String>,
}

impl Endpoint {
    /// From the settings (the environment, else `.env`). The public endpoint needs a key; a
    /// local server or a gateway usually not.
    pub(crate) fn from_settings(
        provider: &str,
        (key_var, base_var, default_base): (&'static str, &'static str, &str),
        settings: &Settings,
    ) -> Result<Self> {
        let (base, base_origin) = settings.get(base_var).map_or_else(
            || (default_base.to_owned(), "default".to_owned()),
            |(v, o)| (v, o.to_string()),
        );
        let key = settings.get(key_var);
        if key.is_none() && base == default_base {
            bail!(
                "the experiments use {provider}, but {key_var} is not set (set it, in the \
                 environment or a .env file, or point {base_var} at a server that needs no key)"
            );
        }
        Ok(Endpoint {
            base: base.trim_end_matches('/').to_owned(),
            key_var,
            base_var,
            base_origin,
            key_origin: key.as_ref().map(|(_, o)| o.to_string()),
            key: key.map(|(k, _)| k),
        })
    }

    /// `BASE_VAR = URL (origin), KEY_VAR set (origin)`, for `parallamr providers`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} = {} ({}), {} {}",
            self.base_var,
            redact(&self.base),
            self.base_origin,
            self.key_var,
            self.key_origin
                .as_ref()
                .map_or_else(|| "not set".to_owned(), |o| format!("set ({o})"))
        )
    }
}

/// Request headers: credentials and API versions (`Authorization`, `x-api-key`...).
pub(crate) type Headers = Vec<(&'static str, String)>;

/// `Authorization: Bearer KEY`, or nothing without a key.
pub(crate) fn bearer(key: Option<&str>) -> Headers {
    key.map(|k| vec![("Authorization", format!("Bearer {k}"))])
        .unwrap_or_default()
}

/// A JSON request to `url`; maps the transport and HTTP status to what the run should do.
pub(crate) fn post_json(
    http: &Http,
    provider: &str,
    url: &str,
    headers: &Headers,
    body: &serde_json::Value,
) -> Result<serde_json::Value, TaskError> {
    let mut req = http
        .agent
        .post(url)
        .header("Content-Type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, value);
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
    headers: &Headers,
    body: &serde_json::Value,
    cancel: &fanout::CancelToken,
) -> Result<serde_json::Value, TaskError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (http, url, headers, body) = (http.clone(), url.to_owned(), headers.clone(), body.clone());
    std::thread::Builder::new()
        .name("parallamr-request".to_owned())
        .spawn(move || {
            let _ = tx.send(post_json(&http, provider, &url, &headers, &body));
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
    headers: &Headers,
) -> Result<serde_json::Value, TaskError> {
    let mut req = http.agent.get(url);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    read_json(http, provider, url, req.call())
}

fn read_json(
    http: &Http,
    provider: &str,
    url: &str,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<serde_json::Value, TaskError> {
    let body = read_body(http, provider, url, resp, JSON_LIMIT)?;
    serde_json::from_str(&body).map_err(|e| {
        TaskError::failed(format!("malformed answer from {provider}: {e}"))
            .with_detail(body.chars().take(500).collect::<String>())
    })
}

/// The most an answer's body may hold (ureq's default, 10 MB, is for pages, not a model's
/// longest answer), and a batch's results file.
const JSON_LIMIT: u64 = 64 << 20;
const FILE_LIMIT: u64 = 4 << 30;

/// A file's text (a batch's results, JSON Lines): `GET url`, statuses mapped as for JSON.
pub(crate) fn get_text(
    http: &Http,
    provider: &str,
    url: &str,
    headers: &Headers,
) -> Result<String, TaskError> {
    let mut req = http.agent.get(url);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    read_body(http, provider, url, req.call(), FILE_LIMIT)
}

/// `POST url` with a multipart form: `fields` as text and `file` (its name and bytes), as
/// OpenAI's `/files` takes a batch's input.
pub(crate) fn post_file(
    http: &Http,
    provider: &str,
    url: &str,
    headers: &Headers,
    fields: &[(&str, &str)],
    file: (&str, &[u8]),
) -> Result<serde_json::Value, TaskError> {
    use ureq::unversioned::multipart::{Form, Part};
    let mut form = Form::new();
    for (name, value) in fields {
        form = form.text(name, value);
    }
    let form = form.part("file", Part::bytes(file.1).file_name(file.0));
    let mut req = http.agent.post(url);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    read_json(http, provider, url, req.send(form))
}

/// The body of an answer, its status mapped to what the run should do: a 2xx is the body; 429
/// and the gateway errors are retryable (after the server's `Retry-After`); credentials, a
/// missing model and the rest are failures carrying the server's words.
fn read_body(
    http: &Http,
    provider: &str,
    url: &str,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    limit: u64,
) -> Result<String, TaskError> {
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
    let read = resp.body_mut().with_config().limit(limit).read_to_string();
    let body = match read {
        Ok(b) => b,
        Err(e) if (200..300).contains(&status) => {
            return Err(TaskError::retryable(format!(
                "{provider} at {url}: the answer could not be read: {e}"
            )));
        }
        Err(_) => String::new(),
    };
    if (200..300).contains(&status) {
        return Ok(body);
    }
    Err(status_error(provider, status, &body, retry_after))
}

/// What an answer's error status means for the run, with the server's words.
fn status_error(
    provider: &str,
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
) -> TaskError {
    let says = || server_message(body);
    match status {
        // 529: Anthropic's "overloaded".
        429 | 502 | 503 | 504 | 529 => {
            let e = TaskError::retryable(format!("{provider} answered {status}{}", says()));
            // Google says when to come back in the body (`RetryInfo.retryDelay`, `"13s"`).
            match retry_after.or_else(|| retry_delay(body)) {
                Some(d) => e.with_retry_after(d),
                None => e,
            }
        }
        401 | 403 => TaskError::failed(format!(
            "{provider} refused the credentials ({status}){}; check the API key",
            says()
        )),
        404 => TaskError::failed(format!("{provider}: not found (404){}", says())),
        _ => TaskError::failed(format!("{provider} answered {status}{}", says())),
    }
}

/// Gemini's `{"error": {"details": [{"@type": ".../google.rpc.RetryInfo", "retryDelay": "13s"}]}}`.
fn retry_delay(body: &str) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["error"]["details"]
        .as_array()?
        .iter()
        .find_map(|d| d["retryDelay"].as_str())
        .and_then(crate::rate::parse_reset)
}

/// `: <message>` from an error body (`{"error": "..."}` or `{"error": {"message": "..."}}`, the
/// shape of OpenAI's, Anthropic's and Google's errors).
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
    fn gemini_says_when_to_retry_in_the_body() {
        let body = r#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}]}}"#;
        assert_eq!(retry_delay(body), Some(Duration::from_secs(13)));
        assert_eq!(retry_delay("{}"), None);
        assert_eq!(retry_delay("not json"), None);
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
