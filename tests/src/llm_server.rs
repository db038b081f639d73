//! A fake LLM server on 127.0.0.1 for parallamr's tests: the Ollama API (`/api/generate`,
//! `/api/show`, `/api/tags`), the OpenAI-compatible one (`/chat/completions`, `/models`),
//! Anthropic's Messages API (`/v1/messages`, `/v1/models`) and Google's Gemini API
//! (`/v1beta/models/MODEL:generateContent`, `/v1beta/models`). Anthropic's and Gemini's requests
//! are checked as the vendors check them (the key and version headers, the required fields) and
//! answered with the vendors' JSON shapes: answers, usage, errors, and 429s with each vendor's
//! rate-limit headers (Anthropic's `anthropic-ratelimit-*` and `retry-after`, Gemini's
//! `RetryInfo` in the body).
//!
//! A request that asks for structured output (OpenAI's `response_format`, Anthropic's forced
//! tool, Gemini's `responseJsonSchema`, Ollama's `format`) is answered in that form: the model
//! `structured` answers `{"city": "Paris"}`, any other `{"answer": TEXT}`.
//!
//! The model name picks the behaviour: `llama-test` answers after the set latency (as do
//! `structured`, `claude-sonnet-4-5`, `gemini-2.5-flash` and `gpt-4o-mini`, models with list
//! prices); `tiny-ctx`
//! too, with a 40-token context window; `flaky` answers 429 with `Retry-After: 1` the first time
//! it sees a prompt, then normally; `flaky-date` the same with `Retry-After` as an HTTP date two
//! seconds ahead (three, as dates have whole seconds), `flaky-huge` with `Retry-After: 1e20`; `broken` answers 500; `garbled` answers 200 with a body that
//! is not JSON; `sometimes` answers "right" to the first three of every five sends of a
//! prompt and "wrong" to the other two; `judge` is a grader: it answers a JSON verdict, passing
//! when the text after the prompt's `## Answer` heading names Paris; any other model is unknown
//! (404). The server counts the generation requests in flight and remembers each one.

mod batches;

pub use batches::BatchSeen;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tiny_http::{Header, Response, Server};

/// One generation request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived.
    pub at: std::time::Instant,
    pub api: &'static str,
    pub model: String,
    pub prompt: String,
    /// The whole request body.
    pub body: Value,
    /// The request's headers, names in lower case.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct State {
    latency: Duration,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    flaky_seen: Mutex<HashSet<String>>,
    /// `sometimes`: how often each prompt was sent.
    sends: Mutex<std::collections::HashMap<String, usize>>,
    /// `limited`: the start of the current one-second window and the requests in it.
    window: Mutex<Option<(std::time::Instant, u32)>>,
    /// Requests answered 429 because they went past `limited`'s window.
    rejected: AtomicUsize,
    /// The batch APIs' batches and files.
    batches: batches::Batches,
}

/// The running server; it stops when dropped.
pub struct LlmServer {
    pub url: String,
    server: Arc<Server>,
    state: Arc<State>,
}

impl LlmServer {
    /// Start on a free port; every generation takes `latency`.
    pub fn start(latency: Duration) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let state = Arc::new(State {
            latency,
            ..State::default()
        });
        let (s, st) = (Arc::clone(&server), Arc::clone(&state));
        std::thread::spawn(move || {
            for req in s.incoming_requests() {
                let st = Arc::clone(&st);
                std::thread::spawn(move || handle(req, &st));
            }
        });
        LlmServer {
            url: format!("http://127.0.0.1:{port}"),
            server,
            state,
        }
    }

    /// The most generation requests that were in flight at once.
    pub fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    /// Every generation request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen").clone()
    }

    /// How many requests to `limited` were refused with 429 for going past its limit.
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::SeqCst)
    }

    /// Every batch submitted so far (OpenAI's and Anthropic's), in order.
    pub fn batches(&self) -> Vec<BatchSeen> {
        self.state.batches.seen()
    }

    /// Forget the requests and the peak.
    pub fn reset(&self) {
        self.state.seen.lock().expect("seen").clear();
        self.state.peak.store(0, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for LlmServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LlmServer({})", self.url)
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn context_length(model: &str) -> Option<u64> {
    match model {
        "llama-test" | "flaky" | "flaky-date" | "flaky-huge" | "broken" | "garbled" | "limited"
        | "sometimes" | "judge" | "structured" => Some(4096),
        "tiny-ctx" => Some(40),
        _ => None,
    }
}

fn handle(mut req: tiny_http::Request, st: &State) {
    let mut body = String::new();
    let _ = req.as_reader().read_to_string(&mut body);
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    // Routed by path; the query (`?limit=`, `?pageSize=`) asks for no more than all.
    let path = req.url().split('?').next().unwrap_or("").to_owned();
    let sent: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_owned(),
            )
        })
        .collect();
    let method = req.method().as_str().to_owned();
    let (code, text, headers) = batches::route(st, &method, &path, &body, &sent)
        .unwrap_or_else(|| route(st, &path, v, sent));
    let mut resp = Response::from_string(text)
        .with_status_code(code)
        .with_header(Header::from_bytes("Content-Type", "application/json").expect("header"));
    for (name, value) in headers {
        resp = resp.with_header(Header::from_bytes(name, value.as_bytes()).expect("header"));
    }
    let _ = req.respond(resp);
}

