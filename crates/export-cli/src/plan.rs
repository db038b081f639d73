//! The plan of a run: settings, the index template, the notebooks found and what to do with
//! each (export, with why and in which environment; up to date; not a notebook), decided before
//! any export starts. Every input error, and the dry run, happen here.

use std::path::PathBuf;

use anyhow::Result;
use fanout::Task;

use crate::config::Settings;
use crate::discover::{self, Found};
use crate::envs::{EnvPool, EnvSpec};
use crate::export;
use crate::index::Template;
use crate::manifest::{self, Manifest};

/// What a run does with one discovered file.
#[derive(Debug)]
pub(crate) enum Action {
    /// Export it in the environment `env` (or fail with why its header cannot be used).
    Export {
        key: String,
        env: Result<EnvSpec, String>,
        why: manifest::Reason,
    },
    UpToDate,
    NotANotebook(String),
}

#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) found: Found,
    pub(crate) action: Action,
}

/// Everything decided before any export starts.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) settings: Settings,
    pub(crate) template: Template,
    pub(crate) manifest: Manifest,
    pub(crate) tasks: Vec<Task<Job>>,
}

impl Plan {
    pub(crate) fn prepare(settings: Settings) -> Result<Self> {
        let template = Template::load(settings.template.as_deref())?;
        // Render once with sample data, so a broken custom template stops us before an hour
        // of exports rather than after.
        template.check()?;
        let found = discover::discover(&settings.sources, &settings.exclude, &settings.output)?;
        let manifest = Manifest::load(&settings.output);
        let mut tasks = Vec::with_capacity(found.len());
        for found in found {
            let action = if let Some(reason) = &found.not_a_notebook {
                Action::NotANotebook(reason.clone())
            } else {
                let key = manifest::key(&found, &settings);
                let why = if settings.force {
                    Some(manifest::Reason::Forced)
                } else {
                    manifest.why_export(
                        &found,
                        &key,
                        &settings.output,
                        settings.thumbnails.is_some(),
                    )
                };
                if let Some(why) = why {
                    let env = match (&found.header, settings.sandbox) {
                        (Err(why), true) => Err(why.clone()),
                        (header, sandbox) => Ok(EnvSpec::for_notebook(
                            header.as_ref().ok().and_then(Option::as_ref),
                            sandbox,
                            settings.marimo_version.as_deref(),
                        )),
                    };
                    Action::Export { key, env, why }
                } else {
                    Action::UpToDate
                }
            };
            let name = found.source.display().to_string();
            tasks.push(Task::new(name, Job { found, action }));
        }
        Ok(Plan {
            settings,
            template,
            manifest,
            tasks,
        })
    }

    pub(crate) fn exports(&self) -> impl Iterator<Item = (usize, &Job)> {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.input.action, Action::Export { .. }))
            .map(|(i, t)| (i, &t.input))
    }

    pub(crate) fn print_commands(&self) {
        for task in &self.tasks {
            match &task.input.action {
                Action::Export { env: Err(why), .. } => {
                    eprintln!("# will fail {}: {why}", task.name);
                }
                Action::Export { why, .. } => eprintln!("# export {}: {why}", task.name),
                Action::UpToDate => eprintln!("# up to date: {}", task.name),
                Action::NotANotebook(reason) => eprintln!("# skipped {}: {reason}", task.name),
            }
        }
        let root = self
            .settings
            .env_root()
            .unwrap_or_else(|_| PathBuf::from("$EXPORT_NB_ENV_DIR"));
        let mut described = std::collections::HashSet::new();
        for (i, job) in self.exports() {
            let Action::Export { env: Ok(spec), .. } = &job.action else {
                continue;
            };
            let dir = EnvPool::dir_of(&root, spec);
            if described.insert(spec.key()) {
                eprintln!("# environment {}: {}", dir.display(), spec.describe());
            }
            let dest = export::temp_dir(&self.settings.output, i)
                .join(job.found.page.file_name().expect("pages have file names"));
            let cmd = export::command(
                &self.settings,
                &dir.join("bin").join("python"),
                &job.found,
                &dest,
                &fanout::Launcher::Local,
            );
            println!("{}", cmd.display());
        }
    }
}
