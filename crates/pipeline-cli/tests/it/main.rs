//! End-to-end tests of the real `lorchestra` binary on temporary projects.

#[cfg(feature = "browser-tests")]
mod browser;
mod journal;
mod layering;
mod loops;
mod metrics;
mod outputs;
#[cfg(feature = "slurm-tests")]
mod packed_faults;
mod params;
mod payload;
mod promises;
mod resources;
mod retries;
#[cfg(feature = "slurm-tests")]
mod slurm;
mod snapshots;
mod uptodate;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{Run, alive, read_pid, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_lorchestra");

#[test]
fn keeps_the_command_line_contract() {
    testkit::assert_cli_contract(BIN, "lorchestra", env!("CARGO_PKG_VERSION"));
    testkit::assert_shared_flags(BIN, "lorchestra", &["pipeline", "missing"]);
}

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn create(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = Project { dir };
        for (rel, text) in files {
            p.write(rel, text);
        }
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = testkit::command(BIN);
        cmd.args(args)
            .current_dir(self.path())
            .env_remove("LORCHESTRA_MAX_WORKERS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap().into()
    }

    /// A file of the project, as text.
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel))
            .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    /// The newest run's record.
    fn last_record(&self) -> Value {
        let runs = self.path().join(".lorchestra/runs");
        let mut ids: Vec<_> = std::fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        ids.sort();
        self.record(ids.last().unwrap()).unwrap()
    }

    /// Run `run_id`'s record as `lorchestra status --json` reads it (`run.json` with its
    /// journal replayed), if it has one yet.
    fn record(&self, run_id: &str) -> Option<Value> {
        let out = self.run(&["status", run_id, "--json"]);
        (out.code == Some(0)).then(|| serde_json::from_str(&out.stdout).unwrap())
    }

    /// The record of the project's only run, while it runs.
    fn only_record(&self) -> Option<Value> {
        let runs = self.path().join(".lorchestra/runs");
        let id = std::fs::read_dir(runs).ok()?.next()?.ok()?.file_name();
        self.record(id.to_str()?)
    }

    /// The most jobs that were running at once, from the `+`/`-` lines jobs append to `events`.
    fn peak(&self) -> usize {
        let text = std::fs::read_to_string(self.path().join("events")).unwrap_or_default();
        let (mut running, mut peak) = (0i64, 0i64);
        for l in text.lines() {
            running += if l == "+" { 1 } else { -1 };
            peak = peak.max(running);
        }
        peak as usize
    }
}

/// Job `id`: append `+`, sleep, append `-`.
fn sleeper(id: &str, secs: &str) -> String {
    format!("[jobs.{id}]\ncommand = \"echo + >> events; sleep {secs}; echo - >> events\"\n")
}

fn four_sleepers(secs: &str) -> String {
    let mut t =
        String::from("[[stages]]\nname = \"ingest\"\njobs = [\"a\", \"b\", \"c\", \"d\"]\n");
    for id in ["a", "b", "c", "d"] {
        t.push_str(&sleeper(id, secs));
    }
    t
}

/// Job `id`'s record, whatever its stage.
fn job<'r>(record: &'r Value, id: &str) -> &'r Value {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["jobs"].as_array().unwrap())
        .find(|j| j["job_id"] == id)
        .unwrap_or_else(|| panic!("no job {id} in {record}"))
}