/// The answer to a request for `path` with the body `v` and the headers `sent`.
fn route(st: &State, path: &str, v: Value, sent: Vec<(String, String)>) -> Reply {
    match path {
        "/api/generate" => generate(st, "ollama", &v, sent),
        "/chat/completions" => generate(st, "openai", &v, sent),
        "/v1/messages" => match anthropic_refusal(&v, &sent) {
            Some(r) => r,
            None => generate(st, "anthropic", &v, sent),
        },
        "/v1/models" => (
            200,
            json!({ "data": [{ "type": "model", "id": "claude-test", "display_name": "Claude Test" }],
                    "has_more": false })
            .to_string(),
            vec![],
        ),
        "/v1beta/models" => (
            200,
            json!({ "models": [{ "name": "models/gemini-test", "inputTokenLimit": 1_048_576,
                                  "outputTokenLimit": 8192 },
                                { "name": "models/tiny-ctx", "inputTokenLimit": 40 }] })
            .to_string(),
            vec![],
        ),
        p if p.starts_with("/v1beta/models/") && p.ends_with(":generateContent") => {
            let model = &p["/v1beta/models/".len()..p.len() - ":generateContent".len()];
            let mut v = v;
            // The model is in the path; kept in the body the server remembers.
            v["model"] = model.into();
            match gemini_refusal(&v, &sent) {
                Some(r) => r,
                None => generate(st, "gemini", &v, sent),
            }
        }
        "/api/show" => match context_length(v["model"].as_str().unwrap_or("")) {
            Some(n) => (
                200,
                json!({ "model_info": { "llama.context_length": n } }).to_string(),
                vec![],
            ),
            None => (
                404,
                json!({ "error": "model not found" }).to_string(),
                vec![],
            ),
        },
        "/api/tags" => (
            200,
            json!({ "models": [{ "name": "llama-test" }, { "name": "tiny-ctx" }] }).to_string(),
            vec![],
        ),
        "/models" => (
            200,
            // OpenRouter's prices: USD per token, as strings.
            json!({ "data": [{ "id": "llama-test", "context_length": 4096,
                               "pricing": { "prompt": "0.000001", "completion": "0.000002" } },
                             { "id": "tiny-ctx", "context_length": 40 }] })
            .to_string(),
            vec![],
        ),
        _ => (
            404,
            json!({ "error": "no such endpoint" }).to_string(),
            vec![],
        ),
    }
}

/// The status, body and extra headers of an answer.
type Reply = (u16, String, Vec<(&'static str, String)>);

/// `limited`: at most 5 requests per one-second window, told in OpenAI's `x-ratelimit-*`
/// headers; the sixth in a window is answered 429.
fn limited(st: &State) -> (bool, Vec<(&'static str, String)>) {
    const PER_WINDOW: u32 = 5;
    let now = std::time::Instant::now();
    let mut w = st.window.lock().expect("window");
    let (start, count) = match *w {
        Some((start, count)) if now.duration_since(start) < Duration::from_secs(1) => {
            (start, count + 1)
        }
        _ => (now, 1),
    };
    *w = Some((start, count));
    let reset = Duration::from_secs(1).saturating_sub(now.duration_since(start));
    let headers = vec![
        ("x-ratelimit-limit-requests", PER_WINDOW.to_string()),
        (
            "x-ratelimit-remaining-requests",
            PER_WINDOW.saturating_sub(count).to_string(),
        ),
        (
            "x-ratelimit-reset-requests",
            format!("{}ms", reset.as_millis() + 1),
        ),
    ];
    (count <= PER_WINDOW, headers)
}

/// What Anthropic answers a request it refuses before any model sees it: a key or version
/// header missing, `max_tokens` or `messages` absent.
fn anthropic_refusal(body: &Value, headers: &[(String, String)]) -> Option<Reply> {
    let has = |name: &str| headers.iter().any(|(n, v)| n == name && !v.is_empty());
    let (code, kind, message) = if !has("x-api-key") {
        (401, "authentication_error", "x-api-key header is required")
    } else if !has("anthropic-version") {
        (
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        )
    } else if !body["max_tokens"].is_u64() {
        (400, "invalid_request_error", "max_tokens: Field required")
    } else if !body["messages"].is_array() {
        (400, "invalid_request_error", "messages: Field required")
    } else {
        return None;
    };
    Some((code, anthropic_error(kind, message), vec![]))
}

fn anthropic_error(kind: &str, message: &str) -> String {
    json!({ "type": "error", "error": { "type": kind, "message": message } }).to_string()
}

/// What Gemini answers a request it refuses: no key, no `contents`.
fn gemini_refusal(body: &Value, headers: &[(String, String)]) -> Option<Reply> {
    let has_key = headers
        .iter()
        .any(|(n, v)| n == "x-goog-api-key" && !v.is_empty());
    if !has_key {
        return Some((
            403,
            google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                "PERMISSION_DENIED",
                None,
            ),
            vec![],
        ));
    }
    if !body["contents"][0]["parts"][0]["text"].is_string() {
        return Some((
            400,
            google_error(
                400,
                "* GenerateContentRequest.contents: contents is not specified",
                "INVALID_ARGUMENT",
                None,
            ),
            vec![],
        ));
    }
    None
}

fn google_error(code: u16, message: &str, status: &str, retry: Option<&str>) -> String {
    let mut e = json!({ "error": { "code": code, "message": message, "status": status } });
    if let Some(delay) = retry {
        e["error"]["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": delay,
        }]);
    }
    e.to_string()
}

