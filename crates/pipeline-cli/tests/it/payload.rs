//! The invocation payload: `--payload`, `--payload-file`, its environment variables and
//! `{{payload.KEY}}` placeholders, kept in the record and reused by `--resume`.

use super::{Project, statuses};

const PIPELINE: &str = r#"
[[stages]]
name = "s"
jobs = ["shell", "argv", "env"]
[jobs.shell]
command = "printf '%s|' {{payload.session_id}} {{ payload.model }} > shell.out"
[jobs.argv]
command = ["sh", "-c", "printf '%s|' \"$1\" > argv.out", "sh", "{{payload.session_id}}"]
[jobs.env]
command = "printf '%s|%s|%s' \"$LORCHESTRA_PAYLOAD_SESSION_ID\" \"$LORCHESTRA_PAYLOAD_N\" \"$MODEL\" > env.out; printf '%s' \"$LORCHESTRA_PAYLOAD\" > all.out"
env = { MODEL = "m-{{payload.model}}" }
"#;

fn read(p: &Project, name: &str) -> String {
    std::fs::read_to_string(p.path().join(name)).unwrap_or_default()
}

#[test]
fn payload_values_reach_jobs_as_arguments_and_environment_and_never_run_as_code() {
    let p = Project::create(&[
        ("pipelines/p.toml", PIPELINE),
        ("payload.json", r#"{"model": "from-file", "n": 3}"#),
    ]);
    let out = p.run(&[
        "pipeline",
        "p",
        "--no-progress",
        "--payload-file",
        "payload.json",
        "--payload",
        "session_id=s 1'; touch pwned",
        "--payload",
        "model=gpt",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!p.path().join("pwned").exists(), "a value ran as code");
    assert_eq!(read(&p, "shell.out"), "s 1'; touch pwned|gpt|");
    assert_eq!(read(&p, "argv.out"), "s 1'; touch pwned|", "one argument");
    assert_eq!(read(&p, "env.out"), "s 1'; touch pwned|3|m-gpt");
    let all: serde_json::Value = serde_json::from_str(&read(&p, "all.out")).unwrap();
    assert_eq!(all["n"], 3);
    assert_eq!(all["model"], "gpt", "--payload wins over the file");
    let record = p.last_record();
    assert_eq!(record["payload"]["session_id"], "s 1'; touch pwned");
    let run_id = record["run_id"].as_str().unwrap();
    let status = p.run(&["status", run_id]).stdout;
    assert!(status.contains("payload   {\"model\":\"gpt\""), "{status}");
    let plan = p.run(&[
        "pipeline",
        "p",
        "--dry-run",
        "--payload",
        "session_id=x",
        "--payload",
        "model=y",
    ]);
    assert!(
        plan.stdout
            .contains("payload {\"model\":\"y\",\"session_id\":\"x\"}"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(
            "printf '%s|' \"${LORCHESTRA_PAYLOAD_SESSION_ID}\" \"${LORCHESTRA_PAYLOAD_MODEL}\" \
             > shell.out"
        ),
        "{}",
        plan.stdout
    );
}

/// Issue 27: inside quotes, in a shell's script of an array command, in a here-document: a
/// value stays data; where it could not, the pipeline is refused before anything runs, naming
/// the file, line, job and key.
#[test]
fn payload_values_inside_quotes_and_shell_scripts_never_run_as_code() {
    let pipeline = r#"
[[stages]]
name = "s"
jobs = ["double", "single", "argv", "heredoc"]
[jobs.double]
command = "echo \"session={{payload.id}}\" > double.out"
[jobs.single]
command = "echo 'session={{payload.id}}; done' > single.out"
[jobs.argv]
command = ["sh", "-c", "echo \"{{payload.id}}\" > argv.out"]
[jobs.heredoc]
command = """
cat > heredoc.out <<END
id: {{payload.id}}
END
"""
"#;
    let p = Project::create(&[("pipelines/p.toml", pipeline)]);
    for value in [
        "$(touch PWNED)",
        "'; touch PWNED; '",
        "`touch PWNED`\nEND\ntouch PWNED",
    ] {
        let id = format!("id={value}");
        let out = p.run(&["pipeline", "p", "--no-progress", "--payload", &id]);
        assert_eq!(out.code, Some(0), "{value}: {}", out.stderr);
        assert!(
            !p.path().join("PWNED").exists(),
            "{value}: a value ran as code"
        );
        assert_eq!(read(&p, "double.out"), format!("session={value}\n"));
        assert_eq!(read(&p, "single.out"), format!("session={value}; done\n"));
        assert_eq!(read(&p, "argv.out"), format!("{value}\n"));
        assert_eq!(read(&p, "heredoc.out"), format!("id: {value}\n"));
    }

    let refused = [
        (
            "command = \"echo `echo {{payload.id}}`\"",
            "p.toml, line 5: the job \"j\" uses {{payload.id}} in its command a placeholder \
             inside backticks: write $(...) instead of `...` (line 1, column 12",
        ),
        (
            "command = [\"python3\", \"-c\", \"print('{{payload.id}}')\"]",
            "uses {{payload.id}} in the code it hands to python",
        ),
        (
            "command = \"true\"\nenv = { PATH = \"{{payload.id}}\" }",
            "uses {{payload.id}} in its env PATH, which changes which code runs",
        ),
        (
            "command = \"true\"\ncwd = \"{{payload.id}}\"",
            "uses {{payload.id}} in its cwd, which becomes ../.. with this payload, outside \
             the project folder (write `outside_project = true`",
        ),
    ];
    for (job, expected) in refused {
        let p = Project::create(&[(
            "pipelines/p.toml",
            &format!("[[stages]]\nname = \"s\"\njobs = [\"j\"]\n[jobs.j]\n{job}\n"),
        )]);
        let out = p.run(&["pipeline", "p", "--no-progress", "--payload", "id=../.."]);
        assert_eq!(out.code, Some(2), "{job}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{job}: expected {expected:?} in {}",
            out.stderr
        );
        assert!(!p.path().join(".lorchestra/runs").exists(), "nothing ran");
    }
    // The opt-in: a job that may run outside the project.
    let outside = tempfile::tempdir().unwrap();
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[[stages]]\nname = \"s\"\njobs = [\"j\"]\n[jobs.j]\ncommand = \"pwd > here\"\n\
         cwd = \"{{payload.dir}}\"\noutside_project = true\n",
    )]);
    let dir = format!("dir={}", outside.path().display());
    let out = p.run(&["pipeline", "p", "--no-progress", "--payload", &dir]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(outside.path().join("here").exists());
}

#[test]
fn a_resumed_run_reuses_its_payload() {
    let pipeline = r#"
[[stages]]
name = "s"
jobs = ["a", "b"]
[jobs.a]
command = "echo {{payload.v}} >> a.out"
[jobs.b]
command = "test -f go && echo {{payload.v}} >> b.out"
"#;
    let p = Project::create(&[("pipelines/p.toml", pipeline)]);
    let out = p.run(&[
        "pipeline",
        "p",
        "--no-progress",
        "--payload",
        "v=first",
        "-j",
        "2",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    p.write("go", "");
    let out = p.run(&[
        "pipeline",
        "p",
        "--resume",
        &run_id,
        "--payload",
        "v=second",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("reuses the payload of that run"),
        "{}",
        out.stderr
    );
    let out = p.run(&["pipeline", "p", "--resume", &run_id, "--no-progress"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        read(&p, "a.out"),
        "first\n",
        "a succeeded before: not run again"
    );
    assert_eq!(read(&p, "b.out"), "first\n");
    assert!(
        statuses(&p.last_record())
            .iter()
            .all(|s| s.2 == "succeeded")
    );
}

#[test]
fn bad_payloads_are_refused_before_anything_runs() {
    let p = Project::create(&[
        ("pipelines/p.toml", PIPELINE),
        ("list.json", "[1]"),
        ("broken.json", "{\n  \"a\": ,\n}"),
    ]);
    let cases: [(&[&str], &str); 5] = [
        (
            &["--payload", "model=x"],
            "pipelines/p.toml, line 6: the job \"shell\" uses {{payload.session_id}}, but the payload has model",
        ),
        (
            &[],
            "the job \"shell\" uses {{payload.session_id}}, but the run has no payload",
        ),
        (
            &["--payload", "bad-key=1"],
            "--payload bad-key=1: the key \"bad-key\" is not a name",
        ),
        (
            &["--payload-file", "list.json"],
            "--payload-file list.json: expected a JSON object",
        ),
        (
            &["--payload-file", "broken.json"],
            "--payload-file broken.json: not JSON at line 2",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["pipeline", "p", "--no-progress"];
        args.extend(extra);
        let out = p.run(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{args:?}: expected {expected:?} in {}",
            out.stderr
        );
    }
    assert!(!p.path().join(".lorchestra/runs").exists());
}

#[test]
fn a_changed_payload_makes_jobs_with_inputs_run_again() {
    let pipeline = r#"
[jobs.j]
command = "echo {{payload.v}} >> ran"
inputs = ["in.txt"]
[jobs.k]
command = "echo $LORCHESTRA_PAYLOAD_V >> ran-k"
inputs = ["in.txt"]
"#;
    let p = Project::create(&[("pipelines/p.toml", pipeline), ("in.txt", "x")]);
    let run = |v: &str| {
        p.run(&[
            "pipeline",
            "p",
            "--no-progress",
            "--payload",
            &format!("v={v}"),
        ])
    };
    assert_eq!(run("1").code, Some(0));
    assert_eq!(run("1").code, Some(0));
    assert_eq!(read(&p, "ran"), "1\n", "the same payload: up to date");
    let plan = p
        .run(&["pipeline", "p", "--explain", "--payload", "v=2"])
        .stdout;
    assert_eq!(
        plan.matches("would run: payload changed").count(),
        2,
        "j's placeholder and k read it from the environment: {plan}"
    );
    assert_eq!(run("2").code, Some(0));
    assert_eq!(read(&p, "ran"), "1\n2\n");
    assert_eq!(read(&p, "ran-k"), "1\n2\n");
}
