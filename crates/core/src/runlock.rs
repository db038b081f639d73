//! One run at a time on one thing (an output folder, a project, a results file): a
//! [`RunLock`] is an exclusive `flock` on a lock file that says who holds it, so a second run
//! is refused with the holder's pid, or waits for it.
//!
//! The lock file is removed when the run ends. Removing a lock file is safe only with care: a
//! run that waited on the old file, or opened it just before it went, would hold a lock on a
//! file nobody else can find. So a lock counts only once the file locked is still the one at
//! the path (same inode); otherwise the taker opens the path again. A run killed with SIGKILL
//! leaves its file behind and its lock released by the kernel: the next run takes it.
//! Advisory, as every `flock`: it keeps our tools off each other, not other programs.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;

/// Held until dropped; the lock file goes with it.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    /// Another run holds it: who, as it wrote ("pid 123 (export-nb watch), started 5 s ago").
    #[error("{holder} holds {}", path.display())]
    Held { path: PathBuf, holder: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether to wait for a lock another run holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Refuse at once, naming the holder.
    No,
    /// Block until it is free.
    Yes,
}

impl RunLock {
    /// Take the lock at `path` (its folder must exist) for a run described by `what` (a tool
    /// and its command, say).
    ///
    /// # Errors
    /// [`RunLockError::Held`] when another run holds it and `wait` is [`Wait::No`]; an I/O
    /// error opening or locking the file.
    pub fn acquire(path: &Path, what: &str, wait: Wait) -> Result<RunLock, RunLockError> {
        let io = |source| RunLockError::Io {
            path: path.to_path_buf(),
            source,
        };
        loop {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(path)
                .map_err(io)?;
            let op = match wait {
                Wait::No => FlockOperation::NonBlockingLockExclusive,
                Wait::Yes => FlockOperation::LockExclusive,
            };
            if let Err(e) = rustix::fs::flock(&file, op) {
                if e == rustix::io::Errno::WOULDBLOCK {
                    return Err(RunLockError::Held {
                        path: path.to_path_buf(),
                        holder: holder(&mut file),
                    });
                }
                return Err(io(e.into()));
            }
            // The file locked must still be the one at the path (see the module's notes).
            let here = file.metadata().map_err(io)?;
            match std::fs::metadata(path) {
                Ok(now) if now.ino() == here.ino() && now.dev() == here.dev() => {}
                _ => continue,
            }
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let what = what.replace('\n', " ");
            let note = format!("{}\n{since}\n{what}\n", std::process::id());
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            file.write_all(note.as_bytes()).map_err(io)?;
            return Ok(RunLock {
                file,
                path: path.to_path_buf(),
            });
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Only our own file: after a rename or a removal by hand, the path is another's.
        if let (Ok(ours), Ok(there)) = (self.file.metadata(), std::fs::metadata(&self.path))
            && ours.ino() == there.ino()
            && ours.dev() == there.dev()
        {
            let _ = std::fs::remove_file(&self.path);
        }
        // Closing the file releases the lock.
    }
}

/// Who holds a lock, in words, from what they wrote in it.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut lines = text.lines();
    let (Some(pid), Some(since), what) = (lines.next(), lines.next(), lines.next()) else {
        return "another run".to_owned();
    };
    let what = what.map(|w| format!(" ({w})")).unwrap_or_default();
    let ago = since
        .parse::<u64>()
        .ok()
        .and_then(|s| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()?
                .checked_sub(Duration::from_secs(s))
        })
        .map(|d| match d.as_secs() {
            0 => ", started just now".to_owned(),
            s => format!(
                ", started {} ago",
                crate::time::fmt_duration(Duration::from_secs(s))
            ),
        })
        .unwrap_or_default();
    format!("pid {pid}{what}{ago}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_with_the_holder_and_the_file_goes_with_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = RunLock::acquire(&path, "tool run a", Wait::No).unwrap();
        let err = RunLock::acquire(&path, "tool run b", Wait::No).unwrap_err();
        let me = std::process::id();
        match &err {
            RunLockError::Held { holder, .. } => assert!(
                holder.starts_with(&format!("pid {me} (tool run a), started ")),
                "{holder}"
            ),
            other @ RunLockError::Io { .. } => panic!("{other:?}"),
        }
        drop(first);
        assert!(!path.exists(), "the lock file went with the lock");
        let _again = RunLock::acquire(&path, "tool run b", Wait::No).unwrap();
    }

    #[test]
    fn a_waiter_takes_the_lock_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = RunLock::acquire(&path, "first", Wait::No).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let lock = RunLock::acquire(&p, "second", Wait::Yes).unwrap();
            tx.send(()).unwrap();
            lock
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "it waits while the first holds it"
        );
        drop(first);
        rx.recv().unwrap();
        let second = waiter.join().unwrap();
        // The waiter holds a file that is at the path, not the removed one.
        assert!(path.exists());
        assert!(RunLock::acquire(&path, "third", Wait::No).is_err());
        drop(second);
    }
}
