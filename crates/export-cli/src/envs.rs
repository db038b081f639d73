//! The environment pool: one Python environment per distinct dependency set, shared by every
//! notebook that needs it, and a marimo worker per environment.
//!
//! Why: `uvx marimo export --sandbox` starts three interpreters per notebook that each import
//! marimo (the CLI, `uv run`'s marimo inside the sandbox, the kernel), builds one sandbox per
//! notebook *path*, and, where `PYTHONDONTWRITEBYTECODE` is set (Docker and CI images), compiles
//! marimo's 2,000 modules again on every start. Here a notebook's environment is keyed by what
//! its PEP 723 header asks for (Python constraint, requirements, marimo pin); it is built once
//! with `uv venv` + `uv pip install --compile-bytecode` into the environment folder (by default
//! `~/.cache/export-nb/envs`; uv links the packages from its cache), and kept between runs.
//! Builds of the same key by concurrent runs are serialized by a lock file.
//!
//! Then, for a marimo version we have tested, a worker (a `fanout` fork server) imports marimo
//! once per environment and forks a process per notebook, which runs marimo's own `export`
//! command in-process: the notebook still runs in a process of its own, with exactly its
//! environment's packages, but pays no interpreter start and no import. marimo's kernel, which
//! marimo starts with multiprocessing's `spawn` (a fresh interpreter that imports marimo
//! again), is started with `fork` instead. Both are private marimo internals, hence the version
//! gate; any other version, `--no-fork`, or Slurm run `python -m marimo export` from the
//! environment instead (one interpreter start, still no sandbox build and no recompiling).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fanout::process::{FORK_SERVER_PY, ForkServer};
use fanout::{CancelToken, Command, ProcessRunner, TaskError};
use sha2::{Digest, Sha256};

use crate::pep723::{ScriptMetadata, requirement_name};

/// marimo versions whose internals the worker relies on, checked by the real-marimo tests.
pub(crate) const FORK_TESTED_MARIMO: &[&str] = &["0.25.2"];

/// Bumped when the recipe of an environment changes, so old ones are not reused.
const ENV_FORMAT: u32 = 1;

/// How long building one environment may take (downloads included).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// The file that marks a finished environment.
const READY: &str = "export-nb-env.json";

/// What a notebook's environment holds: a Python constraint and requirements (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EnvSpec {
    pub(crate) python: Option<String>,
    pub(crate) requirements: Vec<String>,
}

impl EnvSpec {
    /// The environment for a notebook: with the sandbox, what its header names plus marimo;
    /// without, marimo alone. `marimo_pin` (`--marimo-version`) is added as `marimo==VER`.
    pub(crate) fn for_notebook(
        header: Option<&ScriptMetadata>,
        sandbox: bool,
        marimo_pin: Option<&str>,
    ) -> Self {
        let (python, mut requirements) = match header.filter(|_| sandbox) {
            Some(h) => (h.requires_python.clone(), h.dependencies.clone()),
            None => (None, Vec::new()),
        };
        match marimo_pin {
            Some(v) => requirements.push(format!("marimo=={v}")),
            None if !requirements.iter().any(|r| requirement_name(r) == "marimo") => {
                requirements.push("marimo".to_owned());
            }
            None => {}
        }
        requirements.sort();
        requirements.dedup();
        EnvSpec {
            python,
            requirements,
        }
    }

    /// The folder name of this environment: a hash of everything in it.
    pub(crate) fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(ENV_FORMAT.to_le_bytes());
        h.update(self.python.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        for r in &self.requirements {
            h.update(r.as_bytes());
            h.update([0]);
        }
        crate::site::hex(&h.finalize()[..10])
    }

    /// `python >=3.10: marimo, numpy>=2`, for messages.
    pub(crate) fn describe(&self) -> String {
        let python = self
            .python
            .as_deref()
            .map_or_else(|| "python".to_owned(), |p| format!("python {p}"));
        format!("{python}: {}", self.requirements.join(", "))
    }
}

