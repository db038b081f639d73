//! The wheels and archives in `target/dist`, installed and run as a new user would: with uv,
//! with pip, with uvx; checked with auditwheel and objdump; the archives' contents and sums;
//! and `docs/github-pages.md`'s shell steps run against the local wheel.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// (distribution, command) of each tool.
const TOOLS: [(&str, &str); 3] = [
    ("fanout-export-nb", "export-nb"),
    ("lorchestra", "lorchestra"),
    ("parallamr", "parallamr"),
];

/// The glibc the wheels promise (their `manylinux_2_28` tag).
const GLIBC: (u32, u32) = (2, 28);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// `target/dist`, which `cargo xtask dist` writes.
fn dist() -> PathBuf {
    let dir = root().join("target/dist");
    assert!(
        dir.join("SHA256SUMS").is_file(),
        "{} has no build: run `cargo xtask dist` first (`cargo xtask test` does)",
        dir.display()
    );
    dir
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// Run `cmd`; its output, or a panic with both streams.
fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `(2, 28)` from the start of `2.28)` (after `GLIBC_`) or `2_28_x86_64` (after
/// `manylinux_`).
fn version(s: &str) -> (u32, u32) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let mut parts = s[..end]
        .split(['.', '_'])
        .filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The wheel of distribution `dist` (its name normalized as wheels spell it).
fn wheel(dir: &Path, dist: &str) -> PathBuf {
    let prefix = format!("{}-", dist.replace('-', "_"));
    files(dir, ".whl")
        .into_iter()
        .find(|w| {
            w.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .unwrap_or_else(|| panic!("no wheel of {dist} in {}", dir.display()))
}

#[test]
fn each_wheel_is_manylinux_2_28_or_older_small_and_needs_no_newer_glibc() {
    let dir = dist();
    assert_eq!(files(&dir, ".whl").len(), 3, "a wheel per tool");
    let unpacked = tempfile::tempdir().unwrap();
    for (name, bin) in TOOLS {
        let whl = wheel(&dir, name);
        let file = whl.file_name().unwrap().to_string_lossy().into_owned();
        assert!(file.contains("-py3-none-manylinux_2_28_"), "{file}");
        let size = std::fs::metadata(&whl).unwrap().len();
        assert!(size <= 6_000_000, "{file}: {size} bytes, more than 6 MB");

        // auditwheel: the tag the binary is consistent with is 2.28 or older.
        let shown = text(&ok(Command::new("uvx")
            .args(["--from", "auditwheel", "auditwheel", "show"])
            .arg(&whl)));
        // It wraps its lines.
        let shown = shown.split_whitespace().collect::<Vec<_>>().join(" ");
        let tag = shown
            .split("consistent with the following platform tag:")
            .nth(1)
            .and_then(|rest| rest.split('"').nth(1))
            .unwrap_or_else(|| panic!("auditwheel show {file}:\n{shown}"));
        assert!(tag.starts_with("manylinux_"), "{file}: {tag}");
        assert!(
            version(&tag["manylinux_".len()..]) <= GLIBC,
            "{file}: {tag}"
        );
        assert!(
            version(&tag["manylinux_".len()..]) >= (2, 17),
            "{file}: {tag}"
        );

        // objdump: no GLIBC symbol version newer than 2.28.
        let into = unpacked.path().join(bin);
        ok(Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&whl)
            .arg(&into));
        let exe = walk(&into)
            .into_iter()
            .find(|p| p.ends_with(format!("scripts/{bin}")))
            .unwrap_or_else(|| panic!("{file} holds no scripts/{bin}"));
        let symbols = text(&ok(Command::new("objdump").arg("-T").arg(&exe)));
        let newest = symbols
            .split("GLIBC_")
            .skip(1)
            .map(|s| version(s.split_whitespace().next().unwrap_or("")))
            .max()
            .unwrap();
        assert!(
            newest <= GLIBC,
            "{bin} needs GLIBC_{}.{}: newer than the tag",
            newest.0,
            newest.1
        );
        eprintln!(
            "{file}: {size} bytes, auditwheel {tag}, newest GLIBC_{}.{}",
            newest.0, newest.1
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_archives_hold_the_binary_completions_man_pages_readme_and_licences_and_the_sums_check() {
    let dir = dist();
    ok(Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&dir));
    let archives = files(&dir, ".tar.gz");
    assert_eq!(archives.len(), 3, "an archive per tool");
    for (_, bin) in TOOLS {
        let archive = archives
            .iter()
            .find(|a| {
                a.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{bin}-"))
            })
            .unwrap_or_else(|| panic!("no archive of {bin}"));
        let name = archive.file_name().unwrap().to_string_lossy().into_owned();
        let top = name.trim_end_matches(".tar.gz");
        assert!(top.contains("-linux-"), "TOOL-VERSION-TARGET: {name}");
        let listing = text(&ok(Command::new("tar").arg("tzf").arg(archive)));
        for entry in [
            bin.to_owned(),
            format!("completions/{bin}.bash"),
            format!("completions/_{bin}"),
            format!("completions/{bin}.fish"),
            format!("man/{bin}.1"),
            "README.md".to_owned(),
            "LICENSE-MIT".to_owned(),
            "LICENSE-APACHE".to_owned(),
        ] {
            assert!(
                listing.lines().any(|l| l == format!("{top}/{entry}")),
                "{name} lacks {entry}:\n{listing}"
            );
        }
    }
}

#[test]
fn the_wheels_install_with_uv_and_pip_and_the_installed_export_nb_exports_the_bundled_notebooks() {
    let dir = dist();
    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join("uv-venv");
    ok(Command::new("uv").args(["venv", "-q"]).arg(&venv));
    let mut install = Command::new("uv");
    install
        .args(["pip", "install", "-q", "--no-index", "--find-links"])
        .arg(&dir)
        .arg("--python")
        .arg(venv.join("bin/python"));
    for (name, _) in TOOLS {
        install.arg(name);
    }
    ok(&mut install);
    for (_, bin) in TOOLS {
        let exe = venv.join("bin").join(bin);
        let v = text(&ok(Command::new(&exe).arg("--version")));
        assert!(
            v.starts_with(&format!("{bin} {} (", env!("CARGO_PKG_VERSION")))
                && v.contains("-linux-"),
            "{v}"
        );
        assert!(text(&ok(Command::new(&exe).arg("--help"))).contains(&format!("Usage: {bin}")));
    }
    // The installed export-nb, with the real uv and marimo, on the bundled notebooks.
    let site = tmp.path().join("site");
    let out = ok(Command::new(venv.join("bin/export-nb"))
        .arg(root().join("crates/export-cli/examples/notebooks"))
        .arg("-o")
        .arg(&site)
        .args(["--no-progress", "-j", "2"]));
    let pages = files(&site.join("notebooks"), ".html");
    assert_eq!(pages.len(), 8, "{}", text(&out));
    assert!(site.join("index.html").is_file());

    // uvx, from the local folder only.
    let help = ok(Command::new("uvx")
        .args(["--no-index", "--find-links"])
        .arg(&dir)
        .args(["--from", "fanout-export-nb", "export-nb", "--help"]));
    assert!(text(&help).contains("Usage: export-nb"));

    // pip, into a plain venv.
    let plain = tmp.path().join("pip-venv");
    ok(Command::new("python3").args(["-m", "venv"]).arg(&plain));
    let mut pip = Command::new(plain.join("bin/python"));
    pip.args(["-m", "pip", "install", "-q", "--no-index", "--find-links"])
        .arg(&dir);
    for (name, _) in TOOLS {
        pip.arg(name);
    }
    ok(&mut pip);
    for (_, bin) in TOOLS {
        let v = text(&ok(
            Command::new(plain.join("bin").join(bin)).arg("--version")
        ));
        assert!(v.starts_with(&format!("{bin} ")), "{v}");
    }
}

/// `docs/github-pages.md` holds a workflow; its `run:` steps run here, in a fresh folder with
/// the bundled notebooks, `uvx` finding the wheel in `target/dist` (as it finds it on PyPI).
#[test]
fn the_github_pages_recipe_runs() {
    let dir = dist();
    let recipe = std::fs::read_to_string(root().join("docs/github-pages.md")).unwrap();
    let steps = run_steps(&recipe);
    assert!(
        steps.iter().any(|s| s.contains("export-nb")),
        "the recipe exports: {steps:?}"
    );
    let work = tempfile::tempdir().unwrap();
    let notebooks = work.path().join("notebooks");
    std::fs::create_dir(&notebooks).unwrap();
    for nb in files(&root().join("crates/export-cli/examples/notebooks"), ".py") {
        std::fs::copy(&nb, notebooks.join(nb.file_name().unwrap())).unwrap();
    }
    for step in &steps {
        ok(Command::new("bash")
            .args(["-euo", "pipefail", "-c", step])
            .current_dir(work.path())
            .env("UV_FIND_LINKS", &dir));
    }
    assert_eq!(
        files(&work.path().join("_site/notebooks"), ".html").len(),
        8
    );
    assert!(work.path().join("_site/index.html").is_file());
}

/// The shell of each `run:` step of the YAML in `text`: `run: cmd`, or `run: |` and the lines
/// indented below it.
fn run_steps(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let body = trimmed
            .strip_prefix("- run:")
            .or_else(|| trimmed.strip_prefix("run:"))
            .map(str::trim);
        i += 1;
        match body {
            Some("|") => {
                let mut block = Vec::new();
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() > indent)
                {
                    block.push(lines[i].trim());
                    i += 1;
                }
                steps.push(block.join("\n"));
            }
            Some(cmd) if !cmd.is_empty() => steps.push(cmd.to_owned()),
            _ => {}
        }
    }
    steps
}
