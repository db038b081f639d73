//! `--batch` (issue 32): rows for OpenAI and Anthropic sent as a few batches at half the price,
//! against the loopback server's batch APIs (state machines that take a few polls to end).

use std::fmt::Write as _;
use std::time::Duration;

use testkit::llm_server::LlmServer;

use crate::judge::rows;
use crate::{BIN, Project};

/// `llama-test` at $2 in, $8 out per million tokens: 12 in and 5 out cost $0.000064 online,
/// $0.000032 in a batch.
const PRICES: &str = "\"llama-test\" = { input = 2, output = 8 }\n";

fn batch_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = crate::RUN.to_vec();
    args.extend(["--batch", "--prices", "prices.toml"]);
    args.extend(extra);
    args
}

fn keyed(p: &Project, args: &[&str], server: &LlmServer) -> std::process::Command {
    let mut cmd = p.command(args, Some(server));
    cmd.env("ANTHROPIC_API_KEY", "sk-ant-batch-test")
        .env("OPENAI_API_KEY", "sk-openai-batch-test");
    cmd
}

fn run(p: &Project, args: &[&str], server: &LlmServer) -> testkit::Run {
    keyed(p, args, server).output().unwrap().into()
}

/// `run --batch --resume`, polling often.
fn resume(p: &Project, server: &LlmServer) -> testkit::Run {
    run(
        p,
        &batch_args(&["--resume", "--batch-poll", "100ms"]),
        server,
    )
}

fn project(experiments: &str) -> Project {
    let p = Project::create("About {{ topic }}", experiments);
    std::fs::write(p.path().join("prices.toml"), PRICES).unwrap();
    p
}

fn state_file(p: &Project) -> std::path::PathBuf {
    p.path().join(".out.csv.batches.json")
}

