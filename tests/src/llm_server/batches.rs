//! The fake server's batch APIs: OpenAI's (`POST /files` with a JSON Lines file, `POST
//! /batches`, `GET /batches/ID`, `POST /batches/ID/cancel`, `GET /files/ID/content`) and
//! Anthropic's Message Batches (`POST /v1/messages/batches`, `GET .../ID`, `POST .../ID/cancel`,
//! `GET .../ID/results`), with the vendors' limits, checks and JSON shapes.
//!
//! A batch moves one step per poll: OpenAI `validating`, `in_progress`, then `completed`;
//! Anthropic `in_progress` twice, then `ended`. Each line is answered as the same request online
//! would be (so `broken` fails its line: a partial failure); a batch holding a line for the
//! model `expire` ends `expired` (those lines expired, the others answered); a batch cancelled
//! before it ended answers none of its lines.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::{Reply, State, anthropic_error, respond};

/// The batches the server was given, and the files uploaded to it.
#[derive(Debug, Default)]
pub(super) struct Batches {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// OpenAI's uploaded files (and the output and error files it wrote), by id.
    files: HashMap<String, String>,
    batches: Vec<Batch>,
}

#[derive(Debug, Clone)]
struct Batch {
    api: &'static str,
    id: String,
    /// Each line's name and request body.
    lines: Vec<(String, Value)>,
    polls: u32,
    cancelled: bool,
    /// The results, once it has ended.
    results: Option<Vec<(String, Outcome)>>,
}

#[derive(Debug, Clone)]
enum Outcome {
    Answered(Value),
    Failed(u16, String),
    Expired,
    Cancelled,
}

/// What the tests see of a batch: its API, id and number of requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSeen {
    pub api: &'static str,
    pub id: String,
    pub requests: usize,
    pub polls: u32,
    pub cancelled: bool,
}

impl Batches {
    pub(super) fn seen(&self) -> Vec<BatchSeen> {
        self.inner
            .lock()
            .expect("batches")
            .batches
            .iter()
            .map(|b| BatchSeen {
                api: b.api,
                id: b.id.clone(),
                requests: b.lines.len(),
                polls: b.polls,
                cancelled: b.cancelled,
            })
            .collect()
    }
}

/// The answer to a batch request, if `path` is one.
pub(super) fn route(
    st: &State,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(String, String)],
) -> Option<Reply> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let b = &st.batches;
    let openai = matches!(parts.first(), Some(&("files" | "batches")));
    let bearer = headers
        .iter()
        .any(|(n, v)| n == "authorization" && v.starts_with("Bearer ") && v.len() > 7);
    if openai && !bearer {
        return Some((
            401,
            json!({ "error": { "message": "You didn't provide an API key.", "type": "invalid_request_error" } })
                .to_string(),
            vec![],
        ));
    }
    Some(match (method, parts.as_slice()) {
        ("POST", ["files"]) => openai_upload(b, body, headers),
        ("POST", ["batches"]) => openai_create(b, body),
        ("GET", ["batches", id]) => {
            step(st, id, false).map_or_else(missing, |x| ok(&openai_json(&x)))
        }
        ("POST", ["batches", id, "cancel"]) => {
            step(st, id, true).map_or_else(missing, |x| ok(&openai_json(&x)))
        }
        ("GET", ["files", id, "content"]) => {
            match b.inner.lock().expect("batches").files.get(*id) {
                Some(text) => (200, text.clone(), vec![]),
                None => missing(),
            }
        }
        ("POST", ["v1", "messages", "batches"]) => anthropic_create(b, body, headers),
        ("GET", ["v1", "messages", "batches", id]) => {
            step(st, id, false).map_or_else(missing, |x| ok(&anthropic_json(&x)))
        }
        ("POST", ["v1", "messages", "batches", id, "cancel"]) => {
            step(st, id, true).map_or_else(missing, |x| ok(&anthropic_json(&x)))
        }
        ("GET", ["v1", "messages", "batches", id, "results"]) => anthropic_results(b, id),
        _ => return None,
    })
}

fn ok(v: &Value) -> Reply {
    (200, v.to_string(), vec![])
}

fn missing() -> Reply {
    (
        404,
        json!({ "error": { "message": "No such batch or file" } }).to_string(),
        vec![],
    )
}

fn bad(message: &str) -> Reply {
    (
        400,
        json!({ "error": { "message": message, "type": "invalid_request_error" } }).to_string(),
        vec![],
    )
}

/// OpenAI's `/files`: a multipart form with `purpose=batch` and the file.
fn openai_upload(b: &Batches, body: &str, headers: &[(String, String)]) -> Reply {
    let Some(boundary) = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .and_then(|(_, v)| v.split("boundary=").nth(1))
        .map(|v| v.trim_matches('"').to_owned())
    else {
        return bad("expected multipart/form-data");
    };
    let mut purpose = None;
    let mut file = None;
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        if head.contains("name=\"purpose\"") {
            purpose = Some(content.to_owned());
        } else if head.contains("name=\"file\"") {
            file = Some(content.to_owned());
        }
    }
    if purpose.as_deref() != Some("batch") {
        return bad("purpose must be 'batch'");
    }
    let Some(file) = file else {
        return bad("no file");
    };
    if file.len() > 200_000_000 {
        return bad("the file is larger than 200 MB");
    }
    let mut inner = b.inner.lock().expect("batches");
    let id = format!("file-in-{}", inner.files.len() + 1);
    let bytes = file.len();
    inner.files.insert(id.clone(), file);
    ok(&json!({ "id": id, "object": "file", "bytes": bytes, "purpose": "batch" }))
}

