//! Issue 27's promises for lorchestra: two runs of one project never eat each other's data.

use std::process::Stdio;

use super::{BIN, Project};

/// A pipeline whose one job waits until the file `go` exists.
const WAITS_FOR_GO: &str = "[[stages]]\nname = \"s\"\njobs = [\"j\"]\n[jobs.j]\n\
    command = \"touch started; while [ ! -f go ]; do sleep 0.05; done; echo done >> ran\"\n";

#[test]
fn a_second_run_of_a_project_is_refused_naming_the_first_or_waits_with_wait() {
    let p = Project::create(&[("pipelines/p.toml", WAITS_FOR_GO)]);
    let mut first = testkit::command(BIN)
        .args(["pipeline", "p", "--no-progress"])
        .current_dir(p.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    testkit::wait_for("the first run's job", || p.path().join("started").exists());
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    let expected = format!(
        "another lorchestra run is using the project .: pid {} (lorchestra pipeline), started",
        first.id()
    );
    for args in [
        vec!["pipeline", "p", "--no-progress"],
        vec!["pipeline", "p", "--no-progress", "--resume", &run_id],
    ] {
        let out = p.run(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(&expected), "{args:?}: {}", out.stderr);
    }
    // Reading is not running: status and dry runs go on.
    assert_eq!(p.run(&["status", &run_id]).code, Some(0));
    assert_eq!(p.run(&["pipeline", "p", "--dry-run"]).code, Some(0));

    let waiting = testkit::command(BIN)
        .args(["pipeline", "p", "--no-progress", "--wait"])
        .current_dir(p.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    testkit::wait_for("the second run to wait", || {
        std::fs::read_to_string(format!("/proc/{}/wchan", waiting.id()))
            .is_ok_and(|c| c.starts_with("locks_") || c.contains("flock"))
    });
    p.write("go", "");
    assert!(first.wait().unwrap().success());
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = std::fs::read_to_string(p.path().join("ran")).unwrap();
    assert_eq!(ran, "done\ndone\n", "one after the other");
    assert!(!p.path().join(".lorchestra/lock").exists());
}
