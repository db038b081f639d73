//! `--flatten`: the JSON in each answer as columns.

use crate::{Project, RUN};

/// Three answers, in this order with `-j 1`: fenced JSON, inline JSON with a key that clashes
/// with a column (`status`) and a key the first lacks, and no JSON at all.
fn project() -> Project {
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["provider", "model", "answer"]).unwrap();
    for answer in [
        "Sure:\n```json\n{\"score\": 7, \"tags\": [\"a\", \"b\"]}\n```\nDone.",
        "The result is {\"score\": 3, \"status\": \"fine\", \"author\": {\"name\": \"Ada\"}}.",
        "I cannot answer in JSON.",
    ] {
        csv.write_record(["command", "m", answer]).unwrap();
    }
    Project::create(
        "unused",
        &String::from_utf8(csv.into_inner().unwrap()).unwrap(),
    )
}

fn sweep(p: &Project, out: &str, extra: &[&str]) -> testkit::Run {
    let mut args = RUN.to_vec();
    args[6] = out;
    args.extend(["-j", "1", "--command", "printf '%s' {{answer}}"]);
    args.extend(extra);
    p.run(&args, None)
}

#[test]
fn a_csv_takes_its_columns_from_the_first_json_and_keeps_later_keys() {
    let p = project();
    let out = sweep(&p, "out.csv", &["--flatten"]);
    assert_eq!(
        out.code,
        Some(0),
        "a warning is not an error: {}",
        out.stderr
    );
    let mut r = csv::Reader::from_path(p.path().join("out.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header[header.len() - 4..],
        ["score", "tags_0", "tags_1", "json_extra"]
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(
        (&rows[0][col("score")], &rows[0][col("tags_1")]),
        ("7", "b")
    );
    assert_eq!(&rows[1][col("score")], "3");
    assert_eq!(
        &rows[1][col("json_extra")],
        r#"{"author_name":"Ada","json_status":"fine"}"#,
        "a key the header lacks, and one that clashes with status, are kept"
    );
    assert!(
        out.stderr
            .contains("a key \"author_name\" that the first one did not"),
        "{}",
        out.stderr
    );
    assert_eq!(&rows[2][col("status")], "warning");
    assert_eq!(
        &rows[2][col("error_message")],
        "--flatten: no JSON in the output"
    );
    assert_eq!(&rows[2][col("score")], "");

    // Resumed, the file keeps its columns.
    let out = sweep(&p, "out.csv", &["--flatten", "--resume"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("resuming: 3 of 3"), "{}", out.stderr);
}

#[test]
fn fixed_columns_and_nesting_limits() {
    let p = project();
    let out = sweep(&p, "out.csv", &["--flatten-columns", "score,author_name"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = std::fs::read_to_string(p.path().join("out.csv")).unwrap();
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with(",cost_usd,score,author_name,json_extra"),
        "{text}"
    );
    assert!(
        text.contains(r#""{""tags_0"":""a"",""tags_1"":""b""}""#),
        "{text}"
    );

    let jsonl = |name: &str, depth: &str| -> Vec<serde_json::Value> {
        let out = sweep(
            &p,
            name,
            &[
                "--flatten",
                "--flatten-depth",
                depth,
                "--flatten-items",
                "1",
            ],
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        std::fs::read_to_string(p.path().join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let rows = jsonl("out.jsonl", "2");
    assert_eq!(rows[0]["score"], 7, "numbers stay numbers");
    assert_eq!(rows[0]["tags_0"], "a");
    assert_eq!(
        rows[0]["tags_rest"],
        serde_json::json!(["b"]),
        "past the length: kept"
    );
    assert_eq!(rows[1]["author_name"], "Ada");
    assert_eq!(rows[1]["json_status"], "fine");
    assert_eq!(rows[1]["status"], "ok");
    let rows = jsonl("deep.jsonl", "1");
    assert_eq!(
        rows[0]["tags"],
        serde_json::json!(["a", "b"]),
        "past the depth: kept whole"
    );
    assert_eq!(rows[1]["author"], serde_json::json!({"name": "Ada"}));
}

/// Issue 27: rows finished before the first answer with JSON used to wait in memory (a kill -9
/// lost them all); now they are on disk under a provisional header at once, and the first
/// answer with JSON rewrites the file with its columns.
#[test]
fn rows_before_the_first_json_answer_are_on_disk_at_once_and_survive_kill_9() {
    let csv = "provider,model,answer\ncommand,m,plain 0\ncommand,m,plain 1\ncommand,m,plain 2\n\
               command,m,json\n";
    let p = Project::create("unused", csv);
    // The JSON row hangs until the file `go` exists.
    let command = "if [ {{answer}} = json ]; then while [ ! -f go ]; do sleep 0.05; done; \
                   printf '{\"score\": 9}'; else printf '%s' {{answer}}; fi";
    let mut args = RUN.to_vec();
    args.extend(["-j", "1", "--flatten", "--command", command]);
    let mut child = p
        .command(&args, None)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out_csv = p.path().join("out.csv");
    testkit::wait_for("three rows on disk", || {
        std::fs::read_to_string(&out_csv).is_ok_and(|t| t.lines().count() == 4)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&out_csv).unwrap();
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with(",output,error_message,cached,cost_usd,json_extra"),
        "a provisional header: {text}"
    );
    assert_eq!(p.results().len(), 3, "every finished row survived: {text}");

    // The resume runs the JSON row: the file gets its columns, the earlier rows empty cells.
    std::fs::write(p.path().join("go"), "").unwrap();
    args.push("--resume");
    let out = p.run(&args, None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut r = csv::Reader::from_path(&out_csv).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header[header.len() - 2..], ["score", "json_extra"]);
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let score = header.iter().position(|h| h == "score").unwrap();
    let scores: Vec<&str> = rows.iter().map(|r| &r[score]).collect();
    assert_eq!(scores, ["", "", "", "9"]);
    assert!(rows.iter().all(|r| r.len() == header.len()));
}
