//! What users read, as insta snapshots (tests/it/snapshots/): every command's `--help`, the
//! end-of-run summary, `--dry-run` and the main error messages. A change to any of them shows as
//! a diff in review; accept an intended one with `INSTA_UPDATE=always cargo test` (or
//! `cargo insta review`) and commit the snapshot.

use crate::{BIN, Project};

fn settings(p: &Project) -> insta::Settings {
    testkit::snapshot_settings(p.path())
}

/// `args`' exit code, stdout and stderr, as one text.
fn transcript(p: &Project, args: &[&str]) -> String {
    let out = testkit::command(BIN)
        .args(args)
        .current_dir(p.path())
        .env_remove("LORCHESTRA_MAX_WORKERS")
        .output()
        .unwrap();
    format!(
        "$ lorchestra {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status
            .code()
            .map_or("signal".to_owned(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const PIPELINE: &str = "[[stages]]\nname = \"ingest\"\njobs = [\"a\", \"bad\"]\n\
    [jobs.a]\ncommand = \"echo a\"\n\
    [jobs.bad]\ncommand = \"echo oops >&2; exit 3\"\n\
    [[stages]]\nname = \"report\"\njobs = [\"summary\"]\n\
    [jobs.summary]\ncommand = \"echo done\"\ntimeout = 60\n";

#[test]
fn help_of_every_command() {
    let p = Project::create(&[]);
    let s = settings(&p);
    for cmd in [
        "",
        "pipeline",
        "validate",
        "jobs",
        "runs",
        "status",
        "report",
        "completions",
    ] {
        let args: Vec<&str> = cmd
            .split_whitespace()
            .chain(std::iter::once("--help"))
            .collect();
        let name = if cmd.is_empty() { "help" } else { cmd };
        s.bind(|| insta::assert_snapshot!(format!("help-{name}"), transcript(&p, &args)));
    }
}

#[test]
fn summary_dry_run_and_errors() {
    let p = Project::create(&[("pipelines/ingest.toml", PIPELINE)]);
    let s = settings(&p);
    s.bind(|| {
        insta::assert_snapshot!(
            "run-summary",
            transcript(&p, &["pipeline", "ingest", "--no-progress"])
        );
        insta::assert_snapshot!(
            "error-no-such-pipeline",
            transcript(&p, &["pipeline", "nope"])
        );
        insta::assert_snapshot!(
            "error-bad-workers",
            transcript(&p, &["pipeline", "ingest", "-j", "0"])
        );
        insta::assert_snapshot!(
            "error-no-such-run",
            transcript(&p, &["status", "20990101T000000.000Z-abcd"])
        );
    });
    // A dry run prints no time of its own: its timeouts are shown as they are.
    let mut exact = insta::Settings::clone_current();
    exact.set_prepend_module_to_snapshot(false);
    let dry = [
        "pipeline",
        "ingest",
        "--dry-run",
        "-j",
        "2",
        "--timeout",
        "30",
    ];
    exact.bind(|| insta::assert_snapshot!("dry-run", transcript(&p, &dry)));
    p.write(
        "pipelines/broken.toml",
        "[[stages]]\nname = \"s\"\njobs = [\"x\"]\n",
    );
    p.write("pipelines/typo.toml", "[[stages]\nname = 1\n");
    s.bind(|| {
        insta::assert_snapshot!("error-unknown-job", transcript(&p, &["validate", "broken"]));
        insta::assert_snapshot!("error-syntax", transcript(&p, &["validate", "typo"]));
    });
}