/// The structured-output schema a request carries in its API's form, if any.
fn asks_for_schema(api: &str, body: &Value) -> Option<Value> {
    let s = match api {
        "ollama" => &body["format"],
        "openai" => &body["response_format"]["json_schema"]["schema"],
        "anthropic" if body["tool_choice"]["type"] == "tool" => &body["tools"][0]["input_schema"],
        "gemini" => &body["generationConfig"]["responseJsonSchema"],
        _ => &Value::Null,
    };
    (!s.is_null()).then(|| s.clone())
}

fn generate(st: &State, api: &'static str, body: &Value, headers: Vec<(String, String)>) -> Reply {
    let (model, prompt) = model_and_prompt(api, body);
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.peak.fetch_max(now, Ordering::SeqCst);
    st.seen.lock().expect("seen").push(Seen {
        at: std::time::Instant::now(),
        api,
        model,
        prompt,
        body: body.clone(),
        headers,
    });
    std::thread::sleep(st.latency);
    let result = respond(st, api, body);
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    result
}

/// The model a request names and the user's prompt in it.
fn model_and_prompt(api: &str, body: &Value) -> (String, String) {
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let prompt = match api {
        "ollama" => body["prompt"].as_str(),
        "gemini" => body["contents"][0]["parts"][0]["text"].as_str(),
        _ => body["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str()),
    }
    .unwrap_or("")
    .to_owned();
    (model, prompt)
}

/// The answer to a generation request in `api`'s shape (online, or one line of a batch).
fn respond(st: &State, api: &str, body: &Value) -> Reply {
    let (model, prompt) = model_and_prompt(api, body);
    let answer = match model.as_str() {
        "sometimes" => {
            let mut sends = st.sends.lock().expect("sends");
            let n = sends.entry(prompt.clone()).or_default();
            *n += 1;
            if (*n - 1) % 5 < 3 { "right" } else { "wrong" }.to_owned()
        }
        "judge" => verdict(&prompt),
        _ => format!(
            "answer from {model} to: {}",
            prompt.lines().next().unwrap_or("")
        ),
    };
    let structured = asks_for_schema(api, body).map(|_| {
        if model == "structured" {
            json!({ "city": "Paris" })
        } else {
            json!({ "answer": answer })
        }
    });
    let answer = structured
        .as_ref()
        .map_or(answer, std::string::ToString::to_string);
    let ok = match api {
        "ollama" => {
            json!({ "response": answer, "prompt_eval_count": 11, "eval_count": 7, "done": true })
        }
        "anthropic" => {
            let content = match &structured {
                Some(input) => json!([{ "type": "tool_use", "id": "toolu_01", 
                                        "name": body["tool_choice"]["name"], "input": input }]),
                None => json!([{ "type": "text", "text": answer }]),
            };
            json!({ "id": "msg_01", "type": "message", "role": "assistant", "model": model,
                    "content": content,
                    "stop_reason": if structured.is_some() { "tool_use" } else { "end_turn" },
                    "usage": { "input_tokens": 12, "output_tokens": 5 } })
        }
        "gemini" => json!({
            "candidates": [{ "content": { "role": "model", "parts": [{ "text": answer }] },
                             "finishReason": "STOP", "index": 0 }],
            "usageMetadata": { "promptTokenCount": 12, "candidatesTokenCount": 5,
                               "totalTokenCount": 17 },
            "modelVersion": model,
        }),
        _ => json!({ "choices": [{ "message": { "role": "assistant", "content": answer } }],
                     "usage": { "prompt_tokens": 12, "completion_tokens": 5 } }),
    }
    .to_string();
    in_dialect(api, reply_as(st, &model, &prompt, ok))
}

/// A reply as `api` writes it: Anthropic's and Google's error bodies, Anthropic's rate-limit
/// headers (resets as RFC 3339 instants) and Google's `RetryInfo` in place of `Retry-After`.
fn in_dialect(api: &str, (code, text, headers): Reply) -> Reply {
    if !matches!(api, "anthropic" | "gemini") {
        return (code, text, headers);
    }
    let message = || {
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        v["error"]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .unwrap_or("error")
            .to_owned()
    };
    let retry_after = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.clone());
    if api == "gemini" {
        let text = match code {
            200 => text,
            429 => google_error(
                429,
                &message(),
                "RESOURCE_EXHAUSTED",
                Some(&format!("{}s", retry_after.as_deref().unwrap_or("1"))),
            ),
            404 => google_error(404, &message(), "NOT_FOUND", None),
            _ => google_error(code, &message(), "INTERNAL", None),
        };
        // Gemini sends no rate-limit headers.
        return (code, text, vec![]);
    }
    let text = match code {
        200 => text,
        429 => anthropic_error("rate_limit_error", &message()),
        404 => anthropic_error("not_found_error", &message()),
        _ => anthropic_error("api_error", &message()),
    };
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for (name, value) in headers {
        let renamed = match name {
            "x-ratelimit-limit-requests" => "anthropic-ratelimit-requests-limit",
            "x-ratelimit-remaining-requests" => "anthropic-ratelimit-requests-remaining",
            "x-ratelimit-reset-requests" => "anthropic-ratelimit-requests-reset",
            other => other,
        };
        let value = if renamed == "anthropic-ratelimit-requests-reset" {
            let ms: u64 = value.trim_end_matches("ms").parse().unwrap_or(1000);
            humantime::format_rfc3339_millis(
                std::time::SystemTime::now() + Duration::from_millis(ms),
            )
            .to_string()
        } else {
            value
        };
        out.push((renamed, value));
    }
    if code == 429 {
        out.push(("anthropic-ratelimit-requests-remaining", "0".to_owned()));
        let secs: u64 = retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        out.push((
            "anthropic-ratelimit-requests-reset",
            humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() + Duration::from_secs(secs),
            )
            .to_string(),
        ));
    }
    (code, text, out)
}