#[test]
fn a_batch_sweep_sends_a_few_batches_within_the_limits_at_half_the_price() {
    let server = LlmServer::start(Duration::ZERO);
    let mut experiments = String::from("provider,model,topic\n");
    for i in 0..500 {
        let _ = writeln!(experiments, "openai,llama-test,o{i}");
        let _ = writeln!(experiments, "anthropic,llama-test,a{i}");
    }
    // Ollama has no batch API: its rows go online in the same run.
    experiments.push_str("ollama,llama-test,x\nollama,llama-test,y\n");
    let p = project(&experiments);
    let out = run(
        &p,
        &batch_args(&["--batch-size", "300", "--batch-poll", "100ms"]),
        &server,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let batches = server.batches();
    let sizes = |api: &str| -> Vec<usize> {
        batches
            .iter()
            .filter(|b| b.api == api)
            .map(|b| b.requests)
            .collect()
    };
    assert_eq!(sizes("openai"), [300, 200], "{batches:?}");
    assert_eq!(sizes("anthropic"), [300, 200], "{batches:?}");
    assert!(batches.iter().all(|b| b.polls >= 3), "polled until ended");
    let online: Vec<_> = server.seen().iter().map(|s| s.api).collect();
    assert_eq!(
        online,
        ["ollama", "ollama"],
        "no row of a batch went online"
    );

    let results = rows(&p, "out.csv");
    assert_eq!(results.len(), 1002);
    for r in results.iter().filter(|r| r["provider"] != "ollama") {
        assert_eq!(r["status"], "ok", "{r:?}");
        assert_eq!(r["cached"], "false");
        assert!(
            r["output"].starts_with(&format!("answer from llama-test to: About {}", r["topic"])),
            "{r:?}"
        );
        assert_eq!(r["cost_usd"], "0.000032", "half of $0.000064: {r:?}");
    }
    assert!(
        out.stderr
            .contains("openai batch batch_1: 300 requests sent"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("anthropic batch msgbatch_04: ended, 200 of 200 answered"),
        "{}",
        out.stderr
    );
    assert!(!state_file(&p).exists(), "no batch left in flight");

    // The answers are in the cache: the same sweep again sends nothing.
    let mut args = batch_args(&[]);
    args[6] = "again.csv";
    let out = run(&p, &args, &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.batches().len(), 4, "no new batch");
    let again = rows(&p, "again.csv");
    assert!(
        again
            .iter()
            .filter(|r| r["provider"] != "ollama")
            .all(|r| r["cached"] == "true" && r["cost_usd"] == "0.000032"),
        "a batch answer from the cache keeps its batch price"
    );
}

/// Start `run --batch` in the background polling rarely; return once its batches are sent.
fn start_and_wait_for_submission(
    p: &Project,
    server: &LlmServer,
    batches: usize,
) -> std::process::Child {
    let child = keyed(p, &batch_args(&["--batch-poll", "1h"]), server)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    testkit::wait_for("the batches to be recorded", || {
        std::fs::read_to_string(state_file(p)).is_ok_and(|s| s.matches("\"id\"").count() == batches)
    });
    child
}

#[test]
fn a_run_killed_after_submission_resumes_by_polling_the_same_batches() {
    let server = LlmServer::start(Duration::ZERO);
    let p = project(
        "provider,model,topic\nopenai,llama-test,a\nopenai,llama-test,b\nanthropic,llama-test,c\n",
    );
    let mut child = start_and_wait_for_submission(&p, &server, 2);
    child.kill().unwrap(); // SIGKILL: no chance to tidy up
    child.wait().unwrap();
    assert_eq!(server.batches().len(), 2);
    let state = std::fs::read_to_string(state_file(&p)).unwrap();
    assert!(
        state.contains("batch_1") && state.contains("msgbatch_02"),
        "{state}"
    );
    assert!(
        !state.contains("sk-ant-batch-test"),
        "no key in the state file"
    );

    let out = resume(&p, &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.batches().len(), 2, "nothing sent twice");
    assert!(
        out.stderr
            .contains("openai batch batch_1: sent by an earlier run, polled again"),
        "{}",
        out.stderr
    );
    let rows = rows(&p, "out.csv");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
    assert!(!state_file(&p).exists());
}

#[test]
fn a_request_that_fails_or_expires_inside_a_batch_is_an_error_row() {
    let server = LlmServer::start(Duration::ZERO);
    let p = project(
        "provider,model,topic\n\
         openai,llama-test,ok\nopenai,broken,b\nopenai,expire,e\n\
         anthropic,llama-test,ok\nanthropic,broken,b\nanthropic,expire,e\n",
    );
    let out = run(&p, &batch_args(&["--batch-poll", "100ms"]), &server);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let rows = rows(&p, "out.csv");
    let row = |provider: &str, model: &str| {
        rows.iter()
            .find(|r| r["provider"] == provider && r["model"] == model)
            .unwrap()
    };
    for provider in ["openai", "anthropic"] {
        assert_eq!(row(provider, "llama-test")["status"], "ok");
        let broken = row(provider, "broken");
        assert_eq!(broken["status"], "error");
        assert!(
            broken["error_message"].contains("the GPU caught fire"),
            "{broken:?}"
        );
        let expired = row(provider, "expire");
        assert_eq!(expired["status"], "error");
        assert_eq!(
            expired["error_message"],
            "the batch expired (24 h) before this request ran; --resume sends it again"
        );
    }
}

#[test]
fn ctrl_c_leaves_the_batches_running_and_batch_cancel_stops_them() {
    let server = LlmServer::start(Duration::ZERO);
    let p = project("provider,model,topic\nopenai,llama-test,a\nanthropic,llama-test,b\n");
    let child = start_and_wait_for_submission(&p, &server, 2);
    testkit::interrupt(&child);
    let out: testkit::Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(130), "{}", out.stderr);
    assert!(
        out.stderr.contains("2 batches are still at the provider")
            && out
                .stderr
                .contains("--batch --resume` collects the answers")
            && out.stderr.contains("parallamr batch cancel out.csv"),
        "{}",
        out.stderr
    );

    let status = run(&p, &["batch", "status", "out.csv"], &server);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status.stdout.contains("batch_1") && status.stdout.contains("msgbatch_02"),
        "{}",
        status.stdout
    );
    let cancel = run(&p, &["batch", "cancel", "out.csv"], &server);
    assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
    assert!(
        cancel.stdout.contains("cancelling") && cancel.stdout.contains("canceling"),
        "each provider's word: {}",
        cancel.stdout
    );
    assert!(server.batches().iter().all(|b| b.cancelled));

    // --resume collects them: cancelled before they ran, so error rows a later --resume sends
    // again in a new batch.
    let out = resume(&p, &server);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let rows = rows(&p, "out.csv");
    assert!(
        rows.iter().all(
            |r| r["error_message"].contains("cancelled before this request ran")
                || r["error_message"].contains("ended (cancelled) without an answer")
        ),
        "{rows:?}"
    );
    let out = resume(&p, &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.batches().len(), 4, "sent again, once");
    let status = run(&p, &["batch", "status", "out.csv"], &server);
    assert!(
        status.stdout.contains("no batch of out.csv is in flight"),
        "{}",
        status.stdout
    );
}

