//! Anthropic and Gemini spoken natively (issue 32), and `--schema` sent as each provider's own
//! structured output, against the loopback server's imitation of their APIs.

use std::time::Duration;

use testkit::llm_server::LlmServer;

use crate::judge::rows;
use crate::{Project, run_run};

const ANTHROPIC_KEY: &str = "sk-ant-test-0123456789-never-written";
const GEMINI_KEY: &str = "gm-test-9876543210-never-written";

/// `parallamr run ... -o out.csv` with both vendors' keys set.
fn run_keyed(p: &Project, extra: &[&str], server: &LlmServer) -> testkit::Run {
    let mut args = crate::RUN.to_vec();
    args.extend(extra);
    keyed(p, &args, server)
}

/// `parallamr ARGS` with both vendors' keys set.
fn keyed(p: &Project, args: &[&str], server: &LlmServer) -> testkit::Run {
    p.command(args, Some(server))
        .env("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        .env("GEMINI_API_KEY", GEMINI_KEY)
        .output()
        .unwrap()
        .into()
}

/// Every file under `dir`, as text (lossy), with its path.
fn all_files(dir: &std::path::Path) -> Vec<(String, String)> {
    walk(dir)
        .into_iter()
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            (p.display().to_string(), text)
        })
        .collect()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn header<'a>(seen: &'a testkit::llm_server::Seen, name: &str) -> Option<&'a str> {
    seen.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn anthropic_and_gemini_answer_with_their_tokens_and_list_prices() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic,system\n\
         anthropic,claude-sonnet-4-5,cats,Be brief.\n\
         gemini,gemini-2.5-flash,dogs,Be brief.\n",
    );
    let out = run_keyed(
        &p,
        &["--param-columns", "system", "--report", "report.json"],
        &server,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let rows = rows(&p, "out.csv");
    let claude = rows.iter().find(|r| r["provider"] == "anthropic").unwrap();
    let gemini = rows.iter().find(|r| r["provider"] == "gemini").unwrap();
    for (r, model, cost) in [
        // 12 tokens in, 5 out at $3/$15 and $0.30/$2.50 per million.
        (claude, "claude-sonnet-4-5", 12.0 * 3.0 + 5.0 * 15.0),
        (gemini, "gemini-2.5-flash", 12.0 * 0.30 + 5.0 * 2.50),
    ] {
        assert_eq!(r["status"], "ok", "{r:?}");
        assert!(
            r["output"].starts_with(&format!("answer from {model} to: About ")),
            "{r:?}"
        );
        assert_eq!(
            (r["input_tokens"].as_str(), r["output_tokens"].as_str()),
            ("12", "5")
        );
        let got: f64 = r["cost_usd"].parse().unwrap();
        // The column has six decimals.
        assert!(
            (got - cost / 1e6).abs() < 1e-6,
            "{model}: {got} vs {}",
            cost / 1e6
        );
    }
    assert_eq!(claude["context_window"], "200000");
    assert_eq!(
        gemini["context_window"], "",
        "not among the models the server lists"
    );

    let seen = server.seen();
    let a = seen.iter().find(|s| s.api == "anthropic").unwrap();
    assert_eq!(header(a, "x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(header(a, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        header(a, "authorization"),
        None,
        "the key goes in x-api-key only"
    );
    assert_eq!(a.body["max_tokens"], 4096);
    assert_eq!(a.body["system"], "Be brief.");
    assert_eq!(a.body["messages"][0]["role"], "user");
    let g = seen.iter().find(|s| s.api == "gemini").unwrap();
    assert_eq!(header(g, "x-goog-api-key"), Some(GEMINI_KEY));
    assert_eq!(g.model, "gemini-2.5-flash", "the model is in the path");
    assert_eq!(g.body["systemInstruction"]["parts"][0]["text"], "Be brief.");

    // The keys are nowhere in what the run wrote (results, report, cache) or printed.
    assert!(p.path().join("report.json").is_file());
    for (path, text) in all_files(p.path()) {
        for key in [ANTHROPIC_KEY, GEMINI_KEY] {
            assert!(!text.contains(key), "{path} holds a key");
        }
    }
    for key in [ANTHROPIC_KEY, GEMINI_KEY] {
        assert!(!out.stderr.contains(key) && !out.stdout.contains(key));
    }

    // Their model lists.
    for (provider, model) in [("anthropic", "claude-test"), ("gemini", "gemini-test")] {
        let out = keyed(&p, &["models", provider], &server);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout.contains(model), "{provider}: {}", out.stdout);
    }
}

