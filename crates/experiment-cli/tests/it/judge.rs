//! Judging the answers (issue 31): the `expected` column in each mode, `--assert`, `--is-json`,
//! `--schema`, a grader on the loopback server, `--repeat` with pass rates, the summary per
//! model, and the results page (`view`, `--html`).

use std::collections::BTreeMap;
use std::time::Duration;

use testkit::llm_server::LlmServer;

use crate::{Project, run_run};

/// The rows of `file` as maps from column to value.
pub(crate) fn rows(p: &Project, file: &str) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(p.path().join(file)).unwrap();
    let h: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    r.records()
        .map(|rec| {
            h.iter()
                .cloned()
                .zip(rec.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// `old.csv`: the project's `out.csv` with each row changed by `edit`, as an earlier run of the
/// same sweep that answered otherwise.
pub(crate) fn earlier_results(p: &Project, mut edit: impl FnMut(&mut BTreeMap<String, String>)) {
    let mut r = csv::Reader::from_path(p.path().join("out.csv")).unwrap();
    let mut w = csv::Writer::from_path(p.path().join("old.csv")).unwrap();
    let header = r.headers().unwrap().clone();
    w.write_record(&header).unwrap();
    for rec in r.records() {
        let mut row: BTreeMap<String, String> = header
            .iter()
            .map(str::to_owned)
            .zip(rec.unwrap().iter().map(str::to_owned))
            .collect();
        edit(&mut row);
        w.write_record(header.iter().map(|c| row[c].as_str()))
            .unwrap();
    }
    w.flush().unwrap();
}

/// The answers of the command provider are the `answer` column: each check's pass and fail are
/// known in advance.
#[test]
fn each_check_passes_and_fails_where_it_should() {
    let p = Project::create(
        "unused",
        "provider,model,case,answer,expected,expect_mode\n\
         command,m,contains,The capital is PARIS.,paris,\n\
         command,m,contains-miss,The capital is Lyon.,paris,\n\
         command,m,exact,42,42,exact\n\
         command,m,exact-miss,42.,42,exact\n\
         command,m,regex,order 12345,^order \\d{5}$,regex\n\
         command,m,regex-miss,order 12a45,^order \\d{5}$,regex\n\
         command,m,number,so about 3.14159,3.14,number\n\
         command,m,number-miss,so about 3.5,3.14,number\n",
    );
    let out = run_run(
        &p,
        &[
            "--command",
            "printf '%s' {{ answer }}",
            "--tolerance",
            "0.01",
        ],
        None,
    );
    assert_eq!(
        out.code,
        Some(0),
        "a failed check is not an error: {}",
        out.stderr
    );
    let rows = rows(&p, "out.csv");
    assert_eq!(rows.len(), 8);
    for r in &rows {
        let case = &r["case"];
        assert_eq!(r["status"], "ok", "{r:?}");
        let want = if case.ends_with("-miss") {
            "false"
        } else {
            "true"
        };
        assert_eq!(r["pass"], want, "{case}: {r:?}");
        assert_eq!(r["score"], if want == "true" { "1" } else { "0" }, "{case}");
    }
    let reason = |case: &str| rows.iter().find(|r| r["case"] == case).unwrap()["reason"].clone();
    assert_eq!(
        reason("contains-miss"),
        "expected the answer to contain \"paris\""
    );
    assert_eq!(reason("exact-miss"), "expected exactly \"42\"");
    assert_eq!(
        reason("regex-miss"),
        "expected the answer to match /^order \\d{5}$/"
    );
    assert_eq!(
        reason("number-miss"),
        "expected 3.14 (within 0.01), the answer's last number is 3.5"
    );
    assert!(
        out.stderr.contains("checks: 4 of 8 answers passed"),
        "{}",
        out.stderr
    );

    // --fail-on-assert: the exit status says whether everything passed.
    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    let out = run_run(
        &p,
        &[
            "--command",
            "printf '%s' {{ answer }}",
            "--tolerance",
            "0.01",
            "--fail-on-assert",
        ],
        None,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("parallamr: 4 of 8 answers failed a check (--fail-on-assert): exit 1"),
        "{}",
        out.stderr
    );
}

#[test]
fn asserts_json_and_a_schema_judge_structured_answers() {
    let p = Project::create(
        "unused",
        "provider,model,answer\n\
         command,m,\"{\"\"name\"\": \"\"Ada\"\", \"\"score\"\": 0.9}\"\n\
         command,m,\"{\"\"name\"\": 7, \"\"score\"\": 0.2}\"\n\
         command,m,no json here\n",
    );
    std::fs::write(
        p.path().join("schema.json"),
        r#"{"type": "object", "required": ["name", "score"],
            "properties": {"name": {"type": "string"}, "score": {"type": "number"}}}"#,
    )
    .unwrap();
    let out = run_run(
        &p,
        &[
            "--command",
            "printf '%s' {{ answer }}",
            "--is-json",
            "--schema",
            "schema.json",
            "--assert",
            "json.score >= 0.8",
            "--assert",
            "latency_ms < 60000",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let rows = rows(&p, "out.csv");
    let row = |start: &str| {
        rows.iter()
            .find(|r| r["answer"].starts_with(start))
            .unwrap()
    };
    let (ada, seven, none) = (
        row("{\"name\": \"Ada\""),
        row("{\"name\": 7"),
        row("no json"),
    );
    assert_eq!(ada["pass"], "true", "{ada:?}");
    assert_eq!(seven["pass"], "false");
    assert_eq!(
        seven["score"], "0.5",
        "the schema and one assert of four failed"
    );
    assert!(
        seven["reason"].contains("--schema schema.json: /name: 7 is not of type \"string\""),
        "{:?}",
        seven["reason"]
    );
    assert!(seven["reason"].contains("assert failed: json.score >= 0.8"));
    assert_eq!(none["pass"], "false");
    assert!(
        none["reason"].contains("; no JSON in the answer;"),
        "{none:?}"
    );

    // A bad expression is refused before anything runs, naming it.
    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    let out = run_run(&p, &["--command", "true", "--assert", "output is"], None);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("--assert \"output is\": syntax error"),
        "{}",
        out.stderr
    );
    assert!(!p.path().join("out.csv").exists());
}

/// A grader on the loopback server: its verdict lands in pass and reason, its tokens and cost
/// are counted apart, and a re-run grades from the cache.
#[test]
fn a_grader_judges_each_answer_and_is_cached() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "What is the capital of {{ country }}?",
        "provider,model,country,answer\ncommand,m,France,Paris\ncommand,m,Italy,Lyon\n",
    );
    std::fs::write(
        p.path().join("rubric.txt"),
        "Does the answer name the capital of {{ country }}?",
    )
    .unwrap();
    std::fs::write(
        p.path().join("prices.toml"),
        "\"openai/judge\" = { input = 1, output = 2 }\n",
    )
    .unwrap();
    let args = [
        "--command",
        "printf '%s' {{ answer }}",
        "--grader",
        "openai/judge",
        "--rubric",
        "rubric.txt",
        "--prices",
        "prices.toml",
    ];
    let run = |out: &str| {
        p.command(
            &[&crate::RUN[..5], &["-o", out], &args[..]].concat(),
            Some(&server),
        )
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap()
    };
    let out: testkit::Run = run("out.csv").into();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "one grading request per row");
    assert!(seen.iter().all(|s| s.model == "judge"));
    let france = seen.iter().find(|s| s.prompt.contains("France")).unwrap();
    assert!(
        france
            .prompt
            .starts_with("Does the answer name the capital of France?\n\n## Answer\n\nParis"),
        "{}",
        france.prompt
    );
    assert_eq!(
        rows_of(&p, "out.csv"),
        [
            ("France".into(), "true".into(), "it names Paris".into()),
            (
                "Italy".into(),
                "false".into(),
                "it says \"Lyon\", not Paris".into()
            )
        ]
    );
    // The answers (a command) cost nothing; the grading is counted apart: 12 + 5 tokens a
    // verdict at $1 and $2 per million.
    assert!(
        out.stderr
            .contains("grading: 2 verdicts, 24 in + 10 out tokens, $0.000044"),
        "{}",
        out.stderr
    );

    server.reset();
    let out: testkit::Run = run("again.csv").into();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.seen().len(), 0, "graded from the cache");
    assert!(
        out.stderr.contains("grading: 2 verdicts, 2 from the cache"),
        "{}",
        out.stderr
    );
    assert_eq!(rows_of(&p, "again.csv"), rows_of(&p, "out.csv"));
}

