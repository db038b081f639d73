//! What a run leaves: the manifest updated (exported pages recorded, failed ones to retry, gone
//! ones removed with the frontends no page uses), the index page's data, the JSON report, and
//! the details `-v` prints.

use std::path::Path;

use anyhow::Result;
use fanout::{BatchResult, Outcome, Status, Task, TaskError};
use serde::Serialize;

use crate::export::Exported;
use crate::frontend;
use crate::index::{Context as IndexContext, NotebookView};
use crate::manifest::Entry;
use crate::plan::{Action, Job, Plan};

/// The batch's result: each export's page, and a page published although its export failed
/// (`--keep-failed-pages`).
pub(crate) type Batch = BatchResult<Exported, Option<Exported>>;

impl Plan {
    /// Record exported pages, forget failed ones (so they are retried), remove the pages of
    /// notebooks that are gone and the frontends no page uses (`copied`: those this run put
    /// into the site).
    pub(crate) fn update_manifest(&mut self, result: &Batch, copied: Vec<String>) -> Result<()> {
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
            let old = self.manifest.pages.get(&found.page);
            if let Some(entry) = entry_after(old, output, found, key, outcome) {
                self.manifest.pages.insert(found.page.clone(), entry);
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

    /// The index's data; with it, the pictures copied beside their pages and the search
    /// index written (the text of every working page).
    pub(crate) fn index_context(&self, result: &Batch) -> Result<IndexContext> {
        let output = &self.settings.output;
        let mut search = Vec::new();
        let items = self
            .tasks
            .iter()
            .zip(&result.outcomes)
            .filter(|(t, _)| t.input.found.not_a_notebook.is_none())
            .map(|(t, o)| {
                let found = &t.input.found;
                let mut view = notebook_view(&t.input, o);
                if let Some(href) = &view.href {
                    view.image = published_image(output, found);
                    // What the card says is found too: its description and tags.
                    let mut text = view.description.clone().unwrap_or_default();
                    for tag in &view.tags {
                        text.push(' ');
                        text.push_str(tag);
                    }
                    text.push(' ');
                    text.push_str(&crate::search::text_of(output, &found.page).unwrap_or_default());
                    search.push(crate::search::Entry {
                        href: href.clone(),
                        title: view.title.clone(),
                        text: text.trim().to_owned(),
                    });
                }
                (found.category, view)
            })
            .collect();
        let mut context = IndexContext::new(
            &self.settings.title,
            items,
            self.settings.base_url.as_deref(),
        );
        if search.is_empty() {
            // No page to search: none named by an index of an earlier run either.
            let _ = std::fs::remove_file(output.join("search-index.js"));
        } else {
            crate::search::write_index(output, &search)?;
            context.search = true;
        }
        Ok(context)
    }
}

/// A notebook's manifest entry after its export in this run (its entry before: `old`); `None`
/// leaves the entry as it was (not tried, or stopped by Ctrl-C: the next run has the same
/// reason to export).
fn entry_after(
    old: Option<&Entry>,
    output: &Path,
    found: &crate::discover::Found,
    key: &str,
    outcome: &Outcome<Exported, Option<Exported>>,
) -> Option<Entry> {
    let entry = Entry {
        source: found.source.clone(),
        key: key.to_owned(),
        content: crate::site::hex(&found.content_hash),
        modules: found.modules.clone(),
        ..Entry::default()
    };
    Some(match (outcome.status, &outcome.value, &outcome.meta) {
        (Status::Succeeded, Some(exported), _) => Entry {
            frontend: exported.frontend.clone(),
            beside: exported.beside.clone(),
            ..entry
        },
        (Status::Cancelled, ..) => return None,
        // Published although cells raised (--keep-failed-pages): that page and what it loads
        // are in the site; exported again next time.
        (_, _, Some(page)) => Entry {
            failed: true,
            cell_errors: true,
            frontend: page.frontend.clone(),
            beside: page.beside.clone(),
            ..entry
        },
        // A page published with its cell errors goes when the notebook fails again without
        // publishing one (no --keep-failed-pages now, or a worse failure): a failed page is
        // shown only when asked for, and never unlisted.
        _ if old.is_some_and(|e| e.cell_errors) => {
            if let Some(path) = crate::site::page_inside(output, &found.page) {
                let _ = std::fs::remove_file(path);
            }
            Entry {
                failed: true,
                ..entry
            }
        }
        // The page of the last good export stays (a failed export never touches it), and
        // with it what it loads: its frontend copy stays too.
        _ => Entry {
            failed: true,
            frontend: old.and_then(|e| e.frontend.clone()),
            beside: old.map(|e| e.beside.clone()).unwrap_or_default(),
            ..entry
        },
    })
}

/// A notebook's picture for its card: copied into the site beside its page (a path relative
/// to the index). A picture at an `https://` URL is only named in the link previews: the site
/// never makes a browser fetch from another server.
fn published_image(output: &Path, found: &crate::discover::Found) -> Option<String> {
    let Some(image) = found.meta.image.as_ref() else {
        // `--thumbnails`' photograph of the page, if it has one.
        let photo = crate::site::thumb_path(&found.page);
        return output
            .join(&photo)
            .is_file()
            .then(|| crate::site::url_path(&photo));
    };
    crate::preview::publish_image(output, &found.page, image).map(|rel| crate::site::url_path(&rel))
}

fn notebook_view(job: &Job, outcome: &Outcome<Exported, Option<Exported>>) -> NotebookView {
    let up_to_date = matches!(job.action, Action::UpToDate);
    let status = match outcome.status {
        Status::Succeeded => "ok",
        Status::Skipped if up_to_date => "ok",
        Status::Failed if outcome.meta.is_some() => "cell_errors",
        Status::TimedOut => "timed_out",
        Status::Cancelled => "cancelled",
        Status::Failed | Status::Skipped => "failed",
    };
    let meta = &job.found.meta;
    NotebookView {
        name: job.found.display_name(),
        title: meta.title.clone(),
        description: meta.description.clone(),
        tags: meta.tags.clone(),
        image: None,
        source: job.found.source.display().to_string(),
        file: job.found.rel.display().to_string(),
        href: matches!(status, "ok" | "cell_errors")
            .then(|| crate::site::url_path(&job.found.page)),
        status,
        up_to_date,
        duration_seconds: outcome.duration.as_secs_f64(),
        error: (status != "ok").then(|| outcome.error_message()).flatten(),
    }
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

pub(crate) fn write_report(result: &Batch, tasks: &[Task<Job>], path: &Path) -> Result<()> {
    result
        .report_with(|o| {
            let found = &tasks[o.index].input.found;
            ReportExtra {
                source: found.source.display().to_string(),
                category: found.category.dir(),
                page: o
                    .value
                    .as_ref()
                    .or(o.meta.as_ref())
                    .map(|p| p.path.display().to_string()),
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
pub(crate) fn print_environments(used: &[std::sync::Arc<crate::envs::Env>]) {
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

pub(crate) fn print_failure_details(result: &Batch) {
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
