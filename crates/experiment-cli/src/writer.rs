//! The results: one writer (the owner thread), rows written as they complete, each whole in one
//! write and flushed, so every file is valid at every instant and a crash loses at most the rows
//! in flight.
//!
//! A row goes to a [`Sink`]: CSV (a header, then a record per row) or JSON Lines (an object per
//! row, chosen by a `.jsonl`/`.ndjson` name). [`Outputs`] holds one sink per results file: with
//! a path template (`-o 'results/{{provider}}.csv'`) each experiment's row goes to the file its
//! values name.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use fanout::runlock::{RunLock, RunLockError, Wait};

/// The columns after the variables, in order.
pub(crate) const RESULT_COLUMNS: [&str; 9] = [
    "status",
    "input_tokens",
    "context_window",
    "output_tokens",
    "duration_seconds",
    "output",
    "error_message",
    "cached",
    "cost_usd",
];

/// `provider, model, <variables...>, status, ...`.
pub(crate) fn header(var_names: &[String]) -> Vec<String> {
    let mut h = vec!["provider".to_owned(), "model".to_owned()];
    h.extend(var_names.iter().cloned());
    h.extend(RESULT_COLUMNS.iter().map(|c| (*c).to_owned()));
    h
}

/// One result row.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// provider, model and the variable values: the experiment's key.
    pub(crate) key: Vec<String>,
    pub(crate) status: &'static str,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) context_window: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) duration_seconds: f64,
    pub(crate) output: String,
    pub(crate) error_message: String,
    /// The answer came from the response cache.
    pub(crate) cached: bool,
    /// What the answer costs at the model's price (also when it came from the cache).
    pub(crate) cost_usd: Option<f64>,
    /// `--flatten`: the columns of the JSON in the output (`None` without `--flatten`).
    pub(crate) flat: Option<Vec<(String, serde_json::Value)>>,
}

/// A value of a row, typed so JSON Lines keeps numbers numbers.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(String),
    Count(Option<u64>),
    Seconds(f64),
    Flag(bool),
    Usd(Option<f64>),
    /// A value from the answer's JSON (`--flatten`).
    Json(serde_json::Value),
}

impl Cell {
    fn csv(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Count(n) => n.map(|n| n.to_string()).unwrap_or_default(),
            Cell::Seconds(s) => format!("{s:.3}"),
            Cell::Flag(b) => b.to_string(),
            Cell::Usd(x) => x.map(|x| format!("{x:.6}")).unwrap_or_default(),
            Cell::Json(v) => crate::flatten::cell(v),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Cell::Text(s) => s.clone().into(),
            Cell::Count(n) => n.map_or(serde_json::Value::Null, Into::into),
            // Milliseconds are what the CSV shows too.
            Cell::Seconds(s) => ((s * 1000.0).round() / 1000.0).into(),
            Cell::Flag(b) => (*b).into(),
            Cell::Usd(x) => x.map_or(serde_json::Value::Null, |x| {
                ((x * 1e6).round() / 1e6).into()
            }),
            Cell::Json(v) => v.clone(),
        }
    }
}

impl Row {
    fn cells(&self) -> Vec<Cell> {
        let mut f: Vec<Cell> = self.key.iter().cloned().map(Cell::Text).collect();
        f.extend([
            Cell::Text(self.status.to_owned()),
            Cell::Count(self.input_tokens),
            Cell::Count(self.context_window),
            Cell::Count(self.output_tokens),
            Cell::Seconds(self.duration_seconds),
            Cell::Text(self.output.clone()),
            Cell::Text(self.error_message.clone()),
            Cell::Flag(self.cached),
            Cell::Usd(self.cost_usd),
        ]);
        f
    }
}

