//! Where rows go: path templates in `-o` (a file per distinct value), `-p` and `-c`, and JSON
//! Lines.

use std::path::Path;
use std::time::Duration;

use testkit::llm_server::LlmServer;

use crate::{HEADER, Project, run_args};

fn records(path: &Path) -> Vec<csv::StringRecord> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records().map(Result::unwrap).collect()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_output_template_writes_a_file_per_value_and_each_resumes_on_its_own() {
    let server = LlmServer::start(Duration::from_millis(5));
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\n\
         ollama,llama-test,cats\n\
         ollama,llama-test,dogs\n\
         ollama,broken,cats\n\
         ollama,llama-test,../a/b\n\
         ollama,llama-test,\n",
    );
    let args = run_args(&["-o", "out/{{provider}}-{{ topic }}.csv"]);
    let out = p.run(&args, Some(&server));
    assert_eq!(out.code, Some(1), "a row failed: {}", out.stderr);
    assert!(
        out.stderr
            .contains("results: 4 files by out/{{provider}}-{{ topic }}.csv (5 of 5 rows"),
        "{}",
        out.stderr
    );
    let mut names: Vec<String> = std::fs::read_dir(p.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ollama-_a_b.csv",
            "ollama-_missing_.csv",
            "ollama-cats.csv",
            "ollama-dogs.csv"
        ]
    );
    assert_eq!(
        server.seen().len(),
        4,
        "the row without a topic is not sent"
    );
    for name in &names {
        let text = lines(&p.path().join("out").join(name));
        assert_eq!(text[0], HEADER, "{name}");
        assert_eq!(
            text.iter().filter(|l| *l == HEADER).count(),
            1,
            "{name}: the header once"
        );
    }
    let cats = records(&p.path().join("out/ollama-cats.csv"));
    let statuses: Vec<(&str, &str)> = cats.iter().map(|r| (&r[1], &r[3])).collect();
    assert!(statuses.contains(&("llama-test", "ok")) && statuses.contains(&("broken", "error")));
    let missing = records(&p.path().join("out/ollama-_missing_.csv"));
    assert_eq!(&missing[0][3], "error");
    assert_eq!(
        &missing[0][9],
        "not sent: -o out/{{provider}}-{{ topic }}.csv needs topic, which this row leaves empty"
    );

    // Without --resume nothing is overwritten, and nothing is sent.
    server.reset();
    let out = p.run(&args, Some(&server));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("already exists: pass --resume"),
        "{}",
        out.stderr
    );
    assert_eq!(server.seen().len(), 0);

    // --resume runs only the failed row, in its own file, and keeps every other file's rows.
    let mut resume = args.clone();
    resume.push("--resume");
    let out = p.run(&resume, Some(&server));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("resuming: 3 of 5 experiments already have a result in 4 files"),
        "{}",
        out.stderr
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].model, "broken");
    let cats = records(&p.path().join("out/ollama-cats.csv"));
    assert_eq!(cats.len(), 2);
    assert_eq!(lines(&p.path().join("out/ollama-cats.csv"))[0], HEADER);
    assert_eq!(records(&p.path().join("out/ollama-dogs.csv")).len(), 1);
    assert_eq!(records(&p.path().join("out/ollama-_missing_.csv")).len(), 1);
}

#[test]
fn provider_and_model_are_path_variables_and_unknown_ones_are_refused() {
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\nmock,mock,cats\nmock,mock-small,cats\n",
    );
    let out = p.run(&run_args(&["-o", "{{model}}.csv"]), None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(records(&p.path().join("mock.csv")).len(), 1);
    assert_eq!(
        &records(&p.path().join("mock-small.csv"))[0][1],
        "mock-small"
    );

    let out = p.run(&run_args(&["-o", "{{topc}}.csv"]), None);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains(
            "-o {{topc}}.csv: no column is named \"topc\" (the columns: provider, model, topic)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn prompt_and_context_paths_take_the_row_values() {
    let p = Project::create(
        "unused",
        "provider,model,task,doc\nmock,mock,summary,a\nmock,mock,title,b\nmock,mock,summary,b\n",
    );
    std::fs::create_dir(p.path().join("prompts")).unwrap();
    std::fs::write(p.path().join("prompts/summary.txt"), "Summarise this.").unwrap();
    std::fs::write(p.path().join("prompts/title.txt"), "Give it a title.").unwrap();
    std::fs::write(p.path().join("a.md"), "alpha").unwrap();
    std::fs::write(p.path().join("b.md"), "beta").unwrap();
    let args = [
        "run",
        "-p",
        "prompts/{{task}}.txt",
        "-c",
        "{{doc}}.md",
        "-e",
        "experiments.csv",
        "-o",
        "out.csv",
    ];
    let out = p.run(&args, None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut got: Vec<(String, String)> = p
        .results()
        .iter()
        .map(|r| (format!("{}/{}", &r[2], &r[3]), r[9].to_owned()))
        .collect();
    got.sort();
    // The mock answers with the first line of what it was sent, and the sizes of the rest.
    assert!(got[0].1.contains("first line: Summarise this."), "{got:?}");
    assert!(got[2].1.contains("first line: Give it a title."), "{got:?}");
    assert_ne!(got[0].1, got[1].1, "a and b differ: {got:?}");

    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    std::fs::remove_file(p.path().join("prompts/title.txt")).unwrap();
    let out = p.run(&args, None);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("experiments.csv line 3: cannot read the prompt file prompts/title.txt"),
        "{}",
        out.stderr
    );
    assert!(!p.path().join("out.csv").exists(), "nothing ran");
}

#[test]
fn json_lines_output_has_an_object_per_row_and_resumes() {
    let server = LlmServer::start(Duration::from_millis(5));
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\nollama,llama-test,cats\nollama,broken,dogs\n",
    );
    let args = run_args(&["-o", "out.jsonl"]);
    let out = p.run(&args, Some(&server));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let rows: Vec<serde_json::Value> = lines(&p.path().join("out.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    let cats = rows.iter().find(|r| r["topic"] == "cats").unwrap();
    assert_eq!(cats["status"], "ok");
    assert_eq!(cats["input_tokens"], 11, "numbers stay numbers");
    assert_eq!(cats["context_window"], 4096);
    assert!(cats["duration_seconds"].is_f64());
    let dogs = rows.iter().find(|r| r["topic"] == "dogs").unwrap();
    assert_eq!(dogs["status"], "error");
    assert_eq!(dogs["output_tokens"], serde_json::Value::Null);

    server.reset();
    let mut resume = args.clone();
    resume.push("--resume");
    let out = p.run(&resume, Some(&server));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(server.seen().len(), 1, "only the failed row again");
    assert_eq!(lines(&p.path().join("out.jsonl")).len(), 2);
}
