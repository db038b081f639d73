//! Exports as Slurm job steps, with the stand-in uv of `fake`, on the project's test cluster
//! (feature `slurm-tests`; `cargo xtask test` starts the cluster and turns the feature on).

use crate::Project;
use crate::fake::{report, statuses};
use crate::notebook;

/// Exports as Slurm job steps on the test cluster (`cargo xtask slurm-up`): the same site, each
/// export a job named after its notebook, a refusal by the scheduler reported per notebook.
#[test]
fn exports_run_as_slurm_job_steps_with_backend_slurm() {
    let _cluster = testkit::slurm::require_test_cluster();
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook("ok"));
    p.write("notebooks/sub/b.py", &notebook("ok"));
    p.write("notebooks/c.py", &notebook("FAKE_RAISE"));
    let out = p.run(&["--backend", "slurm", "-j", "3", "--report", "report.json"]);
    assert_eq!(out.code, Some(1), "c fails: {}", out.stderr);
    assert!(p.exists("_site/notebooks/a.html") && p.exists("_site/notebooks/sub/b.html"));
    let r = report(&p);
    let mut st = statuses(&r);
    st.sort();
    assert_eq!(
        st,
        [
            ("notebooks/a.py".into(), "succeeded".into()),
            ("notebooks/c.py".into(), "failed".into()),
            ("notebooks/sub/b.py".into(), "succeeded".into()),
        ]
    );
    let mut jobs: Vec<String> = p
        .read("slurm_jobs")
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.to_owned())
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        ["export-nb a.py", "export-nb c.py", "export-nb sub/b.py"]
    );

    // The scheduler's refusal is each notebook's error; the site keeps its pages.
    let out = p.run(&[
        "--backend",
        "slurm",
        "--force",
        "--slurm-arg=--mem=100000000G",
        "--report",
        "report.json",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let r = report(&p);
    for t in r["tasks"].as_array().unwrap() {
        let e = t["error"].as_str().unwrap_or_default();
        assert!(e.starts_with("Slurm rejected the job: "), "{t}");
    }
    assert!(p.exists("_site/notebooks/a.html"));

    // Slurm options alone are a usage error.
    let out = p.run(&["--force", "--slurm-arg=--mem=1G"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("Slurm options need --backend slurm"),
        "{}",
        out.stderr
    );
}

/// `--slurm-mode packed`: the exports run on the workers of one allocation (the same Slurm job
/// for every notebook), the site is the same, and the allocation is let go at the end.
#[test]
fn exports_run_packed_in_one_allocation() {
    let _cluster = testkit::slurm::require_test_cluster();
    let p = Project::with_fake_uvx();
    for name in ["a", "b", "c", "d"] {
        p.write(&format!("notebooks/{name}.py"), &notebook("ok"));
    }
    let out = p.run(&[
        "--backend",
        "slurm",
        "--slurm-mode",
        "packed",
        "-j",
        "2",
        "--report",
        "report.json",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for name in ["a", "b", "c", "d"] {
        assert!(p.exists(&format!("_site/notebooks/{name}.html")), "{name}");
    }
    let jobs: std::collections::BTreeSet<String> = p
        .read("slurm_jobs")
        .lines()
        .map(|l| l.split_once(' ').unwrap().0.to_owned())
        .collect();
    assert_eq!(jobs.len(), 1, "one allocation for every export: {jobs:?}");
    let id: u64 = jobs.into_iter().next().unwrap().parse().unwrap();
    let state = testkit::slurm::settled(id);
    assert!(
        ["CANCELLED", "COMPLETED"].contains(&state.as_str()),
        "the allocation {id} ended {state}"
    );
}
