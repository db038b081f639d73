//! Tokens and cost: prices from OpenRouter's `/models` or a `--prices` file, the `cost_usd`
//! column, the summary per model, and `--max-cost`.

use std::time::Duration;

use testkit::llm_server::LlmServer;

use crate::{Project, RUN, run_args, topics};

/// `parallamr run` against the test server as OpenRouter.
fn openrouter(p: &Project, server: &LlmServer, extra: &[&str]) -> testkit::Run {
    let mut args = RUN.to_vec();
    args.extend(extra);
    p.command(&args, None)
        .env("OPENROUTER_BASE_URL", &server.url)
        .env("OPENROUTER_API_KEY", "sk-test")
        .output()
        .unwrap()
        .into()
}

fn costs(p: &Project) -> Vec<String> {
    let mut r = csv::Reader::from_path(p.path().join("out.csv")).unwrap();
    let i = r
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "cost_usd")
        .unwrap();
    r.records().map(|rec| rec.unwrap()[i].to_owned()).collect()
}

#[test]
fn openrouter_prices_give_each_row_its_cost_and_a_price_file_wins() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create("About {{ topic }}", &topics(3, "openrouter", "llama-test"));
    let out = openrouter(&p, &server, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The server reports 12 prompt and 5 completion tokens; /models says $1 and $2 per million.
    assert_eq!(costs(&p), ["0.000022"; 3]);
    assert!(
        out.stderr.contains(
            "per model:\n  MODEL                  ROWS  ERRORS  TOKENS IN  TOKENS OUT       COST    P50    P95\n  openrouter/llama-test     3       0         36          15  $0.000066"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("  total: 36 in + 15 out tokens, $0.000066 spent"),
        "{}",
        out.stderr
    );

    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    std::fs::write(
        p.path().join("prices.csv"),
        "model,input,output\nopenrouter/llama-test,1000,2000\n",
    )
    .unwrap();
    let out = openrouter(&p, &server, &["--prices", "prices.csv"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(costs(&p), ["0.022000"; 3], "cached answers keep their cost");
    assert!(
        out.stderr.contains(
            "total: 36 in + 15 out tokens, $0 spent ($0.0660 more answered from the cache)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn max_cost_stops_sending_at_the_budget_and_resume_sends_the_rest() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create("About {{ topic }}", &topics(10, "openrouter", "llama-test"));
    std::fs::write(
        p.path().join("prices.toml"),
        "\"llama-test\" = { input = 1000, output = 1000 }\n",
    )
    .unwrap();
    // Each answer costs 17 tokens x $1000 per million = $0.017; the third would pass $0.04.
    let out = openrouter(
        &p,
        &server,
        &["--prices", "prices.toml", "--max-cost", "0.04", "-j", "1"],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(server.seen().len(), 2);
    assert_eq!(p.results().len(), 2, "no rows for what was not sent");
    assert!(
        out.stderr.contains(
            "stopped at the budget (--max-cost $0.0400): 8 experiments not sent; spent $0.0340"
        ),
        "{}",
        out.stderr
    );

    server.reset();
    let out = openrouter(
        &p,
        &server,
        &["--prices", "prices.toml", "--max-cost", "1", "--resume"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.seen().len(), 8);
    assert_eq!(p.results().len(), 10);

    let p = Project::create("About {{ topic }}", &topics(1, "openai", "gpt-x"));
    let out = p.run(&run_args(&["--max-cost", "1"]), Some(&server));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains(
            "--max-cost needs the price of every model, and these have none: openai/gpt-x"
        ),
        "{}",
        out.stderr
    );
    let out = p.run(&run_args(&["--max-cost", "0"]), Some(&server));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("the budget must be above 0"),
        "{}",
        out.stderr
    );
}
