//! The response cache: a successful answer is kept under a key of everything that decides it
//! (provider, its endpoint, model, the rendered prompt, every request parameter), so a re-run
//! of an unchanged sweep sends nothing. One file per entry, written atomically (a temporary file
//! renamed over the name): two sweeps sharing the folder never see a half-written entry, and the
//! last of two identical writes wins. Errors are never kept. An entry that cannot be read is a
//! miss.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::providers::Request;

/// The layout version: a new one starts an empty folder beside the old.
const VERSION: &str = "v1";

/// The cache folder of a run.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
    /// Whether a failed write was reported already (once per run is enough).
    warned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What an entry keeps: the answer and what the row shows of the call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) text: String,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) context_window: Option<u64>,
    /// Which call made it, for a person reading the folder.
    provider: String,
    model: String,
    /// Seconds since the Unix epoch.
    created: u64,
}

impl Entry {
    pub(crate) fn new(
        req: &Request<'_>,
        provider: &str,
        text: String,
        tokens: (Option<u64>, Option<u64>),
        context_window: Option<u64>,
    ) -> Self {
        Entry {
            text,
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            context_window,
            provider: provider.to_owned(),
            model: req.model.to_owned(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The key of a request to `provider` at `endpoint`: a BLAKE3 hash of each part, length-prefixed
/// so no two different requests hash the same input.
pub(crate) fn key(provider: &str, endpoint: &str, req: &Request<'_>) -> String {
    let mut h = blake3::Hasher::new();
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(VERSION.as_bytes());
    part(provider.as_bytes());
    part(endpoint.as_bytes());
    part(req.model.as_bytes());
    part(req.prompt.as_bytes());
    for (name, value) in req.params {
        part(name.as_bytes());
        part(value.to_string().as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// What `cache info` reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

impl Cache {
    /// `--cache-dir` (or `$PARALLAMR_CACHE_DIR`, which clap reads), else `parallamr` in the
    /// user's cache folder.
    pub(crate) fn locate(flag: Option<&Path>) -> Result<Self> {
        let dir = match flag {
            Some(d) => d.to_owned(),
            None => fanout_cli::user_cache_dir(
                "pass --cache-dir DIR for the response cache, or --no-cache",
            )?
            .join("parallamr"),
        };
        Ok(Cache {
            dir: std::path::absolute(&dir).unwrap_or(dir),
            warned: std::sync::Arc::default(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(VERSION)
            .join(&key[..2])
            .join(format!("{key}.json"))
    }

    /// The entry for `key`, if one was kept and reads back whole.
    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keep `entry` under `key`, atomically.
    pub(crate) fn put(&self, key: &str, entry: &Entry) -> Result<()> {
        let bytes = serde_json::to_vec(entry).expect("an entry is plain data");
        fanout::fsutil::write_atomic(&self.path(key), &bytes)
            .with_context(|| format!("keeping an answer in the cache {}", self.dir.display()))
    }

    /// [`put`](Self::put), and say once per run when it fails: a cache that cannot be written
    /// costs the next run a request, never this row.
    pub(crate) fn put_or_warn(&self, key: &str, entry: &Entry) {
        if let Err(e) = self.put(key, entry)
            && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            eprintln!("parallamr: warning: {e:#}; answers are not being cached");
        }
    }

    /// How many entries, and their size.
    pub(crate) fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for e in self.entries() {
            u.entries += 1;
            u.bytes += e.metadata().map_or(0, |m| m.len());
        }
        u
    }

    /// Remove every entry; returns what was removed.
    pub(crate) fn clear(&self) -> Result<Usage> {
        let mut u = Usage::default();
        for e in self.entries() {
            let len = e.metadata().map_or(0, |m| m.len());
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    u.entries += 1;
                    u.bytes += len;
                }
                // Removed by someone else meanwhile: gone either way.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("removing {}", e.path().display()));
                }
            }
        }
        Ok(u)
    }

    fn entries(&self) -> impl Iterator<Item = walkdir::DirEntry> {
        walkdir::WalkDir::new(self.dir.join(VERSION))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "json")
            })
    }
}

/// `1.2 MiB`.
pub(crate) fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(prompt: &'a str, params: &'a [(String, serde_json::Value)]) -> Request<'a> {
        Request {
            model: "m",
            prompt,
            vars: &[],
            params,
        }
    }

    #[test]
    fn the_key_changes_with_every_part_of_the_request() {
        let none = [];
        let warm = [("temperature".to_owned(), serde_json::json!(0.7))];
        let cold = [("temperature".to_owned(), serde_json::json!(0.1))];
        let base = key("openai", "http://a", &req("hi", &none));
        assert_eq!(base, key("openai", "http://a", &req("hi", &none)));
        for other in [
            key("ollama", "http://a", &req("hi", &none)),
            key("openai", "http://b", &req("hi", &none)),
            key("openai", "http://a", &req("hi!", &none)),
            key("openai", "http://a", &req("hi", &warm)),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(
            key("openai", "http://a", &req("hi", &warm)),
            key("openai", "http://a", &req("hi", &cold))
        );
        // Parts cannot run into each other.
        assert_ne!(
            key("open", "aihttp://a", &req("hi", &none)),
            key("openai", "http://a", &req("hi", &none))
        );
    }

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(fmt_bytes(12), "12 bytes");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn entries_round_trip_and_a_damaged_one_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::locate(Some(dir.path())).unwrap();
        let r = req("hi", &[]);
        let k = key("mock", "", &r);
        assert!(cache.get(&k).is_none());
        let e = Entry::new(&r, "mock", "hello".into(), (Some(1), Some(2)), Some(8192));
        cache.put(&k, &e).unwrap();
        let back = cache.get(&k).unwrap();
        assert_eq!(back.text, "hello");
        assert_eq!(back.context_window, Some(8192));
        assert_eq!(cache.usage().entries, 1);
        std::fs::write(cache.path(&k), b"{\"text\": \"cut").unwrap();
        assert!(cache.get(&k).is_none());
        assert_eq!(cache.clear().unwrap().entries, 1);
        assert_eq!(cache.usage(), Usage::default());
    }
}
