//! End-to-end tests of the real `parallamr` binary, against a fake LLM server on 127.0.0.1
//! that the tests start (`testkit::llm_server`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use testkit::Run;
use testkit::llm_server::LlmServer;

const BIN: &str = env!("CARGO_BIN_EXE_parallamr");

/// `parallamr run` on the project's prompt and experiments, results to `out.csv`.
const RUN: [&str; 7] = [
    "run",
    "-p",
    "prompt.txt",
    "-e",
    "experiments.csv",
    "-o",
    "out.csv",
];

/// `parallamr run` on the project's prompt and experiments, then `extra`.
fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = RUN[..5].to_vec();
    args.extend(extra);
    args
}

const HEADER: &str = "provider,model,topic,status,input_tokens,context_window,output_tokens,duration_seconds,output,error_message,cached,cost_usd";

#[test]
fn keeps_the_command_line_contract() {
    testkit::assert_cli_contract(BIN, "parallamr", env!("CARGO_PKG_VERSION"));
    testkit::assert_shared_flags(
        BIN,
        "parallamr",
        &["run", "-p", "prompt.txt", "-e", "experiments.csv"],
    );
}

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn create(prompt: &str, experiments: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prompt.txt"), prompt).unwrap();
        std::fs::write(dir.path().join("experiments.csv"), experiments).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str], server: Option<&LlmServer>) -> std::process::Command {
        let mut cmd = testkit::command(BIN);
        // Each project has its own response cache: tests never share answers.
        cmd.args(args)
            .current_dir(self.path())
            .env("PARALLAMR_CACHE_DIR", self.path().join("cache"));
        for var in [
            "OLLAMA_BASE_URL",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            "OPENROUTER_API_KEY",
            "OPENROUTER_BASE_URL",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "GEMINI_API_KEY",
            "GEMINI_BASE_URL",
        ] {
            cmd.env_remove(var);
        }
        if let Some(s) = server {
            cmd.env("OLLAMA_BASE_URL", &s.url)
                .env("OPENAI_BASE_URL", &s.url)
                .env("ANTHROPIC_BASE_URL", &s.url)
                .env("GEMINI_BASE_URL", &s.url);
        }
        cmd
    }

    fn run(&self, args: &[&str], server: Option<&LlmServer>) -> Run {
        self.command(args, server).output().unwrap().into()
    }

    fn results(&self) -> Vec<csv::StringRecord> {
        let mut r = csv::Reader::from_path(self.path().join("out.csv")).unwrap();
        r.records().map(Result::unwrap).collect()
    }

    fn header(&self) -> String {
        std::fs::read_to_string(self.path().join("out.csv"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned()
    }
}

fn topics(n: usize, provider: &str, model: &str) -> String {
    let mut s = String::from("provider,model,topic\n");
    for i in 0..n {
        let _ = writeln!(s, "{provider},{model},topic{i}");
    }
    s
}

/// Start a sweep writing `out.csv` in the background, and wait until `lines` lines (header
/// included) have been written: rows stream while the sweep runs.
fn start_sweep(p: &Project, server: &LlmServer, lines: usize) -> std::process::Child {
    let child = p
        .command(&RUN, Some(server))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    testkit::wait_for("rows to stream", || {
        std::fs::read_to_string(p.path().join("out.csv"))
            .unwrap_or_default()
            .lines()
            .count()
            >= lines
    });
    child
}

fn run_run(p: &Project, extra: &[&str], server: Option<&LlmServer>) -> Run {
    let mut args = RUN.to_vec();
    args.extend(extra);
    p.run(&args, server)
}

#[test]
fn the_mock_provider_sweeps_and_rows_have_the_documented_columns() {
    let p = Project::create(
        "Write about {{ topic }} in a {{ tone }} tone.",
        "provider,model,topic,tone\nmock,mock,cats,dry\nmock,mock,dogs,\n",
    );
    // The second row has an empty tone: defined, so no warning. A third file lacks `tone`.
    let out = run_run(&p, &["-j", "2"], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = std::fs::read_to_string(p.path().join("out.csv")).unwrap();
    assert!(text.starts_with("provider,model,topic,tone,status,input_tokens,context_window,output_tokens,duration_seconds,output,error_message,cached,cost_usd\n"), "{text}");
    let rows = p.results();
    let cats = rows.iter().find(|r| &r[2] == "cats").unwrap();
    assert_eq!(&cats[4], "ok");
    assert_eq!(&cats[6], "8192");
    assert!(cats[9].starts_with("MOCK mock: "), "{:?}", &cats[9]);
    assert!(cats[9].contains("Write about cats in a dry tone."));

    let p = Project::create(
        "Write about {{ topic }} in a {{ tone }} tone.",
        &topics(1, "mock", "mock"),
    );
    let out = run_run(&p, &[], None);
    assert_eq!(
        out.code,
        Some(0),
        "a warning is not an error: {}",
        out.stderr
    );
    let rows = p.results();
    assert_eq!(&rows[0][3], "warning");
    assert_eq!(
        &rows[0][9],
        "the template uses a variable that this row lacks: tone"
    );
}

#[test]
fn the_context_window_is_checked_before_calling() {
    // mock-small has 256 tokens; ~4 characters per token.
    let p = Project::create(
        "{{ topic }}",
        "provider,model,topic\nmock,mock-small,short\n",
    );
    std::fs::write(p.path().join("big.txt"), "x".repeat(4 * 215)).unwrap();
    std::fs::write(p.path().join("huge.txt"), "x".repeat(4 * 245)).unwrap();
    let out = run_run(&p, &["-c", "big.txt"], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let rows = p.results();
    assert_eq!(&rows[0][3], "warning");
    assert!(
        rows[0][9].contains("% of the 256-token context window"),
        "{:?}",
        &rows[0][9]
    );
    assert!(
        rows[0][8].contains("## Document: big.txt") || rows[0][8].contains("MOCK"),
        "{:?}",
        &rows[0][8]
    );

    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    let out = run_run(&p, &["-c", "huge.txt"], None);
    assert_eq!(out.code, Some(1));
    let rows = p.results();
    assert_eq!(&rows[0][3], "error");
    assert!(
        rows[0][9].contains("over 90%): not sent"),
        "{:?}",
        &rows[0][9]
    );
    assert_eq!(&rows[0][8], "", "no output: the model was not called");
}

#[test]
fn concurrency_is_bounded_by_jobs_and_the_provider_limit() {
    let server = LlmServer::start(Duration::from_millis(300));
    let p = Project::create(
        "Tell me about {{ topic }}",
        &topics(8, "ollama", "llama-test"),
    );
    let out = run_run(&p, &["-j", "4"], Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.peak(), 1, "ollama's default limit is 1");

    for (args, peak) in [
        // The same sweep again: without --no-cache every answer would come from the cache.
        (
            vec!["-j", "4", "--provider-limit", "ollama=3", "--no-cache"],
            3,
        ),
        (
            vec!["-j", "2", "--provider-limit", "ollama=10", "--no-cache"],
            2,
        ),
    ] {
        server.reset();
        std::fs::remove_file(p.path().join("out.csv")).unwrap();
        let out = run_run(&p, &args, Some(&server));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(server.peak(), peak, "{args:?}");
        assert_eq!(server.seen().len(), 8);
    }
    let rows = p.results();
    assert_eq!(&rows[0][4], "11", "Ollama's prompt_eval_count");
    assert_eq!(&rows[0][6], "7", "Ollama's eval_count");
    assert_eq!(&rows[0][5], "4096", "context length from /api/show");
}

#[test]
fn errors_are_rows_and_rate_limits_are_retried() {
    let server = LlmServer::start(Duration::from_millis(10));
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\nollama,flaky,a\nollama,broken,b\nollama,garbled,c\nollama,nosuchmodel,d\nollama,llama-test,e\n",
    );
    let out = run_run(&p, &["--provider-limit", "ollama=5"], Some(&server));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let rows = p.results();
    let by_topic = |t: &str| rows.iter().find(|r| &r[2] == t).unwrap().clone();
    assert_eq!(
        &by_topic("a")[3],
        "ok",
        "a 429 is retried after Retry-After"
    );
    assert_eq!(
        server.seen().iter().filter(|s| s.model == "flaky").count(),
        2
    );
    let broken = by_topic("b");
    assert_eq!(&broken[3], "error");
    assert!(
        broken[9].contains("500") && broken[9].contains("the GPU caught fire"),
        "{:?}",
        &broken[9]
    );
    assert_eq!(
        server.seen().iter().filter(|s| s.model == "broken").count(),
        1,
        "a 500 is not retried"
    );
    assert!(
        by_topic("c")[9].starts_with("malformed answer from ollama"),
        "{:?}",
        &by_topic("c")[9]
    );
    let unknown = by_topic("d");
    assert!(
        unknown[9].contains("unknown model \"nosuchmodel\""),
        "{:?}",
        &unknown[9]
    );
    assert_eq!(&by_topic("e")[3], "ok");
}

#[test]
fn an_unreachable_server_is_called_unreachable() {
    let p = Project::create("About {{ topic }}", &topics(1, "ollama", "llama-test"));
    let out = p
        .command(&[&RUN[..], &["--retries", "1"]].concat(), None)
        .env("OLLAMA_BASE_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let out: Run = out.into();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let rows = p.results();
    assert!(rows[0][9].contains("is unreachable"), "{:?}", &rows[0][9]);
    assert!(!rows[0][9].contains("not found"));
}

#[test]
fn openai_compatible_servers_report_usage() {
    let server = LlmServer::start(Duration::from_millis(5));
    let p = Project::create("About {{ topic }}", &topics(2, "openai", "llama-test"));
    let out = run_run(&p, &[], Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let rows = p.results();
    assert_eq!((&rows[0][4], &rows[0][6]), ("12", "5"));
    assert_eq!(&rows[0][5], "4096", "context length from /models");
    assert_eq!(server.seen()[0].api, "openai");
    assert!(rows[0][8].starts_with("answer from llama-test to: About topic"));
}

#[test]
fn rows_stream_and_a_killed_sweep_resumes_with_only_the_missing_rows() {
    let server = LlmServer::start(Duration::from_millis(250));
    let p = Project::create("About {{ topic }}", &topics(12, "ollama", "llama-test"));
    let mut child = start_sweep(&p, &server, 4);
    assert!(
        child.try_wait().unwrap().is_none(),
        "rows arrived while the sweep was still running"
    );
    child.kill().unwrap(); // SIGKILL mid-sweep
    child.wait().unwrap();

    assert_eq!(p.header(), HEADER);
    let before = p.results(); // parses: a valid CSV
    assert!((3..12).contains(&before.len()), "{}", before.len());
    assert!(before.iter().all(|r| r.len() == 12 && &r[3] == "ok"));

    server.reset();
    let out = run_run(&p, &["--resume"], Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let after = p.results();
    // An answer that arrived just before the kill, its row not yet written, is in the cache:
    // its row comes back without a request.
    let cached = after.iter().filter(|r| &r[10] == "true").count();
    assert_eq!(
        server.seen().len() + cached,
        12 - before.len(),
        "only the missing rows ran"
    );
    let mut topics: Vec<String> = after.iter().map(|r| r[2].to_owned()).collect();
    topics.sort();
    let mut expected: Vec<String> = (0..12).map(|i| format!("topic{i}")).collect();
    expected.sort();
    assert_eq!(topics, expected, "every experiment exactly once");
}

#[test]
fn ctrl_c_stops_the_sweep_writes_no_rows_for_unrun_experiments_and_exits_130() {
    let server = LlmServer::start(Duration::from_millis(200));
    let p = Project::create("About {{ topic }}", &topics(30, "ollama", "llama-test"));
    let child = start_sweep(&p, &server, 3);
    testkit::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("add --resume to the same command to run the rest into out.csv"),
        "{stderr}"
    );
    let rows = p.results();
    assert!(rows.len() < 30, "the sweep stopped early");
    assert!(
        rows.iter().all(|r| &r[3] == "ok"),
        "no rows for experiments that did not run"
    );
    let out = run_run(&p, &["--resume", "-q"], Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(p.results().len(), 30);
}

#[test]
fn the_command_provider_runs_a_program_per_row() {
    let p = Project::create(
        "unused",
        "provider,model,lr\ncommand,small,0.1\ncommand,large,0.01\n",
    );
    let out = run_run(
        &p,
        &["--command", "echo lr={{ lr }} model={{ model }}"],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Rows are written as they complete, so in any order.
    let mut outputs: Vec<String> = p.results().iter().map(|r| r[8].to_owned()).collect();
    outputs.sort();
    assert_eq!(outputs, ["lr=0.01 model=large", "lr=0.1 model=small"]);

    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    let out = run_run(&p, &[], None);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("no --command was given"),
        "{}",
        out.stderr
    );
}

/// A results file that cannot be written (stdout closed by its reader) stops the sweep: exit 1,
/// and few requests are still sent.
#[test]
fn a_results_write_that_fails_stops_the_sweep_and_exits_1() {
    use std::io::BufRead;
    let server = LlmServer::start(Duration::from_millis(20));
    let p = Project::create("About {{ topic }}", &topics(200, "ollama", "llama-test"));
    // No -o: results go to stdout, which the reader closes after the first lines.
    let mut child = p
        .command(&run_args(&["-j", "1"]), Some(&server))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap();
    lines.next().unwrap().unwrap();
    drop(lines);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not be written"), "{stderr}");
    let sent = server.seen().len();
    assert!(
        sent < 100,
        "{sent} of 200 requests were still sent after the output closed"
    );
}

#[test]
fn a_command_whose_output_is_cut_is_not_ok() {
    let p = Project::create("unused", "provider,model\ncommand,m\n");
    let out = run_run(
        &p,
        &["--command", "head -c 2000000 /dev/zero | tr '\\0' x"],
        None,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let row = &p.results()[0];
    assert_eq!(&row[2], "error", "{row:?}");
    assert!(row[8].contains("more than 1 MiB"), "{row:?}");
}

#[test]
fn retry_after_as_a_date_is_honoured_and_a_huge_one_does_not_crash() {
    let server = LlmServer::start(Duration::from_millis(1));
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\nollama,flaky-date,x\n",
    );
    let started = std::time::Instant::now();
    let out = run_run(&p, &[], Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(&p.results()[0][3], "ok");
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "the server asked for 3 s; the retry came after {:?}",
        started.elapsed()
    );

    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic\nollama,flaky-huge,x\n",
    );
    let out = run_run(&p, &["--retries", "0"], Some(&server));
    assert_eq!(
        out.code,
        Some(1),
        "an error row, not a crash: {}",
        out.stderr
    );
    assert_eq!(&p.results()[0][3], "error");
}

#[test]
fn credentials_in_a_base_url_never_reach_results_or_messages() {
    let p = Project::create("About {{ topic }}", "provider,model,topic\nopenai,m,x\n");
    let out = p
        .command(&RUN, None)
        .args(["--retries", "0"])
        .env("OPENAI_BASE_URL", "http://user:s3cret@127.0.0.1:1/v1")
        .output()
        .unwrap();
    let text = std::fs::read_to_string(p.path().join("out.csv")).unwrap()
        + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("http://***@127.0.0.1:1"), "{text}");
}

#[test]
fn ctrl_c_does_not_wait_for_requests_in_flight() {
    let server = LlmServer::start(Duration::from_secs(60));
    let p = Project::create("About {{ topic }}", &topics(2, "ollama", "llama-test"));
    let mut child = p
        .command(&RUN, Some(&server))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    testkit::wait_for("a request in flight", || !server.seen().is_empty());
    let started = std::time::Instant::now();
    testkit::interrupt(&child);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "Ctrl-C waited {:?} for a 60 s request",
        started.elapsed()
    );
}

#[test]
fn command_values_are_words_never_code() {
    let p = Project::create(
        "unused",
        "provider,model,text\ncommand,m,hello; touch PWNED\ncommand,m,it's\ncommand,m,$(touch PWNED2)\n",
    );
    let out = run_run(
        &p,
        &["--command", "printf '%s|' {{ text }} {{ model }}"],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!p.path().join("PWNED").exists(), "a value ran as code");
    assert!(!p.path().join("PWNED2").exists(), "a value ran as code");
    let mut outputs: Vec<String> = p.results().iter().map(|r| r[8].to_owned()).collect();
    outputs.sort();
    assert_eq!(
        outputs,
        ["$(touch PWNED2)|m|", "hello; touch PWNED|m|", "it's|m|"],
        "each value is one argument, as written"
    );

    // Raw on request; a placeholder inside quotes is a word of that quoted text.
    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    let raw = Project::create("unused", "provider,model,args\ncommand,m,a b\n");
    let out = run_run(&raw, &["--command", "printf '%s|' {{ args | safe }}"], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(&raw.results()[0][8], "a|b|");
    std::fs::remove_file(raw.path().join("out.csv")).unwrap();
    let out = run_run(&raw, &["--command", "echo '<{{ args }}>'"], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(&raw.results()[0][8], "<a b>");
}

/// Issue 27: the values of a row never run as code, whatever quotes or filters surround them.
#[test]
fn command_values_stay_data_inside_quotes_and_through_filters() {
    let p = Project::create(
        "unused",
        "provider,model,t\ncommand,m,$(touch PWNED)\ncommand,m,x;touch PWNED2\ncommand,m,'; touch PWNED3; '\n",
    );
    for template in [
        "echo \"t= {{t}}\"",
        "echo {{ t | e }}",
        "echo {{ t | string }}",
        "echo 't={{ t }}'",
        "echo \"$(printf '%s' {{ t | trim }})\"",
    ] {
        let _ = std::fs::remove_file(p.path().join("out.csv"));
        let out = run_run(&p, &["--command", template], None);
        assert_eq!(out.code, Some(0), "{template}: {}", out.stderr);
        for f in ["PWNED", "PWNED2", "PWNED3"] {
            assert!(
                !p.path().join(f).exists(),
                "{template}: a value ran as code"
            );
        }
        let outputs: Vec<String> = p.results().iter().map(|r| r[8].to_owned()).collect();
        assert!(
            outputs.iter().any(|o| o.contains("$(touch PWNED)")),
            "{template}: the value is printed as written: {outputs:?}"
        );
    }
    // Where no quoting can keep a value data, the template is refused before any row runs,
    // naming the placeholder.
    let _ = std::fs::remove_file(p.path().join("out.csv"));
    let out = run_run(&p, &["--command", "echo `echo {{ t }}`"], None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "--command line 1, column 12 ({{ t }}): the placeholder is inside backticks: \
             write $(...) instead of `...`"
        ),
        "{}",
        out.stderr
    );
    assert!(!p.path().join("out.csv").exists(), "nothing ran");
    // So is a placeholder naming no column: a typo would run with an empty value.
    let out = run_run(&p, &["--command", "touch ran; echo {{ tt }}"], None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--command prints tt, which no column of the experiments gives"),
        "{}",
        out.stderr
    );
    assert!(!p.path().join("ran").exists(), "nothing ran");
    assert!(!p.path().join("out.csv").exists(), "nothing written");
}

#[test]
fn experiments_can_come_from_stdin_and_results_go_to_stdout() {
    let p = Project::create("About {{ topic }}", "");
    let mut child = p
        .command(&["run", "-p", "prompt.txt", "-e", "-"], None)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(topics(2, "mock", "mock").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(text.lines().next().unwrap(), HEADER);
}

#[test]
fn bad_input_is_a_clear_error_before_anything_runs() {
    let cases = [
        (
            "model,topic\nmock,a\n",
            vec![],
            "experiments.csv: the header has no provider column",
        ),
        (
            "provider,model,topic\nopenia,m,a\n",
            vec![],
            "experiments.csv line 2: unknown provider \"openia\"; the known providers: mock, ollama, openrouter, openai, anthropic, gemini, command",
        ),
        (
            "provider,model,topic\nmock,m,a\nmock,m\n",
            vec![],
            "experiments.csv line 3: the row has 2 fields, but the header has 3",
        ),
        (
            "provider,model,topic\nmock,m,a\n",
            vec!["-p", "missing.txt"],
            "cannot read the prompt file missing.txt",
        ),
        (
            "provider,model,topic\nmock,m,a\n",
            vec!["--provider-limit", "ollama"],
            "is not NAME=N",
        ),
        (
            "provider,model,topic\nopenai,gpt,a\n",
            vec![],
            "OPENAI_API_KEY is not set",
        ),
    ];
    for (experiments, extra, expected) in cases {
        let p = Project::create("About {{ topic }}", experiments);
        let mut args = vec!["run", "-e", "experiments.csv", "-o", "out.csv"];
        if !extra.contains(&"-p") {
            args.extend(["-p", "prompt.txt"]);
        }
        args.extend(extra.iter().copied());
        let out = p.run(&args, None);
        assert_eq!(out.code, Some(2), "{expected}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "expected {expected:?} in {}",
            out.stderr
        );
        assert!(!p.path().join("out.csv").exists(), "nothing was written");
    }
    // Existing results are never overwritten.
    let p = Project::create("About {{ topic }}", &topics(1, "mock", "mock"));
    std::fs::write(p.path().join("out.csv"), "precious\n").unwrap();
    let out = run_run(&p, &[], None);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("out.csv already exists: pass --resume"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("out.csv")).unwrap(),
        "precious\n"
    );
}

#[test]
fn providers_models_init_and_validate_only() {
    let p = Project::create("About {{ topic }}", &topics(3, "mock", "mock"));
    let out = p.run(&["providers"], None);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("ollama") && l.contains(" 1 ")),
        "{}",
        out.stdout
    );
    let out = p.run(&["models", "mock"], None);
    assert!(
        out.stdout.contains("mock-small") && out.stdout.contains("256 tokens"),
        "{}",
        out.stdout
    );
    let server = LlmServer::start(Duration::ZERO);
    let out = p.run(&["models", "ollama"], Some(&server));
    assert!(
        out.stdout.contains("tiny-ctx") && out.stdout.contains("40 tokens"),
        "{}",
        out.stdout
    );

    let out = p.run(&run_args(&["--dry-run"]), None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("3 experiments for mock"),
        "{}",
        out.stderr
    );

    let empty = tempfile::tempdir().unwrap();
    let init = |dir: &Path| -> Run { testkit::run_in(BIN, dir, &["init"]) };
    assert_eq!(init(empty.path()).code, Some(0));
    for f in ["prompt.txt", "experiments.csv", "PARALLAMR.md"] {
        assert!(empty.path().join(f).exists(), "{f}");
    }
    let again = init(empty.path());
    assert_eq!(again.code, Some(2));
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    // And the example runs.
    let out = testkit::run_in(BIN, empty.path(), &run_args(&["-o", "r.csv"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn a_server_that_never_accepts_costs_the_connect_timeout_and_is_retried() {
    // A real listener that never accepts, its accept queue filled: the kernel drops further
    // SYNs, so a connection attempt hangs as it does for a dead host or a dropped packet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
        assert!(held.len() < 10_000, "the accept queue never filled");
    }
    let p = Project::create("About {{ topic }}", &topics(1, "ollama", "llama-test"));
    let started = std::time::Instant::now();
    let out: Run = p
        .command(
            &[&RUN[..], &["--retries", "1", "--timeout", "2"]].concat(),
            None,
        )
        .env("OLLAMA_BASE_URL", format!("http://{addr}"))
        .output()
        .unwrap()
        .into();
    let took = started.elapsed();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let rows = p.results();
    assert!(
        rows[0][9].contains("did not accept a connection in time"),
        "{:?}",
        &rows[0][9]
    );
    // Two attempts (a connect timeout is worth another), each bounded by --timeout: not the
    // kernel's own minutes of SYN retries.
    assert!(
        out.stderr.contains("retry") || out.stderr.contains("attempt"),
        "{}",
        out.stderr
    );
    assert!(
        took < std::time::Duration::from_secs(20),
        "the connect timeout held ({took:?})"
    );
    drop(held);
}

mod batches;
/// The results page in headless Chromium (feature `browser-tests`; `cargo xtask test` turns
/// it on).
#[cfg(feature = "browser-tests")]
mod browser;
mod cache;
mod costs;
mod flatten;
mod judge;
mod layering;
mod outputs;
mod promises;
mod rates;
mod requests;
mod snapshots;
mod vendors;

/// On the project's Slurm test cluster (feature `slurm-tests`; `cargo xtask test` starts the
/// cluster and turns the feature on).
#[cfg(feature = "slurm-tests")]
mod slurm {
    use std::collections::BTreeSet;
    use std::fmt::Write as _;

    use super::*;

    /// `--slurm-mode packed`: the rows run on workers of one allocation (the same job id for
    /// all, one step per worker), over the cluster's nodes, with their output and exit codes
    /// back; the allocation is let go at the end.
    #[test]
    fn a_command_sweep_runs_packed_in_one_allocation() {
        let _cluster = testkit::slurm::require_test_cluster();
        let mut csv = String::from("provider,model\n");
        for i in 0..12 {
            let _ = writeln!(csv, "command,m{i}");
        }
        csv.push_str("command,broken\n");
        let p = Project::create("unused", &csv);
        let template = "[ {{ model }} = broken ] && exit 4; sleep 0.2; \
                        echo model={{ model }} job=$SLURM_JOB_ID on=$SLURMD_NODENAME";
        let args = [
            "--command",
            template,
            "-j",
            "6",
            "--backend",
            "slurm",
            "--slurm-mode",
            "packed",
            "--slurm-nodes",
            "3",
        ];
        let out = run_run(&p, &args, None);
        assert_eq!(out.code, Some(1), "one row fails: {}", out.stderr);
        let rows = p.results();
        assert_eq!(rows.len(), 13);
        let (mut jobs, mut nodes) = (BTreeSet::new(), BTreeSet::new());
        for r in &rows {
            if &r[1] == "broken" {
                assert_eq!(&r[2], "error");
                assert_eq!(&r[8], "exited with code 4", "{r:?}");
                continue;
            }
            assert_eq!(&r[2], "ok", "{r:?}");
            let out = &r[7];
            let field = |name: &str| {
                out.split(&format!("{name}="))
                    .nth(1)
                    .and_then(|v| v.split(' ').next())
                    .unwrap_or_else(|| panic!("{name} in {out}"))
                    .to_owned()
            };
            assert_eq!(field("model"), r[1]);
            jobs.insert(field("job"));
            nodes.insert(field("on"));
        }
        assert_eq!(jobs.len(), 1, "one allocation for the sweep: {jobs:?}");
        assert_eq!(
            nodes.into_iter().collect::<Vec<_>>(),
            testkit::slurm::nodes(),
            "six workers over three nodes"
        );
        let id: u64 = jobs.into_iter().next().unwrap().parse().unwrap();
        let state = testkit::slurm::settled(id);
        assert!(
            ["CANCELLED", "COMPLETED"].contains(&state.as_str()),
            "the allocation {id} ended {state}"
        );
        // Packed without the Slurm backend is the user's error.
        let out = run_run(&p, &["--command", "true", "--slurm-mode", "packed"], None);
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        assert!(out.stderr.contains("add --backend slurm"), "{}", out.stderr);
        // A dry run runs nothing: it asks Slurm for no allocation.
        let before = testkit::slurm::job_named("fanout-alloc");
        let mut dry = args.to_vec();
        dry.push("--dry-run");
        let out = run_run(&p, &dry, None);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(testkit::slurm::job_named("fanout-alloc"), before);
        // Slurm is asked only once the inputs are read and checked: a template naming a column
        // the rows lack is exit 2 with no allocation asked for (or waited for in the queue).
        let done = Project::create("unused", "provider,model\ncommand,a\ncommand,b\n");
        let mut typo = args.to_vec();
        typo[1] = "echo {{ modle }}";
        let out = run_run(&done, &typo, None);
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        assert!(out.stderr.contains("modle"), "{}", out.stderr);
        assert_eq!(testkit::slurm::job_named("fanout-alloc"), before);
        // An allocation Slurm refuses leaves no results file behind (a new run would have to
        // --resume it).
        let mut refused = args.to_vec();
        refused.push("--slurm-arg=--time=abc");
        let out = run_run(&done, &refused, None);
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        assert!(
            out.stderr.contains("Invalid --time specification"),
            "{}",
            out.stderr
        );
        assert!(!done.path().join("out.csv").exists(), "{}", out.stderr);
        // Nor is it asked when --resume finds every row done.
        let mut ok = args.to_vec();
        ok[1] = "echo {{ model }}";
        let out = run_run(&done, &ok, None);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let first = testkit::slurm::job_named("fanout-alloc");
        assert_ne!(first, before, "the first run had an allocation");
        ok.push("--resume");
        let out = run_run(&done, &ok, None);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(done.results().len(), 2);
        assert_eq!(testkit::slurm::job_named("fanout-alloc"), first);
    }

    #[test]
    fn a_command_sweep_runs_on_slurm() {
        let _cluster = testkit::slurm::require_test_cluster();
        let mut csv = String::from("provider,model,lr\n");
        for i in 0..6 {
            let _ = writeln!(csv, "command,m{i},0.{i}");
        }
        csv.push_str("command,broken,1\n");
        let p = Project::create("unused", &csv);
        let template = "[ {{ model }} = broken ] && exit 4; \
                        echo lr={{ lr }} model={{ model }} job=$SLURM_JOB_ID step=$SLURM_STEP_ID";
        let out = run_run(
            &p,
            &[
                "--command",
                template,
                "-j",
                "4",
                "--backend",
                "slurm",
                "--slurm-arg=--mem=50M",
            ],
            None,
        );
        assert_eq!(out.code, Some(1), "one row fails: {}", out.stderr);
        let rows = p.results();
        assert_eq!(rows.len(), 7);
        let mut jobs = std::collections::BTreeSet::new();
        for r in &rows {
            if &r[1] == "broken" {
                assert_eq!(&r[3], "error");
                assert_eq!(&r[9], "exited with code 4", "{r:?}");
                continue;
            }
            assert_eq!(&r[3], "ok", "{r:?}");
            let out = &r[8];
            assert!(
                out.starts_with(&format!("lr={} model={} job=", &r[2], &r[1])),
                "{out}"
            );
            let job: u64 = out
                .split("job=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(out.ends_with("step=0"), "ran as a job step: {out}");
            assert_eq!(testkit::slurm::job(job).0, format!("parallamr {}", &r[1]));
            jobs.insert(job);
        }
        assert_eq!(jobs.len(), 6, "one Slurm job per experiment");

        // Slurm options without the Slurm backend, and the backend for HTTP providers, are errors.
        let out = run_run(
            &p,
            &["--command", "true", "--slurm-arg=--mem=1G", "--resume"],
            None,
        );
        assert_eq!(out.code, Some(2));
        assert!(
            out.stderr.contains("Slurm options need --backend slurm"),
            "{}",
            out.stderr
        );
        let http = Project::create(
            "About {{ topic }}",
            "provider,model,topic\nmock,mock,cats\n",
        );
        for packed in [&[][..], &["--slurm-mode", "packed"][..]] {
            let mut args = vec!["--backend", "slurm"];
            args.extend(packed);
            let out = run_run(&http, &args, None);
            assert_eq!(out.code, Some(2), "{args:?}");
            assert!(
                out.stderr
                    .contains("these experiments use none (providers: mock)"),
                "{}",
                out.stderr
            );
        }
    }
}

/// A failure after the experiments ran (the report cannot be written) exits 1, not 2
/// ("nothing ran"); the results are written.
#[test]
fn a_failure_after_the_sweep_ran_exits_1() {
    let p = Project::create("About {{ topic }}.", &topics(3, "mock", "mock"));
    std::fs::write(p.path().join("blocker"), "a file, not a folder").unwrap();
    let out = run_run(&p, &["--report", "blocker/report.json"], None);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("parallamr: error: "), "{}", out.stderr);
    assert_eq!(p.results().len(), 3);
    // An input error, by contrast, is a usage error: nothing ran.
    let out = run_run(&p, &["--provider-limit", "nosuch=2"], None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}