/// What the model named `model` answers: `ok`, or the failure it stands for (rate limits,
/// errors, a cut-off body, an unknown model).
fn reply_as(st: &State, model: &str, prompt: &str, ok: String) -> Reply {
    match model {
        "flaky" | "flaky-date" | "flaky-huge"
            if st
                .flaky_seen
                .lock()
                .expect("flaky")
                .insert(format!("{model}\0{prompt}")) =>
        {
            let after = match model {
                "flaky-date" => {
                    httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3))
                }
                "flaky-huge" => "1e20".to_owned(),
                _ => "1".to_owned(),
            };
            (
                429,
                json!({ "error": { "message": "rate limited, slow down" } }).to_string(),
                vec![("Retry-After", after)],
            )
        }
        "limited" => {
            let (within, headers) = limited(st);
            if within {
                (200, ok, headers)
            } else {
                st.rejected.fetch_add(1, Ordering::SeqCst);
                (
                    429,
                    json!({ "error": { "message": "rate limit reached for requests" } })
                        .to_string(),
                    headers,
                )
            }
        }
        "llama-test" | "tiny-ctx" | "flaky" | "flaky-date" | "flaky-huge" | "sometimes"
        | "judge" | "structured" | "claude-sonnet-4-5" | "gemini-2.5-flash" | "gpt-4o-mini" => {
            (200, ok, vec![])
        }
        "broken" => (
            500,
            json!({ "error": "the GPU caught fire" }).to_string(),
            vec![],
        ),
        "garbled" => (200, "{\"response\": \"cut off".to_owned(), vec![]),
        other => (
            404,
            json!({ "error": format!("model \"{other}\" not found, try pulling it first") })
                .to_string(),
            vec![],
        ),
    }
}

/// `judge`'s verdict on the answer in a grading prompt: the text after `## Answer`, up to the
/// instructions that follow it, passes when it names Paris.
fn verdict(prompt: &str) -> String {
    let answer = prompt
        .split("## Answer")
        .nth(1)
        .unwrap_or("")
        .split("Reply with only")
        .next()
        .unwrap_or("");
    if answer.contains("Paris") {
        json!({ "pass": true, "score": 1.0, "reason": "it names Paris" })
    } else {
        json!({ "pass": false, "score": 0.0, "reason": format!("it says {:?}, not Paris", answer.trim()) })
    }
    .to_string()
}
