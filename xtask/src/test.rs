//! `cargo xtask test`: everything the test suite needs, then the suite.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::tasks;

/// The features that turn on the tests needing a Slurm cluster, Chromium or the real uv. Plain
/// `cargo test --workspace` leaves them off, so it passes on any machine with Rust.
pub(crate) const TEST_FEATURES: &str = "fanout/slurm-tests,\
    export-nb/slurm-tests,export-nb/browser-tests,export-nb/real-uvx-tests,\
    lorchestra/slurm-tests,lorchestra/browser-tests,parallamr/slurm-tests,parallamr/browser-tests,\
    testkit/browser-tests,\
    testkit/dist-tests";

/// The modules that hold those tests, in every test binary: each must have run tests.
const FEATURE_MODULES: [&str; 5] = [
    "slurm::",
    "browser::",
    "real_uvx::",
    "real_notebooks::",
    "dist::",
];

pub(crate) fn run(extra: &[String]) -> Result<()> {
    tasks::ensure_uv()?;
    tasks::ensure_chromium()?;
    let slurm_conf = crate::slurm::ensure()?;
    // The wheels and archives the dist tests install.
    crate::dist::run(&[])?;
    let mut cmd = Command::new(env!("CARGO"));
    // The Slurm tests talk to this cluster and to no other.
    cmd.args(["test", "--workspace", "--features", TEST_FEATURES])
        .args(extra)
        .env("SLURM_CONF", &slurm_conf)
        .env(crate::slurm::EXISTING_ENV, &slurm_conf);
    eprintln!(
        "$ cargo test --workspace --features {TEST_FEATURES} {}",
        extra.join(" ")
    );
    // Pass the output through as it comes, and tally the per-binary results, so the run closes
    // on one line for the whole suite rather than on the last binary's (often doc tests: 0).
    let mut child = cmd
        .current_dir(tasks::root())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let mut tally = Tally::default();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        tally.add(&line);
    }
    let status = child.wait()?;
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    if tally.passed == 0 {
        bail!("cargo test ran no test");
    }
    if extra.is_empty() {
        check_everything_ran(tally.passed)?;
    }
    Ok(())
}

/// Every test the suite holds passed (none was left out), and the feature-gated ones are among
/// them: a test behind a feature that did not run would otherwise go unnoticed.
fn check_everything_ran(passed: u64) -> Result<()> {
    let out = Command::new(env!("CARGO"))
        .args([
            "test",
            "--workspace",
            "--features",
            TEST_FEATURES,
            "--",
            "--list",
        ])
        .current_dir(tasks::root())
        .stderr(Stdio::null())
        .output()
        .context("could not list the tests")?;
    if !out.status.success() {
        bail!("cargo test -- --list failed ({})", out.status);
    }
    let listed = Listed::from(&*String::from_utf8_lossy(&out.stdout));
    println!(
        "tests behind features: {}",
        FEATURE_MODULES
            .iter()
            .zip(&listed.per_module)
            .map(|(m, n)| format!("{n} {}", m.trim_end_matches(':')))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some((module, _)) = FEATURE_MODULES
        .iter()
        .zip(&listed.per_module)
        .find(|(_, n)| **n == 0)
    {
        bail!("no test of module `{module}` is in the suite: were its features turned off?");
    }
    if passed != listed.total {
        bail!(
            "{} tests are in the suite but {passed} passed",
            listed.total
        );
    }
    Ok(())
}

/// What `cargo test -- --list` prints: `NAME: test` per test (doc tests included).
#[derive(Debug, Default, PartialEq, Eq)]
struct Listed {
    total: u64,
    per_module: [u64; FEATURE_MODULES.len()],
}

impl From<&str> for Listed {
    fn from(text: &str) -> Self {
        let mut listed = Listed::default();
        for name in text.lines().filter_map(|l| l.strip_suffix(": test")) {
            listed.total += 1;
            for (module, n) in FEATURE_MODULES.iter().zip(&mut listed.per_module) {
                if name.starts_with(module) || name.contains(&format!("::{module}")) {
                    *n += 1;
                }
            }
        }
        listed
    }
}

#[derive(Debug, Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Count a libtest line `test result: ok. 40 passed; 0 failed; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            if let (Some(kind), Some(n)) = (words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match kind {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_libtest_result_lines() {
        let mut t = Tally::default();
        t.add("test result: ok. 40 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.34s");
        t.add("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 5 tests");
        assert_eq!((t.passed, t.failed), (43, 2));
    }

    #[test]
    fn counts_listed_tests_and_those_behind_features() {
        let listed = Listed::from(
            "slurm::a_step_runs: test\nmap::chunks: test\ntests::slurm::nested: test\n\
             browser::the_index_works: test\nsrc/lib.rs - (line 7): test\n\
             3 tests, 0 benchmarks\nreal_uvx_like: test\n",
        );
        assert_eq!(listed.total, 6);
        assert_eq!(listed.per_module, [2, 1, 0, 0, 0]);
    }
}
