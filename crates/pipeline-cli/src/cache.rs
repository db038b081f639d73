//! Up-to-date jobs: a job that declares `inputs` runs only when something it depends on
//! changed since it last succeeded, and says what.
//!
//! A job's **key** hashes its definition (command, env, folder, its `inputs` and `outputs`
//! patterns), the values of the parameters it tracks (`params.rs`), the content of its input
//! files and the keys of the jobs it waits for. The keys
//! of jobs that succeeded live in `.lorchestra/cache.json` with what went into them, so the
//! reason a job runs can be named ("input data/raw/a.csv changed"). File contents are hashed
//! with BLAKE3; a file whose size and modification time match the last hash is not read again.

mod file;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

pub(crate) use file::{CacheFile, CacheUpdate, Entry, Stamp};
use file::{Definition, SETTLED};

use crate::model::{Job, Run};
use crate::patterns::expand;

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
    /// The values of the parameters it tracks, `--set` applied.
    pub(crate) params: BTreeMap<String, serde_json::Value>,
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
    /// Parameter files, each read once, and `--set`.
    params: crate::params::Files,
    set: crate::params::Overrides,
}

impl Cache {
    pub(crate) fn new(
        project: &Path,
        pipeline: &str,
        file: CacheFile,
        (payload, set): (&crate::payload::Payload, &crate::params::Overrides),
    ) -> Cache {
        let payload = serde_json::to_string(payload).expect("a payload serializes");
        Cache {
            pipeline: pipeline.to_owned(),
            payload: short_hash(&[&payload]),
            project: project.to_path_buf(),
            jobs: file.jobs,
            stamps: Mutex::new(file.files.into_iter().collect()),
            params: crate::params::Files::default(),
            set: set.clone(),
        }
    }

    /// `--set` keys that no job of `pipeline` tracks (loops' jobs included), refused before
    /// anything runs.
    pub(crate) fn check_set(&self, pipeline: &crate::model::Pipeline) -> Result<(), String> {
        // A nested pipeline gets all of its parent's overrides: those for the parent's jobs
        // are not its business.
        if self.set.is_empty() || std::env::var_os(crate::layout::NESTED_RUN_FILE).is_some() {
            return Ok(());
        }
        let jobs = pipeline.stages.iter().flat_map(|s| {
            s.jobs
                .iter()
                .chain(s.looping.iter().flat_map(|l| l.jobs.iter()))
        });
        let tracked: Vec<_> = jobs
            .flat_map(|j| self.params.raw(&self.job_dir(j), &j.params))
            .collect();
        let unused = crate::params::unused(&self.set, &tracked);
        if unused.is_empty() {
            return Ok(());
        }
        let mut names: Vec<String> = tracked.iter().map(|(r, _)| r.name()).collect();
        names.sort();
        names.dedup();
        Err(format!(
            "--set {}: no job of {} tracks {} (tracked: {})",
            unused.join(", "),
            pipeline.name,
            if unused.len() == 1 { "it" } else { "them" },
            if names.is_empty() {
                "none; a job tracks values with params = [\"FILE:KEY\"]".to_owned()
            } else {
                names.join(", ")
            }
        ))
    }

    /// The values of the parameters `job` tracks, `--set` applied; an error names a missing
    /// file or key.
    pub(crate) fn params_of(
        &self,
        job: &Job,
    ) -> Result<BTreeMap<String, serde_json::Value>, String> {
        self.params
            .values(&self.job_dir(job), &job.params, &self.set)
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
        if !job.tracked() {
            // It always runs, and so do the jobs that depend on it: its key only has to differ
            // from run to run (no hashing for the many jobs without inputs).
            return Ok(Decision {
                key: format!("ran in {salt}"),
                verdict: Verdict::Run("no inputs declared: it always runs".to_owned()),
                entry: None,
                stamps: Vec::new(),
                params: BTreeMap::new(),
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
        let params = self.params_of(job)?;
        let key = key_of(&definition, (&params, &inputs), &dep_keys);
        let last = self.jobs.get(&self.name(&job.id));
        let verdict = if let Some(why) = first_reason(forced, last.is_none(), deps) {
            Verdict::Run(why)
        } else if let Some(last) = last {
            if last.incomplete {
                Some("its last run did not succeed".to_owned())
            } else {
                compare(last, &definition, (&params, &inputs), &dep_keys)
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
            params: params.clone(),
            incomplete: false,
            output: None,
        };
        Ok(Decision {
            key,
            verdict,
            entry: Some(entry),
            stamps,
            params,
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

/// A job's parameter values and its input files' hashes, by name.
type Tracked<'a> = (
    &'a BTreeMap<String, serde_json::Value>,
    &'a BTreeMap<String, String>,
);

fn key_of(
    d: &Definition,
    (params, inputs): Tracked<'_>,
    deps: &BTreeMap<String, String>,
) -> String {
    let values: Vec<String> = params
        .iter()
        .flat_map(|(name, v)| [name.clone(), v.to_string()])
        .collect();
    let mut parts: Vec<&str> = vec![&d.command, &d.env, &d.cwd, &d.files, &d.payload];
    // Only with params: the keys of jobs that track none stay those of earlier versions.
    if !params.is_empty() {
        parts.push("params");
        parts.extend(values.iter().map(String::as_str));
    }
    parts.push("inputs");
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
    (params, inputs): Tracked<'_>,
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
    if let Some(why) = params_changed(&last.params, params) {
        return Some(why);
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

/// The first tracked parameter whose value changed, in words: `params.yaml:train.lr 0.01 ->
/// 0.02`.
fn params_changed(
    last: &BTreeMap<String, serde_json::Value>,
    now: &BTreeMap<String, serde_json::Value>,
) -> Option<String> {
    use crate::params::show;
    for (name, v) in now {
        match last.get(name) {
            None => return Some(format!("{name} is now tracked")),
            Some(old) if old != v => return Some(format!("{name} {} -> {}", show(old), show(v))),
            Some(_) => {}
        }
    }
    last.keys()
        .find(|n| !now.contains_key(*n))
        .map(|n| format!("{n} is no longer tracked"))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_settled_file_is_hashed_once_then_known_by_its_size_and_time() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("pipelines")).unwrap();
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
            (
                &crate::payload::Payload::new(),
                &crate::params::Overrides::new(),
            ),
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
        let cache = Cache::new(
            d.path(),
            "p",
            file,
            (
                &crate::payload::Payload::new(),
                &crate::params::Overrides::new(),
            ),
        );
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
