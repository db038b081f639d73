//! What users read, as insta snapshots (tests/it/snapshots/): `--help`, the end-of-run summary,
//! `--dry-run` and the main error messages, with the stand-in uv of `fake`. A change to any of
//! them shows as a diff in review; accept an intended one with `INSTA_UPDATE=always cargo test`
//! (or `cargo insta review`) and commit the snapshot.

use crate::{Project, notebook};

fn settings(p: &Project) -> insta::Settings {
    let mut s = testkit::snapshot_settings(p.path());
    s.add_filter(r"envs/[0-9a-f]{20}", "envs/[HASH]");
    s
}

fn transcript(p: &Project, args: &[&str]) -> String {
    testkit::transcript("export-nb", args, &p.run(args))
}

#[test]
fn help_summary_dry_run_and_errors() {
    let p = Project::with_fake_uvx();
    let s = settings(&p);
    p.write("notebooks/intro.py", &notebook("ok"));
    p.write("notebooks/broken.py", &notebook("FAKE_RAISE"));
    s.bind(|| {
        insta::assert_snapshot!("help", transcript(&p, &["--help"]));
        insta::assert_snapshot!(
            "help-completions",
            transcript(&p, &["completions", "--help"])
        );
        insta::assert_snapshot!("dry-run", transcript(&p, &["--dry-run", "-j", "1"]));
        insta::assert_snapshot!("run-summary", transcript(&p, &["-j", "1", "--no-progress"]));
        insta::assert_snapshot!("error-bad-workers", transcript(&p, &["-j", "17"]));
        insta::assert_snapshot!("error-missing-folder", transcript(&p, &["nope"]));
    });
    p.write(
        "pyproject.toml",
        "[tool.export-nb]\nmax-workers = \"four\"\n",
    );
    s.bind(|| {
        insta::assert_snapshot!("error-bad-pyproject", transcript(&p, &[]));
    });
}
