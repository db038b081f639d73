//! End-to-end tests of the real `export-nb` binary: fast ones with a stand-in `uv` that the
//! tests write (`fake`); behind features that `cargo xtask test` turns on, a few with the real
//! uv and marimo from PyPI (`real_uvx` and `real_notebooks`, feature `real-uvx-tests`), on a Slurm cluster (`slurm`,
//! `slurm-tests`) and in headless Chromium (`browser`, `browser-tests`). With a feature on, a
//! missing uv, cluster or browser fails its tests: they never skip.

mod assets;
#[cfg(feature = "browser-tests")]
mod browser;
mod fake;
mod layering;
mod previews;
#[cfg(feature = "real-uvx-tests")]
mod real_notebooks;
#[cfg(feature = "real-uvx-tests")]
mod real_uvx;
#[cfg(feature = "slurm-tests")]
mod slurm;
mod snapshots;
mod watch;

use std::path::{Path, PathBuf};

use testkit::Run;

pub const BIN: &str = env!("CARGO_BIN_EXE_export-nb");

#[test]
fn keeps_the_command_line_contract() {
    testkit::assert_cli_contract(BIN, "export-nb", env!("CARGO_PKG_VERSION"));
    testkit::assert_shared_flags(BIN, "export-nb", &[]);
}

/// A marimo notebook whose body carries `marker` (the stand-in uvx reacts to markers).
pub fn notebook(marker: &str) -> String {
    format!(
        "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    # {marker}\n    return\n\n\nif __name__ == \"__main__\":\n    app.run()\n"
    )
}

/// A temporary project: a `notebooks` folder, a `bin` folder for the stand-in uvx.
#[derive(Debug)]
pub struct Project {
    pub dir: tempfile::TempDir,
    /// The most stand-in exports that ran at once, as of the last look at its log.
    pub peak: std::cell::Cell<usize>,
}

impl Project {
    pub fn create() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("notebooks")).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        Project {
            dir,
            peak: std::cell::Cell::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file below the project, creating folders.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel))
            .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path().join(rel).exists()
    }

    /// Run export-nb in the project with `env` added.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Run {
        let mut cmd = testkit::command(BIN);
        cmd.args(args).current_dir(self.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap().into()
    }
}
