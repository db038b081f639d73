//! Flags + `[tool.export-nb]` in `pyproject.toml` → validated [`Settings`]. Every error about
//! input is raised here, naming the flag, file, line or value; nothing has run yet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fanout::{MaxWorkers, ProgressMode};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::cli::{Assets, ExportArgs};

mod sources;

use sources::sources;
pub(crate) use sources::{Category, Pick, Source};

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) sources: Vec<Source>,
    pub(crate) output: PathBuf,
    pub(crate) max_workers: MaxWorkers,
    pub(crate) timeout: Duration,
    pub(crate) sandbox: bool,
    /// `--uv`, else `--uvx` (the uv beside it), else uv on `PATH`; resolved only when an
    /// export will run.
    pub(crate) uv: Option<PathBuf>,
    pub(crate) uvx: Option<PathBuf>,
    /// Where environments are kept; `None`: in uv's cache folder.
    pub(crate) env_dir: Option<PathBuf>,
    /// Fork notebooks from a warm marimo worker where possible.
    pub(crate) workers: bool,
    pub(crate) marimo_version: Option<String>,
    pub(crate) template: Option<PathBuf>,
    pub(crate) title: String,
    /// `--base-url`, ending in `/`: absolute preview URLs, canonical links, sitemap.xml.
    pub(crate) base_url: Option<String>,
    /// `--thumbnails`: the Chromium that photographs the pages.
    pub(crate) thumbnails: Option<PathBuf>,
    pub(crate) exclude: GlobSet,
    pub(crate) force: bool,
    /// `--keep-failed-pages`: install the page of a notebook whose cells raised.
    pub(crate) keep_failed_pages: bool,
    /// `--wait`: for another run using the output folder.
    pub(crate) wait: fanout::runlock::Wait,
    /// Where pages load marimo's frontend from.
    pub(crate) assets: Assets,
    pub(crate) dry_run: bool,
    pub(crate) report: Option<PathBuf>,
    pub(crate) progress: ProgressMode,
    pub(crate) verbose: bool,
    /// `local` or `slurm`, with the Slurm options; checked only when an export will run.
    pub(crate) backend: String,
    pub(crate) slurm_args: Vec<String>,
    /// `--slurm-mode`, `--slurm-nodes`: a Slurm job per export, or one allocation for the run.
    pub(crate) slurm_mode: fanout_cli::SlurmMode,
    pub(crate) slurm_nodes: Option<u32>,
    /// Run by `export-nb watch`: one round of many, so say once what is said once.
    pub(crate) watching: bool,
}

/// `[tool.export-nb]`: the long flag names, in kebab case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSettings {
    folders: Option<Vec<PathBuf>>,
    apps: Option<Vec<PathBuf>>,
    wasm: Option<Vec<PathBuf>>,
    output: Option<PathBuf>,
    max_workers: Option<usize>,
    timeout: Option<f64>,
    sandbox: Option<bool>,
    uv: Option<PathBuf>,
    uvx: Option<PathBuf>,
    env_dir: Option<PathBuf>,
    worker: Option<bool>,
    marimo_version: Option<String>,
    template: Option<PathBuf>,
    title: Option<String>,
    base_url: Option<String>,
    thumbnails: Option<bool>,
    chromium: Option<PathBuf>,
    exclude: Option<Vec<String>>,
    keep_failed_pages: Option<bool>,
    assets: Option<Assets>,
    backend: Option<String>,
    slurm_args: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Pyproject {
    tool: Option<Tools>,
}

#[derive(Debug, Deserialize)]
struct Tools {
    #[serde(rename = "export-nb")]
    export_nb: Option<FileSettings>,
}

