//! The results CSV: one writer, rows written as they complete, each whole in one write and
//! flushed, so the file is valid CSV at every instant and a crash loses at most the rows in
//! flight.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The columns after the variables, in order.
pub(crate) const RESULT_COLUMNS: [&str; 7] = [
    "status",
    "input_tokens",
    "context_window",
    "output_tokens",
    "duration_seconds",
    "output",
    "error_message",
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
}

impl Row {
    fn fields(&self) -> Vec<String> {
        let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        let mut f = self.key.clone();
        f.extend([
            self.status.to_owned(),
            num(self.input_tokens),
            num(self.context_window),
            num(self.output_tokens),
            format!("{:.3}", self.duration_seconds),
            self.output.clone(),
            self.error_message.clone(),
        ]);
        f
    }
}

/// Encode one record as CSV bytes (quoting as needed).
fn encode(fields: &[String]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields).expect("writing to memory");
    w.into_inner().expect("flushing to memory")
}

pub(crate) struct RowWriter {
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for RowWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowWriter")
    }
}

impl RowWriter {
    /// Results to standard output: the header now, rows as they come.
    pub(crate) fn stdout(header: &[String]) -> Result<Self> {
        let mut w = RowWriter {
            out: Box::new(std::io::stdout()),
        };
        w.write_bytes(&encode(header))?;
        Ok(w)
    }

    /// A new results file. An existing one is not overwritten: its rows may be all that is left
    /// of an expensive run.
    pub(crate) fn create(path: &Path, header: &[String]) -> Result<Self> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!(
                        "{} already exists: pass --resume to complete it, or choose another -o",
                        path.display()
                    )
                } else {
                    anyhow::Error::new(e).context(format!("creating {}", path.display()))
                }
            })?;
        file.write_all(&encode(header))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(RowWriter {
            out: Box::new(file),
        })
    }

    /// Resume `path`: keep its header and its `ok`/`warning` rows (rewritten atomically, so
    /// error rows are dropped), then append. Returns the writer and how many times each
    /// experiment key is already done.
    pub(crate) fn resume(
        path: &Path,
        header: &[String],
    ) -> Result<(Self, HashMap<Vec<String>, usize>)> {
        // Bytes, not text: a row cut by a crash may end inside a multi-byte character, and
        // that torn row is dropped below like any other, never a reason to refuse the file.
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading {} to resume it", path.display()))?;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(bytes.as_slice());
        let found: Vec<String> = reader
            .headers()
            .with_context(|| format!("{}: no header row", path.display()))?
            .iter()
            .map(str::to_owned)
            .collect();
        if found != header {
            bail!(
                "{} has other columns than these experiments produce (found: {}; expected: {}); \
                 it cannot be resumed with them",
                path.display(),
                found.join(","),
                header.join(",")
            );
        }
        let status_col = header.len() - RESULT_COLUMNS.len();
        let mut kept = encode(header);
        let mut done: HashMap<Vec<String>, usize> = HashMap::new();
        for record in reader.records() {
            // A torn last row (a crash mid-write) or a short one is simply not done.
            let Ok(record) = record else { continue };
            if record.len() != header.len() {
                continue;
            }
            let status = &record[status_col];
            if status == "ok" || status == "warning" {
                let fields: Vec<String> = record.iter().map(str::to_owned).collect();
                *done.entry(fields[..status_col].to_vec()).or_default() += 1;
                kept.extend(encode(&fields));
            }
        }
        fanout::fsutil::write_atomic(path, &kept)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {} to append", path.display()))?;
        Ok((
            RowWriter {
                out: Box::new(file),
            },
            done,
        ))
    }

    /// Write one row whole (one write call) and flush it.
    pub(crate) fn write(&mut self, row: &Row) -> Result<()> {
        self.write_bytes(&encode(&row.fields()))
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).context("writing a result row")?;
        self.out.flush().context("flushing a result row")
    }
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
        }
    }

    #[test]
    fn rows_are_valid_csv_and_resume_keeps_only_finished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let h = header(&["topic".to_owned()]);
        let mut w = RowWriter::create(&path, &h).unwrap();
        w.write(&row("cats", "ok")).unwrap();
        w.write(&row("dogs", "error")).unwrap();
        w.write(&row("owls", "warning")).unwrap();
        drop(w);
        // A crash mid-write leaves a torn last line, here cut inside a two-byte character.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"mock,m,caf\xc3").unwrap();
        drop(f);

        assert!(
            RowWriter::create(&path, &h).is_err(),
            "never overwrites results"
        );
        let (mut w, done) = RowWriter::resume(&path, &h).unwrap();
        assert_eq!(done.len(), 2);
        assert!(done.contains_key(&vec!["mock".to_owned(), "m".to_owned(), "cats".to_owned()]));
        w.write(&row("dogs", "ok")).unwrap();
        let mut r = csv::Reader::from_path(&path).unwrap();
        let topics: Vec<String> = r.records().map(|r| r.unwrap()[2].to_owned()).collect();
        assert_eq!(topics, ["cats", "owls", "dogs"]);
    }
}
