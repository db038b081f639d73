//! `cargo xtask <task>`: the project's automation, in Rust (the rust-analyzer convention).
//!
//! - `cargo xtask test`: install what the tests need, then run the whole test suite.
//! - `cargo xtask demo`: run the main job on the bundled examples.
//! - `cargo xtask dist`: the wheels and release archives users install.
//! - `cargo xtask bench`: the benchmark suite, our tools beside the anchors.
//! - `cargo xtask fuzz`: every fuzz target (a parser of user input each) for a while.
//! - `cargo xtask man`: man pages of the tools, generated from their command-line definitions.
//! - `cargo xtask screenshots`: the generated pages as a browser shows them, into docs/.
//! - `cargo xtask slurm-up` / `slurm-down`: the project's own Slurm of three nodes on this
//!   machine (each in a network namespace), for the Slurm tests.
#![expect(
    clippy::disallowed_methods,
    reason = "xtask drives cargo, pip and the built tools directly; it is not part of the product"
)]
#![expect(
    clippy::print_stderr,
    reason = "xtask is a command-line tool talking to a developer"
)]

mod bench;
mod demo;
mod dist;
mod fuzz;
mod links;
mod man;
mod screenshots;
mod slurm;
mod tasks;
mod test;

use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <task>

Tasks:
  test    install what the tests need (uv, Chromium, the Slurm test cluster), then run
          `cargo test --workspace` with the features that turn their tests on
  demo    build export-nb and export the bundled notebooks to target/demo/site
  dist    the wheels (uv, pip), release archives and SHA256SUMS users install, into
          target/dist (maturin and zig from PyPI, linked for glibc 2.28)
  bench   the benchmark suite: our tools and the anchors side by side (--help for options)
  fuzz    run every fuzz target (cargo-fuzz, nightly) for --seconds N each (default 60); fails
          on a crash (--help for options)
  man     man pages of the three tools and their subcommands, from their clap definitions,
          into target/man (--out DIR for another folder)
  screenshots  the pages export-nb, lorchestra and parallamr write, in headless Chromium, into
          docs/screenshots
  slurm-up [--nodes N]  install, configure and start the project's Slurm here (root or sudo),
          for the Slurm tests: N nodes (default 3), each slurmd in a network namespace of
          its own on a bridge (10.231.0.0/24), or with --nodes 1 this machine at 127.0.0.1;
          its own name, ports and folders (/var/lib/fanout-test-slurm), so it runs beside
          any other Slurm; cargo xtask test runs it. To run the tests on an existing
          cluster instead: FANOUT_TEST_SLURM_CONF=/path/to/its/slurm.conf
  slurm-down  stop the project's Slurm daemons, remove its namespaces and bridge (other Slurm
          installations are left alone)
  slurm-check  check slurm-up itself: down/up, idempotence, a stale state, a failing daemon,
          clients reaching only this cluster, a step on every node; ends with the cluster up (.ci/run runs it)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("dist") => dist::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("man") => man::run(&args[1..]),
        Some("screenshots") => screenshots::run(&args[1..]),
        Some("slurm-up") => slurm::up(&args[1..]),
        Some("slurm-down") => slurm::down(&args[1..]),
        Some("slurm-check") => slurm::check(&args[1..]),
        Some("-h" | "--help") | None => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("xtask: unknown task `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
