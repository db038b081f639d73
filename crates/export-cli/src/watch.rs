//! `export-nb watch`: an incremental export, then another after every burst of changes to the
//! notebooks, their local modules, the index template or `pyproject.toml`, until Ctrl-C.
//!
//! Each round is an ordinary run (discovery, manifest, one pool batch, index), so only
//! notebooks whose key changed are exported, a deleted notebook's page is removed and a new one
//! is added. Changes are debounced (an editor's burst of writes and renames is one change). A
//! change to a notebook, or a local module of one, that is being exported cancels the round's
//! running exports (their process trees are killed); the next round starts them over. A
//! changed `pyproject.toml` is read again before the next round; if it is invalid, the error is
//! printed and the last good settings stay in force.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result};
use fanout::{CancelReason, CancelToken, ExitStatus};
use fanout_cli::UsageResult;
use notify::{EventKind, RecursiveMode, Watcher};

type Events = Receiver<notify::Result<notify::Event>>;

use crate::cli::WatchArgs;
use crate::config::Settings;
use crate::envs::EnvPool;
use crate::plan::Plan;

/// How long the files must be quiet before a round starts.
const DEBOUNCE: Duration = Duration::from_millis(200);

pub(crate) fn watch(watch: WatchArgs) -> Result<ExitStatus> {
    if watch.serve.is_some()
        && let Some(addr) = watch.export.folders.iter().find(|f| {
            f.to_str()
                .is_some_and(|s| s.parse::<std::net::SocketAddr>().is_ok())
        })
    {
        return Err(anyhow::anyhow!(
            "{} is read as a folder: give --serve its address with =, as in --serve={}",
            addr.display(),
            addr.display()
        ))
        .usage();
    }
    let args = watch.export;
    let load = || {
        Settings::from_args(args.clone()).map(|s| Settings {
            watching: true,
            ..s
        })
    };
    let mut settings = load().usage()?;
    if settings.dry_run {
        return Err(anyhow::anyhow!(
            "watch runs exports: --dry-run is for `export-nb` itself"
        ))
        .usage();
    }
    let server = match &watch.serve {
        Some(addr) => Some(crate::serve::SiteServer::start(&settings.output, addr).usage()?),
        None => None,
    };
    // Held for the whole watch: a plain export of the same folder waits or is refused.
    let mut lock = settings.lock_output("export-nb watch").usage()?;
    let interrupt = fanout::install_interrupt_handler()?;
    let pyproject =
        std::path::absolute("pyproject.toml").unwrap_or_else(|_| "pyproject.toml".into());
    let (_watcher, rx) = start_watcher(&settings)?;
    say_watching(&settings, server.as_ref());

    // The environments and their warm marimo workers, kept from round to round.
    let mut envs: Option<EnvPool> = None;
    loop {
        // Canonical once per settings, not per event.
        let what_matters = Watched::new(&settings, &pyproject);
        let changed = round(&settings, &what_matters, &interrupt, &rx, &mut envs);
        if interrupt.is_cancelled() {
            return Ok(ExitStatus::Interrupted);
        }
        let changed = match changed {
            Some(c) => c,
            None => match wait_for_change(&what_matters, &interrupt, &rx) {
                Some(c) => c,
                None => return Ok(ExitStatus::Interrupted),
            },
        };
        if changed.settings {
            match reload(load(), &settings, &mut lock) {
                Ok(new) => {
                    settings = new;
                    envs = None;
                }
                Err(e) => eprintln!("export-nb: {e:#}\nexport-nb: keeping the last good settings"),
            }
        }
    }
}

/// The settings read again after a change to `pyproject.toml`: a new output folder is locked
/// first (`lock` then holds it).
fn reload(
    new: Result<Settings>,
    settings: &Settings,
    lock: &mut fanout::runlock::RunLock,
) -> Result<Settings> {
    let new = new?;
    if new.output != settings.output {
        *lock = new.lock_output("export-nb watch")?;
    }
    Ok(new)
}

/// What is watched, and where the site can be seen.
fn say_watching(settings: &Settings, server: Option<&crate::serve::SiteServer>) {
    let folders: Vec<String> = settings
        .sources
        .iter()
        .map(|s| s.folder.display().to_string())
        .collect();
    match server {
        Some(server) => eprintln!(
            "export-nb: watching {} (Ctrl-C to stop); the site: {}",
            folders.join(", "),
            server.url
        ),
        None => eprintln!(
            "export-nb: watching {} (Ctrl-C to stop); to look at the site, serve {} (--serve, \
             or e.g. `python3 -m http.server -d {}`)",
            folders.join(", "),
            settings.output.display(),
            fanout::process::shell_quote(&settings.output.display().to_string())
        ),
    }
}

