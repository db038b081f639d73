//! Up-to-date jobs: a job that declares `inputs` runs only when something it depends on
//! changed since it last succeeded, and says what.
//!
//! A job's **key** hashes its definition (command, env, folder, its `inputs` and `outputs`
//! patterns), the content of its input files and the keys of the jobs it waits for. The keys
//! of jobs that succeeded live in `.lorchestra/cache.json` with what went into them, so the
//! reason a job runs can be named ("input data/raw/a.csv changed"). File contents are hashed
//! with BLAKE3; a file whose size and modification time match the last hash is not read again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::{Job, Run};

/// The cache, in the project's `.lorchestra/`.
pub(crate) const CACHE_FILE: &str = ".lorchestra/cache.json";
const VERSION: u32 = 1;
/// A file modified this recently is hashed again next time even if its stamp matches: it may
/// change again within the clock's resolution without its size or time changing.
const SETTLED: Duration = Duration::from_secs(2);

/// `.lorchestra/cache.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CacheFile {
    version: u32,
    /// By `<pipeline>/<job>`: what the job's last success was built from.
    #[serde(default)]
    jobs: BTreeMap<String, Entry>,
    /// By path (relative to the project folder): the last hash of each input file.
    #[serde(default)]
    files: BTreeMap<String, Stamp>,
}

/// What a job's key was made of when it last succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) key: String,
    definition: Definition,
    /// Input path (relative to the job's folder) -> content hash.
    inputs: BTreeMap<String, String>,
    /// Job id -> its key.
    deps: BTreeMap<String, String>,
    /// Written when the job starts, replaced when it succeeds: a job that failed or was killed
    /// may have left half-written outputs, so it is not up to date whatever its key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) incomplete: bool,
    /// The value it returned (a loop over it works when the job is up to date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) output: Option<serde_json::Value>,
}

impl Entry {
    /// This entry, marked as the one of a job that started and has not succeeded yet.
    pub(crate) fn started(&self) -> Entry {
        Entry {
            incomplete: true,
            ..self.clone()
        }
    }
}

/// Hashes of the parts of a job's definition, so the reason can name the part that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Definition {
    command: String,
    env: String,
    cwd: String,
    files: String,
    /// The run's payload (jobs see all of it in their environment). Absent in caches written
    /// before payloads: such an entry reads as "payload changed" once.
    #[serde(default)]
    payload: String,
}

/// A file's size, modification time and inode when it was hashed, and the hash. Symbolic
/// links are followed (git-annex, DVC and DataLad keep data behind them): the stamp is the
/// target's, and a link pointed at another file has another inode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    size: u64,
    mtime_ns: u64,
    /// Absent in caches written before links were followed: such a stamp reads as changed.
    #[serde(default)]
    inode: u64,
    hash: String,
}

/// A change to the cache, applied by the run record's writer.
#[derive(Debug)]
pub(crate) struct CacheUpdate {
    /// `<pipeline>/<job>` and its entry, when a job with inputs succeeded.
    pub(crate) job: Option<(String, Entry)>,
    /// Files hashed afresh (relative to the project folder).
    pub(crate) stamps: Vec<(String, Stamp)>,
}

