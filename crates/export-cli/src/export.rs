//! One notebook export: in its environment, by the environment's marimo worker (a forked
//! process) or by `python -m marimo export`; what marimo's result means; putting the page in
//! place atomically.

use std::path::{Path, PathBuf};

use fanout::process::{Ending, ForkJob, ProcessOutput};
use fanout::{CancelToken, Command, Launcher, ProcessRunner, Sink, TaskError};

use crate::config::Settings;
use crate::discover::Found;
use crate::envs::{Env, EnvPool, EnvSpec};
use crate::frontend::Frontends;
use crate::site::STATE_DIR;

/// What marimo prints when it exported a page but a cell raised (it exits 1).
const CELLS_FAILED: &str = "some cells failed to execute";
/// What marimo prints when the file is not a notebook it can load (it exits 0, blank page).
const NOT_VALID: &str = "is not a valid marimo notebook";

/// `marimo` arguments that export `found` into `dest`. Always `--no-sandbox`: the environment
/// the export runs in already is the notebook's sandbox.
pub(crate) fn marimo_args(found: &Found, dest: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["export".into()];
    args.extend(found.category.export_args().iter().map(Into::into));
    // -f: overwrite without asking; an explicit sandbox flag: marimo otherwise prompts.
    args.extend(["-f".into(), "--no-sandbox".into()]);
    args.push(found.source.clone().into_os_string());
    args.push("-o".into());
    args.push(dest.as_os_str().to_owned());
    args
}

/// The export command for `found` with the environment's interpreter `python`, writing into
/// `dest` (a file in a private temporary folder).
pub(crate) fn command(
    settings: &Settings,
    python: &Path,
    found: &Found,
    dest: &Path,
    launcher: &Launcher,
) -> Command {
    Command::new(python)
        .args(["-m", "marimo"])
        .args(marimo_args(found, dest))
        .timeout(Some(settings.timeout))
        .launcher(launcher.clone())
        .job_name(format!("export-nb {}", found.rel.display()))
        .stdout(Sink::Capture {
            max_bytes: 16 * 1024,
        })
        .stderr(Sink::Capture {
            max_bytes: 64 * 1024,
        })
}

/// Where a notebook's export is written before it is moved into place.
pub(crate) fn temp_dir(output: &Path, index: usize) -> PathBuf {
    output.join(STATE_DIR).join("tmp").join(index.to_string())
}

/// What one export needs besides its notebook.
#[derive(Debug)]
pub(crate) struct Exporter<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) envs: &'a EnvPool,
    pub(crate) runner: &'a ProcessRunner,
    pub(crate) launcher: &'a Launcher,
    /// With `--assets local`: the site's copies of marimo's frontend.
    pub(crate) frontends: Option<&'a Frontends>,
    /// `--thumbnails`: Chromium, and the site served for it.
    pub(crate) thumbnails: Option<&'a crate::thumbnail::Thumbnailer>,
}

/// A page in place.
#[derive(Debug, Clone)]
pub(crate) struct Exported {
    /// The page's path in the output folder.
    pub(crate) path: PathBuf,
    /// The marimo version of the frontend in the site it loads, with `--assets local`.
    pub(crate) frontend: Option<String>,
    /// The copy of marimo's frontend a WebAssembly export put beside the page with
    /// `--assets cdn` (`apps/assets`, ...), relative to the output folder.
    pub(crate) beside: Vec<PathBuf>,
}

