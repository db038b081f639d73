//! export-nb's scenario: a folder of notebooks, warm, with an empty uv cache and unchanged,
//! against marimushka.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{Bench, cores};
use crate::bench::anchors::MARIMUSHKA;
use crate::bench::measure::{Figure, Sample, measure, wall};
use crate::bench::report::Scenario;

impl Bench {
    /// 5. export-nb against marimushka on the bundled notebooks, same workers: a full export
    ///    with a warm uv cache (each tool warmed up first), a full export with an empty uv cache
    ///    per run (`UV_CACHE_DIR`, so export-nb's environments and marimushka's sandboxes start
    ///    from nothing), and an unchanged re-run. CPU seconds per notebook for both, and the
    ///    pages compared.
    pub(crate) fn export(&mut self) -> Result<()> {
        eprintln!("notebook export (export-nb vs marimushka)");
        crate::tasks::ensure_uv()?;
        let dir = self.dir("export")?;
        let notebooks = dir.join("notebooks");
        copy_notebooks(&self.notebooks, &notebooks)?;
        let run = Export {
            count: std::fs::read_dir(&notebooks)?.count(),
            j: cores(),
            ours: self.bin.join("export-nb"),
            cold_caches: self.dir("export-cold-caches")?,
            notebooks,
            dir,
        };
        let (count, j) = (run.count, run.j);
        let warm = measure(
            &format!("export-nb: {count} notebooks, -j{j}, --force, warm"),
            self.plan(true),
            || run.ours(true, None),
        )?;
        let cold = measure(
            &format!("export-nb: {count} notebooks, -j{j}, empty uv cache"),
            self.plan(false),
            || run.ours(true, Some(&run.fresh_cache()?)),
        )?;
        let rerun = measure("export-nb: unchanged re-run", self.plan(true), || {
            run.ours(false, None)
        })?;
        let mut rows = [
            Self::row(
                "export",
                format!("export {count} notebooks -j{j}, warm uv cache"),
                format!("export-nb -j {j} --force (sandbox)"),
                &warm,
                (count, j),
            ),
            Self::row(
                "export",
                format!("export {count} notebooks -j{j}, empty uv cache"),
                format!("export-nb -j {j} --force (sandbox), empty UV_CACHE_DIR and env dir"),
                &cold,
                (count, j),
            ),
            Self::row(
                "export",
                format!("export {count} notebooks, unchanged re-run"),
                format!("export-nb -j {j}"),
                &rerun,
                (count, j),
            ),
        ];
        self.export_anchor(&run, [&warm, &cold], &mut rows)?;
        let _ = std::fs::remove_dir_all(&run.cold_caches);
        self.scenarios.extend(rows);
        Ok(())
    }

    /// marimushka's warm and cold figures as the anchor of `rows` (warm, cold, re-run: it has
    /// no incremental mode, so its re-run is its warm full export), or why it was skipped.
    fn export_anchor(
        &self,
        run: &Export,
        [warm, cold]: [&Figure; 2],
        [warm_row, cold_row, rerun_row]: &mut [Scenario; 3],
    ) -> Result<()> {
        let availability = self
            .anchors
            .marimushka
            .clone()
            .unwrap_or_else(|| Err("not looked for".to_owned()));
        let name = format!("marimushka -w {}", run.j);
        if let Err(why) = &availability {
            eprintln!("  {name:<48} skipped: {why}");
            warm_row.note = Some(run.cpu_note(warm, None));
            cold_row.note = Some(run.cpu_note(cold, None));
            for row in [warm_row, cold_row, rerun_row] {
                row.skip_anchor(&name, why);
            }
            return Ok(());
        }
        let theirs_warm = measure(&format!("{name}, warm"), self.plan(true), || {
            run.marimushka(None)
        })?;
        let theirs_cold = measure(&format!("{name}, empty uv cache"), self.plan(false), || {
            run.marimushka(Some(&run.fresh_cache()?))
        })?;
        warm_row.set_anchor(&name, theirs_warm.seconds, theirs_warm.runs.clone());
        warm_row.note = Some(format!(
            "{}; {}",
            run.cpu_note(warm, Some(&theirs_warm)),
            compare_pages(
                &run.dir.join("nb_site"),
                &run.dir.join("mm_site"),
                &run.notebooks
            )
        ));
        cold_row.set_anchor(&name, theirs_cold.seconds, theirs_cold.runs.clone());
        cold_row.note = Some(run.cpu_note(cold, Some(&theirs_cold)));
        rerun_row.set_anchor(&name, theirs_warm.seconds, theirs_warm.runs);
        rerun_row.note = Some(
            "marimushka has no incremental mode: its re-run exports everything again (its \
             figure is the warm full export)"
                .to_owned(),
        );
        Ok(())
    }
}

