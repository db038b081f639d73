//! What users read, as insta snapshots (tests/it/snapshots/): every command's `--help`, the
//! end-of-run summary, `--dry-run` and the main error messages. A change to any of them shows as
//! a diff in review; accept an intended one with `INSTA_UPDATE=always cargo test` (or
//! `cargo insta review`) and commit the snapshot.

use crate::{Project, topics};

fn settings(p: &Project) -> insta::Settings {
    testkit::snapshot_settings(p.path())
}

fn transcript(p: &Project, args: &[&str]) -> String {
    testkit::transcript("parallamr", args, &p.run(args, None))
}

#[test]
fn help_of_every_command() {
    let p = Project::create("", "");
    let s = settings(&p);
    for cmd in [
        "",
        "run",
        "providers",
        "models",
        "cache",
        "init",
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
    let p = Project::create(
        "About {{ topic }} for {{ reader }}.",
        &topics(3, "mock", "mock"),
    );
    let s = settings(&p);
    let run = ["run", "-p", "prompt.txt", "-e", "experiments.csv"];
    let with = |extra: &[&'static str]| -> Vec<&str> { run.iter().chain(extra).copied().collect() };
    s.bind(|| {
        insta::assert_snapshot!(
            "run-summary",
            transcript(&p, &with(&["-o", "out.csv", "-j", "1", "--no-progress"]))
        );
        insta::assert_snapshot!("dry-run", transcript(&p, &with(&["--dry-run"])));
        insta::assert_snapshot!("error-bad-workers", transcript(&p, &with(&["-j", "0"])));
        insta::assert_snapshot!(
            "error-unknown-provider-limit",
            transcript(&p, &with(&["--provider-limit", "nosuch=2"]))
        );
        insta::assert_snapshot!(
            "error-missing-prompt",
            transcript(&p, &["run", "-p", "nope.txt", "-e", "experiments.csv"])
        );
    });
    std::fs::write(
        p.path().join("experiments.csv"),
        "provider,model,topic\nmock,mock,cats\nnosuch,m,dogs\n",
    )
    .unwrap();
    s.bind(|| {
        insta::assert_snapshot!("error-unknown-provider", transcript(&p, &run));
    });
}