/// How a results file is written: by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// `.jsonl` and `.ndjson` are JSON Lines; everything else is CSV.
    pub(crate) fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson") => {
                Format::JsonLines
            }
            _ => Format::Csv,
        }
    }

    /// The bytes of one record: a CSV record, or a JSON object and a newline.
    fn encode(self, header: &[String], cells: &[Cell]) -> Vec<u8> {
        match self {
            Format::Csv => encode_csv(&cells.iter().map(Cell::csv).collect::<Vec<_>>()),
            Format::JsonLines => {
                // Written by hand to keep the fields in column order (serde_json's map sorts).
                let mut line = String::from("{");
                for (i, (name, cell)) in header.iter().zip(cells).enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    line.push_str(&serde_json::Value::from(name.as_str()).to_string());
                    line.push(':');
                    line.push_str(&cell.json().to_string());
                }
                line.push_str("}\n");
                line.into_bytes()
            }
        }
    }

    /// What a new file starts with.
    fn preamble(self, header: &[String]) -> Vec<u8> {
        match self {
            Format::Csv => encode_csv(header),
            Format::JsonLines => Vec::new(),
        }
    }
}

/// Encode one record as CSV bytes (quoting as needed).
fn encode_csv(fields: &[String]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields).expect("writing to memory");
    w.into_inner().expect("flushing to memory")
}

/// How many times each experiment key already has a finished row.
pub(crate) type Done = HashMap<Vec<String>, usize>;

/// One destination of rows.
pub(crate) struct Sink {
    format: Format,
    out: Box<dyn Write + Send>,
    name: String,
    /// The file (none for standard output): a file's provisional header can be rewritten.
    path: Option<PathBuf>,
    /// Whether the CSV header is written (with `--flatten` it waits for the columns).
    headed: bool,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sink({}, {:?})", self.name, self.format)
    }
}

impl Sink {
    /// A new results file (its folder made if needed), with its header unless that waits
    /// (`None`). An existing one is not overwritten: its rows may be all that is left of an
    /// expensive run.
    pub(crate) fn create(path: &Path, header: Option<&[String]>) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the folder {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    already_exists(path)
                } else {
                    anyhow::Error::new(e).context(format!("creating {}", path.display()))
                }
            })?;
        let mut sink = Sink {
            format: Format::of(path),
            out: Box::new(file),
            name: path.display().to_string(),
            path: Some(path.to_path_buf()),
            headed: false,
        };
        if let Some(h) = header {
            sink.head(h)?;
        }
        Ok(sink)
    }

    /// Write the header (once; JSON Lines has none).
    fn head(&mut self, header: &[String]) -> Result<()> {
        if !self.headed {
            self.headed = true;
            let bytes = self.format.preamble(header);
            self.write_bytes(&bytes)?;
        }
        Ok(())
    }

    /// Resume `path`: keep its header and its `ok`/`warning` rows (rewritten atomically, so
    /// error rows and a torn last row are dropped), then append. Returns the sink, how many
    /// times each experiment key is already done, and with `flattened` the columns the file
    /// has after `header` (`None` for a file without a header yet).
    pub(crate) fn resume(
        path: &Path,
        header: &[String],
        flattened: bool,
    ) -> Result<(Self, Done, Option<Vec<String>>)> {
        // Bytes, not text: a row cut by a crash may end inside a multi-byte character, and
        // that torn row is dropped below like any other, never a reason to refuse the file.
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading {} to resume it", path.display()))?;
        let format = Format::of(path);
        let (kept, done, extra) = match format {
            Format::Csv if bytes.is_empty() && flattened => (Vec::new(), Done::new(), None),
            Format::Csv => finished_csv_rows(path, &bytes, header, flattened)?,
            Format::JsonLines => {
                let (kept, done) = finished_json_rows(path, &bytes, header, flattened)?;
                (kept, done, Some(Vec::new()))
            }
        };
        fanout::fsutil::write_atomic(path, &kept)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {} to append", path.display()))?;
        Ok((
            Sink {
                format,
                out: Box::new(file),
                name: path.display().to_string(),
                path: Some(path.to_path_buf()),
                headed: extra.is_some() || !flattened,
            },
            done,
            extra,
        ))
    }

    /// Give a results file written with the provisional `--flatten` header (the base columns
    /// and `json_extra`) the answer's `columns`: the file is rewritten atomically with the new
    /// header and its rows given empty cells for them (rows written before any answer had
    /// JSON have no values there), then appended to again.
    fn reheader(&mut self, base: usize, columns: usize, header: &[String]) -> Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.out
            .flush()
            .with_context(|| format!("flushing {}", self.name))?;
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading {} to add the answer's columns", self.name))?;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(bytes.as_slice());
        let mut kept = encode_csv(header);
        for record in reader.records() {
            // A row is written whole: only a torn one (none while we hold the file) is short.
            let Ok(record) = record else { continue };
            let mut fields: Vec<String> = record.iter().map(str::to_owned).collect();
            if fields.len() != base + 1 {
                continue;
            }
            let extra = fields.pop().unwrap_or_default();
            fields.extend(std::iter::repeat_n(String::new(), columns));
            fields.push(extra);
            kept.extend(encode_csv(&fields));
        }
        fanout::fsutil::write_atomic(&path, &kept)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {} to append", path.display()))?;
        self.out = Box::new(file);
        Ok(())
    }

    /// Write one row whole (one write call) and flush it.
    pub(crate) fn write(&mut self, header: &[String], row: &Row) -> Result<()> {
        self.write_cells(header, &row.cells())
    }

    fn write_cells(&mut self, header: &[String], cells: &[Cell]) -> Result<()> {
        let bytes = self.format.encode(header, cells);
        self.write_bytes(&bytes)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .with_context(|| format!("writing a result row to {}", self.name))?;
        self.out
            .flush()
            .with_context(|| format!("flushing a result row to {}", self.name))
    }
}

