//! `cargo xtask test`: everything the test suite needs, then the suite.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::tasks;

pub(crate) fn run(extra: &[String]) -> Result<()> {
    tasks::ensure_uv()?;
    tasks::ensure_chromium()?;
    let slurm_conf = crate::slurm::ensure()?;
    let mut cmd = Command::new(env!("CARGO"));
    // The Slurm tests talk to this cluster and to no other.
    cmd.args(["test", "--workspace"])
        .args(extra)
        .env("SLURM_CONF", &slurm_conf)
        .env(crate::slurm::EXISTING_ENV, &slurm_conf);
    eprintln!("$ cargo test --workspace {}", extra.join(" "));
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
    Ok(())
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
}
