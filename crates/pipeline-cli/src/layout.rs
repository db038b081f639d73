//! Where a run keeps a job's files: its run folder's names for a job, from the job's id (its
//! log, the value it returns, the run of a nested pipeline and that run's payload). A loop's key
//! comes from data, so an id is made a file name of its own first ([`file_stem`]).

use std::path::{Path, PathBuf};

/// `logs/<job_id>.log`, the id made a file name (see [`file_stem`]).
pub(crate) fn log_name(job_id: &str) -> String {
    format!("logs/{}.log", file_stem(job_id))
}

/// A job's id as a file name of its own: a loop's key comes from data (`job[../../x]`), so
/// `/`, `\`, `%`, NUL and control characters are percent-encoded, a leading `.` too (no `..`,
/// no hidden file), and a name too long for a file system is cut and given a hash of the
/// whole. Different ids give different names.
pub(crate) fn file_stem(job_id: &str) -> String {
    use std::fmt::Write as _;
    // 255 bytes is the usual limit; room for ".run-id", ".payload.json"...
    const MAX: usize = 200;
    let mut out = String::with_capacity(job_id.len());
    for (i, c) in job_id.chars().enumerate() {
        if matches!(c, '/' | '\\' | '%' | '\0') || c.is_control() || (i == 0 && c == '.') {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    if out.len() > MAX {
        let mut cut = MAX - 17;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        let hash = blake3::hash(job_id.as_bytes()).to_hex();
        out = format!("{}-{}", &out[..cut], &hash[..16]);
    }
    out
}

/// The file job `job_id` of the run in `run_dir` writes its value to (`$LORCHESTRA_OUTPUT`).
pub(crate) fn value_file(run_dir: &Path, job_id: &str) -> PathBuf {
    run_dir
        .join("outputs")
        .join(format!("{}.json", file_stem(job_id)))
}

/// Set for a nested pipeline's lorchestra: the file it writes its run id to.
pub(crate) const NESTED_RUN_FILE: &str = "LORCHESTRA_NESTED_RUN_FILE";

/// Where the nested pipeline run by job `job_id` of the run in `run_dir` notes its run id.
pub(crate) fn nested_run_file(run_dir: &Path, job_id: &str) -> PathBuf {
    run_dir
        .join("nested")
        .join(format!("{}.run-id", file_stem(job_id)))
}

/// Where the payload of the nested pipeline run by job `job_id` (a loop's iteration) is kept.
pub(crate) fn nested_payload_file(run_dir: &Path, job_id: &str) -> PathBuf {
    run_dir
        .join("nested")
        .join(format!("{}.payload.json", file_stem(job_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_stay_in_the_logs_folder() {
        assert_eq!(log_name("a/../b"), "logs/a%2F..%2Fb.log");
        assert_eq!(file_stem("../x"), "%2E.%2Fx");
        assert_ne!(
            file_stem("j[a/b]"),
            file_stem("j[a_b]"),
            "different ids, different names"
        );
        let long = file_stem(&"é".repeat(300));
        assert!(
            long.len() <= 200 && long.is_char_boundary(long.len()),
            "{long}"
        );
    }
}