/// Read `[tool.export-nb]` from `dir/pyproject.toml`, if there is one.
fn read_pyproject(dir: &Path) -> Result<(FileSettings, Option<PathBuf>)> {
    let path = dir.join("pyproject.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((FileSettings::default(), None));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let doc: Pyproject = toml::from_str(&text)
        .with_context(|| format!("{} is not valid for export-nb", path.display()))?;
    let settings = doc.tool.and_then(|t| t.export_nb);
    let found = settings.is_some().then_some(path);
    Ok((settings.unwrap_or_default(), found))
}

impl Settings {
    /// One run at a time on the output folder (`<output>/.export-nb/lock`), held until the
    /// returned lock is dropped: a second run is refused naming the first, or waits (`--wait`).
    pub(crate) fn lock_output(&self, what: &str) -> Result<fanout::runlock::RunLock> {
        use fanout::runlock::{RunLock, RunLockError};
        let state = self.output.join(crate::site::STATE_DIR);
        std::fs::create_dir_all(&state)
            .with_context(|| format!("creating the output folder {}", self.output.display()))?;
        RunLock::acquire(&state.join("lock"), what, self.wait).map_err(|e| match e {
            RunLockError::Held { holder, .. } => anyhow::anyhow!(
                "the output folder {} is in use by another export-nb: {holder}; wait for it to \
                 end (or pass --wait), or export to another folder with -o",
                self.output.display()
            ),
            other @ RunLockError::Io { .. } => anyhow::anyhow!(other),
        })
    }

    /// Merge the flags with `./pyproject.toml` (flags win) and validate.
    pub(crate) fn from_args(cli: ExportArgs) -> Result<Self> {
        Self::from_args_in(cli, Path::new("."))
    }

    pub(crate) fn from_args_in(cli: ExportArgs, dir: &Path) -> Result<Self> {
        let (file, file_path) = read_pyproject(dir)?;
        let sandbox_flag = cli.sandbox_flag();
        let from_file = |key: &str| match &file_path {
            Some(p) => format!("{} [tool.export-nb] {key}", p.display()),
            None => String::new(),
        };

        // The shared flags first: a bad -j is reported as such, whatever else is wrong.
        let run = &cli.run;
        let (workers_key, timeout_key) = (from_file("max-workers"), from_file("timeout"));
        let max_workers =
            run.max_workers_or(file.max_workers.map(|n| (n, workers_key.as_str())))?;
        let timeout = run
            .timeout_or(file.timeout.map(|t| (t, timeout_key.as_str())))?
            .unwrap_or(Duration::from_secs(300));

        let sources = sources(
            flag_or_file(cli.folders, file.folders),
            flag_or_file(cli.apps, file.apps),
            flag_or_file(cli.wasm, file.wasm),
        )?;

        let exclude = exclude(if cli.exclude.is_empty() {
            file.exclude.as_deref().unwrap_or_default()
        } else {
            &cli.exclude
        })?;

        let template = cli.template.or(file.template);
        let marimo_version = cli.marimo_version.or(file.marimo_version);
        check_template_and_version(template.as_deref(), marimo_version.as_deref())?;

        Ok(Settings {
            sources,
            output: cli.output.or(file.output).unwrap_or_else(|| "_site".into()),
            max_workers,
            timeout,
            sandbox: sandbox_flag.or(file.sandbox).unwrap_or(true),
            uv: cli.uv.or(file.uv),
            uvx: cli.uvx.or(file.uvx),
            env_dir: cli.env_dir.or(file.env_dir),
            workers: !cli.no_worker && file.worker.unwrap_or(true),
            marimo_version,
            template,
            title: cli
                .title
                .or(file.title)
                .unwrap_or_else(|| "Notebooks".to_owned()),
            base_url: base_url(cli.base_url, file.base_url)?,
            thumbnails: (cli.thumbnails || file.thumbnails.unwrap_or(false))
                .then(|| find_chromium(cli.chromium.or(file.chromium).as_deref()))
                .transpose()?,
            exclude,
            force: cli.force,
            keep_failed_pages: cli.keep_failed_pages || file.keep_failed_pages.unwrap_or(false),
            wait: if cli.wait {
                fanout::runlock::Wait::Yes
            } else {
                fanout::runlock::Wait::No
            },
            assets: cli.assets.or(file.assets).unwrap_or(Assets::Local),
            dry_run: cli.run.dry_run,
            progress: cli.run.progress(),
            verbose: cli.run.verbose,
            report: cli.run.report,
            backend: cli
                .run
                .backend
                .or(file.backend)
                .unwrap_or_else(|| "local".to_owned()),
            slurm_args: flag_or_file(cli.run.slurm_args, file.slurm_args),
            slurm_mode: cli.run.slurm_mode,
            slurm_nodes: cli.run.slurm_nodes,
            watching: false,
        })
    }

    /// Where exports run, checked (srun here, the partition known) before any export starts.
    pub(crate) fn launcher(&self) -> Result<fanout::Launcher> {
        fanout_cli::launcher_in(
            &self.backend,
            &self.slurm_args,
            self.slurm_mode,
            self.slurm_nodes,
            self.max_workers.get(),
        )
    }

    /// Where environments are kept: `--env-dir` (made absolute), else `export-nb/envs` in the
    /// user's cache folder (`$XDG_CACHE_HOME`, else `~/.cache`). Not inside uv's own cache:
    /// `uv cache prune` (which CI setups run before saving the cache) removes folders it does
    /// not know.
    pub(crate) fn env_root(&self) -> Result<PathBuf> {
        if let Some(d) = &self.env_dir {
            return Ok(std::path::absolute(d).unwrap_or_else(|_| d.clone()));
        }
        let cache =
            fanout_cli::user_cache_dir("pass --env-dir DIR for the notebooks' environments")?;
        Ok(cache.join("export-nb").join("envs"))
    }

    /// The uv that builds environments, checked: `--uv` (a path must exist, a name must be on
    /// `PATH`), else the `uv` beside `--uvx`, else `uv` on `PATH`.
    pub(crate) fn resolve_uv(&self) -> Result<PathBuf> {
        if let Some(uv) = &self.uv {
            if uv.components().count() > 1 {
                if uv.is_file() {
                    return Ok(uv.clone());
                }
                bail!("--uv {} does not exist", uv.display());
            }
            return which::which(uv)
                .with_context(|| format!("--uv {}: not found on PATH", uv.display()));
        }
        if let Some(uvx) = &self.uvx {
            let uvx = if uvx.components().count() > 1 {
                if !uvx.is_file() {
                    bail!("--uvx {} does not exist", uvx.display());
                }
                uvx.clone()
            } else {
                which::which(uvx)
                    .with_context(|| format!("--uvx {}: not found on PATH", uvx.display()))?
            };
            let uv = uvx.with_file_name("uv");
            if uv.is_file() {
                return Ok(uv);
            }
            bail!(
                "there is no `uv` beside --uvx {}: pass --uv PATH instead",
                uvx.display()
            );
        }
        which::which("uv").context(
            "`uv` is not on PATH: install uv (`pip install uv`, or see \
             https://docs.astral.sh/uv/) or pass --uv PATH",
        )
    }
}

/// A repeatable flag's values, else the file's.
fn flag_or_file<T>(flag: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag
    }
}

