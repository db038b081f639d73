//! parallamr's results file, as `--resume` reads and rewrites it, for experiments with the
//! variable column `topic`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    parallamr::fuzz::resume(dir().path(), &["topic".to_owned()], data);
});