/// Country, pass and reason of each row, sorted (rows are written as they finish).
fn rows_of(p: &Project, file: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = rows(p, file)
        .into_iter()
        .map(|r| (r["country"].clone(), r["pass"].clone(), r["reason"].clone()))
        .collect();
    v.sort();
    v
}

/// `--repeat 5` on a server right 3 times in 5: pass rate 0.6, not every repeat passed; a
/// re-run with `--repeat 7` sends only the 2 new ones per row. The summary's numbers are those
/// of the CSV.
#[test]
fn repeats_give_pass_rates_and_a_larger_n_sends_only_the_new_ones() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "Say right about {{ topic }}",
        "provider,model,topic,expected\nollama,sometimes,cats,right\nollama,sometimes,dogs,right\n",
    );
    let out = run_run(
        &p,
        &[
            "--repeat",
            "5",
            "--expect",
            "exact",
            "-j",
            "3",
            "--report",
            "report.json",
        ],
        Some(&server),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.seen().len(), 10);
    let rows = rows(&p, "out.csv");
    assert_eq!(rows.len(), 10);
    for topic in ["cats", "dogs"] {
        let mine: Vec<_> = rows.iter().filter(|r| r["topic"] == topic).collect();
        let mut repeats: Vec<u32> = mine.iter().map(|r| r["repeat"].parse().unwrap()).collect();
        repeats.sort_unstable();
        assert_eq!(repeats, [1, 2, 3, 4, 5]);
        let passed = mine.iter().filter(|r| r["pass"] == "true").count();
        assert_eq!(passed, 3, "{topic}: a pass rate of 0.6");
    }
    // The summary: computed here from the CSV, read there from the table.
    let line = out
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("ollama/sometimes"))
        .unwrap_or_else(|| panic!("no summary line: {}", out.stderr));
    let cells: Vec<&str> = line.split_whitespace().collect();
    let passed = rows.iter().filter(|r| r["pass"] == "true").count();
    assert_eq!(cells[1], rows.len().to_string(), "rows: {line}");
    assert_eq!(cells[2], "0", "errors: {line}");
    assert_eq!(
        cells[3],
        format!("{:.1}%", 100.0 * passed as f64 / rows.len() as f64),
        "{line}"
    );
    assert_eq!(cells[5], "0/2", "no row passed all its repeats: {line}");
    // The report has the same summary.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("report.json")).unwrap())
            .unwrap();
    let m = &report["models"][0];
    assert_eq!(
        (&m["model"], &m["judged"], &m["passed"], &m["pass_rate"]),
        (
            &serde_json::json!("sometimes"),
            &serde_json::json!(10),
            &serde_json::json!(6),
            &serde_json::json!(0.6)
        ),
        "{report}"
    );
    assert_eq!(report["tasks"].as_array().unwrap().len(), 10);
    let tokens_in: u64 = rows
        .iter()
        .map(|r| r["input_tokens"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(cells[6], tokens_in.to_string(), "{line}");

    server.reset();
    let out = p.run(
        &crate::run_args(&["-o", "seven.csv", "--repeat", "7", "--expect", "exact"]),
        Some(&server),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        server.seen().len(),
        4,
        "2 new sends per row, the rest from the cache"
    );
    assert_eq!(rows_len(&p, "seven.csv"), 14);
    assert!(out.stderr.contains("10 from the cache"), "{}", out.stderr);

    // --resume of the first results with --repeat 7 sends only the missing repeats too.
    server.reset();
    let out = run_run(
        &p,
        &[
            "--repeat",
            "7",
            "--expect",
            "exact",
            "--resume",
            "--no-cache",
        ],
        Some(&server),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.seen().len(), 4);
    assert_eq!(rows_len(&p, "out.csv"), 14);
}

fn rows_len(p: &Project, file: &str) -> usize {
    rows(p, file).len()
}

/// `view` writes one page from results; `--compare` marks what changed; hostile values stay
/// text; a file that is not results is an error naming it.
#[test]
fn view_writes_a_self_contained_page_and_compare_marks_changes() {
    let p = Project::create(
        "unused",
        "provider,model,q,answer,expected\n\
         command,m,<b>bold</b>,<script>document.title='PWNED'</script> Paris,paris\n\
         command,m,two,Lyon,paris\n",
    );
    let out = run_run(
        &p,
        &[
            "--command",
            "printf '%s' {{ answer }}",
            "--html",
            "page.html",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let html = std::fs::read_to_string(p.path().join("page.html")).unwrap();
    assert!(
        html.contains("&lt;script&gt;document.title="),
        "shown as text"
    );
    assert!(!html.contains("<script>document.title"), "never markup");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no request leaves"
    );
    assert!(html.contains("1 of 2 passed (50.0%)"), "the lede");

    // The old run answered the second row right: it is newly failing now.
    earlier_results(&p, |row| {
        if row["q"] == "two" {
            row.insert("output".into(), "Paris".into());
            row.insert("pass".into(), "true".into());
            row.insert("score".into(), "1".into());
            row.insert("reason".into(), String::new());
        }
    });
    let view = p.run(
        &[
            "view",
            "out.csv",
            "--compare",
            "old.csv",
            "-o",
            "cmp.html",
            "--title",
            "Capitals",
        ],
        None,
    );
    assert_eq!(view.code, Some(0), "{}", view.stderr);
    let cmp = std::fs::read_to_string(p.path().join("cmp.html")).unwrap();
    assert!(cmp.contains("<title>Capitals</title>"));
    assert!(
        cmp.contains("Since then: 1 newly failing, 0 newly passing"),
        "{cmp}"
    );
    assert!(
        cmp.contains("<del>Paris</del><ins>Lyon</ins>"),
        "the word diff"
    );

    let bad = p.run(&["view", "experiments.csv"], None);
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr
            .contains("experiments.csv is not a parallamr results file"),
        "{}",
        bad.stderr
    );
    let missing = p.run(&["view", "nope.csv"], None);
    assert_eq!(missing.code, Some(2));
    assert!(
        missing
            .stderr
            .contains("the results file nope.csv does not exist")
    );
}

/// A grading request that fails never costs the answer: a 429 retries the grading alone, and a
/// grader that keeps failing leaves the answer in an error row, which --resume grades again.
#[test]
fn grading_failures_keep_the_answer_and_retry_only_the_grading() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\nollama,llama-test,cats\n",
    );
    let run = |grader: &str, extra: &[&str]| -> testkit::Run {
        p.command(
            &[&crate::RUN[..], &["--grader", grader], extra].concat(),
            Some(&server),
        )
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap()
        .into()
    };
    // `flaky` answers 429 with Retry-After: 1 the first time.
    let out = run("openai/flaky", &["--no-cache"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen: Vec<String> = server.seen().iter().map(|s| s.model.clone()).collect();
    assert_eq!(
        seen,
        ["llama-test", "flaky", "flaky"],
        "the answer sent once, the grading twice"
    );
    let first = rows(&p, "out.csv");
    assert_eq!(first[0]["status"], "ok");
    assert!(
        first[0]["reason"].starts_with("the grader's reply has no verdict"),
        "{:?}",
        first[0]
    );
    assert!(
        first[0]["duration_seconds"].parse::<f64>().unwrap() < 0.9,
        "the grading's wait is not the answer's latency: {:?}",
        first[0]
    );

    // `broken` answers 500: the row keeps its answer, is an error, and --resume grades again.
    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    server.reset();
    let out = run("openai/broken", &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let rows = rows(&p, "out.csv");
    assert_eq!(rows[0]["status"], "error");
    assert_eq!(rows[0]["output"], "answer from llama-test to: About cats");
    assert!(
        rows[0]["error_message"].starts_with("not graded: grading with openai/broken: "),
        "{:?}",
        rows[0]
    );
    server.reset();
    let out = run("openai/judge", &["--resume"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen: Vec<String> = server.seen().iter().map(|s| s.model.clone()).collect();
    assert_eq!(seen, ["judge"], "the answer came from the cache");
}

/// --fail-on-assert judges every row of a resumed file, not only those sent this time; the page
/// is never written over the results.
#[test]
fn resumed_results_are_judged_whole_and_the_page_never_overwrites_them() {
    let p = Project::create(
        "unused",
        "provider,model,answer,expected\ncommand,m,Lyon,paris\ncommand,m,Paris,paris\n",
    );
    let args = ["--command", "printf '%s' {{ answer }}", "--fail-on-assert"];
    let out = run_run(&p, &args, None);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let out = run_run(&p, &[&args[..], &["--resume"]].concat(), None);
    assert_eq!(
        out.code,
        Some(1),
        "the failed row kept from before: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("per model (every row of the results, 2 kept from before):"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("1 of 2 answers failed a check"),
        "{}",
        out.stderr
    );

    let before = std::fs::read_to_string(p.path().join("out.csv")).unwrap();
    for page in ["out.csv", "page.csv"] {
        let out = run_run(
            &p,
            &[&args[..], &["--resume", "--html", page]].concat(),
            None,
        );
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "--html {page}: the page would be written over results"
            )),
            "{}",
            out.stderr
        );
    }
    let view = p.run(&["view", "out.csv", "-o", "./out.csv"], None);
    assert_eq!(view.code, Some(2), "{}", view.stderr);
    assert_eq!(
        std::fs::read_to_string(p.path().join("out.csv")).unwrap(),
        before
    );
}