/// The export scenario's folder, notebooks and commands.
struct Export {
    dir: PathBuf,
    notebooks: PathBuf,
    count: usize,
    j: usize,
    /// export-nb.
    ours: PathBuf,
    /// Where the empty uv caches of cold runs are made (removed at the end).
    cold_caches: PathBuf,
}

impl Export {
    /// An empty uv cache for one cold run.
    fn fresh_cache(&self) -> Result<PathBuf> {
        Ok(tempfile::Builder::new()
            .prefix("uv-cache-")
            .tempdir_in(&self.cold_caches)?
            .keep())
    }

    /// One export by export-nb; with `cache`, its uv cache and environments start there.
    fn ours(&self, force: bool, cache: Option<&Path>) -> Result<Sample> {
        let mut cmd = Command::new(&self.ours);
        cmd.args([
            "notebooks",
            "-o",
            "nb_site",
            "-q",
            "-j",
            &self.j.to_string(),
        ])
        .current_dir(&self.dir);
        if force {
            cmd.arg("--force");
        }
        if let Some(c) = cache {
            cmd.env("UV_CACHE_DIR", c.join("uv"))
                .env("EXPORT_NB_ENV_DIR", c.join("envs"));
        }
        wall(&mut cmd)
    }

    /// One export by marimushka with as many workers.
    fn marimushka(&self, cache: Option<&Path>) -> Result<Sample> {
        let mut cmd = Command::new("uvx");
        cmd.args([
            MARIMUSHKA,
            "export",
            "-n",
            "notebooks",
            "-o",
            "mm_site",
            "-w",
        ])
        .arg(self.j.to_string())
        .current_dir(&self.dir);
        if let Some(c) = cache {
            cmd.env("UV_CACHE_DIR", c.join("uv"));
        }
        wall(&mut cmd)
    }

    /// CPU seconds per notebook, ours and marimushka's.
    fn cpu_note(&self, ours: &Figure, theirs: Option<&Figure>) -> String {
        let per_notebook = |f: &Figure| f.cpu_seconds.map(|c| c / self.count as f64);
        let fmt = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |c| format!("{c:.2} s"));
        format!(
            "CPU per notebook: ours {}, marimushka {}",
            fmt(per_notebook(ours)),
            fmt(theirs.and_then(per_notebook))
        )
    }
}

/// The bundled notebooks (the `.py` files only: not marimo's caches).
/// The two sites' pages, compared: the same notebooks exported, and each page carrying its
/// cells' outputs (marimo embeds them in the page; a page without them renders blank cells).
fn compare_pages(ours: &Path, theirs: &Path, notebooks: &Path) -> String {
    let mut both = 0;
    let mut differ = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(notebooks)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let p = e.path();
                    if p.extension()? != "py" {
                        return None;
                    }
                    Some(p.file_stem()?.to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for name in &names {
        let page =
            |site: &Path| std::fs::read_to_string(site.join(format!("notebooks/{name}.html")));
        match (page(ours), page(theirs)) {
            (Ok(a), Ok(b)) => {
                // marimo embeds each cell's outputs as `"outputs": [{"data": {MIME: ...}}]`:
                // count the cells with outputs, and the rich (markdown, HTML) ones.
                let outputs = |html: &str| {
                    (
                        html.matches("\"outputs\": [{\"data\"").count(),
                        html.matches("\"text/markdown\"").count()
                            + html.matches("\"text/html\"").count(),
                    )
                };
                let (ours, theirs) = (outputs(&a), outputs(&b));
                if ours.0 > 0 && ours == theirs {
                    both += 1;
                } else {
                    differ.push(format!(
                        "{name} ({}/{} vs {}/{} outputs/rich)",
                        ours.0, ours.1, theirs.0, theirs.1
                    ));
                }
            }
            _ => differ.push(format!("{name} (missing)")),
        }
    }
    if differ.is_empty() {
        format!(
            "pages: {both} of {} in both sites, the same cells with outputs in each",
            names.len()
        )
    } else {
        format!("pages differ: {}", differ.join(", "))
    }
}

fn copy_notebooks(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, to.join(path.file_name().expect("a file name")))?;
        }
    }
    Ok(())
}
