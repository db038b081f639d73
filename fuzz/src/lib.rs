//! Shared by the fuzz targets: one input holding several files.

use std::path::{Component, Path, PathBuf};

/// The files of a fuzz input: sections that each start with a line `#@ PATH` (the part before
/// the first such line is `first`). Only relative paths of plain names under one of `allowed`
/// are kept, so an input never writes outside the folder it is unpacked in.
pub fn files(data: &[u8], first: &str, allowed: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![(PathBuf::from(first), Vec::new())];
    for line in data.split_inclusive(|&b| b == b'\n') {
        if let Some(name) = line.strip_prefix(b"#@ ") {
            let name = String::from_utf8_lossy(name).trim().to_owned();
            out.push((PathBuf::from(name), Vec::new()));
        } else if let Some((_, content)) = out.last_mut() {
            content.extend_from_slice(line);
        }
    }
    out.retain(|(path, _)| {
        path.components().all(|c| matches!(c, Component::Normal(_)))
            && allowed.iter().any(|a| path.starts_with(a))
            && path.components().count() == 2
    });
    out
}

/// Write `files` under `dir`.
pub fn unpack(dir: &Path, files: &[(PathBuf, Vec<u8>)]) {
    for (path, content) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(path, content);
    }
}

/// Split at the first NUL byte: (before, after). Without one, everything is `before`.
pub fn split_nul(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}