/// One built environment, and how notebooks are exported in it.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) python: PathBuf,
    pub(crate) marimo_version: Option<String>,
    /// marimo's frontend in the environment (`site-packages/marimo/_static`).
    pub(crate) marimo_static: Option<PathBuf>,
    /// The marimo worker; `None` means one `python -m marimo export` per notebook.
    pub(crate) worker: Option<ForkServer>,
    /// Why there is no worker, when one was wanted.
    pub(crate) no_worker_because: Option<String>,
}

/// An environment being prepared, or the result: built once, whoever asks first.
type EnvCell = OnceLock<Result<Arc<Env>, TaskError>>;

/// Builds environments on first use and keeps them (and their workers) for the run.
#[derive(Debug)]
pub(crate) struct EnvPool {
    uv: PathBuf,
    root: PathBuf,
    workers: bool,
    runner: ProcessRunner,
    envs: Mutex<HashMap<String, Arc<EnvCell>>>,
    /// Per `requires-python`: held while `uv venv` makes an environment for it, and why none
    /// could be made. Notebooks with other packages but the same Python then fail at once with
    /// the same reason, instead of each waiting for uv's download retries.
    pythons: Mutex<HashMap<String, Arc<PythonSlot>>>,
    /// Where exports run, made once: `--slurm-mode packed`'s allocation serves every round of
    /// a watch, not one each (until Slurm ends it).
    launcher: Mutex<Option<fanout::Launcher>>,
}

/// Why no interpreter could be had for a `requires-python`, once it is known.
type PythonSlot = Mutex<Option<TaskError>>;

impl EnvPool {
    /// `workers`: start a marimo worker per environment where the marimo version allows.
    pub(crate) fn new(uv: PathBuf, root: PathBuf, workers: bool) -> Self {
        EnvPool {
            uv,
            root,
            workers,
            runner: ProcessRunner::new(),
            envs: Mutex::new(HashMap::new()),
            pythons: Mutex::new(HashMap::new()),
            launcher: Mutex::new(None),
        }
    }

    /// Where exports run: made by `make` the first time, the same after (made again if it is
    /// an allocation Slurm has ended since).
    pub(crate) fn launcher(
        &self,
        make: impl FnOnce() -> anyhow::Result<fanout::Launcher>,
    ) -> anyhow::Result<fanout::Launcher> {
        let mut kept = self.launcher.lock().expect("launcher lock");
        match &*kept {
            Some(fanout::Launcher::Packed(a)) if a.has_ended() => {}
            Some(launcher) => return Ok(launcher.clone()),
            None => {}
        }
        let launcher = make()?;
        *kept = Some(launcher.clone());
        Ok(launcher)
    }

    /// The folder of the environment for `spec`.
    pub(crate) fn dir_of(root: &Path, spec: &EnvSpec) -> PathBuf {
        root.join(spec.key())
    }

    /// The environment for `spec`: built (or found) once per run, whoever asks first; the
    /// others wait for it.
    pub(crate) fn get(&self, spec: &EnvSpec, cancel: &CancelToken) -> Result<Arc<Env>, TaskError> {
        let cell = Arc::clone(
            self.envs
                .lock()
                .expect("env pool lock")
                .entry(spec.key())
                .or_default(),
        );
        cell.get_or_init(|| self.prepare(spec, cancel).map(Arc::new))
            .clone()
    }

    /// Forget the environments that could not be prepared, so the next run (a `watch` round)
    /// tries them again: a download may have failed for a moment.
    pub(crate) fn forget_failures(&self) {
        self.envs
            .lock()
            .expect("env pool lock")
            .retain(|_, cell| !matches!(cell.get(), Some(Err(_))));
        self.pythons.lock().expect("env pool lock").clear();
    }

    /// The environments this run used, with how their notebooks were exported.
    pub(crate) fn summary(&self) -> Vec<Arc<Env>> {
        self.envs
            .lock()
            .expect("env pool lock")
            .values()
            .filter_map(|cell| cell.get().and_then(|r| r.as_ref().ok()).cloned())
            .collect()
    }

