//! `.lorchestra/cache.json`: what each job's last success was built from and the stamps of
//! the input files hashed, read at a run's start, merged and written atomically by the run
//! record's writer, pruned after a run that reached every stage.

use std::collections::{BTreeMap, HashSet};
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The cache, in the project's `.lorchestra/`.
pub(crate) const CACHE_FILE: &str = ".lorchestra/cache.json";
pub(super) const VERSION: u32 = 1;
/// A file modified this recently is hashed again next time even if its stamp matches: it may
/// change again within the clock's resolution without its size or time changing.
pub(super) const SETTLED: Duration = Duration::from_secs(2);

/// `.lorchestra/cache.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CacheFile {
    pub(super) version: u32,
    /// By `<pipeline>/<job>`: what the job's last success was built from.
    #[serde(default)]
    pub(super) jobs: BTreeMap<String, Entry>,
    /// By path (relative to the project folder): the last hash of each input file.
    #[serde(default)]
    pub(super) files: BTreeMap<String, Stamp>,
}

/// What a job's key was made of when it last succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(super) definition: Definition,
    /// Input path (relative to the job's folder) -> content hash.
    pub(super) inputs: BTreeMap<String, String>,
    /// Job id -> its key.
    pub(super) deps: BTreeMap<String, String>,
    /// The values of the parameters it tracks, by name (`params.yaml:train.lr`): kept whole, so
    /// the reason can say what a value was.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) params: BTreeMap<String, serde_json::Value>,
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
pub(super) struct Definition {
    pub(super) command: String,
    pub(super) env: String,
    pub(super) cwd: String,
    pub(super) files: String,
    /// The run's payload (jobs see all of it in their environment). Absent in caches written
    /// before payloads: such an entry reads as "payload changed" once.
    #[serde(default)]
    pub(super) payload: String,
}

/// A file's size, modification time and inode when it was hashed, and the hash. Symbolic
/// links are followed (git-annex, DVC and DataLad keep data behind them): the stamp is the
/// target's, and a link pointed at another file has another inode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    pub(super) size: u64,
    pub(super) mtime_ns: u64,
    /// Absent in caches written before links were followed: such a stamp reads as changed.
    #[serde(default)]
    pub(super) inode: u64,
    pub(super) hash: String,
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

    pub(super) fn empty() -> CacheFile {
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

    pub(super) fn load_quiet(dir: &Path) -> Option<CacheFile> {
        let bytes = std::fs::read(dir.join(CACHE_FILE)).ok()?;
        serde_json::from_slice::<CacheFile>(&bytes)
            .ok()
            .filter(|c| c.version == VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_drops_gone_jobs_and_stamps_of_gone_files_and_keeps_other_pipelines() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("here.txt"), "here").unwrap();
        let stamp = Stamp {
            size: 1,
            mtime_ns: 1,
            inode: 1,
            hash: "h".into(),
        };
        let entry = |key: &str| Entry {
            key: key.into(),
            definition: super::super::definition(
                &crate::model::nested_job("pipeline.x", "x", Path::new("p.toml")),
                "",
            ),
            inputs: BTreeMap::new(),
            deps: BTreeMap::new(),
            params: BTreeMap::new(),
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
}