impl CacheFile {
    /// Read the cache of project `dir`; a missing file is an empty cache, an unreadable one is
    /// ignored with a warning (every job with inputs runs, and the cache is written afresh).
    pub(crate) fn load(dir: &Path) -> CacheFile {
        let path = dir.join(CACHE_FILE);
        let path = path.strip_prefix(".").unwrap_or(&path);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return CacheFile::empty(),
            Err(e) => {
                eprintln!(
                    "warning: cannot read {}: {e}; it is ignored",
                    path.display()
                );
                return CacheFile::empty();
            }
        };
        match serde_json::from_slice::<CacheFile>(&bytes) {
            Ok(c) if c.version == VERSION => c,
            Ok(c) => {
                eprintln!(
                    "warning: {} is of version {}, not {VERSION}; it is ignored (jobs with inputs \
                     run and it is written afresh)",
                    path.display(),
                    c.version
                );
                CacheFile::empty()
            }
            Err(e) => {
                eprintln!(
                    "warning: {} is not a lorchestra cache ({e}); it is ignored (jobs with inputs \
                     run and it is written afresh)",
                    path.display()
                );
                CacheFile::empty()
            }
        }
    }

    fn empty() -> CacheFile {
        CacheFile {
            version: VERSION,
            ..CacheFile::default()
        }
    }

    pub(crate) fn apply(&mut self, update: CacheUpdate) {
        if let Some((name, entry)) = update.job {
            self.jobs.insert(name, entry);
        }
        self.files.extend(update.stamps);
    }

    /// Write `changed` (one run's updates) over the cache of project `dir` as it is on disk
    /// now (another run may have written it since), atomically.
    pub(crate) fn save_merged(dir: &Path, changed: &CacheFile) -> Result<()> {
        let mut on_disk = CacheFile::load_quiet(dir).unwrap_or_else(CacheFile::empty);
        on_disk
            .jobs
            .extend(changed.jobs.iter().map(|(k, v)| (k.clone(), v.clone())));
        on_disk
            .files
            .extend(changed.files.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut json = serde_json::to_vec(&on_disk).expect("the cache serializes");
        json.push(b'\n');
        let path = dir.join(CACHE_FILE);
        fanout::fsutil::write_atomic(&path, &json)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Drop what no run can use again, after a run of `pipeline` that reached every stage
    /// (`live`: the ids of all its jobs, loop iterations included): entries of its jobs that
    /// are gone (a loop's old items, a removed job), and stamps of files that no longer exist.
    /// Other pipelines' entries stay (a pipeline may be run from a file anywhere). Returns how
    /// many entries and stamps went. Run under the project's lock: nothing else writes.
    pub(crate) fn prune(
        dir: &Path,
        pipeline: &str,
        live: &HashSet<&str>,
    ) -> Result<(usize, usize)> {
        let Some(mut cache) = CacheFile::load_quiet(dir) else {
            return Ok((0, 0));
        };
        let (jobs, files) = (cache.jobs.len(), cache.files.len());
        let prefix = format!("{pipeline}/");
        cache.jobs.retain(|name, _| {
            name.strip_prefix(&prefix)
                .is_none_or(|job| live.contains(job))
        });
        cache.files.retain(|path, _| dir.join(path).exists());
        let gone = (jobs - cache.jobs.len(), files - cache.files.len());
        if gone != (0, 0) {
            let mut json = serde_json::to_vec(&cache).expect("the cache serializes");
            json.push(b'\n');
            let path = dir.join(CACHE_FILE);
            fanout::fsutil::write_atomic(&path, &json)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(gone)
    }

    fn load_quiet(dir: &Path) -> Option<CacheFile> {
        let bytes = std::fs::read(dir.join(CACHE_FILE)).ok()?;
        serde_json::from_slice::<CacheFile>(&bytes)
            .ok()
            .filter(|c| c.version == VERSION)
    }
}

/// How a job the one being decided waits for stands.
#[derive(Debug, Clone)]
pub(crate) struct DepState {
    pub(crate) id: String,
    pub(crate) key: String,
    /// It runs (or ran) in this run, or did not succeed: whoever depends on it runs too. In
    /// words: "clean, which ran".
    pub(crate) runs: Option<String>,
}

/// The name of the jobs of earlier stages a job comes after, as one dependency.
const EARLIER_STAGES: &str = "the earlier stages";

impl DepState {
    /// Job `id` with key `key`; `how` it runs ("ran", "will run"), if it does.
    pub(crate) fn new(id: &str, key: String, how: Option<&str>) -> Self {
        DepState {
            id: id.to_owned(),
            key,
            runs: how.map(|h| format!("{id}, which {h}")),
        }
    }

    /// Several jobs as one: the jobs of the earlier stages that a job without `needs` comes
    /// after (one entry in a job's key however many they are); the first that runs names it.
    pub(crate) fn combine<'a>(deps: impl IntoIterator<Item = &'a DepState>) -> Self {
        let mut runs = None;
        let mut parts: Vec<&str> = Vec::new();
        for d in deps {
            if runs.is_none() {
                runs.clone_from(&d.runs);
            }
            parts.push(&d.id);
            parts.push(&d.key);
        }
        DepState {
            id: EARLIER_STAGES.to_owned(),
            key: short_hash(&parts),
            runs,
        }
    }
}

/// Whether a job runs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    UpToDate,
    Run(String),
}

