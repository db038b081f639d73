//! A fake LLM server on 127.0.0.1 for parallamr's tests: the Ollama API (`/api/generate`,
//! `/api/show`, `/api/tags`) and the OpenAI-compatible one (`/chat/completions`, `/models`).
//!
//! The model name picks the behaviour: `llama-test` answers after the set latency; `tiny-ctx`
//! too, with a 40-token context window; `flaky` answers 429 with `Retry-After: 1` the first time
//! it sees a prompt, then normally; `flaky-date` the same with `Retry-After` as an HTTP date two
//! seconds ahead (three, as dates have whole seconds), `flaky-huge` with `Retry-After: 1e20`; `broken` answers 500; `garbled` answers 200 with a body that
//! is not JSON; `sometimes` answers "right" to the first three of every five sends of a
//! prompt and "wrong" to the other two; `judge` is a grader: it answers a JSON verdict, passing
//! when the text after the prompt's `## Answer` heading names Paris; any other model is unknown
//! (404). The server counts the generation requests in flight and remembers each one.

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
        | "sometimes" | "judge" => Some(4096),
        "tiny-ctx" => Some(40),
        _ => None,
    }
}

fn handle(mut req: tiny_http::Request, st: &State) {
    let mut body = String::new();
    let _ = req.as_reader().read_to_string(&mut body);
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let path = req.url().to_owned();
    let (code, text, headers) = match path.as_str() {
        "/api/generate" => generate(st, "ollama", &v),
        "/chat/completions" => generate(st, "openai", &v),
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
    };
    let mut resp = Response::from_string(text)
        .with_status_code(code)
        .with_header(Header::from_bytes("Content-Type", "application/json").expect("header"));
    for (name, value) in headers {
        resp = resp.with_header(Header::from_bytes(name, value.as_bytes()).expect("header"));
    }
    let _ = req.respond(resp);
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

fn generate(st: &State, api: &'static str, body: &Value) -> Reply {
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let prompt = match api {
        "ollama" => body["prompt"].as_str(),
        _ => body["messages"][0]["content"].as_str(),
    }
    .unwrap_or("")
    .to_owned();
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.peak.fetch_max(now, Ordering::SeqCst);
    st.seen.lock().expect("seen").push(Seen {
        at: std::time::Instant::now(),
        api,
        model: model.clone(),
        prompt: prompt.clone(),
        body: body.clone(),
    });
    std::thread::sleep(st.latency);
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
    let ok = match api {
        "ollama" => {
            json!({ "response": answer, "prompt_eval_count": 11, "eval_count": 7, "done": true })
        }
        _ => json!({ "choices": [{ "message": { "role": "assistant", "content": answer } }],
                     "usage": { "prompt_tokens": 12, "completion_tokens": 5 } }),
    }
    .to_string();
    let result = reply_as(st, &model, &prompt, ok);
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    result
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
        | "judge" => (200, ok, vec![]),
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