/// OpenAI's `/batches`: the uploaded file's lines, checked as OpenAI does.
fn openai_create(b: &Batches, body: &str) -> Reply {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    if v["endpoint"] != "/v1/chat/completions" || v["completion_window"] != "24h" {
        return bad("endpoint must be /v1/chat/completions and completion_window 24h");
    }
    let mut inner = b.inner.lock().expect("batches");
    let Some(text) = v["input_file_id"].as_str().and_then(|f| inner.files.get(f)) else {
        return bad("input_file_id names no uploaded file");
    };
    let mut lines = Vec::new();
    for line in text.lines() {
        let l: Value = match serde_json::from_str(line) {
            Ok(l) => l,
            Err(_) => return bad("a line of the file is not JSON"),
        };
        let Some(id) = l["custom_id"].as_str() else {
            return bad("a line has no custom_id");
        };
        if l["method"] != "POST"
            || l["url"] != "/v1/chat/completions"
            || !l["body"]["model"].is_string()
        {
            return bad(
                "each line needs method POST, url /v1/chat/completions and a body with a model",
            );
        }
        if lines.iter().any(|(i, _)| i == id) {
            return bad("custom_id values must be unique");
        }
        lines.push((id.to_owned(), l["body"].clone()));
    }
    if lines.is_empty() || lines.len() > 50_000 {
        return bad("a batch holds 1 to 50,000 requests");
    }
    let id = format!("batch_{}", inner.batches.len() + 1);
    inner.batches.push(Batch {
        api: "openai",
        id,
        lines,
        polls: 0,
        cancelled: false,
        results: None,
    });
    ok(&openai_json(inner.batches.last().expect("pushed")))
}

/// Anthropic's `/v1/messages/batches`: the requests in the body, checked as Anthropic does.
fn anthropic_create(b: &Batches, body: &str, headers: &[(String, String)]) -> Reply {
    let has = |name: &str| headers.iter().any(|(n, v)| n == name && !v.is_empty());
    if !has("x-api-key") || !has("anthropic-version") {
        return (
            401,
            anthropic_error(
                "authentication_error",
                "x-api-key and anthropic-version are required",
            ),
            vec![],
        );
    }
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    let Some(requests) = v["requests"].as_array() else {
        return (
            400,
            anthropic_error("invalid_request_error", "requests: Field required"),
            vec![],
        );
    };
    let mut lines: Vec<(String, Value)> = Vec::new();
    for r in requests {
        let id = r["custom_id"].as_str().unwrap_or("");
        let valid = (1..=64).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid || lines.iter().any(|(i, _)| i == id) {
            return (
                400,
                anthropic_error(
                    "invalid_request_error",
                    "custom_id must be unique, 1-64 of [a-zA-Z0-9_-]",
                ),
                vec![],
            );
        }
        if !r["params"]["max_tokens"].is_u64() || !r["params"]["model"].is_string() {
            return (
                400,
                anthropic_error(
                    "invalid_request_error",
                    "params: model and max_tokens are required",
                ),
                vec![],
            );
        }
        lines.push((id.to_owned(), r["params"].clone()));
    }
    if lines.is_empty() || lines.len() > 100_000 {
        return (
            400,
            anthropic_error(
                "invalid_request_error",
                "a batch holds 1 to 100,000 requests",
            ),
            vec![],
        );
    }
    let mut inner = b.inner.lock().expect("batches");
    let id = format!("msgbatch_{:02}", inner.batches.len() + 1);
    inner.batches.push(Batch {
        api: "anthropic",
        id,
        lines,
        polls: 0,
        cancelled: false,
        results: None,
    });
    ok(&anthropic_json(inner.batches.last().expect("pushed")))
}

/// Poll (or cancel) batch `id`: one step further; its results once it ends.
fn step(st: &State, id: &str, cancel: bool) -> Option<Batch> {
    let mut inner = st.batches.inner.lock().expect("batches");
    let i = inner.batches.iter().position(|b| b.id == id)?;
    let batch = &mut inner.batches[i];
    if cancel {
        batch.cancelled |= batch.results.is_none();
    } else {
        batch.polls += 1;
    }
    let ends = batch.results.is_none() && (batch.polls >= 3 || (batch.cancelled && !cancel));
    if ends {
        let results: Vec<(String, Outcome)> = batch
            .lines
            .iter()
            .map(|(cid, body)| (cid.clone(), outcome(st, batch, body)))
            .collect();
        batch.results = Some(results);
    }
    let batch = batch.clone();
    if ends && batch.api == "openai" {
        write_openai_files(&mut inner.files, &batch);
    }
    Some(batch)
}

