//! The output folder's memory of what it holds: `<out>/.export-nb/manifest.json`.
//!
//! For each page, a key hashing everything the page depends on: the notebook's bytes, the export
//! format and flags, the marimo version pin, where the page loads marimo's frontend from, and
//! the local modules it imports (see `imports`). Each entry also keeps the notebook's own hash
//! and its modules' hashes, to say why a page is exported again. A notebook whose key matches and whose page
//! exists is up to date and is not exported again. Pages the manifest knows but no current
//! notebook produces belong to deleted notebooks and are removed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::discover::Found;
use crate::site::{DIR, STATE_DIR, hex, is_complete, is_plain_name, page_inside};

/// Bumped when the key's recipe changes, so old manifests simply miss.
const FORMAT: u32 = 4;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    /// Hash of the index template in use (the index is re-rendered on every run regardless).
    pub(crate) template: Option<String>,
    /// Page (relative to the output folder) → what produced it.
    pub(crate) pages: BTreeMap<PathBuf, Entry>,
    /// The marimo versions whose frontend export-nb copied into `_marimo/` (`--assets local`);
    /// those no page uses any more are removed.
    #[serde(default)]
    pub(crate) frontends: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) source: PathBuf,
    pub(crate) key: String,
    /// SHA-256 of the notebook (hex), to tell a changed notebook from changed settings.
    #[serde(default)]
    pub(crate) content: String,
    /// Its local modules with their hashes, when it was exported (see `imports`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) modules: BTreeMap<PathBuf, String>,
    /// Its last export failed: it is exported again, and says why.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) failed: bool,
    /// The page in the site is one whose cells raised, published with `--keep-failed-pages`:
    /// removed when a later export of it fails without publishing one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) cell_errors: bool,
    /// The marimo version of the frontend in `_marimo/` the page loads, if it loads one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) frontend: Option<String>,
    /// The frontend copy a WebAssembly export put beside the page (`--assets cdn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) beside: Vec<PathBuf>,
}

impl Manifest {
    pub(crate) fn path(output: &Path) -> PathBuf {
        output.join(STATE_DIR).join("manifest.json")
    }

    /// The manifest in `output`, or an empty one if there is none or it is unreadable (then
    /// everything is exported again, which is always correct).
    pub(crate) fn load(output: &Path) -> Self {
        std::fs::read(Self::path(output))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
            .filter(|m| m.format == FORMAT)
            .unwrap_or_else(|| Manifest {
                format: FORMAT,
                ..Manifest::default()
            })
    }

    pub(crate) fn save(&self, output: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).expect("manifests serialize");
        json.push(b'\n');
        fanout::fsutil::write_atomic(&Self::path(output), &json)?;
        Ok(())
    }

    /// Remove the pages of notebooks that are gone: every page not in `current`, from the
    /// output folder and from the manifest.
    pub(crate) fn remove_pages_except(&mut self, current: &HashSet<&Path>, output: &Path) {
        let gone: Vec<PathBuf> = self
            .pages
            .keys()
            .filter(|p| !current.contains(p.as_path()))
            .cloned()
            .collect();
        for page in gone {
            // The manifest is input: an output folder restored from a cache or an artifact may
            // carry any key. Only a page inside the output folder is ever removed.
            match page_inside(output, &page) {
                Some(path) => {
                    let _ = std::fs::remove_file(&path);
                    crate::preview::remove_images_of(&path);
                }
                None => eprintln!(
                    "export-nb: warning: {} names {} as a page; it is not a page inside {}, so \
                     it is left alone and forgotten",
                    Self::path(output).display(),
                    page.display(),
                    output.display()
                ),
            }
            self.pages.remove(&page);
        }
    }

    /// Why `found`'s page must be exported (its key is `key`), or `None` when it is current:
    /// same key, and the page still there, with the frontend it loads from the site.
    pub(crate) fn why_export(
        &self,
        found: &Found,
        key: &str,
        output: &Path,
        thumbnails: bool,
    ) -> Option<Reason> {
        let Some(entry) = self.pages.get(&found.page) else {
            return Some(Reason::New);
        };
        if entry.content != hex(&found.content_hash) {
            return Some(Reason::Changed);
        }
        if entry.modules != found.modules {
            return Some(Reason::ModulesChanged(changed_modules(
                &entry.modules,
                &found.modules,
            )));
        }
        if entry.failed {
            return Some(Reason::FailedLastTime);
        }
        if entry.key != key {
            return Some(Reason::SettingsChanged);
        }
        let frontend_there = entry
            .frontend
            .as_deref()
            .is_none_or(|v| is_plain_name(v) && is_complete(&output.join(DIR).join(v)));
        if !frontend_there || !output.join(&found.page).is_file() {
            return Some(Reason::Missing);
        }
        if thumbnails
            && found.meta.image.is_none()
            && !output.join(crate::site::thumb_path(&found.page)).is_file()
        {
            return Some(Reason::NoThumbnail);
        }
        None
    }

    /// Everything some page has beside it.
    pub(crate) fn beside(&self) -> BTreeSet<PathBuf> {
        self.pages
            .values()
            .flat_map(|e| e.beside.iter().cloned())
            .collect()
    }

    /// The frontend versions some page uses.
    pub(crate) fn referenced_frontends(&self) -> BTreeSet<String> {
        self.pages
            .values()
            .filter_map(|e| e.frontend.clone())
            .collect()
    }
}

