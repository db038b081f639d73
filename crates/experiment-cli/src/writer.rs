//! The results: one writer (the owner thread), rows written as they complete, each whole in one
//! write and flushed, so every file is valid at every instant and a crash loses at most the rows
//! in flight.
//!
//! A row goes to a [`Sink`]: CSV (a header, then a record per row) or JSON Lines (an object per
//! row, chosen by a `.jsonl`/`.ndjson` name). [`Outputs`] holds one sink per results file: with
//! a path template (`-o 'results/{{provider}}.csv'`) each experiment's row goes to the file its
//! values name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use fanout::runlock::{RunLock, RunLockError, Wait};

use crate::row::{Cell, Done, EXTRA, Format, Row};
use crate::sink::{Sink, already_exists};

/// Whether rows carry the answer's JSON as columns (`--flatten`), and which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flattening {
    Off,
    /// `--flatten-columns`: these, from the start.
    Columns(Vec<String>),
    /// `--flatten`: those of the first answer with JSON.
    FromAnswers,
}

impl Flattening {
    fn start(self) -> Option<Flat> {
        match self {
            Flattening::Off => None,
            Flattening::Columns(c) => Some(Flat {
                columns: Some(c),
                ..Flat::default()
            }),
            Flattening::FromAnswers => Some(Flat::default()),
        }
    }
}

/// The lock of the results file `path`: `.NAME.lock` in its folder.
fn lock(path: &Path, wait: Wait) -> Result<RunLock> {
    let name = path
        .file_name()
        .map_or_else(|| "results".into(), |n| n.to_string_lossy().into_owned());
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    RunLock::acquire(&folder.join(format!(".{name}.lock")), "parallamr run", wait).map_err(|e| {
        match e {
            RunLockError::Held { holder, .. } => anyhow!(
                "{} is being written by another run: {holder}; wait for it to end (or pass \
                 --wait), or write elsewhere with -o",
                path.display()
            ),
            other @ RunLockError::Io { .. } => anyhow!(other),
        }
    })
}

/// With `--flatten` to standard output, at most this many rows wait for an answer with JSON.
const HOLD_MAX: usize = 1000;

/// Every results destination of a run, and which one each experiment's row goes to.
#[derive(Debug)]
pub(crate) struct Outputs {
    header: Vec<String>,
    sinks: Vec<Sink>,
    /// One run at a time per results file: held until the run ends.
    _locks: Vec<RunLock>,
    /// The files this run made (not those it resumes).
    created: Vec<PathBuf>,
    /// With `--flatten`: the answer's columns, and the rows waiting for them.
    flat: Option<Flat>,
}

/// The columns `--flatten` adds to a CSV: given by `--flatten-columns`, read from a resumed
/// file, or taken from the first row whose answer has JSON. Until then a results file has a
/// provisional header (the base columns and `json_extra`) and every finished row is written at
/// once; the first answer with JSON rewrites the file with its columns. Standard output cannot
/// be rewritten: its rows wait, at most [`HOLD_MAX`], then its columns are fixed as none. A key
/// that comes later goes to `json_extra`, never lost.
#[derive(Debug, Default)]
struct Flat {
    columns: Option<Vec<String>>,
    /// Rows for standard output, waiting for the columns.
    held: Vec<(usize, Row)>,
    /// Keys already reported as landing in `json_extra`.
    warned: std::collections::BTreeSet<String>,
}

impl Outputs {
    /// Standard output.
    pub(crate) fn stdout(header: Vec<String>, flatten: Flattening) -> Result<Self> {
        let flat = flatten.start();
        let sink = Sink::stdout();
        let mut out = Outputs {
            header,
            sinks: vec![sink],
            _locks: Vec::new(),
            created: Vec::new(),
            flat,
        };
        out.head_all()?;
        Ok(out)
    }

