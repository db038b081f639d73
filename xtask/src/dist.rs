//! `cargo xtask dist`: what users install, for this machine's target, into `target/dist/`:
//!
//! - a Python wheel per tool (maturin, `bindings = "bin"`: the binary as a script, as ruff and
//!   uv ship), linked with zig against glibc 2.28 so the `manylinux_2_28` tag is true (RHEL 8,
//!   the common HPC base; the build machine's own glibc is newer);
//! - an archive per tool, `TOOL-VERSION-TARGET.tar.gz`: the same binary, shell completions
//!   (bash, zsh, fish), the man pages, the README and the licences;
//! - `SHA256SUMS` over everything there.
//!
//! The binaries are built once, with the `dist` profile (fat LTO, one codegen unit, stripped),
//! in `target/<target>/dist/`; the wheels and the archives carry the same files. maturin and
//! zig come from PyPI through `uvx` (the `ziglang` package), so a machine with uv needs nothing
//! else installed.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use sha2::{Digest, Sha256};

use crate::tasks;

pub(crate) const USAGE: &str = "\
Usage: cargo xtask dist

Build the wheels (one per tool), the release archives and SHA256SUMS into target/dist/, for
this machine's target, with the dist profile. Needs uv (installed with pip if missing): maturin
and zig come from PyPI.";

/// The glibc the binaries are linked against, and the wheels' platform tag.
pub(crate) const GLIBC: &str = "2.28";

/// A tool as it is shipped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    /// The crate's folder, which holds its `pyproject.toml`.
    pub(crate) dir: &'static str,
    /// The command it installs.
    pub(crate) bin: &'static str,
    /// The distribution's name on PyPI (`export-nb` is another project's there).
    pub(crate) dist: &'static str,
    command: fn() -> clap::Command,
}

pub(crate) const TOOLS: [Tool; 3] = [
    Tool {
        dir: "crates/export-cli",
        bin: "export-nb",
        dist: "fanout-export-nb",
        command: export_nb::cli::Cli::command,
    },
    Tool {
        dir: "crates/pipeline-cli",
        bin: "lorchestra",
        dist: "lorchestra",
        command: lorchestra::cli::Cli::command,
    },
    Tool {
        dir: "crates/experiment-cli",
        bin: "parallamr",
        dist: "parallamr",
        command: parallamr::cli::Cli::command,
    },
];

pub(crate) fn run(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        eprintln!("{USAGE}");
        if args.iter().any(|a| a == "-h" || a == "--help") {
            return Ok(());
        }
        bail!("cargo xtask dist takes no arguments");
    }
    tasks::ensure_uv()?;
    let root = tasks::root();
    let out = root.join("target/dist");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let target = host_target()?;
    let version = env!("CARGO_PKG_VERSION");
    for tool in TOOLS {
        wheel(&root, &out, tool, &target)?;
    }
    for tool in TOOLS {
        let binary = root
            .join("target")
            .join(&target)
            .join("dist")
            .join(tool.bin);
        archive(&root, &out, tool, &binary, version, &target)?;
    }
    checksums(&out)?;
    for entry in list(&out)? {
        let size = std::fs::metadata(&entry)?.len();
        eprintln!(
            "  {:<60} {:>6.1} MB",
            entry.file_name().unwrap_or_default().to_string_lossy(),
            size as f64 / 1e6
        );
    }
    eprintln!(
        "xtask: dist in {}; to try a wheel from there:",
        out.display()
    );
    for tool in TOOLS {
        eprintln!(
            "  uvx --no-index --find-links {} --from {} {} --help",
            out.display(),
            tool.dist,
            tool.bin
        );
    }
    Ok(())
}

/// This machine's target triple (`rustc -vV`'s host).
pub(crate) fn host_target() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

/// maturin, through uvx, builds the tool's binary with zig against glibc 2.28 and packs it.
fn wheel(root: &Path, out: &Path, tool: Tool, target: &str) -> Result<()> {
    let mut cmd = Command::new("uvx");
    cmd.args([
        "--from",
        "maturin>=1.9,<2",
        "--with",
        "ziglang<0.15",
        "maturin",
        "build",
        "--zig",
        "--compatibility",
        &format!("manylinux_{}", GLIBC.replace('.', "_")),
        "--target",
        target,
        "--profile",
        "dist",
        "--out",
    ])
    .arg(out)
    .arg("--manifest-path")
    .arg(root.join(tool.dir).join("Cargo.toml"));
    tasks::run(&mut cmd).with_context(|| format!("building the wheel of {}", tool.bin))
}

/// `TOOL-VERSION-TARGET.tar.gz`: the binary, completions, man pages, README, licences, in a
/// folder of the same name; file times and owners fixed, so the same binary gives the same
/// archive.
fn archive(
    root: &Path,
    out: &Path,
    tool: Tool,
    binary: &Path,
    version: &str,
    target: &str,
) -> Result<()> {
    let name = format!("{}-{version}-{target}", tool.bin);
    let staging = root.join("target/dist-staging");
    let dir = staging.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    for sub in ["completions", "man"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy(binary, dir.join(tool.bin))
        .with_context(|| format!("copying {}", binary.display()))?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, format!("{}.bash", tool.bin)),
        (clap_complete::Shell::Zsh, format!("_{}", tool.bin)),
        (clap_complete::Shell::Fish, format!("{}.fish", tool.bin)),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut (tool.command)(), tool.bin, &mut script);
        std::fs::write(dir.join("completions").join(file), script)?;
    }
    clap_mangen::generate_to((tool.command)(), dir.join("man"))
        .with_context(|| format!("the man pages of {}", tool.bin))?;
    std::fs::copy(root.join(tool.dir).join("README.md"), dir.join("README.md"))?;
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        std::fs::copy(root.join(licence), dir.join(licence))?;
    }
    let tarball = out.join(format!("{name}.tar.gz"));
    let tar = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-cf",
            "-",
        ])
        .arg(&name)
        .current_dir(&staging)
        .output()
        .context("running tar")?;
    if !tar.status.success() {
        bail!("tar failed: {}", String::from_utf8_lossy(&tar.stderr));
    }
    let file = std::fs::File::create(&tarball)?;
    let mut gz = Command::new("gzip")
        .args(["-n", "-9"])
        .stdin(std::process::Stdio::piped())
        .stdout(file)
        .spawn()
        .context("running gzip")?;
    gz.stdin
        .take()
        .expect("piped")
        .write_all(&tar.stdout)
        .context("compressing the archive")?;
    if !gz.wait()?.success() {
        bail!("gzip failed for {}", tarball.display());
    }
    Ok(())
}

/// `SHA256SUMS` over every file of `out`, as `sha256sum -c` reads it.
fn checksums(out: &Path) -> Result<()> {
    let mut sums = String::new();
    for path in list(out)? {
        let bytes = std::fs::read(&path)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        for b in Sha256::digest(&bytes) {
            let _ = write!(sums, "{b:02x}");
        }
        let _ = writeln!(sums, "  {name}");
    }
    std::fs::write(out.join("SHA256SUMS"), sums).context("writing SHA256SUMS")
}

/// The files of `out`, sorted (not `SHA256SUMS`).
fn list(out: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !p.ends_with("SHA256SUMS"))
        .collect();
    files.sort();
    Ok(files)
}