#[test]
fn the_budget_holds_each_request_at_the_batch_price_before_the_batch_is_sent() {
    let server = LlmServer::start(Duration::ZERO);
    // Each request may cost up to about 3 x $1 + 1000 x $4 per million at the batch price
    // ($0.004003): $0.01 holds two of the five.
    let mut experiments = String::from("provider,model,topic,max_tokens\n");
    for i in 0..5 {
        let _ = writeln!(experiments, "openai,llama-test,t{i},1000");
    }
    let p = project(&experiments);
    let out = run(
        &p,
        &batch_args(&["--max-cost", "0.01", "--batch-poll", "100ms"]),
        &server,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(server.batches()[0].requests, 2, "{:?}", server.batches());
    assert_eq!(
        rows(&p, "out.csv").len(),
        2,
        "the others have no row, for --resume"
    );
    assert!(
        out.stderr
            .contains("stopped at the budget (--max-cost $0.0100): 3 experiments not sent"),
        "{}",
        out.stderr
    );
}

#[test]
fn online_rows_run_first_and_an_earlier_batch_no_row_needs_is_still_collected() {
    let server = LlmServer::start(Duration::ZERO);
    // The batched rows come first in the file; with one worker, the ollama rows would wait
    // behind them until the batch ended.
    let p = project(
        "provider,model,topic\nopenai,llama-test,a\nopenai,llama-test,b\n\
         ollama,llama-test,x\nollama,llama-test,y\n",
    );
    let child = keyed(&p, &batch_args(&["-j", "1", "--batch-poll", "1h"]), &server)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    testkit::wait_for("the online rows while the batch runs", || {
        std::fs::read_to_string(p.path().join("out.csv")).is_ok_and(|t| t.lines().count() == 3)
    });
    testkit::interrupt(&child);
    let out: testkit::Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(130), "{}", out.stderr);

    // Without --batch, the recorded batch's requests would be sent again at full price.
    let mut plain = crate::RUN.to_vec();
    plain.push("--resume");
    let out = run(&p, &plain, &server);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("out.csv has 1 batch still at the providers (recorded in .out.csv.batches.json): add --batch"),
        "{}",
        out.stderr
    );
    assert_eq!(
        server.seen().len(),
        2,
        "only the two ollama rows went online"
    );

    // The prompt changes: the recorded batch serves no row now, but it is polled to its end
    // and its answers kept; the new requests go in a new batch.
    std::fs::write(p.path().join("prompt.txt"), "Tell me about {{ topic }}").unwrap();
    let out = resume(&p, &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.batches().len(), 2);
    assert!(!state_file(&p).exists(), "{}", out.stderr);
    std::fs::write(p.path().join("prompt.txt"), "About {{ topic }}").unwrap();
    let mut args = batch_args(&[]);
    args[6] = "old.csv";
    let out = run(&p, &args, &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        server.batches().len(),
        2,
        "the first batch's answers were kept"
    );
    assert!(rows(&p, "old.csv").iter().all(|r| r["cached"] == "true"));
}