    fn prepare(&self, spec: &EnvSpec, cancel: &CancelToken) -> Result<Env, TaskError> {
        let dir = Self::dir_of(&self.root, spec);
        let python = dir.join("bin").join("python");
        std::fs::create_dir_all(&self.root).map_err(|e| {
            TaskError::failed(format!(
                "could not create the environment folder {}: {e}",
                self.root.display()
            ))
        })?;
        {
            let lock_path = self.root.join(format!("{}.lock", spec.key()));
            let _lock = fanout::fsutil::FileLock::exclusive(&lock_path).map_err(|e| {
                TaskError::failed(format!("could not lock {}: {e}", lock_path.display()))
            })?;
            if !(dir.join(READY).is_file() && python.exists()) {
                self.build(spec, &dir, cancel)?;
            }
        }
        let (marimo_version, site_packages) = marimo_in(&dir).unzip();
        let mut env = Env {
            python,
            marimo_version,
            marimo_static: site_packages.map(|s| s.join("marimo").join("_static")),
            worker: None,
            no_worker_because: None,
        };
        if self.workers {
            match &env.marimo_version {
                Some(v) if FORK_TESTED_MARIMO.contains(&v.as_str()) => {
                    match Self::start_worker(&dir, &env.python, v) {
                        Ok(worker) => env.worker = Some(worker),
                        Err(why) => env.no_worker_because = Some(why),
                    }
                }
                Some(v) => {
                    env.no_worker_because = Some(format!(
                        "marimo {v} is not a version export-nb's worker was tested with ({})",
                        FORK_TESTED_MARIMO.join(", ")
                    ));
                }
                None => {
                    env.no_worker_because =
                        Some("marimo's version could not be read from the environment".into());
                }
            }
        }
        Ok(env)
    }

    /// Build the environment in `dir` from scratch: `uv venv`, then `uv pip install` with
    /// bytecode compiled, then the marker that says it is complete.
    fn build(&self, spec: &EnvSpec, dir: &Path, cancel: &CancelToken) -> Result<(), TaskError> {
        let what = || format!("the environment {} ({})", spec.key(), spec.describe());
        let _ = std::fs::remove_dir_all(dir);
        let mut venv = Command::new(&self.uv)
            .args(["venv", "--no-project", "--quiet"])
            .timeout(Some(BUILD_TIMEOUT));
        if let Some(python) = &spec.python {
            venv = venv.arg("--python").arg(python);
        }
        match &spec.python {
            Some(wanted) => {
                let context = format!("could not create {}", what());
                self.venv_with_python(venv.arg(dir), wanted, &context, cancel)?;
            }
            None => self
                .run_uv(venv.arg(dir), cancel)
                .map_err(|e| prefix(e, &format!("could not create {}", what())))?,
        }
        let requirements = dir.join("export-nb-requirements.txt");
        let mut list = spec.requirements.join("\n");
        list.push('\n');
        std::fs::write(&requirements, list).map_err(|e| {
            TaskError::failed(format!("could not write {}: {e}", requirements.display()))
        })?;
        let install = Command::new(&self.uv)
            .args([
                "pip",
                "install",
                "--quiet",
                "--compile-bytecode",
                "--python",
            ])
            .arg(dir.join("bin").join("python"))
            .arg("-r")
            .arg(&requirements)
            .timeout(Some(BUILD_TIMEOUT));
        self.run_uv(install, cancel)
            .map_err(|e| prefix(e, &format!("could not install the packages of {}", what())))?;
        let marker = serde_json::json!({
            "format": ENV_FORMAT,
            "python": spec.python,
            "requirements": spec.requirements,
        });
        fanout::fsutil::write_atomic(&dir.join(READY), marker.to_string().as_bytes())
            .map_err(|e| TaskError::failed(e.to_string()))
    }