    /// Open `paths` (each once, in this order): new files, or with `resume` existing ones
    /// completed. Without `resume`, nothing is created if any of them exists. Returns the
    /// finished rows of each. Each file is locked for the run first (`.NAME.lock` beside it):
    /// a second run on it is refused, naming the first, or waits for it (`wait`), so a resume
    /// never replaces a file another run is still appending to.
    pub(crate) fn open(
        paths: &[PathBuf],
        header: Vec<String>,
        resume: bool,
        flatten: Flattening,
        wait: Wait,
    ) -> Result<(Self, Vec<Done>)> {
        let locks = paths
            .iter()
            .map(|p| lock(p, wait))
            .collect::<Result<Vec<_>>>()?;
        if !resume && let Some(p) = paths.iter().find(|p| p.exists()) {
            return Err(already_exists(p));
        }
        let mut flat = flatten.start();
        let mut sinks = Vec::with_capacity(paths.len());
        let mut done = Vec::with_capacity(paths.len());
        let mut created = Vec::new();
        for p in paths {
            if resume && p.exists() {
                let (sink, d, found) = Sink::resume(p, &header, flat.is_some())?;
                if let (Some(f), Some(found)) = (&mut flat, found)
                    && Format::of(p) == Format::Csv
                {
                    match &f.columns {
                        // A provisional header (no answer had JSON yet): still to be learned.
                        None if found.is_empty() => {}
                        Some(c) if *c != found => bail!(
                            "{} has the flattened columns {} (not {}): resume it with \
                             --flatten-columns {}",
                            p.display(),
                            found.join(","),
                            c.join(","),
                            found.join(",")
                        ),
                        _ => f.columns = Some(found),
                    }
                }
                sinks.push(sink);
                done.push(d);
            } else {
                sinks.push(Sink::create(p, None)?);
                created.push(p.clone());
                done.push(Done::new());
            }
        }
        let mut out = Outputs {
            header,
            sinks,
            _locks: locks,
            created,
            flat,
        };
        out.head_all()?;
        Ok((out, done))
    }

    /// The whole CSV header, once the columns are known: the base, the answer's, `json_extra`.
    fn full_header(&self) -> Option<Vec<String>> {
        match &self.flat {
            None => Some(self.header.clone()),
            Some(Flat { columns: None, .. }) => None,
            Some(Flat {
                columns: Some(c), ..
            }) => {
                let mut h = self.header.clone();
                h.extend(c.iter().cloned());
                h.push(EXTRA.to_owned());
                Some(h)
            }
        }
    }

    /// Write the header of every sink that has none, if it is known; while `--flatten`'s
    /// columns are not, results files get the provisional one (see [`Flat`]).
    fn head_all(&mut self) -> Result<()> {
        if let Some(h) = self.full_header() {
            for s in &mut self.sinks {
                s.head(&h)?;
            }
        } else {
            let mut provisional = self.header.clone();
            provisional.push(EXTRA.to_owned());
            for s in self.sinks.iter_mut().filter(|s| s.is_file()) {
                s.head(&provisional)?;
            }
        }
        Ok(())
    }

    /// The answer's columns are known: results files written with the provisional header are
    /// rewritten with them, standard output gets its header and the rows that waited.
    fn fix_columns(&mut self, columns: Vec<String>) -> Result<()> {
        let n = columns.len();
        self.flat.as_mut().expect("flattening").columns = Some(columns);
        let header = self.full_header().expect("the columns are known");
        if n > 0 {
            let base = self.header.len();
            for s in self
                .sinks
                .iter_mut()
                .filter(|s| s.is_headed() && s.format() == Format::Csv)
            {
                s.reheader(base, n, &header)?;
            }
        }
        self.head_all()?;
        let held = std::mem::take(&mut self.flat.as_mut().expect("flat").held);
        for (t, r) in &held {
            self.write_flat_csv(*t, r)?;
        }
        Ok(())
    }

    /// Write `row` to destination `to` (an index into the paths given to `open`).
    pub(crate) fn write(&mut self, to: usize, row: &Row) -> Result<()> {
        let Some(flat) = &mut self.flat else {
            return self.sinks[to].write(&self.header, row);
        };
        if self.sinks[to].format() == Format::JsonLines {
            // No header to fix: each line has the answer's own fields.
            let pairs = named(&self.header, row.flat.as_deref().unwrap_or_default());
            let mut names = self.header.clone();
            let mut cells = row.cells();
            for (k, v) in pairs {
                names.push(k);
                cells.push(Cell::Json(v));
            }
            return self.sinks[to].write_cells(&names, &cells);
        }
        if flat.columns.is_none() {
            let pairs = named(&self.header, row.flat.as_deref().unwrap_or_default());
            if !pairs.is_empty() {
                self.fix_columns(pairs.into_iter().map(|(k, _)| k).collect())?;
            } else if self.sinks[to].is_file() {
                // Written at once, under the provisional header: no answer's columns yet.
                return self.write_flat_csv(to, row);
            } else {
                flat.held.push((to, row.clone()));
                if flat.held.len() >= HOLD_MAX {
                    eprintln!(
                        "parallamr: warning: no answer among the first {HOLD_MAX} rows had JSON: \
                         standard output's columns are fixed without the answer's (they go to \
                         json_extra; --flatten-columns names them)"
                    );
                    self.fix_columns(Vec::new())?;
                }
                return Ok(());
            }
        }
        self.write_flat_csv(to, row)
    }