#[test]
fn a_recorded_batch_its_provider_does_not_know_is_forgotten() {
    let server = LlmServer::start(Duration::ZERO);
    let p = project("provider,model,topic\nopenai,llama-test,a\n");
    std::fs::write(
        state_file(&p),
        serde_json::json!({ "batches": [{
            "provider": "openai", "endpoint": server.url, "id": "batch_999", "schema": null,
            "submitted": 0, "keys": ["0123"], "models": ["llama-test"],
        }] })
        .to_string(),
    )
    .unwrap();
    let out = run(&p, &batch_args(&["--batch-poll", "100ms"]), &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("openai does not know batch batch_999 (404): it was forgotten"),
        "{}",
        out.stderr
    );
    assert_eq!(rows(&p, "out.csv")[0]["status"], "ok");
    assert!(!state_file(&p).exists());
}

#[test]
fn batch_needs_a_results_file_and_the_cache() {
    let p = project("provider,model,topic\nopenai,llama-test,a\n");
    let out: testkit::Run = testkit::command(BIN)
        .args([
            "run",
            "-p",
            "prompt.txt",
            "-e",
            "experiments.csv",
            "--batch",
        ])
        .current_dir(p.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("--batch needs a results file (-o FILE)"),
        "{}",
        out.stderr
    );
    let out: testkit::Run = testkit::command(BIN)
        .args([
            "run",
            "-p",
            "prompt.txt",
            "-e",
            "experiments.csv",
            "-o",
            "x.csv",
            "--batch",
            "--no-cache",
        ])
        .current_dir(p.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
}

/// The same 200-row sweep online and in batches, priced from the built-in list prices: the
/// batch costs half. The wall times are printed for the record (the closing note of issue 32);
/// on the loopback server they measure its latency and poll steps, not a vendor's.
#[test]
fn the_same_sweep_costs_half_in_batches() {
    let server = LlmServer::start(Duration::from_millis(200));
    let mut experiments = String::from("provider,model,topic\n");
    for i in 0..100 {
        let _ = writeln!(experiments, "openai,gpt-4o-mini,o{i}");
        let _ = writeln!(experiments, "anthropic,claude-sonnet-4-5,a{i}");
    }
    let p = project(&experiments);
    let total = |file: &str| -> f64 {
        rows(&p, file)
            .iter()
            .map(|r| r["cost_usd"].parse::<f64>().unwrap())
            .sum()
    };
    let started = std::time::Instant::now();
    let mut online = crate::RUN.to_vec();
    online.extend(["-j", "16", "--no-cache"]);
    online[6] = "online.csv";
    let out = run(&p, &online, &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let online_time = started.elapsed();
    let started = std::time::Instant::now();
    let mut batched = crate::RUN.to_vec();
    batched.extend(["--batch", "--batch-poll", "1s"]);
    batched[6] = "batch.csv";
    let out = run(&p, &batched, &server);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let batch_time = started.elapsed();
    let (online_cost, batch_cost) = (total("online.csv"), total("batch.csv"));
    // 100 x (12 x 0.15 + 5 x 0.60) + 100 x (12 x 3 + 5 x 15), per million: $0.01158 online.
    assert!((online_cost - 0.01158).abs() < 1e-4, "{online_cost}");
    assert!(
        (batch_cost - online_cost / 2.0).abs() < 1e-4,
        "{batch_cost} vs {online_cost}"
    );
    assert_eq!(server.batches().len(), 2, "one batch per provider");
    eprintln!(
        "200 rows on the loopback server (200 ms per request online, -j 16, limit 10 per \
         provider; batches end on the third poll, 1 s apart): online {online_time:.2?} \
         ${online_cost:.5}, in batches {batch_time:.2?} ${batch_cost:.5}, {} requests vs 2 batches",
        server.seen().len()
    );
}