fn outcome(st: &State, batch: &Batch, body: &Value) -> Outcome {
    if batch.cancelled {
        return Outcome::Cancelled;
    }
    if body["model"] == "expire" {
        return Outcome::Expired;
    }
    let (code, text, _) = respond(st, batch.api, body);
    let v: Value = serde_json::from_str(&text).unwrap_or_default();
    if code == 200 {
        Outcome::Answered(v)
    } else {
        let message = v["error"]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .unwrap_or("error")
            .to_owned();
        Outcome::Failed(code, message)
    }
}

fn expired(b: &Batch) -> bool {
    b.results
        .as_ref()
        .is_some_and(|r| r.iter().any(|(_, o)| matches!(o, Outcome::Expired)))
}

fn openai_json(b: &Batch) -> Value {
    let status = match (&b.results, b.cancelled, b.polls) {
        (Some(_), true, _) => "cancelled",
        (Some(_), false, _) if expired(b) => "expired",
        (Some(_), false, _) => "completed",
        (None, true, _) => "cancelling",
        (None, false, 0 | 1) => "validating",
        (None, false, _) => "in_progress",
    };
    let results = b.results.as_deref().unwrap_or_default();
    let completed = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Answered(_)))
        .count();
    let failed = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Failed(..) | Outcome::Expired))
        .count();
    json!({
        "id": b.id, "object": "batch", "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in", "completion_window": "24h", "status": status,
        "output_file_id": (completed > 0).then(|| format!("file-out-{}", b.id)),
        "error_file_id": (failed > 0).then(|| format!("file-err-{}", b.id)),
        "request_counts": { "total": b.lines.len(), "completed": completed, "failed": failed },
    })
}

/// OpenAI's output file (the answers) and error file (the lines that failed or expired).
fn write_openai_files(files: &mut HashMap<String, String>, b: &Batch) {
    let (mut out, mut err) = (String::new(), String::new());
    for (i, (cid, o)) in b.results.as_deref().unwrap_or_default().iter().enumerate() {
        let line = match o {
            Outcome::Answered(body) => json!({ "id": format!("batch_req_{i}"), "custom_id": cid,
                "response": { "status_code": 200, "request_id": format!("req_{i}"), "body": body },
                "error": null }),
            Outcome::Failed(code, message) => {
                json!({ "id": format!("batch_req_{i}"), "custom_id": cid,
                "response": { "status_code": code, "request_id": format!("req_{i}"),
                              "body": { "error": { "message": message, "type": "server_error" } } },
                "error": null })
            }
            Outcome::Expired => json!({ "id": format!("batch_req_{i}"), "custom_id": cid,
                "response": null,
                "error": { "code": "batch_expired", "message": "This request could not be executed before the completion window expired." } }),
            Outcome::Cancelled => continue,
        };
        let to = if matches!(o, Outcome::Answered(_)) {
            &mut out
        } else {
            &mut err
        };
        to.push_str(&line.to_string());
        to.push('\n');
    }
    files.insert(format!("file-out-{}", b.id), out);
    files.insert(format!("file-err-{}", b.id), err);
}

fn anthropic_json(b: &Batch) -> Value {
    let status = match (&b.results, b.cancelled) {
        (Some(_), _) => "ended",
        (None, true) => "canceling",
        (None, false) => "in_progress",
    };
    let results = b.results.as_deref().unwrap_or_default();
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|(_, o)| f(o)).count();
    json!({
        "id": b.id, "type": "message_batch", "processing_status": status,
        "request_counts": {
            "processing": if b.results.is_some() { 0 } else { b.lines.len() },
            "succeeded": count(|o| matches!(o, Outcome::Answered(_))),
            "errored": count(|o| matches!(o, Outcome::Failed(..))),
            "canceled": count(|o| matches!(o, Outcome::Cancelled)),
            "expired": count(|o| matches!(o, Outcome::Expired)),
        },
        "results_url": b.results.as_ref().map(|_| format!("https://api.anthropic.com/v1/messages/batches/{}/results", b.id)),
    })
}

fn anthropic_results(b: &Batches, id: &str) -> Reply {
    let inner = b.inner.lock().expect("batches");
    let Some(batch) = inner.batches.iter().find(|x| x.id == id) else {
        return missing();
    };
    let Some(results) = &batch.results else {
        return (
            400,
            anthropic_error("invalid_request_error", "the batch has not ended yet"),
            vec![],
        );
    };
    let mut text = String::new();
    for (cid, o) in results {
        let result = match o {
            Outcome::Answered(message) => json!({ "type": "succeeded", "message": message }),
            Outcome::Failed(_, message) => json!({ "type": "errored",
                "error": { "type": "error", "error": { "type": "api_error", "message": message } } }),
            Outcome::Expired => json!({ "type": "expired" }),
            Outcome::Cancelled => json!({ "type": "canceled" }),
        };
        text.push_str(&json!({ "custom_id": cid, "result": result }).to_string());
        text.push('\n');
    }
    (200, text, vec![])
}