/// A job's key, verdict, and what to remember if it succeeds.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) key: String,
    pub(crate) verdict: Verdict,
    /// The entry to store when the job succeeds (jobs with inputs).
    pub(crate) entry: Option<Entry>,
    /// Files hashed afresh.
    pub(crate) stamps: Vec<(String, Stamp)>,
}

/// The cache as one run sees it: the entries read at its start, the stamps it knows.
#[derive(Debug)]
pub(crate) struct Cache {
    pipeline: String,
    /// A hash of the run's payload, part of every job's definition.
    payload: String,
    project: PathBuf,
    jobs: BTreeMap<String, Entry>,
    stamps: Mutex<HashMap<String, Stamp>>,
}

impl Cache {
    pub(crate) fn new(
        project: &Path,
        pipeline: &str,
        file: CacheFile,
        payload: &crate::payload::Payload,
    ) -> Cache {
        let payload = serde_json::to_string(payload).expect("a payload serializes");
        Cache {
            pipeline: pipeline.to_owned(),
            payload: short_hash(&[&payload]),
            project: project.to_path_buf(),
            jobs: file.jobs,
            stamps: Mutex::new(file.files.into_iter().collect()),
        }
    }

    /// The name of `job_id` in the cache.
    pub(crate) fn name(&self, job_id: &str) -> String {
        format!("{}/{job_id}", self.pipeline)
    }

    /// The value `job_id` returned when it last succeeded.
    pub(crate) fn last_output(&self, job_id: &str) -> Option<&serde_json::Value> {
        self.jobs
            .get(&self.name(job_id))
            .filter(|e| !e.incomplete)
            .and_then(|e| e.output.as_ref())
    }

    /// The key `job_id` had when it last succeeded.
    pub(crate) fn last_key(&self, job_id: &str) -> Option<&str> {
        self.jobs.get(&self.name(job_id)).map(|e| e.key.as_str())
    }

    /// Decide whether `job` runs. `deps`: the jobs it waits for; `forced`: `--force` names it;
    /// `salt`: makes the key of a job without inputs (which always runs) unique to this run.
    /// An error is a missing input (the job fails with it).
    pub(crate) fn decide(
        &self,
        job: &Job,
        deps: &[DepState],
        forced: bool,
        salt: &str,
    ) -> Result<Decision, String> {
        if job.inputs.is_empty() {
            // It always runs, and so do the jobs that depend on it: its key only has to differ
            // from run to run (no hashing for the many jobs without inputs).
            return Ok(Decision {
                key: format!("ran in {salt}"),
                verdict: Verdict::Run("no inputs declared: it always runs".to_owned()),
                entry: None,
                stamps: Vec::new(),
            });
        }
        // An iteration's environment carries its item's payload.
        let item_payload = job.iteration.as_ref().map(|it| {
            short_hash(&[&serde_json::to_string(&it.payload).expect("a payload serializes")])
        });
        let definition = definition(job, item_payload.as_deref().unwrap_or(&self.payload));
        let dep_keys: BTreeMap<String, String> =
            deps.iter().map(|d| (d.id.clone(), d.key.clone())).collect();
        let dir = self.job_dir(job);
        let mut stamps = Vec::new();
        let mut inputs = BTreeMap::new();
        for file in expand(&dir, &job.inputs, "input")? {
            let hash = self.hash(&dir, &file, &mut stamps)?;
            inputs.insert(file, hash);
        }
        let key = key_of(&definition, &inputs, &dep_keys);
        let last = self.jobs.get(&self.name(&job.id));
        let verdict = if let Some(why) = first_reason(forced, last.is_none(), deps) {
            Verdict::Run(why)
        } else if let Some(last) = last {
            if last.incomplete {
                Some("its last run did not succeed".to_owned())
            } else {
                compare(last, &definition, &inputs, &dep_keys)
            }
            .or_else(|| missing_output(&dir, &job.outputs))
            .map_or(Verdict::UpToDate, Verdict::Run)
        } else {
            Verdict::Run("new job".to_owned())
        };
        let entry = Entry {
            key: key.clone(),
            definition,
            inputs,
            deps: dep_keys,
            incomplete: false,
            output: None,
        };
        Ok(Decision {
            key,
            verdict,
            entry: Some(entry),
            stamps,
        })
    }

