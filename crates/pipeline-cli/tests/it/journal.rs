//! Records that stay linear (issue 33): changes go to a journal beside `run.json`, compacted at
//! the end; readers replay it. A loop of `kill -9` at random instants, each followed by
//! `--resume`, must continue exactly: a job recorded as succeeded never runs again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use super::{BIN, Project, statuses};

const JOBS: usize = 40;

#[test]
fn kill_9_at_random_instants_then_resume_continues_exactly() {
    let mut toml = String::from("[[stages]]\nname = \"work\"\njobs = [");
    for i in 0..JOBS {
        let _ = write!(toml, "{}\"j{i:02}\"", if i == 0 { "" } else { ", " });
    }
    toml.push_str("]\n");
    for i in 0..JOBS {
        let _ = writeln!(
            toml,
            "[jobs.j{i:02}]\ncommand = \"echo $(cat round) $LORCHESTRA_JOB_ID >> ran; sleep 0.0{}\"",
            i % 7
        );
    }
    let p = Project::create(&[("pipelines/p.toml", &toml)]);
    let mut run_id: Option<String> = None;
    // What the record said had succeeded when each round was killed.
    let mut succeeded_before: Vec<BTreeSet<String>> = Vec::new();
    // Different instants each run; the seed is printed to replay a failure.
    let seed = fastrand::u64(..);
    eprintln!("kill instants from seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0.. {
        std::fs::write(p.path().join("round"), round.to_string()).unwrap();
        let mut args = vec!["pipeline", "p", "-j", "2", "--no-progress"];
        if let Some(id) = &run_id {
            args.extend(["--resume", id.as_str()]);
        }
        let mut child = testkit::command(BIN)
            .args(&args)
            .current_dir(p.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let last = round == 8;
        if !last {
            std::thread::sleep(Duration::from_millis(rng.u64(30..400)));
            child.kill().unwrap(); // SIGKILL, at whatever the run was doing
        }
        let status = child.wait().unwrap();
        if run_id.is_none() {
            let Some(id) = p
                .only_record()
                .map(|r| r["run_id"].as_str().unwrap().to_owned())
            else {
                // Killed before the run had a record: start afresh.
                continue;
            };
            run_id = Some(id);
        }
        let record = p
            .record(run_id.as_ref().unwrap())
            .expect("a readable record");
        let done: BTreeSet<String> = statuses(&record)
            .into_iter()
            .filter(|s| s.2 == "succeeded")
            .map(|s| s.1)
            .collect();
        if last {
            assert!(status.success(), "the last resume completes the run");
            assert_eq!(record["status"], "succeeded");
            assert_eq!(done.len(), JOBS, "{record}");
            break;
        }
        succeeded_before.push(done);
    }
    // Every job ran; none ran again in a round after the record said it had succeeded.
    let ran = p.read("ran");
    let mut rounds_of: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for line in ran.lines() {
        let (round, job) = line.split_once(' ').unwrap();
        rounds_of
            .entry(job.to_owned())
            .or_default()
            .push(round.parse().unwrap());
    }
    assert_eq!(rounds_of.len(), JOBS, "{ran}");
    for (job, rounds) in &rounds_of {
        for &r in rounds {
            for (killed, done) in succeeded_before.iter().enumerate() {
                assert!(
                    !(done.contains(job) && r > killed),
                    "{job} ran in round {r}, after round {killed} had recorded it as succeeded"
                );
            }
        }
    }
    // The finished run was compacted: run.json alone is the whole record, no journal left.
    let dir = p
        .path()
        .join(".lorchestra/runs")
        .join(run_id.as_ref().unwrap());
    assert!(!dir.join("journal.jsonl").exists());
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(on_disk["status"], "succeeded");
    assert_eq!(on_disk["resumes"], 8);
    // Each start and end of the run moved the record to a new generation, across resumes
    // (a resume that began again from the first would let a journal of its own number apply).
    assert!(on_disk["generation"].as_u64().unwrap() >= 3, "{on_disk}");
}