fn statuses(record: &Value) -> Vec<(String, String, String)> {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["jobs"].as_array().unwrap().iter().map(move |j| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    j["job_id"].as_str().unwrap().to_owned(),
                    j["status"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn a_stage_runs_its_jobs_in_parallel_up_to_max_workers() {
    let p = Project::create(&[("pipelines/ingest.toml", &four_sleepers("1"))]);
    let start = Instant::now();
    let out = p.run(&["pipeline", "ingest", "--max-workers", "4"]);
    let parallel = start.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(p.peak(), 4);

    std::fs::remove_file(p.path().join("events")).unwrap();
    let start = Instant::now();
    let out = p.run(&["pipeline", "ingest"]);
    let serial = start.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(p.peak(), 1, "one at a time by default");
    // Loose ordering only: 4 x 1 s one at a time cannot take less than 4 s; the ratio is the
    // benchmark's business.
    assert!(serial >= Duration::from_secs(4));
    assert!(parallel < Duration::from_secs(3), "{parallel:?}");

    let r = p.last_record();
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["max_workers"], 1);
    let job = &r["stages"][0]["jobs"][0];
    for key in [
        "job_id",
        "status",
        "attempts",
        "exit_code",
        "started_at",
        "finished_at",
        "duration_seconds",
        "log",
    ] {
        assert!(job.get(key).is_some(), "job record lacks {key}: {job}");
    }
    assert_eq!(job["exit_code"], 0);
    assert_eq!(job["log"], "logs/a.log");
}

#[test]
fn the_worker_count_comes_from_the_environment_too() {
    let p = Project::create(&[("pipelines/ingest.toml", &four_sleepers("0.5"))]);
    let out = p.run_env(&["pipeline", "ingest"], &[("LORCHESTRA_MAX_WORKERS", "2")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(p.peak(), 2);
    assert_eq!(p.last_record()["max_workers"], 2);

    let out = p.run_env(
        &["pipeline", "ingest"],
        &[("LORCHESTRA_MAX_WORKERS", "lots")],
    );
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("LORCHESTRA_MAX_WORKERS=\"lots\" is not a whole number"),
        "{}",
        out.stderr
    );
}

#[test]
fn jobs_get_their_env_folder_and_log() {
    let p = Project::create(&[
        (
            "pipelines/p.toml",
            "[[stages]]\nname = \"s\"\njobs = [\"show\", \"argv\"]\n\
             [jobs.show]\ncommand = \"echo $ACCOUNT in $(basename $(pwd)); echo oops >&2\"\nenv = { ACCOUNT = \"7\" }\ncwd = \"scripts\"\n\
             [jobs.argv]\ncommand = [\"printf\", \"%s|\", \"two words\", \"$HOME\"]\n",
        ),
        ("scripts/.keep", ""),
    ]);
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = p.last_record();
    let run_dir = p
        .path()
        .join(".lorchestra/runs")
        .join(r["run_id"].as_str().unwrap());
    let log = std::fs::read_to_string(run_dir.join("logs/show.log")).unwrap();
    assert!(log.contains("=== lorchestra: show attempt 1"), "{log}");
    assert!(
        log.contains("7 in scripts\noops\n"),
        "stdout and stderr in one log: {log}"
    );
    let log = std::fs::read_to_string(run_dir.join("logs/argv.log")).unwrap();
    assert!(
        log.contains("two words|$HOME|"),
        "an array runs without a shell: {log}"
    );
}

#[test]
fn stop_on_failure_skips_later_stages_and_shows_the_log_tail() {
    // `bad` fails only once `good` has started: with two workers both start, whichever thread
    // comes up first (a loaded machine once started `good` after `bad` had failed: skipped).
    let pipeline = "[[stages]]\nname = \"first\"\njobs = [\"bad\", \"good\"]\n\
                    [[stages]]\nname = \"second\"\njobs = [\"later\"]\n\
                    [jobs.bad]\ncommand = \"while [ ! -e good-started ]; do sleep 0.01; done; \
                    echo reading input; echo 'parse error on line 3' >&2; exit 3\"\n\
                    [jobs.good]\ncommand = \"touch good-started\"\n[jobs.later]\ncommand = \"touch later-ran\"\n";
    let p = Project::create(&[("pipelines/p.toml", pipeline)]);
    let out = p.run(&["pipeline", "p", "-j", "2"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("FAILED    bad"), "{}", out.stderr);
    assert!(
        out.stderr.contains("    | parse error on line 3"),
        "log tail shown: {}",
        out.stderr
    );
    assert!(!p.path().join("later-ran").exists());
    let r = p.last_record();
    assert_eq!(r["status"], "failed");
    assert_eq!(
        statuses(&r),
        [
            ("first".into(), "bad".into(), "failed".into()),
            ("first".into(), "good".into(), "succeeded".into()),
            ("second".into(), "later".into(), "skipped".into()),
        ]
    );
    assert_eq!(r["stages"][0]["jobs"][0]["exit_code"], 3);

    // Without stop_on_failure every stage runs, and the exit code still says it failed.
    p.write(
        "pipelines/p.toml",
        &format!("stop_on_failure = false\n{pipeline}"),
    );
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(1));
    assert!(p.path().join("later-ran").exists());
}

#[test]
fn halt_now_kills_running_jobs_of_the_failed_stage() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[[stages]]\nname = \"s\"\njobs = [\"slow\", \"bad\", \"queued\"]\n\
         [jobs.slow]\ncommand = \"sleep 300\"\n[jobs.bad]\ncommand = \"sleep 0.3; exit 1\"\n\
         [jobs.queued]\ncommand = \"true\"\n",
    )]);
    let start = Instant::now();
    let out = p.run(&["pipeline", "p", "-j", "2", "--halt", "now"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(
        statuses(&p.last_record()),
        [
            ("s".into(), "slow".into(), "cancelled".into()),
            ("s".into(), "bad".into(), "failed".into()),
            ("s".into(), "queued".into(), "skipped".into()),
        ]
    );
}

#[test]
fn a_timeout_kills_the_jobs_setsid_grandchild() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[[stages]]\nname = \"s\"\njobs = [\"hang\"]\n[jobs.hang]\n\
         command = \"setsid sh -c 'echo $$ > gc.pid; exec sleep 300' & sleep 300\"\ntimeout = 1\n",
    )]);
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let r = p.last_record();
    assert_eq!(r["stages"][0]["jobs"][0]["status"], "timed_out");
    let pid = read_pid(&p.path().join("gc.pid"));
    assert!(!alive(pid), "grandchild {pid} survived the timeout");
}

