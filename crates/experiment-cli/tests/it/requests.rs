//! What is sent: request parameters from the experiments' columns.

use std::time::Duration;

use serde_json::json;
use testkit::llm_server::LlmServer;

use crate::{Project, RUN};

#[test]
fn parameter_columns_are_sent_typed_and_stay_variables() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "About {{ topic }} at {{ temperature }}",
        "provider,model,topic,temperature,max_tokens,seed\n\
         openai,llama-test,cats,0.2,64,7\n\
         ollama,llama-test,dogs,1,,\n",
    );
    let out = p.run(&RUN, Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen = server.seen();
    let openai = seen.iter().find(|s| s.api == "openai").unwrap();
    assert_eq!(openai.body["temperature"], json!(0.2));
    assert_eq!(openai.body["max_tokens"], json!(64));
    assert_eq!(openai.body["seed"], json!(7));
    assert_eq!(openai.prompt, "About cats at 0.2", "still a variable");
    let ollama = seen.iter().find(|s| s.api == "ollama").unwrap();
    assert_eq!(
        ollama.body["options"],
        json!({ "temperature": 1.0 }),
        "Ollama's options; empty cells are not sent"
    );
    assert_eq!(p.results().len(), 2);
}

#[test]
fn param_columns_choose_the_columns_and_bad_values_stop_before_sending() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic,temperature,stop\nopenai,llama-test,cats,0.5,\"[\"\"END\"\"]\"\n",
    );
    let mut args = RUN.to_vec();
    args.extend(["--param-columns", "stop"]);
    let out = p.run(&args, Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let body = &server.seen()[0].body;
    assert_eq!(body["stop"], json!(["END"]), "a JSON cell is sent as JSON");
    assert!(body.get("temperature").is_none(), "only the named columns");

    server.reset();
    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    std::fs::write(
        p.path().join("experiments.csv"),
        "provider,model,topic,temperature\nopenai,llama-test,cats,0.5\nopenai,llama-test,dogs,warm\n",
    )
    .unwrap();
    let out = p.run(&RUN, Some(&server));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("experiments.csv line 3: temperature \"warm\" is not a number"),
        "{}",
        out.stderr
    );
    assert_eq!(server.seen().len(), 0);
    let mut args = RUN.to_vec();
    args.extend(["--param-columns", "temp"]);
    let out = p.run(&args, Some(&server));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("--param-columns names \"temp\", which is not a variable column"),
        "{}",
        out.stderr
    );
}
