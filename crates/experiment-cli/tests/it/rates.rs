//! Rate limits: `--rate` spaces requests and prompt tokens per minute, and the server's
//! `x-ratelimit-*` headers hold the sweep back before it answers 429.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use testkit::llm_server::LlmServer;

use crate::{Project, RUN, topics};

/// The time from the first request the server saw to the last.
fn span(server: &LlmServer) -> Duration {
    let seen = server.seen();
    let first = seen.iter().map(|s| s.at).min().unwrap();
    let last = seen.iter().map(|s| s.at).max().unwrap();
    last - first
}

#[test]
fn requests_per_minute_are_spaced_evenly() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create("About {{ topic }}", &topics(41, "openai", "llama-test"));
    let mut args = RUN.to_vec();
    args.extend([
        "-j",
        "8",
        "--provider-limit",
        "openai=8",
        "--rate",
        "openai=2400rpm",
    ]);
    let out = p.run(&args, Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.seen().len(), 41);
    // 40 gaps of 25 ms: one second at least, however fast the machine.
    assert!(
        span(&server) >= Duration::from_millis(950),
        "{:?}",
        span(&server)
    );

    // The mock provider too: 11 requests at 600 rpm take a second.
    let p = Project::create("About {{ topic }}", &topics(11, "mock", "mock"));
    let mut args = RUN.to_vec();
    args.extend(["-j", "4", "--rate", "mock=600rpm"]);
    let t0 = Instant::now();
    let out = p.run(&args, None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn tokens_per_minute_follow_each_prompts_size() {
    let server = LlmServer::start(Duration::ZERO);
    // 400 characters: about 100 tokens; 30000 tpm is 500 tokens a second, one request per 0.2 s.
    let mut csv = String::from("provider,model,topic\n");
    for i in 0..5 {
        let _ = writeln!(csv, "openai,llama-test,{i}{}", "x".repeat(395));
    }
    let p = Project::create("{{ topic }}", &csv);
    let mut args = RUN.to_vec();
    args.extend([
        "-j",
        "5",
        "--provider-limit",
        "openai=5",
        "--rate",
        "openai=30000tpm",
    ]);
    let out = p.run(&args, Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        span(&server) >= Duration::from_millis(700),
        "{:?}",
        span(&server)
    );
}

#[test]
fn the_servers_rate_limit_headers_slow_the_sweep_before_any_429() {
    // `limited` allows 5 requests a second and says so in its headers (OpenAI's x-ratelimit-*,
    // Anthropic's anthropic-ratelimit-* with resets as instants); 8 at once would pass it at
    // the first second.
    for provider in ["openai", "anthropic"] {
        let server = LlmServer::start(Duration::from_millis(20));
        let p = Project::create("About {{ topic }}", &topics(16, provider, "limited"));
        let mut args = RUN.to_vec();
        let limit = format!("{provider}=8");
        args.extend(["-j", "8", "--provider-limit", &limit, "--retries", "0"]);
        let out: testkit::Run = p
            .command(&args, Some(&server))
            .env("ANTHROPIC_API_KEY", "k")
            .output()
            .unwrap()
            .into();
        assert_eq!(out.code, Some(0), "{provider}: {}", out.stderr);
        assert_eq!(
            server.rejected(),
            0,
            "{provider}: no request went past the server's limit"
        );
        assert_eq!(server.seen().len(), 16);
        assert_eq!(p.results().len(), 16);
        assert!(
            span(&server) >= Duration::from_secs(2),
            "{provider}: 16 at 5 a second: {:?}",
            span(&server)
        );
    }
}

#[test]
fn bad_rates_are_refused_naming_the_flag() {
    let p = Project::create("About {{ topic }}", &topics(1, "mock", "mock"));
    for (rate, says) in [
        ("mock=5rps", "neither requests (500rpm) nor tokens"),
        ("mock=0rpm", "must be above 0"),
        ("nosuch=5rpm", "--rate nosuch=...: unknown provider"),
    ] {
        let mut args = RUN.to_vec();
        args.extend(["--rate", rate]);
        let out = p.run(&args, None);
        assert_eq!(out.code, Some(2), "{rate}");
        assert!(out.stderr.contains(says), "{rate}: {}", out.stderr);
    }
}

#[test]
fn commands_are_not_held_back_waiting_for_a_first_answer() {
    // Each command waits (up to 5 s) until two have started: it fails if the first ran alone.
    let p = Project::create("unused", "provider,model,i\ncommand,m,1\ncommand,m,2\n");
    let mut args = RUN.to_vec();
    args.extend([
        "-j",
        "2",
        "--command",
        "touch started-{{i}}; n=0; while [ \"$(ls started-* | wc -l)\" -lt 2 ] && [ $n -lt 100 ]; \
         do sleep 0.05; n=$((n+1)); done; [ \"$(ls started-* | wc -l)\" -ge 2 ]",
    ]);
    let out = p.run(&args, None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(p.results().iter().all(|r| &r[3] == "ok"));
}