    /// A flattened CSV row: the answer's values in the columns known (none while they are
    /// not), the rest in `json_extra`.
    fn write_flat_csv(&mut self, to: usize, row: &Row) -> Result<()> {
        let flat = self.flat.as_mut().expect("flattening");
        let no_columns = Vec::new();
        let columns = flat.columns.as_ref().unwrap_or(&no_columns);
        let pairs = named(&self.header, row.flat.as_deref().unwrap_or_default());
        let mut cells = row.cells();
        for c in columns {
            let v = pairs.iter().find(|(k, _)| k == c).map(|(_, v)| v.clone());
            cells.push(Cell::Json(v.unwrap_or(serde_json::Value::Null)));
        }
        let extra: serde_json::Map<String, serde_json::Value> = pairs
            .into_iter()
            .filter(|(k, _)| !columns.contains(k))
            .collect();
        for k in extra.keys() {
            if flat.warned.insert(k.clone()) {
                eprintln!(
                    "parallamr: warning: the answers have a key {k:?} that the first one did \
                     not: kept in the json_extra column (--flatten-columns fixes the columns)"
                );
            }
        }
        cells.push(Cell::Text(if extra.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(extra).to_string()
        }));
        // A CSV record carries no names: the header was written once.
        self.sinks[to].write_cells(&[], &cells)
    }

    /// Write what still waits: with `--flatten` and no answer with JSON, the header (with no
    /// answer's columns) and the rows.
    /// Before any row is written: the files this run made are removed, so a run that stops
    /// before it starts leaves none that a new run would have to `--resume`.
    pub(crate) fn discard_created(self) {
        let Outputs { sinks, created, .. } = self;
        drop(sinks);
        for p in created {
            let _ = std::fs::remove_file(p);
        }
    }

    pub(crate) fn finish(&mut self) -> Result<()> {
        if self.flat.as_ref().is_some_and(|f| f.columns.is_none()) {
            self.fix_columns(Vec::new())?;
        }
        Ok(())
    }
}

/// The answer's columns named as written: a key that is already a column of the results
/// (`status`, a variable) gets `json_` in front.
fn named(
    header: &[String],
    pairs: &[(String, serde_json::Value)],
) -> Vec<(String, serde_json::Value)> {
    pairs
        .iter()
        .map(|(k, v)| {
            let k = if header.contains(k) || k == EXTRA {
                format!("json_{k}")
            } else {
                k.clone()
            };
            (k, v.clone())
        })
        .collect()
}

/// A file name built from a row's values: what `sanitize` makes of a value never leaves its
/// folder, names a device, or exceeds a file name's 255 bytes.
pub(crate) fn sanitize(value: &str) -> String {
    let replaced: String = value
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    // Leading dots would hide the file, trailing dots and spaces vanish on Windows; `.`, `..`
    // and spaces alone mean something else, or nothing.
    let trimmed = replaced.trim_matches([' ', '.']);
    let mut s = if trimmed.is_empty() {
        "_".repeat(replaced.len().clamp(1, 2))
    } else {
        trimmed.to_owned()
    };
    let stem = s.split('.').next().unwrap_or_default().to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        s.insert(0, '_');
    }
    if s.len() > 255 {
        let mut end = 255;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_safe_file_names() {
        assert_eq!(sanitize("cats"), "cats");
        assert_eq!(sanitize("a/b\\c"), "a_b_c");
        assert_eq!(sanitize(".."), "__");
        assert_eq!(sanitize("."), "_");
        assert_eq!(sanitize("../etc/passwd"), "_etc_passwd");
        assert_eq!(sanitize("tab\there\n"), "tab_here_");
        assert_eq!(sanitize("con"), "_con");
        assert_eq!(sanitize("COM1.txt"), "_COM1.txt");
        assert_eq!(sanitize("computer"), "computer");
        assert_eq!(sanitize("x?y*z"), "x_y_z");
        let long = "é".repeat(200);
        let s = sanitize(&long);
        assert!(s.len() <= 255 && s.chars().all(|c| c == 'é'), "{}", s.len());
    }
}
