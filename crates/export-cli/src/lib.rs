//! `export-nb`: export folders of marimo notebooks to a static site, many at once.
//!
//! The flow: [`Settings`](config::Settings) from flags and `pyproject.toml` → discover notebooks
//! → compare with the output's manifest → one pool batch of exports (the up-to-date and the
//! non-notebooks pass through as `skipped`) → manifest, index page, report → exit status.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the tool's own messages; progress goes through fanout's reporters"
)]

pub mod cli;
mod config;
mod discover;
mod envs;
mod export;
mod frontend;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod imports;
mod index;
mod manifest;
mod pep723;
mod serve;
mod site;
mod watch;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fanout::{
    BatchResult, ExitStatus, Outcome, Pool, PoolConfig, ProcessRunner, Status, Task, TaskError,
};
use serde::Serialize;

use clap::CommandFactory;
use fanout_cli::UsageResult;

use crate::cli::{Cli, Commands};
use crate::config::Settings;
use crate::discover::Found;
use crate::envs::{EnvPool, EnvSpec};
use crate::export::Exported;
use crate::frontend::Frontends;
use crate::index::{Context as IndexContext, NotebookView, Template};
use crate::manifest::{Entry, Manifest};
use crate::site::STATE_DIR;

/// What a run does with one discovered file.
#[derive(Debug)]
enum Action {
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
struct Job {
    found: Found,
    action: Action,
}

/// Everything decided before any export starts.
#[derive(Debug)]
struct Plan {
    settings: Settings,
    template: Template,
    manifest: Manifest,
    tasks: Vec<Task<Job>>,
}

/// Run export-nb with parsed arguments; returns the exit status. Errors are printed here:
/// those in what the user asked for exit 2 (nothing ran), those of the run itself 1.
pub fn run(cli: Cli) -> ExitStatus {
    match cli.command {
        Some(Commands::Completions(c)) => {
            return fanout_cli::print_completions(Cli::command(), c.shell);
        }
        Some(Commands::Watch(args)) => {
            return fanout_cli::finish::<cli::ExportNb>(watch::watch(*args));
        }
        None => {}
    }
    fanout_cli::finish::<cli::ExportNb>(plan_and_run(cli))
}

fn plan_and_run(cli: Cli) -> Result<ExitStatus> {
    let settings = Settings::from_args(cli.export).usage()?;
    // The manifest is read, compared and written under the lock (a dry run only reads).
    let _lock = if settings.dry_run {
        None
    } else {
        Some(settings.lock_output("export-nb").usage()?)
    };
    let plan = Plan::prepare(settings).usage()?;
    if plan.settings.dry_run {
        plan.print_commands();
        return Ok(ExitStatus::Success);
    }
    plan.execute(&fanout::install_interrupt_handler()?, &mut None)
}

impl Plan {
    fn prepare(settings: Settings) -> Result<Self> {
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
                    manifest.why_export(&found, &key, &settings.output)
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

    fn exports(&self) -> impl Iterator<Item = (usize, &Job)> {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.input.action, Action::Export { .. }))
            .map(|(i, t)| (i, &t.input))
    }

