//! What is sent: request parameters from the experiments' columns.

use std::time::Duration;

use serde_json::json;
use testkit::llm_server::LlmServer;

use crate::{Project, RUN, run_args};

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

#[test]
fn a_dotenv_file_above_gives_settings_and_the_environment_wins() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\nopenai,llama-test,cats\ncommand,m,dogs\n",
    );
    std::fs::write(
        p.path().join(".env"),
        format!(
            "# settings for the sweep\nOPENAI_BASE_URL={}\nexport OPENAI_API_KEY='sk-from-file'\nGREETING=\"hello from .env\"\n",
            server.url
        ),
    )
    .unwrap();
    let sub = p.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(p.path().join("prompt.txt"), sub.join("prompt.txt")).unwrap();
    std::fs::copy(
        p.path().join("experiments.csv"),
        sub.join("experiments.csv"),
    )
    .unwrap();

    let mut args = RUN.to_vec();
    args.extend(["--command", "echo \"$GREETING\""]);
    let out = p.command(&args, None).current_dir(&sub).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.seen().len(), 1, "OPENAI_BASE_URL from ../.env");
    let text = std::fs::read_to_string(sub.join("out.csv")).unwrap();
    assert!(
        text.contains("hello from .env"),
        "commands see it too: {text}"
    );

    let env_file = p.path().join(".env");
    let out = p
        .command(&["providers"], None)
        .current_dir(&sub)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "OPENAI_BASE_URL = {} (from {}), OPENAI_API_KEY set (from {})",
            server.url,
            env_file.display(),
            env_file.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "then {} (the environment wins)",
            env_file.display()
        )),
        "{stdout}"
    );

    // The environment wins over the file.
    let out = p
        .command(&["providers"], None)
        .current_dir(&sub)
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "OPENAI_BASE_URL = http://127.0.0.1:9 (from the environment), OPENAI_API_KEY set (from"
        ),
        "{stdout}"
    );

    std::fs::write(&env_file, "OPENAI_API_KEY=x\nnot a setting\n").unwrap();
    let out = p
        .command(&["providers"], None)
        .current_dir(&sub)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(".env line 2: cannot parse"), "{stderr}");
}

#[test]
fn a_dry_run_shows_every_prompt_and_sends_nothing() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "Summarise for {{ reader }}:",
        "provider,model,topic,reader\nollama,llama-test,cats,kids\nopenai,llama-test,dogs,\ncommand,m,owls,vets\n",
    );
    std::fs::write(p.path().join("doc.md"), "The document.\n").unwrap();
    let out = p.run(
        &run_args(&[
            "-c",
            "doc.md",
            "--dry-run",
            "--command",
            "echo {{topic}} {{reader}}",
        ]),
        Some(&server),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.seen().len(), 0, "nothing is sent");
    assert!(!p.path().join("out.csv").exists());
    assert!(
        out.stdout.contains(
            "--- experiments.csv line 2: ollama/llama-test, topic=cats, reader=kids (about 14 tokens) ---\n\
             Summarise for kids:\n\n## Document: doc.md\n\nThe document.\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "line 4: command/m, topic=owls, reader=vets (a command) ---\n\
             echo \"${PARALLAMR_V1}\" \"${PARALLAMR_V2}\"\n  with PARALLAMR_V1=owls\n  \
             with PARALLAMR_V2=vets\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("0 of 3 answers are in the cache"),
        "{}",
        out.stderr
    );
}
