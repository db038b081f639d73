//! One destination of rows (a results file, or standard output): created without overwriting,
//! its header written once, each row whole in one write and flushed; a resumed file keeps its
//! finished rows; a provisional `--flatten` header is rewritten once the columns are known.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::row::{Cell, Done, EXTRA, Format, Row, encode_csv};

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
    /// Standard output, in CSV.
    pub(crate) fn stdout() -> Self {
        Sink {
            format: Format::Csv,
            out: Box::new(std::io::stdout()),
            name: "standard output".to_owned(),
            path: None,
            headed: false,
        }
    }

    /// A results file (not standard output): its provisional header can be rewritten.
    pub(crate) fn is_file(&self) -> bool {
        self.path.is_some()
    }

    /// Whether its CSV header is written.
    pub(crate) fn is_headed(&self) -> bool {
        self.headed
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

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
    pub(crate) fn head(&mut self, header: &[String]) -> Result<()> {
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
    pub(crate) fn reheader(
        &mut self,
        base: usize,
        columns: usize,
        header: &[String],
    ) -> Result<()> {
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

    pub(crate) fn write_cells(&mut self, header: &[String], cells: &[Cell]) -> Result<()> {
        let bytes = self.format.encode(header, cells);
        self.write_bytes(&bytes)
    }

    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .with_context(|| format!("writing a result row to {}", self.name))?;
        self.out
            .flush()
            .with_context(|| format!("flushing a result row to {}", self.name))
    }
}

pub(crate) fn already_exists(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} already exists: pass --resume to complete it, or choose another -o",
        path.display()
    )
}

pub(crate) fn other_columns(path: &Path, found: &[String], header: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "{} has other columns than these experiments produce (found: {}; expected: {}); it \
         cannot be resumed with them",
        path.display(),
        found.join(","),
        header.join(",")
    )
}

/// The header and finished rows of a CSV results file, and the done keys.
pub(crate) fn finished_csv_rows(
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
    let status_col = crate::row::status_col(header);
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
pub(crate) fn finished_json_rows(
    path: &Path,
    bytes: &[u8],
    header: &[String],
    flattened: bool,
) -> Result<(Vec<u8>, Done)> {
    let status_col = crate::row::status_col(header);
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

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;
    use crate::row::{Shape, header};

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
            verdict: None,
            judged: false,
        }
    }

    fn resume_keeps_only_finished_rows(name: &str, torn: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let h = header(&["topic".to_owned()], Shape::default());
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
        let h = header(&["topic".to_owned()], Shape::default());
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
        let h = header(&["topic".to_owned()], Shape::default());
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

        let other = header(&["tone".to_owned()], Shape::default());
        let e = Sink::resume(&path, &other, false).unwrap_err().to_string();
        assert!(e.contains("has other columns"), "{e}");
    }
}
