//! A project folder: where pipelines, jobs and runs live, and how a pipeline is found by its
//! name. Loading one is `load.rs`.
//!
//! Layout of a project folder:
//! - `pipelines/<NAME>.toml` (or `.yaml`/`.yml`, the Python lorchestra's layout),
//! - `jobs/<JOB_ID>.toml`: jobs shared by several pipelines.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// A project folder: where pipelines, jobs and runs live.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub(crate) dir: PathBuf,
}

impl Project {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Project { dir }
    }

    /// `rel` inside the project (without a leading `./` for the current folder, so messages
    /// show the paths people type).
    pub(crate) fn at(&self, rel: impl AsRef<Path>) -> PathBuf {
        if self.dir == Path::new(".") {
            rel.as_ref().to_path_buf()
        } else {
            self.dir.join(rel)
        }
    }

    pub(crate) fn pipelines_dir(&self) -> PathBuf {
        self.at("pipelines")
    }

    pub(crate) fn jobs_dir(&self) -> PathBuf {
        self.at("jobs")
    }

    /// Names of the pipelines in `pipelines/`, sorted.
    pub(crate) fn pipeline_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.pipelines_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let ext = p.extension()?.to_str()?;
                matches!(ext, "toml" | "yaml" | "yml")
                    .then(|| p.file_stem()?.to_str().map(str::to_owned))?
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The file of pipeline `name_or_file`: a path to a file, or a name in `pipelines/`.
    pub(crate) fn find(&self, name_or_file: &str) -> Result<PathBuf> {
        let as_path = Path::new(name_or_file);
        if as_path
            .extension()
            .is_some_and(|e| e == "toml" || e == "yaml" || e == "yml")
            || name_or_file.contains('/')
        {
            if as_path.is_file() {
                return Ok(as_path.to_path_buf());
            }
            bail!("the pipeline file {name_or_file} does not exist");
        }
        for ext in ["toml", "yaml", "yml"] {
            let p = self.pipelines_dir().join(format!("{name_or_file}.{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
        let names = self.pipeline_names();
        if names.is_empty() {
            bail!(
                "no pipeline named {name_or_file:?}: {} has no pipelines (pipelines/<NAME>.toml)",
                self.dir.display()
            );
        }
        bail!(
            "no pipeline named {name_or_file:?} in {}; the pipelines there: {}",
            self.pipelines_dir().display(),
            names.join(", ")
        )
    }
}
