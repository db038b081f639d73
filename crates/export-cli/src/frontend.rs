//! marimo's frontend inside the site (`--assets local`).
//!
//! A page from `marimo export html` loads its whole frontend (scripts, styles, fonts: about 700
//! files) from `cdn.jsdelivr.net/npm/@marimo-team/frontend@<version>/dist/`; a WebAssembly
//! export copies the same files next to each page (`./assets/...`). The same frontend ships in
//! the marimo wheel as `marimo/_static/`. With `--assets local`, it is copied once per site and
//! marimo version into `<out>/_marimo/<version>/` (hard links where the file system allows),
//! and each page is rewritten to load it from there by a relative path, so the site works
//! without the CDN: offline, inside a closed network, and without telling a third party who
//! reads what.
//!
//! The rewrite is exact and checked: every reference to marimo's frontend, on the CDN or beside
//! the page, points into `_marimo/<version>/` afterwards, or the export fails and the page is
//! not installed.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::site::{DIR, STATE_DIR, is_complete, is_plain_name, path_inside};

/// The start of every URL of marimo's frontend on the CDN; the version and `/dist/` follow.
const CDN_PREFIX: &str = "https://cdn.jsdelivr.net/npm/@marimo-team/frontend@";

/// A frontend in the site: its marimo version and the names at its top level (`assets`,
/// `favicon.ico`, ...), which a WebAssembly page refers to as `./<name>`.
#[derive(Debug)]
pub(crate) struct Frontend {
    pub(crate) version: String,
    top_level: BTreeSet<String>,
}

type Cell = OnceLock<Result<Arc<Frontend>, String>>;

/// The frontends of one site, each put in place once per run, whoever needs it first.
#[derive(Debug)]
pub(crate) struct Frontends {
    output: PathBuf,
    cells: Mutex<HashMap<String, Arc<Cell>>>,
}

impl Frontends {
    pub(crate) fn new(output: &Path) -> Self {
        Frontends {
            output: output.to_path_buf(),
            cells: Mutex::new(HashMap::new()),
        }
    }

    /// The frontend of marimo `version`, copied from `static_dir` (the environment's
    /// `marimo/_static`) into the site unless a previous run already did.
    pub(crate) fn ensure(&self, version: &str, static_dir: &Path) -> Result<Arc<Frontend>, String> {
        let cell = Arc::clone(
            self.cells
                .lock()
                .expect("frontends lock")
                .entry(version.to_owned())
                .or_default(),
        );
        cell.get_or_init(|| self.put_in_place(version, static_dir).map(Arc::new))
            .clone()
    }

    /// The versions put in place during this run.
    pub(crate) fn versions(&self) -> Vec<String> {
        self.cells
            .lock()
            .expect("frontends lock")
            .iter()
            .filter(|(_, cell)| cell.get().is_some_and(Result::is_ok))
            .map(|(v, _)| v.clone())
            .collect()
    }

