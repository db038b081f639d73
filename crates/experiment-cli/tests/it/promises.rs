//! Issue 27's promises for parallamr: two runs never eat each other's results.

use std::time::Duration;

use testkit::llm_server::LlmServer;

use crate::{Project, run_run, start_sweep, topics};

#[test]
fn a_second_run_on_a_results_file_being_written_is_refused_naming_the_first() {
    let server = LlmServer::start(Duration::from_millis(300));
    let p = Project::create("About {{ topic }}", &topics(6, "ollama", "llama-test"));
    let mut first = start_sweep(&p, &server, 2);
    let second = run_run(&p, &["--resume"], Some(&server));
    assert_eq!(second.code, Some(2), "{}", second.stderr);
    let expected = format!(
        "out.csv is being written by another run: pid {} (parallamr run), started",
        first.id()
    );
    assert!(second.stderr.contains(&expected), "{}", second.stderr);
    assert!(first.wait().unwrap().success());
    assert_eq!(p.results().len(), 6, "the first run's rows are all there");
    assert!(
        !p.path().join(".out.csv.lock").exists(),
        "the lock went with the run"
    );
    // With --wait, the second run waits for the first, then completes what it left.
    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    let mut first = start_sweep(&p, &server, 2);
    let second = run_run(&p, &["--resume", "--wait"], Some(&server));
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(first.wait().unwrap().success());
    assert_eq!(p.results().len(), 6, "nothing twice, nothing lost");
}
