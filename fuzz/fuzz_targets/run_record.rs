//! A lorchestra run record (`runs/ID/run.json`), as `status`, `runs`, `report` and
//! `--resume` read it, against the pipeline `main` (two stages, jobs `a` and `b`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const PIPELINE: &str = r#"
[[stages]]
name = "first"
jobs = ["a"]

[[stages]]
name = "second"
jobs = ["b"]

[jobs.a]
command = "true"

[jobs.b]
command = ["echo", "b"]
"#;

fn project() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::create_dir_all(dir.path().join("pipelines")).expect("pipelines/");
        std::fs::write(dir.path().join("pipelines/main.toml"), PIPELINE).expect("main.toml");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    lorchestra::fuzz::run_record(project().path(), "main", data);
});