impl Exporter<'_> {
    /// Export one notebook: get its environment, run marimo into a private folder, judge the
    /// result, point the page at the site's frontend (`--assets local`), move the page (and,
    /// for WebAssembly with `--assets cdn`, its assets) into place.
    ///
    /// The second value is a page installed although the export failed: with
    /// `--keep-failed-pages`, the page of a notebook whose cells raised.
    pub(crate) fn export(
        &self,
        found: &Found,
        spec: &EnvSpec,
        index: usize,
        cancel: &CancelToken,
    ) -> (Result<Exported, TaskError>, Option<Exported>) {
        let env = match self.envs.get(spec, cancel) {
            Ok(env) => env,
            Err(e) => return (Err(e), None),
        };
        let (result, cell_errors) = self.export_in(found, &env, index, cancel);
        match (result, cell_errors) {
            (Ok(page), Some(error)) => (Err(error), Some(page)),
            (result, _) => (result, None),
        }
    }

    /// The page's link previews (`og:`, `twitter:`, canonical) put into its `<head>`.
    fn add_previews(&self, dest: &Path, found: &Found) -> Result<(), TaskError> {
        let why = |e: std::io::Error| {
            TaskError::failed(format!("could not add link previews to the page: {e}"))
        };
        let html = std::fs::read_to_string(dest).map_err(why)?;
        let preview = crate::preview::Preview::of_page(
            &found.meta,
            &found.page,
            self.settings.base_url.as_deref(),
            self.thumbnails.is_some(),
        );
        let html = crate::preview::inject(&html, &preview.tags());
        fanout::fsutil::write_atomic(dest, html.as_bytes())
            .map_err(|e| TaskError::failed(format!("could not add link previews to the page: {e}")))
    }

    /// `--thumbnails`: photograph the page just put in place, unless the notebook has a
    /// picture of its own. A photograph that fails is a warning: the page is there.
    fn photograph(&self, found: &Found, cancel: &CancelToken) {
        // The photograph of the page's last version goes: a new one replaces it, and without
        // --thumbnails (or with a picture of the notebook's own) there is none.
        if let Some(old) =
            crate::site::path_inside(&self.settings.output, &crate::site::thumb_path(&found.page))
        {
            let _ = std::fs::remove_file(old);
        }
        let Some(t) = self.thumbnails else { return };
        if found.meta.image.is_some() {
            return;
        }
        if let Err(why) = t.photograph(self.runner, &self.settings.output, &found.page, cancel) {
            eprintln!(
                "export-nb: warning: no thumbnail for {} (the next run tries again): {why}",
                found.source.display()
            );
        }
    }

    /// [`Exporter::export`] in the environment `env`; a page installed with the error its
    /// cells raised (`--keep-failed-pages`) comes with that error.
    fn export_in(
        &self,
        found: &Found,
        env: &Env,
        index: usize,
        cancel: &CancelToken,
    ) -> (Result<Exported, TaskError>, Option<TaskError>) {
        let output = &self.settings.output;
        let tmp = temp_dir(output, index);
        let _ = std::fs::remove_dir_all(&tmp);
        if let Err(e) = std::fs::create_dir_all(&tmp) {
            let why = format!("could not create {}: {e}", tmp.display());
            return (Err(TaskError::failed(why)), None);
        }
        let file_name = found.page.file_name().expect("pages have file names");
        let dest = tmp.join(file_name);
        let logs = [tmp.with_extension("stdout"), tmp.with_extension("stderr")];
        let args: Option<Vec<String>> = marimo_args(found, &dest)
            .into_iter()
            .map(|a| a.into_string().ok())
            .collect();
        let ran = match (&env.worker, self.launcher, args) {
            (Some(worker), Launcher::Local, Some(args)) => {
                let mut job = ForkJob::new(args, logs[0].clone(), logs[1].clone());
                job.timeout = Some(self.settings.timeout);
                worker.run(&job, cancel).map_err(TaskError::from)
            }
            _ => self
                .runner
                .run(
                    &command(self.settings, &env.python, found, &dest, self.launcher),
                    cancel,
                )
                .map_err(TaskError::from),
        };
        let (mut frontend, mut beside) = (None, Vec::new());
        let mut cell_errors = None;
        let judged = ran.and_then(|out| judge(out, &dest, found, self.settings.sandbox));
        let judged = match judged {
            Ok(Some(error)) if self.settings.keep_failed_pages => {
                cell_errors = Some(TaskError::failed(format!(
                    "{error} (its page is published: --keep-failed-pages)"
                )));
                Ok(())
            }
            Ok(Some(error)) | Err(error) => Err(error),
            Ok(None) => Ok(()),
        };
        let result = judged.and_then(|()| {
            self.add_previews(&dest, found)?;
            if let Some(frontends) = self.frontends {
                frontend = Some(localize(frontends, env, found, &tmp, &dest)?);
            } else if let Some(static_dir) = &env.marimo_static {
                beside = crate::frontend::copied_beside(&tmp, static_dir, file_name)
                    .into_iter()
                    .map(|name| found.page.with_file_name(name))
                    .collect();
            }
            let target_dir = output.join(found.page.parent().unwrap_or(Path::new("")));
            install(&tmp, &target_dir).map_err(|e| {
                TaskError::failed(format!(
                    "could not move the page into {}: {e}",
                    target_dir.display()
                ))
            })
        });
        let _ = std::fs::remove_dir_all(&tmp);
        for log in &logs {
            let _ = std::fs::remove_file(log);
        }
        if result.is_ok() {
            self.photograph(found, cancel);
        }
        let result = result.map(|()| Exported {
            path: output.join(&found.page),
            frontend,
            beside,
        });
        (result, cell_errors)
    }
}

