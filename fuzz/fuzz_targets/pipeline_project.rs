//! A lorchestra project: pipeline files (TOML and YAML), job files and nested pipelines.
//! The input is `pipelines/main.toml`, then more files, each after a line `#@ PATH`
//! (`pipelines/NAME.toml|yaml|yml` or `jobs/NAME.toml`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let files = fanout_fuzz::files(data, "pipelines/main.toml", &["pipelines", "jobs"]);
    let dir = tempfile::tempdir().expect("a temporary folder");
    fanout_fuzz::unpack(dir.path(), &files);
    lorchestra::fuzz::project(dir.path());
});
