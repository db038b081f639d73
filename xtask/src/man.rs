//! `cargo xtask man [--out DIR]`: man pages of the three tools and their subcommands, generated
//! from their clap definitions (`clap_mangen`), so they say what `--help` says.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::CommandFactory;

use crate::tasks;

pub(crate) fn run(args: &[String]) -> Result<()> {
    let out = match args {
        [] => tasks::root().join("target/man"),
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        _ => bail!("usage: cargo xtask man [--out DIR]"),
    };
    let pages = generate(&out)?;
    eprintln!(
        "xtask: {} man pages in {} (read one: man -l {})",
        pages.len(),
        out.display(),
        out.join("export-nb.1").display()
    );
    Ok(())
}

/// Write `NAME.1` for each tool and `NAME-SUBCOMMAND.1` for each subcommand into `out`;
/// returns their paths.
pub(crate) fn generate(out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for cmd in [
        export_nb::cli::Cli::command(),
        lorchestra::cli::Cli::command(),
        parallamr::cli::Cli::command(),
    ] {
        let name = cmd.get_name().to_owned();
        clap_mangen::generate_to(cmd, out)
            .with_context(|| format!("writing the man pages of {name} into {}", out.display()))?;
    }
    let mut pages: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_and_subcommand_gets_a_page_with_the_shared_flags() {
        let dir = tempfile::tempdir().unwrap();
        let pages = generate(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "export-nb.1",
            "lorchestra.1",
            "lorchestra-pipeline.1",
            "parallamr.1",
            "parallamr-run.1",
            "parallamr-completions.1",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
        }
        let page = std::fs::read_to_string(dir.path().join("lorchestra-pipeline.1")).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(page.contains("max\\-workers"), "{page}");
    }
}