    /// Run `venv` (`uv venv --python WANTED`), one at a time per `wanted`; once one found no
    /// interpreter for it, the others fail at once with that reason. Any other failure is this
    /// environment's (`context` names it) and is said in uv's words.
    fn venv_with_python(
        &self,
        venv: Command,
        wanted: &str,
        context: &str,
        cancel: &CancelToken,
    ) -> Result<(), TaskError> {
        let slot = Arc::clone(
            self.pythons
                .lock()
                .expect("env pool lock")
                .entry(wanted.to_owned())
                .or_default(),
        );
        let mut failed = slot.lock().expect("python slot");
        if let Some(why) = &*failed {
            return Err(why.clone());
        }
        match self.run_uv(venv, cancel) {
            Err(e @ TaskError::Cancelled) => Err(e),
            // uv's chain of causes (download retries, DNS) is not what the user needs first.
            Err(e) => match self.no_python(wanted, &e, cancel) {
                Some(why) => {
                    *failed = Some(why.clone());
                    Err(why)
                }
                None => Err(prefix(e, context)),
            },
            Ok(()) => Ok(()),
        }
    }

    /// `uv venv --python WANTED` failed: if no interpreter could be had, say which version the
    /// header asks for, which ones are here, and why uv could not get one, in one line; uv's
    /// words stay in the detail. `None` for another failure.
    fn no_python(&self, wanted: &str, e: &TaskError, cancel: &CancelToken) -> Option<TaskError> {
        let detail = e.detail().unwrap_or_default().to_owned();
        let said = uv_says(&detail).unwrap_or_else(|| e.to_string());
        let list = Command::new(&self.uv)
            .args([
                "python",
                "list",
                "--only-installed",
                "--output-format",
                "json",
            ])
            .timeout(Some(Duration::from_secs(60)))
            .stdout(fanout::Sink::Capture {
                max_bytes: 1024 * 1024,
            });
        let found: Vec<String> = self
            .runner
            .run(&list, cancel)
            .ok()
            .and_then(|out| {
                serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout.bytes).ok()
            })
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p["version"].as_str().map(str::to_owned))
            .fold(Vec::new(), |mut seen, v| {
                if !seen.contains(&v) {
                    seen.push(v);
                }
                seen
            });
        let message = crate::hints::missing_python(wanted, &found, &format!("{said}\n{detail}"))?;
        Some(TaskError::failed(message).with_detail(detail))
    }

    fn run_uv(&self, cmd: Command, cancel: &CancelToken) -> Result<(), TaskError> {
        let cmd = cmd
            .stdout(fanout::Sink::Capture {
                max_bytes: 16 * 1024,
            })
            .stderr(fanout::Sink::Capture {
                max_bytes: 64 * 1024,
            });
        self.runner.run(&cmd, cancel)?.into_result().map(|_| ())
    }

    /// Start the marimo worker of the environment whose interpreter is `python`.
    fn start_worker(dir: &Path, python: &Path, version: &str) -> Result<ForkServer, String> {
        let script_text = format!("{FORK_SERVER_PY}\n{WORKER_PY}");
        let digest = crate::site::hex(&Sha256::digest(script_text.as_bytes())[..6]);
        let script = dir.join(format!("export-nb-worker-{digest}.py"));
        if !script.is_file() {
            fanout::fsutil::write_atomic(&script, script_text.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let worker =
            ForkServer::start(&Command::new(python).arg(&script), Duration::from_secs(120))
                .map_err(|e| e.to_string())?;
        let said = worker.hello()["marimo"].as_str().unwrap_or("");
        if said != version {
            return Err(format!(
                "the worker runs marimo {said}, but the environment has {version}"
            ));
        }
        Ok(worker)
    }
}

/// The marimo side of the worker: imports marimo once, runs `marimo <args>` per job in-process.
const WORKER_PY: &str = r#"
import multiprocessing
import sys

import marimo
from marimo._cli.cli import main as _marimo_main
import marimo._session.managers.kernel as _kernel
import marimo._session.managers.queue as _queue
import marimo._runtime.runtime  # what the kernel imports, imported once here

# marimo starts its kernel with multiprocessing's "spawn": a new interpreter that imports marimo
# again. A fork of the job's own process has everything imported already.
_fork = multiprocessing.get_context("fork")
_kernel.get_context = lambda method=None: _fork
_queue.get_context = lambda method=None: _fork


def run(args):
    sys.argv = ["marimo", *args]
    _marimo_main(args=list(args), prog_name="marimo", standalone_mode=True)
    return 0


serve(run, {"marimo": marimo.__version__, "python": sys.version.split()[0]})
"#;

fn prefix(e: TaskError, context: &str) -> TaskError {
    if matches!(e, TaskError::Cancelled) {
        return e;
    }
    let detail = e.detail().map(str::to_owned);
    // uv says why in its own words (`error: No solution found...`, `cause: Because ...`):
    // that, not "exited with code 1", is what the user needs to read.
    let message = detail
        .as_deref()
        .and_then(uv_says)
        .unwrap_or_else(|| e.to_string());
    let err = TaskError::failed(format!("{context}: {message}"));
    match detail {
        Some(d) => err.with_detail(d),
        None => err,
    }
}

/// uv's `error:` line, with its first `cause:` line, from its stderr.
fn uv_says(stderr: &str) -> Option<String> {
    let line = |prefix: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
    };
    let error = line("error: ")?;
    Some(match line("cause: ") {
        Some(cause) => format!("{error}: {cause}"),
        None => error,
    })
}

