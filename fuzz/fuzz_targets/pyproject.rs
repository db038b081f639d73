//! `pyproject.toml` with `[tool.export-nb]`, merged with export-nb's flags.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    let dir = dir().path();
    if std::fs::write(dir.join("pyproject.toml"), data).is_ok() {
        export_nb::fuzz::pyproject(dir);
    }
});
