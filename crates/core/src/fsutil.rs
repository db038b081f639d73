//! Atomic file writes: a file a user reads is never half-written.
//!
//! Content goes to a temporary file in the target's folder (same file system, so the rename is
//! atomic), is flushed and fsynced, then renamed over the target; the folder is fsynced so the
//! rename itself survives a crash. A reader sees the old file or the new one, never a mix, and a
//! writer killed midway leaves the old file untouched.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// A failed atomic write, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("could not write {}: {source}", path.display())]
pub struct AtomicWriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Write `contents` to `path` atomically, creating missing parent folders.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), AtomicWriteError> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(contents).map_err(|e| file.error(e))?;
    file.commit()
}

/// Write `value` to `path` atomically as JSON (pretty-printed when `pretty`), followed by a
/// newline. The JSON streams to the file through a buffer, so a record of 30,000 jobs costs a
/// buffer's worth of memory, not the size of the file.
pub fn write_json_atomic<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
    pretty: bool,
) -> Result<(), AtomicWriteError> {
    let mut file = AtomicFile::create(path)?;
    let written = {
        let mut out = io::BufWriter::with_capacity(64 * 1024, &mut file);
        let json = if pretty {
            serde_json::to_writer_pretty(&mut out, value)
        } else {
            serde_json::to_writer(&mut out, value)
        };
        json.map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
    };
    written.map_err(|e| file.error(e))?;
    file.commit()
}

/// A file being written atomically: write to it like any file, then [`commit`](Self::commit).
/// Dropping it without committing leaves the target as it was and removes the temporary file.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Start writing `path`: creates a temporary file beside it.
    pub fn create(path: &Path) -> Result<Self, AtomicWriteError> {
        let err = |source| AtomicWriteError {
            path: path.to_owned(),
            source,
        };
        let dir = parent_dir(path);
        std::fs::create_dir_all(dir).map_err(err)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(err)?;
        Ok(AtomicFile {
            tmp,
            target: path.to_owned(),
        })
    }

    /// Flush, give it the mode the file should have, fsync, rename over the target, fsync the
    /// folder.
    ///
    /// The mode: the replaced file's, when there is one (a site's pages stay readable by the
    /// web server that serves them); else what a plain create would give, `0666` less the
    /// umask. Not the temporary file's own `0600`, which would lock out everyone else.
    pub fn commit(mut self) -> Result<(), AtomicWriteError> {
        use std::os::unix::fs::PermissionsExt;
        self.tmp.flush().map_err(|e| self.error(e))?;
        let mode = std::fs::metadata(&self.target)
            .map_or_else(|_| 0o666 & !umask(), |m| m.permissions().mode() & 0o7777);
        self.tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| self.error(e))?;
        self.tmp.as_file().sync_all().map_err(|e| self.error(e))?;
        let target = self.target.clone();
        self.tmp.persist(&target).map_err(|e| AtomicWriteError {
            path: target.clone(),
            source: e.error,
        })?;
        // Make the rename durable. Some file systems refuse to fsync a folder; the rename has
        // happened either way, so that is not an error.
        if let Ok(dir) = File::open(parent_dir(&target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.target
    }

    fn error(&self, source: io::Error) -> AtomicWriteError {
        AtomicWriteError {
            path: self.target.clone(),
            source,
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// This process's umask, from `/proc/self/status` (reading it with `umask(2)` means setting
/// it, which races with other threads creating files); the common `022` when it cannot be read.
fn umask() -> u32 {
    own_status("Umask")
        .and_then(|v| u32::from_str_radix(&v, 8).ok())
        .unwrap_or(0o022)
}

/// A field of `/proc/self/status` (`Umask`, `SigIgn`...), trimmed.
pub(crate) fn own_status(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        (name == field).then(|| value.trim().to_owned())
    })
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The last `max_bytes` bytes of a file as text (invalid UTF-8 replaced); empty when it cannot
/// be read. For the end of a job's log.
pub fn read_tail(path: &Path, max_bytes: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let mut tail = Vec::new();
    let _ = f
        .seek(SeekFrom::Start(len.saturating_sub(max_bytes)))
        .and_then(|_| f.read_to_end(&mut tail));
    String::from_utf8_lossy(&tail).into_owned()
}

/// An exclusive advisory lock (`flock`) on a file, held until dropped: two processes that
/// build the same thing in a shared place take turns. The file is created if missing and never
/// removed (removing it would let a third process lock a new file while the second holds the
/// old one).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Wait for the lock on `path`.
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(FileLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_get_the_umask_mode_or_keep_the_replaced_files_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let new = dir.path().join("index.html");
        write_atomic(&new, b"page").unwrap();
        assert_eq!(
            mode(&new),
            0o666 & !umask(),
            "a new file: as a plain create would make it"
        );
        if umask() & 0o044 == 0 {
            assert_ne!(
                mode(&new) & 0o044,
                0,
                "others can read it, not only its owner"
            );
        }
        let kept = dir.path().join("run.json");
        std::fs::write(&kept, "old").unwrap();
        std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&kept, b"new").unwrap();
        assert_eq!(mode(&kept), 0o640, "a replaced file keeps its mode");
    }

    #[test]
    fn writes_replace_the_file_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("report.json")]);
    }

    /// Fails after part of the JSON is written, as a map with a non-string key does.
    struct Half;
    impl serde::Serialize for Half {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(None)?;
            seq.serialize_element("written")?;
            seq.serialize_element(&std::collections::BTreeMap::from([(vec![1], 2)]))?;
            seq.end()
        }
    }

    #[test]
    fn json_streams_to_the_file_and_a_failure_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let value = serde_json::json!({"jobs": [1, 2], "name": "a"});
        write_json_atomic(&path, &value, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"jobs\":[1,2],\"name\":\"a\"}\n"
        );
        write_json_atomic(&path, &value, true).unwrap();
        let pretty = std::fs::read_to_string(&path).unwrap();
        assert!(pretty.starts_with("{\n  \"jobs\": [\n"), "{pretty}");
        assert!(pretty.ends_with("}\n"));

        let err = write_json_atomic(&path, &Half, false).unwrap_err();
        assert_eq!(err.path, path, "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), pretty);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }

    #[test]
    fn an_uncommitted_write_leaves_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page.html");
        write_atomic(&path, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"new but abandoned").unwrap();
            // dropped without commit: as if the writer died
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = write_atomic(&blocker.join("below-a-file.txt"), b"x").unwrap_err();
        assert!(err.to_string().contains("below-a-file.txt"), "{err}");
    }
}