/// The index template exists; the marimo version looks like one.
fn check_template_and_version(template: Option<&Path>, marimo_version: Option<&str>) -> Result<()> {
    if let Some(t) = template
        && !t.is_file()
    {
        bail!("the index template {} does not exist", t.display());
    }
    if let Some(v) = marimo_version
        && (v.is_empty() || v.contains(char::is_whitespace))
    {
        bail!("--marimo-version {v:?} is not a version");
    }
    Ok(())
}

/// The `--exclude` globs as one set; an error names a pattern that is not a glob.
fn exclude(patterns: &[String]) -> Result<GlobSet> {
    let mut globs = GlobSetBuilder::new();
    for p in patterns {
        globs.add(Glob::new(p).with_context(|| format!("--exclude {p:?} is not a valid glob"))?);
    }
    globs.build().context("building the --exclude patterns")
}

/// `--base-url`, else `base-url` in `[tool.export-nb]` (checked as the flag is).
fn base_url(flag: Option<String>, file: Option<String>) -> Result<Option<String>> {
    match flag {
        Some(u) => Ok(Some(u)),
        None => file
            .map(|u| {
                crate::cli::parse_base_url(&u)
                    .map_err(|e| anyhow::anyhow!("[tool.export-nb] base-url: {e}"))
            })
            .transpose(),
    }
}

/// The Chromium used for `--thumbnails`: `--chromium PATH`, else `chromium`,
/// `chromium-browser` or `google-chrome` on `PATH`.
pub(crate) fn find_chromium(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        if which::which(path).is_err() {
            anyhow::bail!(
                "--chromium {}: no such program (give the path of a Chromium or Chrome binary)",
                path.display()
            );
        }
        return Ok(path.to_owned());
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| which::which(name).ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--thumbnails needs Chromium to photograph the pages, and none was found on PATH \
                 (chromium, chromium-browser, google-chrome): install it (apt-get install \
                 chromium, brew install chromium) or give --chromium PATH"
            )
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn settings(dir: &Path, args: &[&str]) -> Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("export-nb").chain(args.iter().copied()))?;
        Settings::from_args_in(cli.export, dir)
    }

    #[test]
    fn flags_win_over_pyproject() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("nbs")).unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"x\"\n\n[tool.export-nb]\nmax-workers = 3\ntitle = \"From file\"\nsandbox = false\n",
        )
        .unwrap();
        let nbs = dir.path().join("nbs");
        let s = settings(dir.path(), &[nbs.to_str().unwrap()]).unwrap();
        assert_eq!(s.max_workers.get(), 3);
        assert_eq!(s.title, "From file");
        assert!(!s.sandbox);
        let s = settings(dir.path(), &[nbs.to_str().unwrap(), "-j", "2", "--sandbox"]).unwrap();
        assert_eq!(s.max_workers.get(), 2);
        assert!(s.sandbox);
    }

    #[test]
    fn an_unknown_pyproject_key_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.export-nb]\ntitle = \"x\"\nmax_worker = 3\n",
        )
        .unwrap();
        let err = format!("{:#}", settings(dir.path(), &[]).unwrap_err());
        assert!(err.contains("pyproject.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("max_worker"), "{err}");
    }

    #[test]
    fn worker_counts_outside_the_range_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        for bad in ["0", "17"] {
            let err = format!("{:#}", settings(dir.path(), &[d, "-j", bad]).unwrap_err());
            assert_eq!(
                err,
                format!("-j/--max-workers: max_workers must be between 1 and 16, got {bad}")
            );
        }
    }

    #[test]
    fn missing_folders_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!(
            "{:#}",
            settings(dir.path(), &["/no/such/folder"]).unwrap_err()
        );
        assert!(err.contains("/no/such/folder does not exist"), "{err}");
        let err = format!(
            "{:#}",
            settings(dir.path(), &["/no/such/*.py"]).unwrap_err()
        );
        assert!(
            err.contains("starts in /no/such, which does not exist"),
            "{err}"
        );
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        let txt = dir.path().join("notes.txt");
        let err = format!(
            "{:#}",
            settings(dir.path(), &[txt.to_str().unwrap()]).unwrap_err()
        );
        assert!(err.contains("notes.txt is not a notebook"), "{err}");
    }
}
