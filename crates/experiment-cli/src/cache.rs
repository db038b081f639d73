//! The response cache: a successful answer is kept under a key of everything that decides it
//! (provider, its endpoint, model, the rendered prompt, every request parameter), so a re-run
//! of an unchanged sweep sends nothing. One file per entry, written atomically (a temporary file
//! renamed over the name): two sweeps sharing the folder never see a half-written entry, and the
//! last of two identical writes wins. Errors are never kept. An entry that cannot be read is a
//! miss.
//!
//! What is kept: an answer used (written or read) within `PARALLAMR_CACHE_MAX_AGE` (90 days),
//! and of those the most recently used up to `PARALLAMR_CACHE_MAX_SIZE` (1 GiB). A read
//! touches its entry's modification time, so the time says when it was last used. A run
//! prunes once a day (the `.pruned` mark's time says when); `parallamr cache prune` any time.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
    /// Answered in a provider's batch (`--batch`): it cost the batch price.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) batch: bool,
}

impl Entry {
    pub(crate) fn new(
        req: &Request<'_>,
        provider: &str,
        text: String,
        tokens: (Option<u64>, Option<u64>),
        context_window: Option<u64>,
    ) -> Self {
        Self::answered((provider, req.model), text, tokens, context_window)
    }

    /// The answer of `model` at `provider`.
    pub(crate) fn answered(
        (provider, model): (&str, &str),
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
            model: model.to_owned(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            batch: false,
        }
    }

    /// The same, answered in a batch.
    pub(crate) fn in_batch(self) -> Self {
        Entry {
            batch: true,
            ..self
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
    // A schema sent as structured output changes the answer (a check alone does not).
    if let Some(s) = req.schema {
        part(b"schema");
        part(s.name.as_bytes());
        part(s.value.to_string().as_bytes());
    }
    // The first send of a request is the answer without --repeat, so repeats reuse it.
    if req.repeat > 1 {
        part(b"repeat");
        part(req.repeat.to_string().as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// How much the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_bytes: u64,
    pub(crate) max_age: Duration,
}

impl Limits {
    /// `PARALLAMR_CACHE_MAX_SIZE` and `PARALLAMR_CACHE_MAX_AGE`, else 1 GiB and 90 days.
    pub(crate) fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Ok(Limits {
            max_bytes: match var("PARALLAMR_CACHE_MAX_SIZE") {
                Some(v) => parse_size(&v)
                    .map_err(|e| anyhow::anyhow!("PARALLAMR_CACHE_MAX_SIZE={v}: {e}"))?,
                None => 1 << 30,
            },
            max_age: match var("PARALLAMR_CACHE_MAX_AGE") {
                Some(v) => parse_age(&v)
                    .map_err(|e| anyhow::anyhow!("PARALLAMR_CACHE_MAX_AGE={v}: {e}"))?,
                None => Duration::from_secs(90 * 86_400),
            },
        })
    }
}

/// `500M`, `2G`, `1.5GiB`, `1048576`: bytes (K, M, G, T are powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let scale: u64 = match unit {
        ' ' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        _ => return Err(format!("{s:?} is not a size (e.g. 500M, 2G)")),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 500M, 2G)"))?;
    if !(n.is_finite() && n >= 0.0) || n * scale as f64 > u64::MAX as f64 {
        return Err(format!("{s:?} is not a size (e.g. 500M, 2G)"));
    }
    Ok((n * scale as f64) as u64)
}

/// `90d`, `12h`, `30m`: a duration (humantime's forms).
pub(crate) fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not an age (e.g. 30d): {e}"))
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

    /// The entry for `key`, if one was kept and reads back whole; its time is set to now (it
    /// was used).
    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        let entry = serde_json::from_slice(&bytes).ok()?;
        if let Ok(f) = std::fs::OpenOptions::new().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(entry)
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

    /// Remove entries not used for longer than `limits.max_age`, then the least recently used
    /// until the rest is at most `limits.max_bytes`; returns what was removed.
    pub(crate) fn prune(&self, limits: Limits) -> Result<Usage> {
        let now = SystemTime::now();
        let mut kept: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let mut gone = Usage::default();
        let remove = |path: &Path, len: u64, gone: &mut Usage| -> Result<()> {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    gone.entries += 1;
                    gone.bytes += len;
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
            }
        };
        for e in self.entries() {
            let Ok(meta) = e.metadata() else { continue };
            let used = meta.modified().unwrap_or(now);
            if now.duration_since(used).unwrap_or_default() > limits.max_age {
                remove(e.path(), meta.len(), &mut gone)?;
            } else {
                kept.push((used, meta.len(), e.into_path()));
            }
        }
        kept.sort();
        let mut total: u64 = kept.iter().map(|(_, len, _)| len).sum();
        for (_, len, path) in &kept {
            if total <= limits.max_bytes {
                break;
            }
            remove(path, *len, &mut gone)?;
            total -= len;
        }
        Ok(gone)
    }

    /// [`prune`](Self::prune) if the last prune was more than a day ago (a run's end): warns
    /// rather than fails, since the run's results are written.
    pub(crate) fn prune_daily(&self, limits: Limits) {
        let mark = self.dir.join(VERSION).join(".pruned");
        let recent = std::fs::metadata(&mark)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(86_400));
        if recent || !self.dir.join(VERSION).is_dir() {
            return;
        }
        match self.prune(limits) {
            Ok(gone) => {
                let _ = fanout::fsutil::write_atomic(&mark, b"");
                if gone.entries > 0 {
                    eprintln!(
                        "parallamr: cache: removed {} answers ({}) unused for {} or beyond {}",
                        gone.entries,
                        fmt_bytes(gone.bytes),
                        humantime::format_duration(limits.max_age),
                        fmt_bytes(limits.max_bytes)
                    );
                }
            }
            Err(e) => eprintln!("parallamr: warning: pruning the cache: {e:#}"),
        }
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

    #[test]
    fn sizes_and_ages_read_as_people_write_them() {
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("-1G").is_err() && parse_size("1X").is_err());
        assert_eq!(parse_age("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert!(parse_age("soon").is_err());
    }

    fn req<'a>(prompt: &'a str, params: &'a [(String, serde_json::Value)]) -> Request<'a> {
        Request {
            model: "m",
            prompt,
            vars: &[],
            params,
            repeat: 1,
            schema: None,
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
        // A schema sent as structured output is part of the request.
        let schema = crate::providers::Schema::new("s", serde_json::json!({"type": "object"}));
        let with = Request {
            schema: Some(&schema),
            ..req("hi", &none)
        };
        assert_ne!(base, key("openai", "http://a", &with));
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