    /// The folder a job runs in (its globs are relative to it).
    fn job_dir(&self, job: &Job) -> PathBuf {
        job.cwd
            .as_ref()
            .map_or_else(|| self.project.clone(), |c| self.project.join(c))
    }

    /// The content hash of `rel` in `dir`: the stamp's if size and time match, else read.
    fn hash(
        &self,
        dir: &Path,
        rel: &str,
        fresh: &mut Vec<(String, Stamp)>,
    ) -> Result<String, String> {
        let path = dir.join(rel);
        let name = path
            .strip_prefix(&self.project)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let (size, mtime_ns, inode) = stat(&path).map_err(|e| format!("input {rel}: {e}"))?;
        {
            let stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = stamps.get(&name)
                && (s.size, s.mtime_ns, s.inode) == (size, mtime_ns, inode)
            {
                return Ok(s.hash.clone());
            }
        }
        let hashed_at = SystemTime::now();
        let hash = hash_file(&path).map_err(|e| format!("input {rel}: {e}"))?;
        let settled = hashed_at
            .checked_sub(SETTLED)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .is_some_and(|t| u128::from(mtime_ns) < t.as_nanos());
        if settled && stat(&path).is_ok_and(|now| now == (size, mtime_ns, inode)) {
            let stamp = Stamp {
                size,
                mtime_ns,
                inode,
                hash: hash.clone(),
            };
            self.stamps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.clone(), stamp.clone());
            fresh.push((name, stamp));
        }
        Ok(hash)
    }
}

/// The reasons to run that need no hashing, in order: `--force`, no earlier success, a job it
/// depends on runs.
pub(crate) fn first_reason(forced: bool, new: bool, deps: &[DepState]) -> Option<String> {
    if forced {
        return Some("forced (--force)".to_owned());
    }
    if new {
        return Some("new job".to_owned());
    }
    deps.iter()
        .find_map(|d| d.runs.as_ref().map(|r| format!("depends on {r}")))
}

/// Size, modification time and inode of a file, a link's target's for a link.
fn stat(path: &Path) -> std::io::Result<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Ok((meta.len(), mtime, meta.ino()))
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex()[..32].to_owned())
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex()[..16].to_owned()
}

fn definition(job: &Job, payload: &str) -> Definition {
    let command = match &job.run {
        Run::Shell(s) => short_hash(&["shell", s]),
        Run::Argv(a) => short_hash(&a.iter().map(String::as_str).collect::<Vec<_>>()),
        Run::Pipeline(p) => short_hash(&["pipeline", p]),
    };
    let env: Vec<String> = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let env = short_hash(&env.iter().map(String::as_str).collect::<Vec<_>>());
    let cwd = short_hash(&[&job
        .cwd
        .as_ref()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()]);
    let mut files: Vec<&str> = vec!["inputs"];
    files.extend(job.inputs.iter().map(String::as_str));
    files.push("outputs");
    files.extend(job.outputs.iter().map(String::as_str));
    Definition {
        command,
        env,
        cwd,
        files: short_hash(&files),
        payload: payload.to_owned(),
    }
}

fn key_of(
    d: &Definition,
    inputs: &BTreeMap<String, String>,
    deps: &BTreeMap<String, String>,
) -> String {
    let mut parts: Vec<&str> = vec![&d.command, &d.env, &d.cwd, &d.files, &d.payload, "inputs"];
    for (p, h) in inputs {
        parts.push(p);
        parts.push(h);
    }
    parts.push("deps");
    for (id, k) in deps {
        parts.push(id);
        parts.push(k);
    }
    short_hash(&parts)
}

