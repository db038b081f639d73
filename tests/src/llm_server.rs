//! A fake LLM server on 127.0.0.1 for parallamr's tests: the Ollama API (`/api/generate`,
//! `/api/show`, `/api/tags`) and the OpenAI-compatible one (`/chat/completions`, `/models`).
//!
//! The model name picks the behaviour: `llama-test` answers after the set latency; `tiny-ctx`
//! too, with a 40-token context window; `flaky` answers 429 with `Retry-After: 1` the first time
//! it sees a prompt, then normally; `flaky-date` the same with `Retry-After` as an HTTP date two
//! seconds ahead (three, as dates have whole seconds), `flaky-huge` with `Retry-After: 1e20`; `broken` answers 500; `garbled` answers 200 with a body that
//! is not JSON; any other model is unknown (404). The server counts the generation requests in
//! flight and remembers each one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tiny_http::{Header, Response, Server};

/// One generation request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
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
        "llama-test" | "flaky" | "flaky-date" | "flaky-huge" | "broken" | "garbled" => Some(4096),
        "tiny-ctx" => Some(40),
        _ => None,
    }
}

fn handle(mut req: tiny_http::Request, st: &State) {
    let mut body = String::new();
    let _ = req.as_reader().read_to_string(&mut body);
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let path = req.url().to_owned();
    let (code, text, retry_after) = match path.as_str() {
        "/api/generate" => generate(st, "ollama", &v),
        "/chat/completions" => generate(st, "openai", &v),
        "/api/show" => match context_length(v["model"].as_str().unwrap_or("")) {
            Some(n) => (
                200,
                json!({ "model_info": { "llama.context_length": n } }).to_string(),
                None,
            ),
            None => (404, json!({ "error": "model not found" }).to_string(), None),
        },
        "/api/tags" => (
            200,
            json!({ "models": [{ "name": "llama-test" }, { "name": "tiny-ctx" }] }).to_string(),
            None,
        ),
        "/models" => (
            200,
            // OpenRouter's prices: USD per token, as strings.
            json!({ "data": [{ "id": "llama-test", "context_length": 4096,
                               "pricing": { "prompt": "0.000001", "completion": "0.000002" } },
                             { "id": "tiny-ctx", "context_length": 40 }] })
            .to_string(),
            None,
        ),
        _ => (
            404,
            json!({ "error": "no such endpoint" }).to_string(),
            None,
        ),
    };
    let mut resp = Response::from_string(text)
        .with_status_code(code)
        .with_header(Header::from_bytes("Content-Type", "application/json").expect("header"));
    if let Some(secs) = retry_after {
        resp =
            resp.with_header(Header::from_bytes("Retry-After", secs.as_bytes()).expect("header"));
    }
    let _ = req.respond(resp);
}

fn generate(st: &State, api: &'static str, body: &Value) -> (u16, String, Option<String>) {
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
        api,
        model: model.clone(),
        prompt: prompt.clone(),
        body: body.clone(),
    });
    std::thread::sleep(st.latency);
    let answer = format!(
        "answer from {model} to: {}",
        prompt.lines().next().unwrap_or("")
    );
    let ok = match api {
        "ollama" => {
            json!({ "response": answer, "prompt_eval_count": 11, "eval_count": 7, "done": true })
        }
        _ => json!({ "choices": [{ "message": { "role": "assistant", "content": answer } }],
                     "usage": { "prompt_tokens": 12, "completion_tokens": 5 } }),
    }
    .to_string();
    let result = match model.as_str() {
        "flaky" | "flaky-date" | "flaky-huge"
            if st
                .flaky_seen
                .lock()
                .expect("flaky")
                .insert(format!("{model}\0{prompt}")) =>
        {
            let after = match model.as_str() {
                "flaky-date" => {
                    httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3))
                }
                "flaky-huge" => "1e20".to_owned(),
                _ => "1".to_owned(),
            };
            (
                429,
                json!({ "error": { "message": "rate limited, slow down" } }).to_string(),
                Some(after),
            )
        }
        "llama-test" | "tiny-ctx" | "flaky" | "flaky-date" | "flaky-huge" => (200, ok, None),
        "broken" => (
            500,
            json!({ "error": "the GPU caught fire" }).to_string(),
            None,
        ),
        "garbled" => (200, "{\"response\": \"cut off".to_owned(), None),
        other => (
            404,
            json!({ "error": format!("model \"{other}\" not found, try pulling it first") })
                .to_string(),
            None,
        ),
    };
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    result
}