/// `--assets local`: put the environment's frontend into the site (once per version) and
/// rewrite the exported page `dest` (in the export's folder `tmp`) to load it from there.
/// Returns the frontend's version.
fn localize(
    frontends: &Frontends,
    env: &Env,
    found: &Found,
    tmp: &Path,
    dest: &Path,
) -> Result<String, TaskError> {
    let why = |e: String| TaskError::failed(format!("--assets local: {e}"));
    let (Some(version), Some(static_dir)) = (&env.marimo_version, &env.marimo_static) else {
        return Err(why(format!(
            "marimo's version could not be read from the environment of {}, so its frontend \
             cannot be copied into the site (use --assets cdn)",
            env.python.display()
        )));
    };
    let frontend = frontends.ensure(version, static_dir).map_err(why)?;
    let html = std::fs::read_to_string(dest)
        .map_err(|e| why(format!("could not read the exported page: {e}")))?;
    let html = crate::frontend::localize(&html, &frontend, &found.page).map_err(why)?;
    fanout::fsutil::write_atomic(dest, html.as_bytes())
        .map_err(|e| why(format!("could not rewrite the exported page: {e}")))?;
    if let Some(name) = dest.file_name() {
        crate::frontend::drop_beside(tmp, &frontend, name);
    }
    Ok(frontend.version.clone())
}

/// What marimo's exit means. Exit 0 is not enough: marimo exits 0 with a blank page for a file
/// it cannot load, and exits 1 with a page when a cell raises. `Ok(Some(error))`: the page is
/// written but cells raised `error` (its message says what to do where it can).
fn judge(
    out: ProcessOutput,
    page: &Path,
    found: &Found,
    sandbox: bool,
) -> Result<Option<TaskError>, TaskError> {
    let stderr = out.stderr.text().into_owned();
    let tail = || out.output_tail(25);
    let wrote_page = page.metadata().is_ok_and(|m| m.is_file() && m.len() > 0);
    match out.ending {
        Ending::Exited(0) if stderr.contains(NOT_VALID) => Err(TaskError::failed(
            "marimo could not load it: not a valid marimo notebook",
        )
        .with_detail(tail())),
        Ending::Exited(0) if !wrote_page => {
            Err(TaskError::failed("marimo reported success but wrote no page").with_detail(tail()))
        }
        Ending::Exited(0) => Ok(None),
        Ending::Exited(_) if out.slurm_failure.is_some() => out.into_result().map(|_| None),
        Ending::Exited(_) if stderr.contains(CELLS_FAILED) => {
            let line = first_error_line(&stderr);
            let header = found.header.as_ref().ok().and_then(Option::as_ref);
            let hint =
                line.and_then(|l| crate::hints::missing_module(l, &found.source, header, sandbox));
            let message = match (line, hint) {
                (Some(l), Some(hint)) => format!("a cell raised an error: {l}; {hint}"),
                (Some(l), None) => format!("a cell raised an error: {l}"),
                (None, _) => "a cell raised an error".to_owned(),
            };
            let error = TaskError::failed(message).with_detail(tail());
            if wrote_page {
                Ok(Some(error))
            } else {
                Err(error)
            }
        }
        Ending::Exited(code) => {
            Err(TaskError::failed(format!("marimo exited with code {code}")).with_detail(tail()))
        }
        Ending::Signaled(_) | Ending::TimedOut(_) | Ending::Cancelled => {
            out.into_result().map(|_| None)
        }
    }
}

/// The most telling line of a marimo error report: the first `SomethingError: message` line.
fn first_error_line(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.split_once(": ")
                .is_some_and(|(head, _)| head.ends_with("Error") && !head.contains(' '))
        })
        .find(|l| !l.starts_with("Error:"))
}

/// Move every file of `from` into `to`, keeping relative paths, each by an atomic rename (the
/// temporary folder is inside the output, so on the same file system). A WebAssembly export's
/// shared assets are merged: the same names with the same content.
fn install(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from).min_depth(1) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(from).expect("below the root");
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_telling_error_line_is_found() {
        let stderr = "Traceback (most recent call last):\n  File \"x\", line 1\n\
                      MarimoExceptionRaisedError: this cell fails on purpose\n\
                      Error: Export was successful, but some cells failed to execute.\n";
        assert_eq!(
            first_error_line(stderr),
            Some("MarimoExceptionRaisedError: this cell fails on purpose")
        );
        assert_eq!(first_error_line("nothing here"), None);
    }

    #[test]
    fn install_merges_into_existing_folders() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("tmp");
        let to = dir.path().join("site/apps");
        std::fs::create_dir_all(from.join("assets")).unwrap();
        std::fs::write(from.join("app.html"), "page").unwrap();
        std::fs::write(from.join("assets/a.js"), "new").unwrap();
        std::fs::create_dir_all(to.join("assets")).unwrap();
        std::fs::write(to.join("assets/a.js"), "old").unwrap();
        std::fs::write(to.join("assets/keep.js"), "other app's").unwrap();
        install(&from, &to).unwrap();
        assert_eq!(
            std::fs::read_to_string(to.join("app.html")).unwrap(),
            "page"
        );
        assert_eq!(
            std::fs::read_to_string(to.join("assets/a.js")).unwrap(),
            "new"
        );
        assert!(to.join("assets/keep.js").exists());
    }
}