/// The first difference between the last success and now, in words; `None`: the same.
fn compare(
    last: &Entry,
    definition: &Definition,
    inputs: &BTreeMap<String, String>,
    deps: &BTreeMap<String, String>,
) -> Option<String> {
    let d = &last.definition;
    if d.command != definition.command {
        return Some("command changed".to_owned());
    }
    if d.env != definition.env {
        return Some("env changed".to_owned());
    }
    if d.cwd != definition.cwd {
        return Some("cwd changed".to_owned());
    }
    if d.files != definition.files {
        return Some("its inputs or outputs patterns changed".to_owned());
    }
    if d.payload != definition.payload {
        return Some("payload changed".to_owned());
    }
    for (path, hash) in inputs {
        match last.inputs.get(path) {
            None => return Some(format!("input {path} is new")),
            Some(h) if h != hash => return Some(format!("input {path} changed")),
            Some(_) => {}
        }
    }
    if let Some(gone) = last.inputs.keys().find(|p| !inputs.contains_key(*p)) {
        return Some(format!("input {gone} is gone"));
    }
    for (id, key) in deps {
        match last.deps.get(id) {
            Some(k) if k == key => {}
            Some(_) => return Some(format!("{id} changed since this job last ran")),
            None => return Some(format!("it now depends on {id}")),
        }
    }
    last.deps
        .keys()
        .find(|id| !deps.contains_key(*id))
        .map(|id| format!("it no longer depends on {id}"))
}

/// The first output pattern that matches no file, in words.
fn missing_output(dir: &Path, outputs: &[String]) -> Option<String> {
    outputs.iter().find_map(
        |pattern| match expand(dir, std::slice::from_ref(pattern), "output") {
            Ok(files) if !files.is_empty() => None,
            _ => Some(format!("output {pattern} is missing")),
        },
    )
}

