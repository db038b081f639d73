//! What `--version` says besides the version: the git commit and its date, and the target, so
//! a bug report names what ran (as `uv --version` and `rg --version` do). Read from git when the
//! source is a checkout, else from `FANOUT_COMMIT` / `SOURCE_DATE_EPOCH`, else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    #[expect(
        clippy::disallowed_methods,
        reason = "a build script runs git, not a job"
    )]
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = std::env::var("FANOUT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=9", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // The commit's date, not the build's: the same source gives the same binary.
    let date = git(&["log", "-1", "--format=%cs"])
        .or_else(|| {
            let secs: i64 = std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok()?;
            Some(civil_date(secs))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=FANOUT_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=FANOUT_BUILD_DATE={date}");
    println!("cargo:rustc-env=FANOUT_BUILD_TARGET={target}");
    println!("cargo:rerun-if-env-changed=FANOUT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit: HEAD moves, or the branch it names does.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{reference}");
        }
    }
}

/// `YYYY-MM-DD` of a Unix time (days to civil date, Howard Hinnant's algorithm).
fn civil_date(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