/// Why a notebook is exported in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    New,
    Forced,
    Changed,
    /// These local modules changed, appeared or went (relative to the notebook's folder).
    ModulesChanged(Vec<PathBuf>),
    SettingsChanged,
    FailedLastTime,
    /// Its page, or the frontend in the site it loads, is gone.
    Missing,
    /// `--thumbnails`: its page has no photograph (the last one failed, or it was never taken).
    NoThumbnail,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::New => f.write_str("new"),
            Reason::Forced => f.write_str("forced (--force)"),
            Reason::Changed => f.write_str("changed"),
            Reason::ModulesChanged(modules) => {
                let names: Vec<String> = modules.iter().map(|m| m.display().to_string()).collect();
                let noun = if names.len() == 1 {
                    "module"
                } else {
                    "modules"
                };
                write!(f, "its local {noun} {} changed", names.join(", "))
            }
            Reason::SettingsChanged => f.write_str("marimo version or export settings changed"),
            Reason::FailedLastTime => f.write_str("failed last time"),
            Reason::Missing => f.write_str("its page or its frontend is missing"),
            Reason::NoThumbnail => f.write_str("its page has no thumbnail yet (--thumbnails)"),
        }
    }
}

/// The key of a notebook's page under these settings.
pub(crate) fn key(found: &Found, settings: &Settings) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT.to_le_bytes());
    for arg in found.category.export_args() {
        h.update(arg.as_bytes());
        h.update([0]);
    }
    h.update([u8::from(settings.sandbox)]);
    h.update(settings.marimo_version.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(settings.assets.name().as_bytes());
    h.update([0]);
    h.update(&found.content_hash);
    // A page's link previews name its URL and picture (a photograph with --thumbnails).
    h.update(settings.base_url.as_deref().unwrap_or("").as_bytes());
    h.update([0, u8::from(settings.thumbnails.is_some())]);
    match &found.meta.image {
        // Relative to the notebook's folder: the same however the folder was named.
        Some(crate::meta::Image::File(f)) => {
            let folder = found.source.parent().unwrap_or(Path::new(""));
            h.update(
                f.strip_prefix(folder)
                    .unwrap_or(f)
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        }
        Some(crate::meta::Image::Url(u)) => h.update(u.as_bytes()),
        None => {}
    }
    h.update([0]);
    for (module, hash) in &found.modules {
        h.update(module.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(hash.as_bytes());
    }
    hex(&h.finalize())
}

/// The local modules whose hash differs between `old` and `new` (added, removed or changed),
/// each once, in path order.
fn changed_modules(
    old: &BTreeMap<PathBuf, String>,
    new: &BTreeMap<PathBuf, String>,
) -> Vec<PathBuf> {
    old.keys()
        .chain(new.keys())
        .filter(|m| old.get(*m) != new.get(*m))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_changed_modules_are_each_named_once() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<PathBuf, String> {
            pairs
                .iter()
                .map(|(p, h)| (PathBuf::from(p), (*h).to_owned()))
                .collect()
        };
        let old = map(&[
            ("a.py", "1"),
            ("b.py", "1"),
            ("same.py", "1"),
            ("gone.py", "1"),
        ]);
        let new = map(&[
            ("a.py", "2"),
            ("b.py", "2"),
            ("same.py", "1"),
            ("new.py", "1"),
        ]);
        assert_eq!(
            changed_modules(&old, &new),
            ["a.py", "b.py", "gone.py", "new.py"].map(PathBuf::from)
        );
    }

    #[test]
    fn only_pages_inside_the_output_are_ours() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("site");
        std::fs::create_dir_all(out.join("notebooks")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), out.join("linked")).unwrap();
        assert!(page_inside(&out, Path::new("notebooks/a.html")).is_some());
        for bad in [
            "/etc/passwd.html",
            "../victim.html",
            "notebooks/../../victim.html",
            "notebooks/a.py",
            "linked/victim.html",
            "",
        ] {
            assert_eq!(page_inside(&out, Path::new(bad)), None, "{bad}");
        }
    }
}