/// marimo's version in an environment, from its `marimo-<version>.dist-info` folder, and the
/// `site-packages` folder that holds it.
fn marimo_in(dir: &Path) -> Option<(String, PathBuf)> {
    let lib = dir.join("lib");
    for python in std::fs::read_dir(lib).ok()?.flatten() {
        let site = python.path().join("site-packages");
        let Ok(entries) = std::fs::read_dir(site) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(version) = name
                .strip_prefix("marimo-")
                .and_then(|rest| rest.strip_suffix(".dist-info"))
            {
                return Some((version.to_owned(), python.path().join("site-packages")));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(python: Option<&str>, deps: &[&str]) -> ScriptMetadata {
        ScriptMetadata {
            requires_python: python.map(str::to_owned),
            dependencies: deps.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn equal_headers_share_a_key_and_different_ones_do_not() {
        let a = EnvSpec::for_notebook(
            Some(&header(Some(">=3.10"), &["numpy", "marimo"])),
            true,
            None,
        );
        let b = EnvSpec::for_notebook(
            Some(&header(Some(">=3.10"), &["marimo", "numpy"])),
            true,
            None,
        );
        let c = EnvSpec::for_notebook(Some(&header(Some(">=3.10"), &["marimo"])), true, None);
        assert_eq!(a.key(), b.key(), "order does not matter");
        assert_ne!(a.key(), c.key());
        assert_eq!(a.requirements, ["marimo", "numpy"]);
        assert_eq!(c.describe(), "python >=3.10: marimo");
    }

    #[test]
    fn marimo_is_added_pinned_and_the_header_is_ignored_without_the_sandbox() {
        let h = header(Some(">=3.12"), &["pandas"]);
        assert_eq!(
            EnvSpec::for_notebook(Some(&h), true, None).requirements,
            ["marimo", "pandas"]
        );
        assert_eq!(
            EnvSpec::for_notebook(Some(&h), true, Some("0.9.1")).requirements,
            ["marimo==0.9.1", "pandas"]
        );
        let plain = EnvSpec::for_notebook(Some(&h), false, None);
        assert_eq!(plain.requirements, ["marimo"]);
        assert_eq!(plain.python, None);
        assert_eq!(plain, EnvSpec::for_notebook(None, true, None));
    }

    #[test]
    fn uv_errors_are_quoted_with_their_cause() {
        let stderr = "Using Python 3.11\nerror: No solution found when resolving dependencies\n  \
                      cause: Because nope was not found in the package registry, ...\n";
        assert_eq!(
            uv_says(stderr).as_deref(),
            Some(
                "No solution found when resolving dependencies: Because nope was not found in \
                 the package registry, ..."
            )
        );
        assert_eq!(uv_says("Killed\n"), None);
    }

    #[test]
    fn marimo_version_comes_from_its_dist_info() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("marimo-0.25.2.dist-info")).unwrap();
        std::fs::create_dir_all(site.join("markdown-3.7.dist-info")).unwrap();
        assert_eq!(marimo_in(dir.path()), Some(("0.25.2".to_owned(), site)));
        assert_eq!(marimo_in(&dir.path().join("none")), None);
    }
}