#[test]
fn retries_rerun_a_failing_job() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[[stages]]\nname = \"s\"\njobs = [\"flaky\"]\n[jobs.flaky]\n\
         command = \"echo x >> tries; [ $(wc -l < tries) -ge 2 ]\"\nretries = 2\n",
    )]);
    let out = p.run(&["pipeline", "p"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let job = &p.last_record()["stages"][0]["jobs"][0];
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["attempts"], 2);
}

#[test]
fn kill_9_leaves_a_valid_record_and_resume_runs_exactly_the_unfinished_jobs() {
    // Three quick jobs, and one that waits for a file; every job appends its name to `ran`.
    let mut pipeline = String::from(
        "[[stages]]\nname = \"s\"\njobs = [\"q1\", \"q2\", \"q3\", \"waits\"]\n\
         [[stages]]\nname = \"after\"\njobs = [\"last\"]\n",
    );
    for id in ["q1", "q2", "q3", "last"] {
        let _ = write!(pipeline, "[jobs.{id}]\ncommand = \"echo {id} >> ran\"\n");
    }
    pipeline.push_str(
        "[jobs.waits]\ncommand = \"echo waits >> ran; sleep 300 & echo $! > gc.pid; \
         echo $$ > waits.pid; while [ ! -f go ]; do sleep 0.05; done\"\n",
    );
    let p = Project::create(&[("pipelines/p.toml", &pipeline)]);
    let mut child = testkit::command(BIN)
        .args(["pipeline", "p", "-j", "4", "--no-progress"])
        .current_dir(p.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let record_says_three_succeeded = || {
        p.only_record()
            .is_some_and(|v| statuses(&v).iter().filter(|s| s.2 == "succeeded").count() == 3)
    };
    wait_for(
        "three jobs recorded as succeeded",
        record_says_three_succeeded,
    );
    let job_pid = read_pid(&p.path().join("waits.pid"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The record is valid JSON and says what was done.
    let r = p.last_record();
    assert_eq!(r["status"], "running");
    let st = statuses(&r);
    assert_eq!(st[3], ("s".into(), "waits".into(), "running".into()));
    assert_eq!(st[4], ("after".into(), "last".into(), "pending".into()));
    // The job did not outlive lorchestra: neither its main process nor its grandchild.
    let gc_pid = read_pid(&p.path().join("gc.pid"));
    wait_for("the killed run's job to die", || !alive(job_pid));
    wait_for("the killed run's grandchild to die", || !alive(gc_pid));

    std::fs::write(p.path().join("ran"), "").unwrap();
    std::fs::write(p.path().join("go"), "").unwrap();
    let run_id = r["run_id"].as_str().unwrap().to_owned();
    let out = p.run(&["pipeline", "p", "--resume", &run_id, "-j", "4"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let ran = std::fs::read_to_string(p.path().join("ran")).unwrap();
    let mut ran: Vec<&str> = ran.lines().collect();
    ran.sort_unstable();
    assert_eq!(
        ran,
        ["last", "waits"],
        "only the jobs not recorded as succeeded ran again"
    );
    let r = p.last_record();
    assert_eq!(r["run_id"], run_id.as_str(), "the same run, resumed");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["resumes"], 1);
    assert!(statuses(&r).iter().all(|s| s.2 == "succeeded"));
}

#[test]
fn resume_runs_a_job_again_when_its_definition_changed() {
    let pipeline = |a_says: &str| {
        format!(
            "[[stages]]\nname = \"s\"\njobs = [\"a\", \"same\", \"fails\"]\n\
             [jobs.a]\ncommand = \"echo {a_says} >> ran\"\n\
             [jobs.same]\ncommand = \"echo same >> ran\"\n\
             [jobs.fails]\ncommand = \"test -f fixed\"\n"
        )
    };
    let p = Project::create(&[("pipelines/p.toml", &pipeline("old"))]);
    assert_eq!(p.run(&["pipeline", "p"]).code, Some(1));
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    std::fs::write(p.path().join("ran"), "").unwrap();
    p.write("pipelines/p.toml", &pipeline("new"));
    p.write("fixed", "");
    let out = p.run(&["pipeline", "p", "--resume", &run_id]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(p.path().join("ran")).unwrap(),
        "new\n",
        "the changed job ran again, the unchanged one did not"
    );
    assert!(
        out.stderr
            .contains("job a (stage s) changed since it succeeded"),
        "{}",
        out.stderr
    );
}

#[test]
fn resuming_a_run_resumes_its_nested_pipeline() {
    let p = Project::create(&[
        (
            "pipelines/outer.toml",
            "[[stages]]\nname = \"s\"\njobs = [\"pipeline.inner\"]\n",
        ),
        (
            "pipelines/inner.toml",
            "[[stages]]\nname = \"one\"\njobs = [\"first\"]\n\
             [[stages]]\nname = \"two\"\njobs = [\"second\"]\n\
             [jobs.first]\ncommand = \"echo first >> ran\"\n\
             [jobs.second]\ncommand = \"echo second >> ran; test -f fixed\"\n",
        ),
    ]);
    assert_eq!(p.run(&["pipeline", "outer"]).code, Some(1));
    let runs = |p: &Project| {
        std::fs::read_dir(p.path().join(".lorchestra/runs"))
            .unwrap()
            .count()
    };
    assert_eq!(runs(&p), 2, "the outer run and the nested one");
    let outer = std::fs::read_dir(p.path().join(".lorchestra/runs"))
        .unwrap()
        .flatten()
        .map(|e| p.record(e.file_name().to_str().unwrap()).unwrap())
        .find(|r| r["pipeline"] == "outer")
        .unwrap();
    std::fs::write(p.path().join("ran"), "").unwrap();
    p.write("fixed", "");
    let out = p.run(&[
        "pipeline",
        "outer",
        "--resume",
        outer["run_id"].as_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(p.path().join("ran")).unwrap(),
        "second\n",
        "the nested run was resumed: its succeeded job did not run again"
    );
    assert_eq!(runs(&p), 2, "no new nested run");
}

#[test]
fn ctrl_c_cancels_the_run_and_exits_130() {
    let p = Project::create(&[(
        "pipelines/p.toml",
        "[[stages]]\nname = \"s\"\njobs = [\"long\"]\n[[stages]]\nname = \"t\"\njobs = [\"never\"]\n\
         [jobs.long]\ncommand = \"echo $$ > long.pid; sleep 300\"\n[jobs.never]\ncommand = \"true\"\n",
    )]);
    let mut child = testkit::command(BIN)
        .args(["pipeline", "p"])
        .current_dir(p.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the job to start", || p.path().join("long.pid").exists());
    testkit::interrupt(&child);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let r = p.last_record();
    assert_eq!(r["status"], "cancelled");
    assert_eq!(
        statuses(&r),
        [
            ("s".into(), "long".into(), "cancelled".into()),
            ("t".into(), "never".into(), "cancelled".into()),
        ]
    );
}

#[test]
fn signals_set_to_be_ignored_stay_ignored() {
    // `nohup lorchestra ...` ignores SIGHUP; `lorchestra ... &` in a script ignores SIGINT.
    // The run must go on through them.
    for (trap, signal) in [("HUP", "-HUP"), ("INT", "-INT")] {
        let p = Project::create(&[(
            "pipelines/p.toml",
            "[[stages]]\nname = \"s\"\njobs = [\"a\"]\n\
             [jobs.a]\ncommand = \"touch started; sleep 2\"\n",
        )]);
        let child = testkit::command("sh")
            .args([
                "-c",
                &format!("trap '' {trap}; exec \"$0\" pipeline p"),
                BIN,
            ])
            .current_dir(p.path())
            .env_remove("LORCHESTRA_MAX_WORKERS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the job to start", || p.path().join("started").exists());
        testkit::signal(&child, signal);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "SIG{trap} was ignored, yet: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(p.last_record()["status"], "succeeded");
    }
}

#[test]
fn nested_pipelines_run_as_one_job() {
    let p = Project::create(&[
        (
            "pipelines/outer.toml",
            "[[stages]]\nname = \"s\"\njobs = [\"pipeline.inner\"]\n",
        ),
        (
            "pipelines/inner.yaml",
            "stages:\n  - name: in\n    jobs: [hello]\n",
        ),
        ("jobs/hello.toml", "command = \"echo hello > hello.txt\"\n"),
    ]);
    let out = p.run(&["pipeline", "outer"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(p.path().join("hello.txt").exists());
}

/// A bad-input case: pipeline file, extra arguments, expected message, environment.
type Case<'a> = (String, Vec<&'a str>, &'a str, &'a [(&'a str, &'a str)]);

#[test]
fn bad_input_is_refused_before_any_job_starts() {
    let ok_job = "[jobs.a]\ncommand = \"touch ran\"\n";
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            "[[stages]]\nname = \"s\"\njobs = [\"a\"\n".into(),
            vec![],
            "pipelines/p.toml: TOML parse error at line 3, column",
        ),
        (
            format!("[[stages]]\nname = \"s\"\njobs = [\"a\", \"nope\"]\n{ok_job}"),
            vec![],
            "stage \"s\" names the job \"nope\"",
        ),
        (
            format!(
                "[[stages]]\nname = \"s\"\njobs = [\"a\"]\n[[stages]]\nname = \"s\"\njobs = [\"b\"]\n{ok_job}[jobs.b]\ncommand = \"x\"\n"
            ),
            vec![],
            "two stages are named \"s\"",
        ),
        (
            format!("[[stages]]\nname = \"s\"\njobs = []\n{ok_job}"),
            vec![],
            "stage \"s\" has no jobs",
        ),
        (
            format!("[[stages]]\nname = \"s\"\njobs = [\"a\"]\n{ok_job}"),
            vec!["-j", "0"],
            "max_workers must be between 1 and 64, got 0",
        ),
        (
            format!("[[stages]]\nname = \"s\"\njobs = [\"a\"]\n{ok_job}"),
            vec!["-j", "65"],
            "max_workers must be between 1 and 64, got 65",
        ),
        (
            "[[stages]]\nname = \"s\"\njobs = [\"pipeline.p\"]\n".into(),
            vec![],
            "nested pipelines form a cycle: p -> p",
        ),
    ];
    let ok_pipeline = format!("[[stages]]\nname = \"s\"\njobs = [\"a\"]\n{ok_job}");
    let cases: Vec<Case> = cases
        .into_iter()
        .map(|(t, a, e)| (t, a, e, &[][..]))
        .chain([
            (
                ok_pipeline,
                vec![],
                "FANOUT_STRATEGY",
                &[("FANOUT_STRATEGY", "bogus")][..],
            ),
            (
                "[[stages]]\nname = \"s\"\njobs = [\"a\"]\n[jobs.a]\ncommand = \"x\"\ntimeout = 1e20\n"
                    .to_owned(),
                vec![],
                "timeout = 100000000000000000000: 100000000000000000000 seconds is more than the longest",
                &[][..],
            ),
        ])
        .collect();
    for (text, extra, expected, env) in cases {
        let p = Project::create(&[("pipelines/p.toml", &text)]);
        let mut args = vec!["pipeline", "p"];
        args.extend(extra);
        let out = p.run_env(&args, env);
        assert_eq!(out.code, Some(2), "{expected}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "expected {expected:?} in {}",
            out.stderr
        );
        assert!(!p.path().join("ran").exists(), "nothing ran");
        assert!(
            !p.path().join(".lorchestra").exists(),
            "no run was recorded"
        );
    }

    let p = Project::create(&[("pipelines/alpha.toml", "x"), ("pipelines/beta.yaml", "x")]);
    let out = p.run(&["pipeline", "gamma"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("the pipelines there: alpha, beta"),
        "{}",
        out.stderr
    );

    let p = Project::create(&[("pipelines/y.yaml", "stages:\n  - name: s\n    jobs: [a\n")]);
    let out = p.run(&["validate", "y"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("pipelines/y.yaml at line"),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_jobs_runs_status_and_report_describe_the_project() {
    let p = Project::create(&[
        (
            "pipelines/p.toml",
            &format!("description = \"demo\"\n{}", four_sleepers("0.1")),
        ),
        ("jobs/shared.toml", "command = [\"echo\", \"hi\"]\n"),
    ]);
    let out = p.run(&["validate", "p"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "pipelines/p.toml is valid: 1 stage, 4 jobs\n");

    let out = p.run(&["jobs"]);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("shared") && l.ends_with("echo hi")),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.lines().count(), 5, "{}", out.stdout);

    let out = p.run(&["pipeline", "p", "--dry-run", "-j", "3"]);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.contains("up to 3 jobs at once") && out.stdout.contains("  a: echo + >> events"),
        "{}",
        out.stdout
    );
    assert!(
        !p.path().join(".lorchestra").exists(),
        "a dry run records nothing"
    );

    // The second run starts after the first ended: a later millisecond, a later id.
    assert_eq!(p.run(&["pipeline", "p", "-j", "2"]).code, Some(0));
    assert_eq!(p.run(&["pipeline", "p", "-j", "2"]).code, Some(0));
    let out = p.run(&["runs"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let newest = lines[1].split_whitespace().next().unwrap();
    let older = lines[2].split_whitespace().next().unwrap();
    assert!(newest > older, "newest first");
    assert!(
        lines[1].contains("succeeded") && lines[1].ends_with("4/4"),
        "{}",
        lines[1]
    );

    let out = p.run(&["status", newest]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("stage ingest"), "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("a ") && l.contains("succeeded")),
        "{}",
        out.stdout
    );

    let out = p.run(&["report", newest, "-o", "timeline.html"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let html = std::fs::read_to_string(p.path().join("timeline.html")).unwrap();
    assert_eq!(
        html.matches("<g class=\"job\">").count(),
        4,
        "one bar per job"
    );
    assert!(
        html.contains("<title>a (ingest): succeeded, started "),
        "tooltips give times"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("<script"),
        "self-contained"
    );

    let out = p.run(&["status", "no-such-run"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("no run \"no-such-run\"") && out.stderr.contains("lorchestra runs"),
        "{}",
        out.stderr
    );
}

/// The shared report lands beside the record and in --report FILE; a failure after the jobs
/// ran (the report cannot be written) exits 1, not 2 ("nothing ran"), and leaves the record.
#[test]
fn the_report_is_shared_and_a_failure_after_jobs_ran_exits_1() {
    let p = Project::create(&[("pipelines/ingest.toml", &four_sleepers("0"))]);
    let out = p.run(&["pipeline", "ingest", "-j", "2", "--report", "report.json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["summary"]["total"], 4);
    assert_eq!(report["summary"]["succeeded"], 4);
    assert_eq!(report["tasks"][0]["name"], "a");
    assert_eq!(report["tasks"][0]["stage"], "ingest");
    assert_eq!(report["tasks"][0]["status"], "succeeded");
    assert_eq!(report["tasks"][0]["exit_code"], 0);
    let run_id = p.last_record()["run_id"].as_str().unwrap().to_owned();
    let beside = p
        .path()
        .join(".lorchestra/runs")
        .join(&run_id)
        .join("report.json");
    assert!(beside.is_file(), "{}", beside.display());

    std::fs::write(p.path().join("blocker"), "a file, not a folder").unwrap();
    let out = p.run(&["pipeline", "ingest", "--report", "blocker/report.json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("lorchestra: error: "), "{}", out.stderr);
    assert_eq!(p.last_record()["status"], "succeeded", "the jobs ran");
}

/// `--timeout` limits the jobs without a timeout of their own.
#[test]
fn timeout_limits_jobs_without_their_own() {
    let p = Project::create(&[(
        "pipelines/slow.toml",
        "[[stages]]\nname = \"s\"\njobs = [\"slow\", \"own\"]\n\
         [jobs.slow]\ncommand = \"sleep 30\"\n\
         [jobs.own]\ncommand = \"sleep 1\"\ntimeout = 20\n",
    )]);
    let start = Instant::now();
    let out = p.run(&["pipeline", "slow", "-j", "2", "--timeout", "0.5"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(start.elapsed() < Duration::from_secs(20));
    let st = statuses(&p.last_record());
    assert_eq!(
        st,
        [
            ("s".into(), "slow".into(), "timed_out".into()),
            ("s".into(), "own".into(), "succeeded".into())
        ]
    );
}