    fn put_in_place(&self, version: &str, static_dir: &Path) -> Result<Frontend, String> {
        if !is_plain_name(version) {
            return Err(format!("marimo's version {version:?} is not a folder name"));
        }
        if !static_dir.join("assets").is_dir() {
            return Err(format!(
                "marimo {version} in the notebook's environment has no frontend to copy into the \
                 site ({} is missing); export with --assets cdn, or use a marimo version whose \
                 wheel ships marimo/_static",
                static_dir.join("assets").display()
            ));
        }
        let top_level = std::fs::read_dir(static_dir)
            .map_err(|e| format!("could not read {}: {e}", static_dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            // The page marimo's server renders, not part of an exported page's frontend.
            .filter(|name| name != "index.html")
            .collect();
        let target = self.output.join(DIR).join(version);
        if !is_complete(&target) {
            copy_frontend(static_dir, &target, &self.output, version)
                .map_err(|e| format!("could not copy marimo's frontend into the site: {e}"))?;
        }
        Ok(Frontend {
            version: version.to_owned(),
            top_level,
        })
    }
}

/// Copy `from` into a private folder inside the output, then move it to `to` in one rename, so
/// a killed run never leaves half a frontend where pages look for it.
fn copy_frontend(from: &Path, to: &Path, output: &Path, version: &str) -> std::io::Result<()> {
    // One staging folder per version: two versions may be copied at once.
    let staging = output
        .join(STATE_DIR)
        .join("tmp")
        .join(format!("frontend-{version}"));
    let _ = std::fs::remove_dir_all(&staging);
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(from).expect("below the root");
        let target = staging.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // A folder left without its assets (removed by hand) is replaced.
    let _ = std::fs::remove_dir_all(to);
    std::fs::rename(&staging, to)
}

/// The version as it appears in the CDN's URLs (marimo writes `.dev` as `-dev` there).
fn cdn_version(version: &str) -> String {
    version.replace(".dev", "-dev")
}

/// `../` once per folder between the output folder and `page` (a path relative to it).
fn up_to_site_root(page: &Path) -> String {
    let depth = page.parent().map_or(0, |p| p.components().count());
    "../".repeat(depth)
}

/// Rewrite a page that marimo exported so it loads `frontend` from the site: its CDN URLs and
/// (for WebAssembly pages) its `./assets/...`-style references become relative paths into
/// `_marimo/<version>/`. `page` is the page's path relative to the output folder.
///
/// Fails, naming the reference, when the page would still load any part of marimo's frontend
/// from elsewhere (a CDN URL of another version, a frontend file beside the page).
pub(crate) fn localize(html: &str, frontend: &Frontend, page: &Path) -> Result<String, String> {
    let local = format!("{}{DIR}/{}/", up_to_site_root(page), frontend.version);
    let cdn = format!("{CDN_PREFIX}{}/dist/", cdn_version(&frontend.version));
    let mut rewritten = html.matches(&cdn).count();
    let html = html.replace(&cdn, &local);
    if let Some(at) = html.find(CDN_PREFIX) {
        let url: String = html[at..]
            .chars()
            .take_while(|c| !matches!(c, '"' | '\'' | '`' | ' ' | ')' | '>'))
            .collect();
        return Err(format!(
            "the page loads marimo's frontend from {url}, but the environment has marimo {}; \
             its frontend cannot be served from the site (use --assets cdn)",
            frontend.version
        ));
    }
    // A WebAssembly page refers to its frontend beside it: `src="./assets/index-x.js"`.
    let mut out = String::with_capacity(html.len());
    let mut rest = html.as_str();
    while let Some(at) = find_relative_ref(rest) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let path = &from[2..];
        let name = path
            .split(['/', '"', '\'', '?', '#'])
            .next()
            .unwrap_or_default();
        if frontend.top_level.contains(name) {
            out.push_str(&local);
            rewritten += 1;
        } else {
            out.push_str("./");
        }
        rest = path;
    }
    out.push_str(rest);
    if rewritten == 0 {
        return Err(format!(
            "the page refers to no part of marimo {}'s frontend where export-nb looks for it \
             (the CDN or beside the page), so it cannot be pointed at the site's copy; this \
             marimo may write pages differently (use --assets cdn)",
            frontend.version
        ));
    }
    if let Some(at) = out.find("=\"./assets/").or_else(|| out.find("='./assets/")) {
        let reference: String = out[at + 2..].chars().take_while(|c| *c != '"').collect();
        return Err(format!(
            "the page still refers to {reference} beside it after the rewrite"
        ));
    }
    Ok(out)
}

/// Where the next attribute value starting with `./` begins (at the `./`), e.g. in `src="./a"`.
fn find_relative_ref(text: &str) -> Option<usize> {
    let double = text.find("=\"./").map(|i| i + 2);
    let single = text.find("='./").map(|i| i + 2);
    match (double, single) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// After a WebAssembly export with `--assets local`: remove from the export's folder `tmp` the
/// copy of the frontend marimo put beside the page (the page itself stays, whatever its name),
/// so it is not installed into the site a second time.
pub(crate) fn drop_beside(tmp: &Path, frontend: &Frontend, page_name: &std::ffi::OsStr) {
    for name in &frontend.top_level {
        if std::ffi::OsStr::new(name) == page_name {
            continue;
        }
        remove_entry(&tmp.join(name));
    }
}

/// Remove `path`, a file, a symlink or a folder with what is in it; gone already is fine.
fn remove_entry(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// The names at the top of an export's folder `tmp` that are marimo's frontend (also at the top
/// of `static_dir`, the environment's `marimo/_static`), but for the page itself: what a
/// WebAssembly export copies beside its page.
pub(crate) fn copied_beside(
    tmp: &Path,
    static_dir: &Path,
    page_name: &std::ffi::OsStr,
) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| std::ffi::OsStr::new(name) != page_name)
        .filter(|name| static_dir.join(name).exists())
        .collect();
    names.sort();
    names
}

/// Remove what WebAssembly exports put beside their pages (`gone`: paths relative to `output`)
/// once no page has it beside it any more. Only plain relative paths inside `output` are
/// touched: the manifest they come from is input.
pub(crate) fn remove_beside(output: &Path, gone: &BTreeSet<PathBuf>) {
    for rel in gone {
        // Never a name at the top of the site: only what a category folder holds.
        if rel.components().count() < 2 {
            continue;
        }
        if let Some(path) = path_inside(output, rel) {
            remove_entry(&path);
        }
    }
}

/// Remove the frontends of `copied` (versions export-nb put into the site) that no page in
/// `referenced` uses; the `_marimo` folder goes too once empty.
pub(crate) fn prune(output: &Path, copied: &BTreeSet<String>, referenced: &BTreeSet<String>) {
    for version in copied.difference(referenced) {
        // The manifest is input: only a plain folder name inside `_marimo` is ever removed.
        if is_plain_name(version) {
            let _ = std::fs::remove_dir_all(output.join(DIR).join(version));
        }
    }
    let _ = std::fs::remove_dir(output.join(DIR));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontend(version: &str) -> Frontend {
        Frontend {
            version: version.to_owned(),
            top_level: ["assets", "favicon.ico", "manifest.json"]
                .map(str::to_owned)
                .into(),
        }
    }

    #[test]
    fn cdn_urls_become_relative_paths_into_the_site() {
        let html = r#"<link rel="icon" href="https://cdn.jsdelivr.net/npm/@marimo-team/frontend@0.25.2/dist/favicon.ico" />
<script type="module" crossorigin src="https://cdn.jsdelivr.net/npm/@marimo-team/frontend@0.25.2/dist/assets/index-x.js"></script>
<a href="https://cdn.jsdelivr.net/npm/other@1/x.js">other packages are left alone</a>"#;
        let out = localize(html, &frontend("0.25.2"), Path::new("notebooks/sub/a.html")).unwrap();
        assert!(
            out.contains(r#"href="../../_marimo/0.25.2/favicon.ico""#),
            "{out}"
        );
        assert!(
            out.contains(r#"src="../../_marimo/0.25.2/assets/index-x.js""#),
            "{out}"
        );
        assert!(out.contains("cdn.jsdelivr.net/npm/other@1/x.js"), "{out}");
        assert!(!out.contains("@marimo-team/frontend"), "{out}");
    }

    #[test]
    fn dev_versions_use_the_cdns_spelling() {
        let html =
            "src=\"https://cdn.jsdelivr.net/npm/@marimo-team/frontend@0.9.1-dev3/dist/a.js\"";
        let out = localize(html, &frontend("0.9.1.dev3"), Path::new("a.html")).unwrap();
        assert_eq!(out, "src=\"_marimo/0.9.1.dev3/a.js\"");
    }

    #[test]
    fn a_cdn_url_of_another_version_fails_naming_it() {
        let html = "<script src=\"https://cdn.jsdelivr.net/npm/@marimo-team/frontend@0.9.0/dist/assets/i.js\">";
        let err = localize(html, &frontend("0.25.2"), Path::new("notebooks/a.html")).unwrap_err();
        assert!(
            err.contains("frontend@0.9.0/dist/assets/i.js, but the environment has marimo 0.25.2"),
            "{err}"
        );
    }

    #[test]
    fn wasm_pages_refer_to_the_shared_copy_and_keep_their_own_files() {
        let html = r#"<link href="./favicon.ico"><script src='./assets/index-x.js'></script>
<img src="./public/logo.png"> <a href="./other.html">"#;
        let out = localize(html, &frontend("0.25.2"), Path::new("apps/app.html")).unwrap();
        let err = localize(
            "<p>no frontend</p>",
            &frontend("0.25.2"),
            Path::new("a.html"),
        );
        assert!(
            err.unwrap_err()
                .contains("refers to no part of marimo 0.25.2's frontend")
        );
        assert_eq!(
            out,
            r#"<link href="../_marimo/0.25.2/favicon.ico"><script src='../_marimo/0.25.2/assets/index-x.js'></script>
<img src="./public/logo.png"> <a href="./other.html">"#
        );
    }

    #[test]
    fn only_what_is_beside_a_page_inside_the_output_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("site");
        for d in ["site/apps/assets", "site/keep", "victim"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(out.join("apps/favicon.ico"), "").unwrap();
        let gone: BTreeSet<PathBuf> = [
            "apps/assets",
            "apps/favicon.ico",
            "keep",
            "../victim",
            "apps/../../victim",
        ]
        .map(PathBuf::from)
        .into();
        remove_beside(&out, &gone);
        assert!(!out.join("apps/assets").exists() && !out.join("apps/favicon.ico").exists());
        assert!(
            out.join("keep").exists(),
            "never a top-level folder of the site"
        );
        assert!(dir.path().join("victim").exists());
    }

    #[test]
    fn only_plain_names_are_versions() {
        for ok in ["0.25.2", "0.9.1.dev3", "1.0.0+local"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "/abs"] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_frontend_is_copied_once_and_pruned_when_unused() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("static");
        std::fs::create_dir_all(stat.join("assets")).unwrap();
        std::fs::write(stat.join("assets/index.js"), "js").unwrap();
        std::fs::write(stat.join("favicon.ico"), "ico").unwrap();
        let out = dir.path().join("site");
        std::fs::create_dir_all(&out).unwrap();
        let f = Frontends::new(&out);
        let got = f.ensure("1.2.3", &stat).unwrap();
        assert_eq!(
            got.top_level,
            ["assets", "favicon.ico"].map(str::to_owned).into()
        );
        assert_eq!(
            std::fs::read_to_string(out.join("_marimo/1.2.3/assets/index.js")).unwrap(),
            "js"
        );
        assert_eq!(f.versions(), ["1.2.3"]);

        // A new run finds it in place and copies nothing.
        let marker = out.join("_marimo/1.2.3/assets/marker");
        std::fs::write(&marker, "").unwrap();
        Frontends::new(&out).ensure("1.2.3", &stat).unwrap();
        assert!(marker.exists());

        // No frontend in the environment: a clear error, nothing copied.
        let err = Frontends::new(&out)
            .ensure("0.1.0", &dir.path().join("none"))
            .unwrap_err();
        assert!(
            err.contains("marimo 0.1.0") && err.contains("--assets cdn"),
            "{err}"
        );
        assert!(!out.join("_marimo/0.1.0").exists());

        let copied: BTreeSet<String> = ["1.2.3".to_owned(), "../../victim".to_owned()].into();
        std::fs::create_dir_all(dir.path().join("victim")).unwrap();
        prune(&out, &copied, &BTreeSet::new());
        assert!(!out.join("_marimo").exists());
        assert!(dir.path().join("victim").exists());
    }
}
