//! Exports as Slurm job steps, with the stand-in uv of `fake`, on the project's test cluster
//! (feature `slurm-tests`; `cargo xtask test` starts the cluster and turns the feature on).

use crate::Project;
use crate::fake::{report, statuses};
use crate::notebook;

/// Exports as Slurm job steps on the test cluster (`cargo xtask slurm-up`): the same site, each
/// export a job named after its notebook, a refusal by the scheduler reported per notebook.
#[test]
fn exports_run_as_slurm_job_steps_with_backend_slurm() {
    testkit::slurm::require_test_cluster();
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
