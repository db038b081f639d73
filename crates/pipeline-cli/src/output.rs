//! Job outputs: a job may return a JSON value, kept in the run record beside it (and shown by
//! `lorchestra status`): what later jobs can be driven by.
//!
//! The job writes the value to the file named by `$LORCHESTRA_OUTPUT`; a job with
//! `output = "stdout"` instead returns the last line of its log (its stdout and stderr) when it
//! is JSON. A value larger than [`MAX_BYTES`], or a file that is not JSON, fails the job with
//! the reason.

use std::path::Path;

use crate::model::OutputFrom;
use serde_json::Value;

/// The environment variable naming the file a job writes its value to.
pub(crate) const ENV: &str = "LORCHESTRA_OUTPUT";
/// The largest value kept: the record is rewritten as jobs finish, and stays small.
pub(crate) const MAX_BYTES: u64 = 1024 * 1024;

/// The value a job that succeeded returned: `None` if it returned none; an error (which fails
/// the job) for a value that is too large or not JSON.
pub(crate) fn read(file: &Path, from: OutputFrom, log: &Path) -> Result<Option<Value>, String> {
    match std::fs::metadata(file) {
        Ok(meta) => {
            if meta.len() > MAX_BYTES {
                return Err(format!(
                    "its output (${ENV}) is {} bytes; at most {MAX_BYTES} are kept",
                    meta.len()
                ));
            }
            let bytes = std::fs::read(file)
                .map_err(|e| format!("its output (${ENV}, {}): {e}", file.display()))?;
            serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                format!(
                    "its output (${ENV}) is not JSON: line {}, column {}: {e}",
                    e.line(),
                    e.column()
                )
            })
        }
        Err(_) if from == OutputFrom::Stdout => {
            let tail = fanout::fsutil::read_tail(log, MAX_BYTES);
            let Some(last) = tail.lines().rev().find(|l| !l.trim().is_empty()) else {
                return Err("output = \"stdout\", but it printed nothing".to_owned());
            };
            serde_json::from_str(last).map(Some).map_err(|e| {
                format!("output = \"stdout\", but its last line is not JSON ({e}): {last}")
            })
        }
        Err(_) => Ok(None),
    }
}

/// A value for a line of `lorchestra status`: compact JSON, cut at `max` characters.
pub(crate) fn short(value: &Value, max: usize) -> String {
    let text = value.to_string();
    if text.chars().count() <= max {
        return text;
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}... ({} bytes)", text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_json_of_bounded_size_and_stdout_is_opt_in() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("o.json");
        let log = d.path().join("j.log");
        std::fs::write(&log, "=== header\nworking\n{\"items\": [1, 2]}\n\n").unwrap();
        assert_eq!(read(&out, OutputFrom::File, &log).unwrap(), None);
        assert_eq!(
            read(&out, OutputFrom::Stdout, &log).unwrap().unwrap()["items"][1],
            2
        );
        std::fs::write(&out, "{\"n\": 1}").unwrap();
        assert_eq!(
            read(&out, OutputFrom::Stdout, &log).unwrap().unwrap()["n"],
            1
        );
        std::fs::write(&out, "{\"n\": }").unwrap();
        let e = read(&out, OutputFrom::File, &log).unwrap_err();
        assert!(
            e.starts_with("its output ($LORCHESTRA_OUTPUT) is not JSON: line 1, column 7"),
            "{e}"
        );
        std::fs::write(&out, vec![b' '; 1024 * 1024 + 1]).unwrap();
        let e = read(&out, OutputFrom::File, &log).unwrap_err();
        assert!(
            e.contains("is 1048577 bytes; at most 1048576 are kept"),
            "{e}"
        );
        std::fs::remove_file(&out).unwrap();
        std::fs::write(&log, "done\n").unwrap();
        let e = read(&out, OutputFrom::Stdout, &log).unwrap_err();
        assert!(e.contains("its last line is not JSON"), "{e}");
        assert_eq!(
            short(&serde_json::json!({"a": "bcdefgh"}), 5),
            "{\"a\":... (15 bytes)"
        );
    }
}