    fn print_commands(&self) {
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

    /// Run the exports; `interrupt` stops them (Ctrl-C, or `watch` when a notebook being
    /// exported changes again).
    ///
    /// `kept`: the environment pool (with its warm marimo workers) of an earlier run of the
    /// same settings (`watch` keeps it between rounds); made here when the first export needs it.
    fn execute(
        mut self,
        interrupt: &fanout::CancelToken,
        kept: &mut Option<EnvPool>,
    ) -> Result<ExitStatus> {
        let (envs, launcher) = if self.exports().next().is_some() {
            let launcher = self.settings.launcher()?;
            if kept.is_none() {
                let uv = self.settings.resolve_uv().usage()?;
                let root = self.settings.env_root().usage()?;
                let workers = self.settings.workers && launcher == fanout::Launcher::Local;
                *kept = Some(EnvPool::new(uv, root, workers));
            }
            (kept.as_ref(), launcher)
        } else {
            (None, fanout::Launcher::Local)
        };
        let output = self.settings.output.clone();
        std::fs::create_dir_all(&output)
            .with_context(|| format!("creating the output folder {}", output.display()))?;
        // Left by a run that was killed: never installed, safe to drop.
        let _ = std::fs::remove_dir_all(output.join(STATE_DIR).join("tmp"));

        if self.settings.verbose {
            for task in &self.tasks {
                if let Action::Export { why, .. } = &task.input.action {
                    eprintln!("export {}: {why}", task.name);
                }
            }
        }
        let pool = Pool::new(
            PoolConfig::new(self.settings.max_workers)
                .noun("notebook", "notebooks")
                .with_env_overrides()?,
        );
        let runner = ProcessRunner::new();
        let mut reporter = self.settings.progress.reporter();
        let settings = &self.settings;
        let frontends =
            (settings.assets == cli::Assets::Local).then(|| Frontends::new(&settings.output));
        let exporter = envs.map(|envs| export::Exporter {
            settings,
            envs,
            runner: &runner,
            launcher: &launcher,
            frontends: frontends.as_ref(),
        });
        let result = pool.run(
            &self.tasks,
            interrupt,
            reporter.as_mut(),
            |job: &Job, ctx| match &job.action {
                Action::NotANotebook(reason) => Err(TaskError::skipped(reason.clone())),
                Action::UpToDate => Err(TaskError::skipped("up to date")),
                Action::Export { env: Err(why), .. } => Err(TaskError::failed(format!(
                    "its inline script metadata cannot be used: {why}"
                ))),
                Action::Export { env: Ok(spec), .. } => exporter
                    .as_ref()
                    .expect("an export has its environments")
                    .export(&job.found, spec, ctx.index(), ctx.cancel_token()),
            },
        )?;
        // Dropping the pool stops the workers.
        let used = envs.map(EnvPool::summary).unwrap_or_default();

        let _ = std::fs::remove_dir_all(output.join(STATE_DIR).join("tmp"));
        let copied = frontends.map(|f| f.versions()).unwrap_or_default();
        self.update_manifest(&result, copied)?;
        let index = self.template.write(&self.index_context(&result), &output)?;
        if let Some(path) = &self.settings.report {
            write_report(&result, &self.tasks, path)?;
        }
        if self.settings.verbose {
            print_environments(&used);
            print_failure_details(&result);
        } else if result.failures().next().is_some() {
            eprintln!("(run with -v to see marimo's output for the failures)");
        }
        if self.settings.progress != fanout::ProgressMode::Silent {
            eprintln!("index: {}", index.display());
            if !self.manifest.frontends.is_empty()
                && self.settings.progress != fanout::ProgressMode::Quiet
                && !self.settings.watching
            {
                eprintln!(
                    "(pages load marimo's frontend from {}: browsers run it only from a web \
                     server, not from file:, so serve the folder to view them, e.g. `python3 -m \
                     http.server -d {}`)",
                    output.join(crate::site::DIR).display(),
                    fanout::process::shell_quote(&output.display().to_string())
                );
            }
        }
        Ok(ExitStatus::of_batch(&result.summary, interrupt))
    }

    /// Record exported pages, forget failed ones (so they are retried), remove the pages of
    /// notebooks that are gone and the frontends no page uses (`copied`: those this run put
    /// into the site).
    fn update_manifest(
        &mut self,
        result: &BatchResult<Exported>,
        copied: Vec<String>,
    ) -> Result<()> {
        let output = &self.settings.output;
        let current: std::collections::HashSet<&Path> = self
            .tasks
            .iter()
            .filter(|t| t.input.found.not_a_notebook.is_none())
            .map(|t| t.input.found.page.as_path())
            .collect();
        let beside_before = self.manifest.beside();
        self.manifest.remove_pages_except(&current, output);
        for (task, outcome) in self.tasks.iter().zip(&result.outcomes) {
            let found = &task.input.found;
            let Action::Export { key, .. } = &task.input.action else {
                continue;
            };
            let entry = Entry {
                source: found.source.clone(),
                key: key.clone(),
                content: crate::site::hex(&found.content_hash),
                modules: found.modules.clone(),
                ..Entry::default()
            };
            match (outcome.status, &outcome.value) {
                (Status::Succeeded, Some(exported)) => {
                    let entry = Entry {
                        frontend: exported.frontend.clone(),
                        beside: exported.beside.clone(),
                        ..entry
                    };
                    self.manifest.pages.insert(found.page.clone(), entry);
                }
                // Not tried, or stopped by Ctrl-C: the next run has the same reason to export.
                (Status::Cancelled, _) => {}
                // The page of the last good export stays (a failed export never touches it),
                // and with it what it loads: its frontend copy stays too.
                _ => {
                    let kept = self.manifest.pages.get(&found.page);
                    let entry = Entry {
                        failed: true,
                        frontend: kept.and_then(|e| e.frontend.clone()),
                        beside: kept.map(|e| e.beside.clone()).unwrap_or_default(),
                        ..entry
                    };
                    self.manifest.pages.insert(found.page.clone(), entry);
                }
            }
        }
        let beside_after = self.manifest.beside();
        frontend::remove_beside(output, &(&beside_before - &beside_after));
        self.manifest.frontends.extend(copied);
        let referenced = self.manifest.referenced_frontends();
        frontend::prune(output, &self.manifest.frontends, &referenced);
        self.manifest.frontends = referenced;
        self.manifest.template = Some(self.template.hash.clone());
        self.manifest.save(output)
    }

    fn index_context(&self, result: &BatchResult<Exported>) -> IndexContext {
        let items = self
            .tasks
            .iter()
            .zip(&result.outcomes)
            .filter(|(t, _)| t.input.found.not_a_notebook.is_none())
            .map(|(t, o)| (t.input.found.category, notebook_view(&t.input, o)))
            .collect();
        IndexContext::new(&self.settings.title, items)
    }
}

fn notebook_view(job: &Job, outcome: &Outcome<Exported>) -> NotebookView {
    let up_to_date = matches!(job.action, Action::UpToDate);
    let status = match outcome.status {
        Status::Succeeded => "ok",
        Status::Skipped if up_to_date => "ok",
        Status::TimedOut => "timed_out",
        Status::Cancelled => "cancelled",
        Status::Failed | Status::Skipped => "failed",
    };
    NotebookView {
        name: job.found.display_name(),
        source: job.found.source.display().to_string(),
        file: job.found.rel.display().to_string(),
        href: (status == "ok").then(|| url_path(&job.found.page)),
        status,
        up_to_date,
        duration_seconds: outcome.duration.as_secs_f64(),
        error: (status != "ok").then(|| outcome.error_message()).flatten(),
    }
}

/// A relative URL for a page path: `/` separators, unsafe characters percent-encoded.
fn url_path(page: &Path) -> String {
    page.components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Serialize)]