fn already_exists(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} already exists: pass --resume to complete it, or choose another -o",
        path.display()
    )
}

fn other_columns(path: &Path, found: &[String], header: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "{} has other columns than these experiments produce (found: {}; expected: {}); it \
         cannot be resumed with them",
        path.display(),
        found.join(","),
        header.join(",")
    )
}

/// The header and finished rows of a CSV results file, and the done keys.
fn finished_csv_rows(
    path: &Path,
    bytes: &[u8],
    header: &[String],
    flattened: bool,
) -> Result<(Vec<u8>, Done, Option<Vec<String>>)> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let found: Vec<String> = reader
        .headers()
        .with_context(|| format!("{}: no header row", path.display()))?
        .iter()
        .map(str::to_owned)
        .collect();
    // With --flatten the answer's columns follow, ending with json_extra.
    let fits = if flattened {
        found.starts_with(header) && found.last().is_some_and(|c| c == EXTRA)
    } else {
        found == header
    };
    if !fits {
        return Err(other_columns(path, &found, header));
    }
    let extra = flattened.then(|| found[header.len()..found.len() - 1].to_vec());
    // The experiment's key, then its status: the answer's columns come after both.
    let status_col = header.len() - RESULT_COLUMNS.len();
    let mut kept = encode_csv(&found);
    let mut done = Done::new();
    for record in reader.records() {
        // A torn last row (a crash mid-write) or a short one is simply not done.
        let Ok(record) = record else { continue };
        if record.len() != found.len() {
            continue;
        }
        let status = &record[status_col];
        if status == "ok" || status == "warning" {
            let fields: Vec<String> = record.iter().map(str::to_owned).collect();
            *done.entry(fields[..status_col].to_vec()).or_default() += 1;
            kept.extend(encode_csv(&fields));
        }
    }
    Ok((kept, done, extra))
}

