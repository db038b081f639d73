//! The output folder's layout, which every part of export-nb that writes or reads the site
//! agrees on: the folder export-nb owns inside it, the folder of marimo's frontends, which paths
//! are inside it (the manifest is input: only those are touched), and how hashes are written.

use std::path::{Component, Path, PathBuf};

/// The folder inside the output that export-nb owns.
pub(crate) const STATE_DIR: &str = ".export-nb";

/// The folder of the site that holds the frontends, one sub-folder per marimo version.
pub(crate) const DIR: &str = "_marimo";

/// Whether a frontend folder is there and whole (it is moved into place complete, so its
/// `assets` folder says so).
pub(crate) fn is_complete(folder: &Path) -> bool {
    folder.join("assets").is_dir()
}

/// A single plain path component: not empty, no `/`, not `.` or `..`.
pub(crate) fn is_plain_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(_))) && components.next().is_none()
}

/// Where the page `page` (a manifest key) is, if it is one export-nb could have written: a
/// relative path of plain names ending in `.html`, in a folder that really is inside `output`
/// (not reached through a link to elsewhere). Anything else (`/etc/x.html`, `../x.html`) is
/// not ours to touch.
pub(crate) fn page_inside(output: &Path, page: &Path) -> Option<PathBuf> {
    if page.extension().is_none_or(|e| e != "html") {
        return None;
    }
    path_inside(output, page)
}

/// `output/rel` if `rel` is plain (no `..`, not absolute) and its folder is inside `output`
/// (through no symlink out of it): the manifest is input, and only such paths are touched.
pub(crate) fn path_inside(output: &Path, rel: &Path) -> Option<PathBuf> {
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return None;
    }
    let path = output.join(rel);
    let folder = path.parent()?.canonicalize().ok()?;
    folder
        .starts_with(output.canonicalize().ok()?)
        .then_some(path)
}

/// Bytes as lower-case hexadecimal (hashes in keys and names).
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A relative URL for a page path: `/` separators, unsafe characters percent-encoded.
pub(crate) fn url_path(page: &Path) -> String {
    page.components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Where a page's photograph goes: beside it, `<page stem>.thumb.png`.
pub(crate) fn thumb_path(page: &Path) -> PathBuf {
    let stem = page
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    page.with_file_name(format!("{stem}.thumb.png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_relative_and_encoded() {
        assert_eq!(
            url_path(Path::new("notebooks/sub dir/a#b.html")),
            "notebooks/sub%20dir/a%23b.html"
        );
    }
}