#[test]
fn each_vendors_429_slows_the_sweep_and_is_retried() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\nanthropic,flaky,cats\ngemini,flaky,dogs\n",
    );
    let out = run_keyed(&p, &[], &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let rows = rows(&p, "out.csv");
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
    let seen = server.seen();
    for api in ["anthropic", "gemini"] {
        let sends: Vec<_> = seen.iter().filter(|s| s.api == api).collect();
        assert_eq!(sends.len(), 2, "{api}: one 429, one answer");
        // Anthropic's retry-after and reset headers, Gemini's RetryInfo: both say 1 s.
        let gap = sends[1].at.duration_since(sends[0].at);
        assert!(
            gap >= Duration::from_millis(900),
            "{api}: retried after {gap:?}"
        );
    }
}

#[test]
fn vendor_errors_become_clear_error_rows() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\n\
         anthropic,broken,a\nanthropic,nope,b\ngemini,broken,c\ngemini,nope,d\n",
    );
    let out = run_keyed(&p, &["--retries", "0"], &server);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let results = rows(&p, "out.csv");
    let error = |provider: &str, model: &str| {
        let r = results
            .iter()
            .find(|r| r["provider"] == provider && r["model"] == model)
            .unwrap();
        assert_eq!(r["status"], "error", "{r:?}");
        r["error_message"].clone()
    };
    assert_eq!(
        error("anthropic", "broken"),
        "anthropic answered 500: the GPU caught fire"
    );
    assert_eq!(
        error("gemini", "broken"),
        "gemini answered 500: the GPU caught fire"
    );
    assert!(
        error("anthropic", "nope")
            .starts_with("unknown model \"nope\": anthropic does not serve it"),
        "{results:?}"
    );
    assert!(
        error("gemini", "nope").starts_with("unknown model \"nope\": gemini does not serve it"),
        "{results:?}"
    );

    // No key for a server that wants one: the server's own words, and what to do.
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\nanthropic,x,a\ngemini,y,b\n",
    );
    let out = run_run(&p, &[], Some(&server));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let rows = rows(&p, "out.csv");
    assert_eq!(
        rows[0]["error_message"],
        "anthropic refused the credentials (401): x-api-key header is required; check the API key"
    );
    assert!(
        rows[1]["error_message"].starts_with(
            "gemini refused the credentials (403): Method doesn't allow unregistered callers"
        ),
        "{rows:?}"
    );

    // The public endpoints need a key: said before anything is sent.
    let p = Project::create("x", "provider,model,topic\nanthropic,claude-sonnet-4-5,a\n");
    let out = p.run(&crate::RUN, None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("ANTHROPIC_API_KEY is not set"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_schema_goes_to_each_provider_in_its_own_form_and_the_answer_is_checked() {
    let server = LlmServer::start(Duration::ZERO);
    let schema = serde_json::json!({
        "type": "object",
        "properties": { "city": { "type": "string" } },
        "required": ["city"],
    });
    let p = Project::create("Capital of {{ topic }}?", "provider,model,topic\n");
    let experiments: String = std::iter::once("provider,model,topic\n".to_owned())
        .chain(
            ["openai", "anthropic", "gemini", "ollama"]
                .iter()
                .flat_map(|p| ["structured", "llama-test"].map(|m| format!("{p},{m},France\n"))),
        )
        .collect();
    std::fs::write(p.path().join("experiments.csv"), experiments).unwrap();
    std::fs::write(p.path().join("city.json"), schema.to_string()).unwrap();
    let out = run_keyed(&p, &["--schema", "city.json"], &server);
    assert_eq!(
        out.code,
        Some(0),
        "a failed check is no error: {}",
        out.stderr
    );

    let rows = rows(&p, "out.csv");
    assert_eq!(rows.len(), 8);
    for r in &rows {
        if r["model"] == "structured" {
            assert_eq!(r["output"], "{\"city\":\"Paris\"}", "{r:?}");
            assert_eq!(r["pass"], "true", "{r:?}");
        } else {
            assert_eq!(r["pass"], "false", "{r:?}");
            assert!(
                r["reason"].contains("--schema city.json: /: \"city\" is a required property"),
                "{r:?}"
            );
        }
    }
    let seen = server.seen();
    let body = |api: &str| &seen.iter().find(|s| s.api == api).unwrap().body;
    assert_eq!(
        body("openai")["response_format"],
        serde_json::json!({ "type": "json_schema", "json_schema": { "name": "city", "schema": schema } })
    );
    assert_eq!(body("anthropic")["tools"][0]["input_schema"], schema);
    assert_eq!(
        body("anthropic")["tool_choice"],
        serde_json::json!({ "type": "tool", "name": "city" })
    );
    assert_eq!(
        body("gemini")["generationConfig"]["responseJsonSchema"],
        schema
    );
    assert_eq!(
        body("gemini")["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(body("ollama")["format"], schema);

    // The schema is part of the request: a run without it is not answered from the cache.
    server.reset();
    let out = keyed(&p, &crate::run_args(&["-o", "plain.csv"]), &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.seen().len(), 8, "sent again, without the schema");
    assert!(
        server
            .seen()
            .iter()
            .all(|s| s.body.get("response_format").is_none()
                && s.body.get("tools").is_none()
                && s.body.get("format").is_none())
    );
}