/// The finished lines of a JSON Lines results file, and the done keys. A line that is not a
/// JSON object (a torn last line) is not done; one with other fields refuses the file.
fn finished_json_rows(
    path: &Path,
    bytes: &[u8],
    header: &[String],
    flattened: bool,
) -> Result<(Vec<u8>, Done)> {
    let status_col = header.len() - RESULT_COLUMNS.len();
    let mut kept = Vec::new();
    let mut done = Done::new();
    for line in bytes.split(|b| *b == b'\n') {
        let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(line) else {
            continue;
        };
        let found: Vec<String> = object.keys().cloned().collect();
        // With --flatten, the answer's fields follow.
        if (found.len() != header.len() && !flattened)
            || header.iter().any(|h| !object.contains_key(h))
        {
            return Err(other_columns(path, &found, header));
        }
        let status = object["status"].as_str().unwrap_or_default();
        if status == "ok" || status == "warning" {
            let key: Vec<String> = header[..status_col]
                .iter()
                .map(|h| match &object[h] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            *done.entry(key).or_default() += 1;
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
    }
    Ok((kept, done))
}

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

/// The last column of a flattened CSV: the answer's keys that have no column of their own.
pub(crate) const EXTRA: &str = "json_extra";

/// Every results destination of a run, and which one each experiment's row goes to.
#[derive(Debug)]
pub(crate) struct Outputs {
    header: Vec<String>,
    sinks: Vec<Sink>,
    /// One run at a time per results file: held until the run ends.
    _locks: Vec<RunLock>,
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
        let sink = Sink {
            format: Format::Csv,
            out: Box::new(std::io::stdout()),
            name: "standard output".to_owned(),
            path: None,
            headed: false,
        };
        let mut out = Outputs {
            header,
            sinks: vec![sink],
            _locks: Vec::new(),
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
                done.push(Done::new());
            }
        }
        let mut out = Outputs {
            header,
            sinks,
            _locks: locks,
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
            for s in self.sinks.iter_mut().filter(|s| s.path.is_some()) {
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
                .filter(|s| s.headed && s.format == Format::Csv)
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
        if self.sinks[to].format == Format::JsonLines {
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
            } else if self.sinks[to].path.is_some() {
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

    fn row(topic: &str, status: &'static str) -> Row {
        Row {
            key: vec!["mock".into(), "m".into(), topic.into()],
            status,
            input_tokens: Some(3),
            context_window: None,
            output_tokens: Some(4),
            duration_seconds: 0.5,
            output: "line one\nline \"two\", quoted".into(),
            error_message: String::new(),
            cached: false,
            cost_usd: None,
            flat: None,
        }
    }

    fn resume_keeps_only_finished_rows(name: &str, torn: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let h = header(&["topic".to_owned()]);
        let mut w = Sink::create(&path, Some(&h)).unwrap();
        w.write(&h, &row("cats", "ok")).unwrap();
        w.write(&h, &row("dogs", "error")).unwrap();
        w.write(&h, &row("owls", "warning")).unwrap();
        drop(w);
        // A crash mid-write leaves a torn last line, here cut inside a two-byte character.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(torn).unwrap();
        drop(f);

        assert!(
            Sink::create(&path, Some(&h)).is_err(),
            "never overwrites results"
        );
        let (mut w, done, _) = Sink::resume(&path, &h, false).unwrap();
        assert_eq!(done.len(), 2);
        assert!(done.contains_key(&vec!["mock".to_owned(), "m".to_owned(), "cats".to_owned()]));
        w.write(&h, &row("dogs", "ok")).unwrap();
        drop(w);
        let (_, done, _) = Sink::resume(&path, &h, false).unwrap();
        assert_eq!(done.len(), 3, "{name}: the appended row is read back");
        assert!(done.contains_key(&vec!["mock".to_owned(), "m".to_owned(), "dogs".to_owned()]));
    }

    #[test]
    fn csv_rows_are_valid_and_resume_keeps_only_finished_ones() {
        resume_keeps_only_finished_rows("out.csv", b"mock,m,caf\xc3");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let h = header(&["topic".to_owned()]);
        let mut w = Sink::create(&path, Some(&h)).unwrap();
        w.write(&h, &row("cats", "ok")).unwrap();
        let mut r = csv::Reader::from_path(&path).unwrap();
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][8], "line one\nline \"two\", quoted");
        assert_eq!(&rows[0][7], "0.500");
    }

    #[test]
    fn json_lines_keep_numbers_and_resume_like_csv() {
        resume_keeps_only_finished_rows("out.jsonl", b"{\"provider\":\"mock\",\"model\":\"caf\xc3");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let h = header(&["topic".to_owned()]);
        let mut w = Sink::create(&path, Some(&h)).unwrap();
        w.write(&h, &row("cats", "ok")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["topic"], "cats");
        assert_eq!(v["input_tokens"], 3);
        assert_eq!(v["context_window"], serde_json::Value::Null);
        assert_eq!(v["duration_seconds"], 0.5);
        assert!(
            text.starts_with(r#"{"provider":"mock","model":"m","topic":"cats","status":"ok","#),
            "fields in column order: {text}"
        );

        let other = header(&["tone".to_owned()]);
        let e = Sink::resume(&path, &other, false).unwrap_err().to_string();
        assert!(e.contains("has other columns"), "{e}");
    }

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
