//! The run: one pool batch of exports (the up-to-date and the non-notebooks pass through as
//! `skipped`), each in its notebook's environment (a warm marimo worker, or `marimo export`);
//! then the manifest, the index and the report (`report.rs`), and what ran, said.

use anyhow::{Context, Result};
use fanout::{ExitStatus, Pool, PoolConfig, ProcessRunner, TaskError};
use fanout_cli::UsageResult;

use crate::cli;
use crate::envs::EnvPool;
use crate::export;
use crate::frontend::Frontends;
use crate::plan::{Action, Job, Plan};
use crate::report::{Batch, print_environments, print_failure_details, write_report};
use crate::site::STATE_DIR;
use crate::thumbnail::Thumbnailer;

impl Plan {
    /// Run the exports; `interrupt` stops them (Ctrl-C, or `watch` when a notebook being
    /// exported changes again).
    ///
    /// `kept`: the environment pool (with its warm marimo workers) of an earlier run of the
    /// same settings (`watch` keeps it between rounds); made here when the first export needs it.
    pub(crate) fn execute(
        self,
        interrupt: &fanout::CancelToken,
        kept: &mut Option<EnvPool>,
    ) -> Result<ExitStatus> {
        let (envs, launcher) = if self.exports().next().is_some() {
            if kept.is_none() {
                let uv = self.settings.resolve_uv().usage()?;
                let root = self.settings.env_root().usage()?;
                // Warm workers serve exports on this machine only.
                let local = self.settings.backend == "local";
                *kept = Some(EnvPool::new(uv, root, self.settings.workers && local));
            }
            let pool = kept.as_ref().expect("made above");
            let launcher = pool.launcher(|| self.settings.launcher())?;
            (Some(pool), launcher)
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
        let thumbnails = match (&settings.thumbnails, envs) {
            (Some(chromium), Some(_)) => Some(Thumbnailer::start(chromium.clone(), &output)?),
            _ => None,
        };
        let exporter = envs.map(|envs| export::Exporter {
            settings,
            envs,
            runner: &runner,
            launcher: &launcher,
            frontends: frontends.as_ref(),
            thumbnails: thumbnails.as_ref(),
        });
        // The meta: a page published although its export failed (--keep-failed-pages).
        let result = pool.run_with_meta(
            &self.tasks,
            interrupt,
            reporter.as_mut(),
            |job: &Job, ctx| match &job.action {
                Action::NotANotebook(reason) => (Err(TaskError::skipped(reason.clone())), None),
                Action::UpToDate => (Err(TaskError::skipped("up to date")), None),
                Action::Export { env: Err(why), .. } => (
                    Err(TaskError::failed(format!(
                        "its inline script metadata cannot be used: {why}"
                    ))),
                    None,
                ),
                Action::Export { env: Ok(spec), .. } => exporter
                    .as_ref()
                    .expect("an export has its environments")
                    .export(&job.found, spec, ctx.index(), ctx.cancel_token()),
            },
        )?;
        // Dropping the pool stops the workers.
        let used = envs.map(EnvPool::summary).unwrap_or_default();
        let copied = frontends.map(|f| f.versions()).unwrap_or_default();
        self.finish(&result, copied, &used, interrupt)
    }

    /// After the batch: the manifest, the index page and the report written, what ran said.
    fn finish(
        mut self,
        result: &Batch,
        copied: Vec<String>,
        used: &[std::sync::Arc<crate::envs::Env>],
        interrupt: &fanout::CancelToken,
    ) -> Result<ExitStatus> {
        let output = self.settings.output.clone();
        let _ = std::fs::remove_dir_all(output.join(STATE_DIR).join("tmp"));
        self.update_manifest(result, copied)?;
        let context = self.index_context(result)?;
        let index = self.template.write(&context, &output)?;
        write_sitemap(&context, self.settings.base_url.as_deref(), &output)?;
        if let Some(path) = &self.settings.report {
            write_report(result, &self.tasks, path)?;
        }
        if self.settings.verbose {
            print_environments(used);
            print_failure_details(result);
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
}

/// With `--base-url`: `sitemap.xml`, the index and every page; without, none (one left by an
/// earlier run with it would name pages at an address no longer given).
fn write_sitemap(
    context: &crate::index::Context,
    base_url: Option<&str>,
    output: &std::path::Path,
) -> Result<()> {
    let path = output.join("sitemap.xml");
    let Some(base) = base_url else {
        let _ = std::fs::remove_file(path);
        return Ok(());
    };
    let pages: Vec<String> = context
        .categories
        .iter()
        .flat_map(|c| &c.notebooks)
        .filter_map(|n| n.href.clone())
        .collect();
    fanout::fsutil::write_atomic(&path, crate::preview::sitemap(base, &pages).as_bytes())?;
    Ok(())
}