struct ReportExtra {
    source: String,
    category: &'static str,
    page: Option<String>,
    /// Why it was exported: `new`, `changed`, `its local module helpers.py changed`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    exported_because: Option<String>,
}

fn write_report(result: &BatchResult<Exported>, tasks: &[Task<Job>], path: &Path) -> Result<()> {
    result
        .report_with(|o| {
            let found = &tasks[o.index].input.found;
            ReportExtra {
                source: found.source.display().to_string(),
                category: found.category.dir(),
                page: o.value.as_ref().map(|p| p.path.display().to_string()),
                exported_because: match &tasks[o.index].input.action {
                    Action::Export { why, .. } => Some(why.to_string()),
                    _ => None,
                },
            }
        })
        .write_json(path)?;
    Ok(())
}

/// With `-v`: each environment the run used, and how its notebooks were exported.
fn print_environments(used: &[std::sync::Arc<envs::Env>]) {
    for env in used {
        eprintln!(
            "environment {}: marimo {}, {}",
            env.python
                .parent()
                .and_then(Path::parent)
                .unwrap_or(&env.python)
                .display(),
            env.marimo_version.as_deref().unwrap_or("(unknown version)"),
            match (&env.worker, &env.no_worker_because) {
                (Some(_), _) => "notebooks forked from a warm marimo worker".to_owned(),
                (None, Some(why)) => format!("one `python -m marimo` per notebook: {why}"),
                (None, None) => "one `python -m marimo` per notebook".to_owned(),
            }
        );
    }
}

fn print_failure_details(result: &BatchResult<Exported>) {
    for o in result.failures() {
        let detail = o.error.as_ref().and_then(TaskError::detail).unwrap_or("");
        eprintln!(
            "--- {} ({}): {}",
            o.name,
            o.status,
            o.error_message().unwrap_or_default()
        );
        if !detail.is_empty() {
            eprintln!("{detail}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_relative_and_encoded() {
        assert_eq!(
            url_path(Path::new("notebooks/sub dir/a#b.html")),
            "notebooks/sub%20dir/a%23b.html"
        );
    }
}