/// A file watcher on the notebook folders, the current folder (for `pyproject.toml`) and the
/// index template's folder; its events arrive on the receiver.
fn start_watcher(settings: &Settings) -> Result<(notify::RecommendedWatcher, Events)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).context("starting the file watcher")?;
    for source in &settings.sources {
        watcher
            .watch(&source.folder, RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", source.folder.display()))?;
    }
    // The folder, not the file: an editor replaces a file by renaming another onto it.
    watcher
        .watch(Path::new("."), RecursiveMode::NonRecursive)
        .context("watching the current folder for pyproject.toml")?;
    if let Some(template) = &settings.template
        && let Some(folder) = template.parent()
    {
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        watcher
            .watch(folder, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", folder.display()))?;
    }
    Ok((watcher, rx))
}

/// What changed since the last round.
#[derive(Debug, Default)]
struct Changed {
    /// `pyproject.toml`: read the settings again.
    settings: bool,
}

/// One incremental run. While it runs, watch for changes: one to a notebook being exported
/// cancels the round. Returns what changed meanwhile (`None`: nothing).
fn round(
    settings: &Settings,
    watched: &Watched,
    interrupt: &CancelToken,
    rx: &Events,
    envs: &mut Option<EnvPool>,
) -> Option<Changed> {
    let plan = match Plan::prepare(settings.clone()) {
        Ok(plan) => plan,
        Err(e) => {
            // A notebook folder removed, two notebooks claiming one page: say so, wait for
            // the next change.
            eprintln!("export-nb: {e:#}");
            return None;
        }
    };
    let exporting = plan.exporting();
    if let Some(pool) = envs.as_ref() {
        pool.forget_failures();
    }
    let token = interrupt.child();
    let mut changed: Option<Changed> = None;
    let status = std::thread::scope(|scope| {
        let round_token = &token;
        let run = scope.spawn(move || plan.execute(round_token, envs));
        while !run.is_finished() {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(event)) => {
                    let Some(paths) = written(event) else {
                        continue;
                    };
                    if let Some(c) = watched.relevant(&paths) {
                        let mine = paths.iter().any(|p| exporting.contains(&canonical(p)));
                        if mine && !token.is_cancelled() {
                            eprintln!(
                                "export-nb: a notebook being exported changed: starting over"
                            );
                            token.cancel(CancelReason::Requested);
                        }
                        let all = changed.get_or_insert_with(Changed::default);
                        all.settings |= c.settings;
                    }
                }
                Ok(Err(e)) => eprintln!("export-nb: watching: {e}"),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        run.join().expect("the round does not panic")
    });
    if let Err(e) = status {
        eprintln!("export-nb: {e:#}");
    }
    if let Some(c) = &mut changed {
        c.settings |= settle(watched, rx).is_some_and(|more| more.settings);
    }
    changed
}

/// The paths an event wrote (created, changed, renamed or removed); `None` for reads.
fn written(event: notify::Event) -> Option<Vec<PathBuf>> {
    match event.kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => Some(event.paths),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => None,
    }
}

/// After a change: wait until the files have been quiet for [`DEBOUNCE`] (an editor's burst of
/// writes and renames, ten saves in a second), and say what else changed meanwhile.
fn settle(watched: &Watched, rx: &Events) -> Option<Changed> {
    let mut changed: Option<Changed> = None;
    loop {
        match rx.recv_timeout(DEBOUNCE) {
            Ok(Ok(event)) => {
                if let Some(c) = written(event).and_then(|p| watched.relevant(&p)) {
                    changed.get_or_insert_with(Changed::default).settings |= c.settings;
                }
            }
            Ok(Err(e)) => eprintln!("export-nb: watching: {e}"),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return changed,
        }
    }
}

/// Block until a relevant change (or Ctrl-C: `None`).
fn wait_for_change(watched: &Watched, interrupt: &CancelToken, rx: &Events) -> Option<Changed> {
    loop {
        if interrupt.is_cancelled() {
            return None;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(event)) => {
                if let Some(mut c) = written(event).and_then(|p| watched.relevant(&p)) {
                    c.settings |= settle(watched, rx).is_some_and(|m| m.settings);
                    return Some(c);
                }
            }
            Ok(Err(e)) => eprintln!("export-nb: watching: {e}"),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// What a change must touch to matter, as canonical paths (made once per settings).
struct Watched {
    output: PathBuf,
    template: Option<PathBuf>,
    pyproject: PathBuf,
}

impl Watched {
    fn new(settings: &Settings, pyproject: &Path) -> Self {
        Watched {
            output: canonical(&settings.output),
            template: settings.template.as_deref().map(canonical),
            pyproject: canonical(pyproject),
        }
    }

    /// Whether any of `paths` matters: a Python file outside the output folder, the template,
    /// or `pyproject.toml`.
    fn relevant(&self, paths: &[PathBuf]) -> Option<Changed> {
        let mut changed = None;
        for path in paths {
            let path = canonical(path);
            if path.starts_with(&self.output) {
                continue;
            }
            let is_settings = path == self.pyproject;
            if is_settings
                || self.template.as_deref() == Some(path.as_path())
                || path.extension().is_some_and(|e| e == "py")
            {
                let c: &mut Changed = changed.get_or_insert_with(Changed::default);
                c.settings |= is_settings;
            }
        }
        changed
    }
}

/// `path` made absolute with its links resolved, as far as it exists (a deleted file's folder).
fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            canonical(parent).join(name)
        }
        _ => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

impl Plan {
    /// The notebooks this run exports, and their local modules, as canonical paths.
    fn exporting(&self) -> HashSet<PathBuf> {
        let mut paths = HashSet::new();
        for (_, job) in self.exports() {
            let source = canonical(&job.found.source);
            if let Some(folder) = source.parent() {
                for module in job.found.modules.keys() {
                    paths.insert(folder.join(module));
                }
            }
            paths.insert(source);
        }
        paths
    }
}
