//! Entry points for the fuzz targets in `fuzz/` (built with the `fuzzing` feature): each hands
//! bytes to a parser of user input the way the tool does. Errors are expected; a panic is a bug.

use std::path::Path;

use fanout::{MaxWorkers, ProgressMode};

use crate::cli::Halt;
use crate::model::Backend;
use crate::plan::{self, RunOptions};
use crate::project::Project;
use crate::store::{self, JobStatus};

fn options() -> RunOptions {
    RunOptions {
        max_workers: MaxWorkers::one(),
        halt: Halt::Soon,
        resumed: None,
        progress: ProgressMode::Silent,
        detail_lines: 0,
        backend: Backend::Local,
        slurm_args: Vec::new(),
        timeout: None,
        report: None,
        force: plan::Force::Nothing,
        payload: crate::payload::Payload::new(),
        set: crate::params::Overrides::new(),
        resources: crate::resources::Amounts::new(),
        budget: crate::resources::budget(
            &crate::resources::Amounts::new(),
            &crate::resources::Amounts::new(),
        ),
        slurm_mode: fanout_cli::SlurmMode::Jobs,
        slurm_nodes: None,
        allocation: None,
    }
}

/// The project in `dir` (its `pipelines/` and `jobs/` files written by the caller): load every
/// pipeline with its job files and nested pipelines, as `lorchestra pipeline NAME` does, plan
/// its record and its graph, and list every job, as `lorchestra jobs` does.
pub fn project(dir: &Path) {
    let project = Project::new(dir.to_path_buf());
    for name in project.pipeline_names() {
        if let Ok(mut pipeline) = project.load(&name) {
            plan::settle(&mut pipeline, &options());
            let _ = plan::check_resources(&pipeline, &options());
            for job in pipeline.stages.iter().flat_map(|s| &s.jobs) {
                let _ = (job.definition_hash(), job.run.display());
            }
            let _ = plan::new_record(&pipeline, &options());
            let _ = (crate::graph::text(&pipeline), crate::graph::dot(&pipeline));
        }
    }
    if let Ok(jobs) = project.all_jobs() {
        for job in jobs {
            let _ = (job.definition_hash(), job.run.display());
        }
    }
}

/// `record` as the run record `runs/<id>/run.json` of the project in `dir`, whose pipeline
/// `pipelines/<name>.toml` the caller wrote: read it as `lorchestra status`, `runs` and `report`
/// do, and rebuild it as `--resume` does.
pub fn run_record(dir: &Path, name: &str, record: &[u8]) {
    let run_id = "fuzz";
    let path = store::record_path(dir, run_id);
    if std::fs::create_dir_all(path.parent().expect("a run folder"))
        .and_then(|()| std::fs::write(&path, record))
        .is_err()
    {
        return;
    }
    if let Ok(r) = store::load(dir, run_id) {
        let _ = crate::report::render(&r);
        let _ = plan::count(&r, JobStatus::Succeeded);
        let _ = crate::status_text(dir, &r);
    }
    for r in store::list(dir) {
        let _ = r.duration_seconds.map(fanout::fmt_seconds);
    }
    let project = Project::new(dir.to_path_buf());
    if let Ok(pipeline) = project.load(name)
        && let Ok(old) = store::load(dir, run_id)
    {
        let _ = plan::resumed_record(&pipeline, &old, &options());
    }
}