/// A pattern that is not a valid glob, in words.
pub(crate) fn check_pattern(pattern: &str) -> Result<(), String> {
    if !is_glob(pattern) {
        return Ok(());
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(drop)
        .map_err(|e| e.kind().to_string())
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// The files `patterns` name in `dir`, relative to it, sorted: a plain path names that file
/// (a folder: every file in it), a glob (`*`, `**`, `?`, `[...]`, `{a,b}`) what it matches.
/// A plain path that does not exist is an error naming it (`what`: input or output).
pub(crate) fn expand(dir: &Path, patterns: &[String], what: &str) -> Result<Vec<String>, String> {
    let mut files: HashSet<String> = HashSet::new();
    for pattern in patterns {
        if !is_glob(pattern) {
            let path = dir.join(pattern);
            if path.is_file() {
                files.insert(pattern.trim_start_matches("./").to_owned());
            } else if path.is_dir() {
                walk(dir, &path, None, &mut files);
            } else {
                return Err(format!("{what} {pattern} does not exist"));
            }
            continue;
        }
        let matcher = globset::GlobBuilder::new(pattern.trim_start_matches("./"))
            .literal_separator(true)
            .build()
            .map_err(|e| format!("{what} pattern {pattern:?}: {e}"))?
            .compile_matcher();
        // Walk only below the pattern's plain leading folders.
        let base: PathBuf = Path::new(pattern.trim_start_matches("./"))
            .components()
            .take_while(|c| !is_glob(&c.as_os_str().to_string_lossy()))
            .collect();
        let base = if base.as_os_str().is_empty() || base == Path::new(pattern) {
            dir.to_path_buf()
        } else {
            dir.join(base)
        };
        walk(dir, &base, Some(&matcher), &mut files);
    }
    let mut files: Vec<String> = files.into_iter().collect();
    files.sort_unstable();
    Ok(files)
}

fn walk(
    dir: &Path,
    from: &Path,
    matcher: Option<&globset::GlobMatcher>,
    out: &mut HashSet<String>,
) {
    // Links are followed: data kept behind them (git-annex, DVC, DataLad) is an input like
    // any file; a link loop is an error entry, left out.
    for entry in walkdir::WalkDir::new(from)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        let Ok(rel) = entry.path().strip_prefix(dir) else {
            continue;
        };
        if matcher.is_none_or(|m| m.is_match(rel)) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, rels: &[&str]) {
        for r in rels {
            let p = dir.join(r);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, r).unwrap();
        }
    }

    #[test]
    fn pruning_drops_gone_jobs_and_stamps_of_gone_files_and_keeps_other_pipelines() {
        let d = tempfile::tempdir().unwrap();
        files(d.path(), &["here.txt"]);
        let stamp = Stamp {
            size: 1,
            mtime_ns: 1,
            inode: 1,
            hash: "h".into(),
        };
        let entry = |key: &str| Entry {
            key: key.into(),
            definition: definition(
                &crate::model::nested_job("pipeline.x", "x", Path::new("p.toml")),
                "",
            ),
            inputs: BTreeMap::new(),
            deps: BTreeMap::new(),
            incomplete: false,
            output: None,
        };
        let cache = CacheFile {
            version: VERSION,
            jobs: [
                ("p/live".to_owned(), entry("a")),
                ("p/gone".to_owned(), entry("b")),
                ("q/other".to_owned(), entry("c")),
            ]
            .into(),
            files: [
                ("here.txt".to_owned(), stamp.clone()),
                ("gone.txt".to_owned(), stamp),
            ]
            .into(),
        };
        CacheFile::save_merged(d.path(), &cache).unwrap();
        let live: HashSet<&str> = ["live"].into();
        assert_eq!(CacheFile::prune(d.path(), "p", &live).unwrap(), (1, 1));
        let after = CacheFile::load_quiet(d.path()).unwrap();
        assert_eq!(after.jobs.keys().collect::<Vec<_>>(), ["p/live", "q/other"]);
        assert_eq!(after.files.keys().collect::<Vec<_>>(), ["here.txt"]);
    }

    #[test]
    fn patterns_name_files_folders_and_globs_relative_to_the_job() {
        let d = tempfile::tempdir().unwrap();
        files(
            d.path(),
            &[
                "data/raw/a.csv",
                "data/raw/b.csv",
                "data/raw/sub/c.csv",
                "scripts/x.py",
                "top.txt",
            ],
        );
        let ex = |p: &[&str]| {
            expand(
                d.path(),
                &p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                "input",
            )
        };
        assert_eq!(
            ex(&["data/raw/*.csv"]).unwrap(),
            ["data/raw/a.csv", "data/raw/b.csv"],
            "* stays in its folder"
        );
        assert_eq!(ex(&["data/**/*.csv"]).unwrap().len(), 3);
        assert_eq!(ex(&["scripts"]).unwrap(), ["scripts/x.py"]);
        assert_eq!(ex(&["./top.txt", "*.txt"]).unwrap(), ["top.txt"]);
        assert_eq!(ex(&["nothing/*.csv"]).unwrap(), Vec::<String>::new());
        assert_eq!(
            ex(&["data/raw/zz.csv"]).unwrap_err(),
            "input data/raw/zz.csv does not exist"
        );
    }

    #[test]
    fn a_settled_file_is_hashed_once_then_known_by_its_size_and_time() {
        let d = tempfile::tempdir().unwrap();
        files(d.path(), &["pipelines/p.toml", "in.txt"]);
        std::fs::write(
            d.path().join("pipelines/p.toml"),
            "[jobs.j]\ncommand = \"true\"\ninputs = [\"in.txt\"]\n",
        )
        .unwrap();
        let input = d.path().join("in.txt");
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let set_time = || {
            std::fs::File::options()
                .append(true)
                .open(&input)
                .unwrap()
                .set_modified(an_hour_ago)
                .unwrap();
        };
        std::fs::write(&input, "aaaa").unwrap();
        set_time();
        let pipeline = crate::project::Project::new(d.path().to_path_buf())
            .load("p")
            .unwrap();
        let job = &pipeline.stages[0].jobs[0];
        let first = Cache::new(
            d.path(),
            "p",
            CacheFile::empty(),
            &crate::payload::Payload::new(),
        )
        .decide(job, &[], false, "")
        .unwrap();
        assert_eq!(first.stamps.len(), 1, "a settled file's hash is kept");
        let mut file = CacheFile::empty();
        file.apply(CacheUpdate {
            job: None,
            stamps: first.stamps,
        });
        // Other bytes, same size and time: the stamp is believed, the file not read.
        std::fs::write(&input, "bbbb").unwrap();
        set_time();
        let cache = Cache::new(d.path(), "p", file, &crate::payload::Payload::new());
        let second = cache.decide(job, &[], false, "").unwrap();
        assert!(second.stamps.is_empty());
        assert_eq!(second.key, first.key);
        // Another size: read again.
        std::fs::write(&input, "bbbbb").unwrap();
        set_time();
        let third = cache.decide(job, &[], false, "").unwrap();
        assert_ne!(third.key, first.key);
        // A file modified just now is hashed but not stamped: it may change again unseen.
        std::fs::write(&input, "ccccc").unwrap();
        let fresh = cache.decide(job, &[], false, "").unwrap();
        assert!(fresh.stamps.is_empty());
    }
}
