//! The processes of this machine as `/proc` shows them: who is whose child, in which process
//! group, with which environment; and signalling them through pidfds, so that a signal reaches
//! the process that was seen or nothing, never a process that reused its pid.
//!
//! The lowest layer of the runner: it knows no job, session or guardian.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::Duration;

use rustix::process::{Pid, Signal};

/// SIGKILL every process of each group, until none has a live member. The groups' leaders
/// may be reaped, so their ids are not pinned: each member is held by a pidfd.
pub(super) fn kill_groups(groups: &HashSet<i32>) {
    if groups.is_empty() {
        return;
    }
    let mut held = Held::default();
    for _ in 0..50 {
        // One /proc scan a round, not one per group.
        let members: Vec<(i32, i32)> = live_members()
            .into_iter()
            .filter(|(_, g)| groups.contains(g))
            .collect();
        if members.is_empty() {
            break;
        }
        for (pid, g) in members {
            held.hold(pid, |p| pgrp_of(p) == Some(g));
        }
        held.signal(Signal::KILL);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL every process whose environment has the variable `var` (any value), until none is
/// left. For the second Ctrl-C and for the guardian.
pub(super) fn kill_all_marked(var: &str) {
    let prefix = format!("{var}=").into_bytes();
    let mut held = Held::default();
    for _ in 0..50 {
        let pids = find(&prefix);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            held.hold(pid, |p| environ_has(p, &prefix));
        }
        held.signal(Signal::KILL);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Processes held by a pidfd from the moment they are seen: a signal through one reaches that
/// process or nothing (it exited), never a process that reused its pid. Kernels without pidfds
/// (before Linux 5.3) get signals by pid, as before.
#[derive(Default)]
pub(super) struct Held {
    fds: std::collections::HashMap<i32, rustix::fd::OwnedFd>,
    by_number: HashSet<i32>,
}

impl Held {
    /// Hold `pid`, if `still(pid)`, asked once its pidfd is open, says it is the process that was
    /// seen (a pid reused between the scan and the open fails the check).
    pub(super) fn hold(&mut self, pid: i32, still: impl Fn(i32) -> bool) {
        if self.fds.get(&pid).is_some_and(|fd| !exited(fd)) || self.by_number.contains(&pid) {
            return;
        }
        let Some(p) = Pid::from_raw(pid) else {
            return;
        };
        match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => {
                if still(pid) {
                    self.fds.insert(pid, fd);
                }
            }
            Err(rustix::io::Errno::NOSYS) => {
                self.by_number.insert(pid);
            }
            // Gone already.
            Err(_) => {}
        }
    }

    pub(super) fn signal(&self, sig: Signal) {
        for fd in self.fds.values() {
            let _ = rustix::process::pidfd_send_signal(fd, sig);
        }
        for &pid in &self.by_number {
            if let Some(p) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, sig);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.fds.len() + self.by_number.len()
    }
}

/// Pids of the children the kernel re-parents to us as subreaper (orphans), and maybe others.
///
/// Since Linux 4.1 an orphan goes to the subreaper's first thread that is not exiting (kernel
/// `find_alive_thread`): the main thread, which lives as long as the process. So one `pread`
/// of its `children` file, kept open, finds them all: this runs after every job. Before 4.1 it
/// went to the thread that had spawned the orphan's ancestor, so there every thread's list is
/// read.
pub(super) fn adoptive_children() -> Option<Vec<i32>> {
    static MAIN: OnceLock<Option<fs::File>> = OnceLock::new();
    let main = MAIN.get_or_init(|| {
        if !orphans_go_to_the_main_thread() {
            return None;
        }
        fs::File::open(format!("/proc/self/task/{}/children", std::process::id())).ok()
    });
    let Some(file) = main else {
        return own_children();
    };
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, text.len() as u64).ok()?;
        text.extend_from_slice(&chunk[..n]);
        // A seq_file read fills the buffer unless the list ended: a short read is the end.
        if n < chunk.len() {
            break;
        }
    }
    Some(
        text.split(u8::is_ascii_whitespace)
            .filter_map(|p| std::str::from_utf8(p).ok()?.parse::<i32>().ok())
            .collect(),
    )
}

/// Whether this kernel (4.1 or later) re-parents orphans to a subreaper's main thread.
fn orphans_go_to_the_main_thread() -> bool {
    let release = rustix::system::uname();
    let release = release.release().to_string_lossy();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
    next().zip(next()).is_some_and(|v| v >= (4, 1))
}

/// Pids of our own children, from `/proc/self/task/*/children` (every thread's list).
pub(super) fn own_children() -> Option<Vec<i32>> {
    let mut pids = Vec::new();
    for task in fs::read_dir("/proc/self/task").ok()?.flatten() {
        let text = fs::read_to_string(task.path().join("children")).ok()?;
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Some(pids)
}

/// Whether a process group has a member that is not a zombie.
pub(super) fn group_has_live_members(pgid: i32) -> bool {
    pgid > 0 && live_groups().contains(&pgid)
}

/// The process groups that have a member that is not a zombie, from `/proc/<pid>/stat`.
pub(super) fn live_groups() -> HashSet<i32> {
    live_members().into_iter().map(|(_, g)| g).collect()
}

/// The live (not zombie) members of process group `pgid`.
pub(super) fn group_members(pgid: i32) -> Vec<i32> {
    live_members()
        .into_iter()
        .filter(|&(_, g)| g == pgid)
        .map(|(pid, _)| pid)
        .collect()
}

/// Every process that is not a zombie, with its process group: `(pid, pgrp)`.
pub(super) fn live_members() -> Vec<(i32, i32)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, pgrp_of(pid)?)))
        .collect()
}

/// The process group of `pid`, if it is alive and not a zombie.
pub(super) fn pgrp_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (in parentheses, which may hold anything): state,
    // parent, process group.
    let mut rest = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace();
    let state = rest.next();
    let pgrp = rest.nth(1).and_then(|g| g.parse::<i32>().ok());
    pgrp.filter(|_| state != Some("Z"))
}

/// Every live process below `root` in the parent tree, from `/proc/<pid>/stat`.
pub(super) fn descendants(root: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name (in parentheses, which may hold anything):
        // state, then the parent's pid.
        let mut rest = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace();
        let state = rest.next();
        if state == Some("Z") {
            continue;
        }
        if let Some(ppid) = rest.next().and_then(|p| p.parse::<i32>().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(parent) = todo.pop() {
        for &child in children.get(&parent).map_or(&[][..], Vec::as_slice) {
            found.push(child);
            todo.push(child);
        }
    }
    found
}

/// Whether the process behind a pidfd has exited (a zombie counts: it runs no code).
pub(super) fn exited(pidfd: &rustix::fd::OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).is_ok_and(|n| n > 0)
}

pub(super) fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may contain spaces.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("Z")
    })
}

/// Whether `entry` (`NAME=VALUE\0`, or a `NAME=` prefix) is in the process's environment.
pub(super) fn environ_has(pid: i32, entry: &[u8]) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| contains_entry(&env, entry))
}

pub(super) fn contains_entry(environ: &[u8], entry: &[u8]) -> bool {
    // Entries are NUL-separated; match only at the start of an entry.
    environ.split(|b| *b == 0).any(|var| {
        let var_nul = var.len() < entry.len() && entry.last() == Some(&0);
        if var_nul {
            var.len() + 1 == entry.len() && entry[..var.len()] == *var
        } else {
            var.starts_with(entry)
        }
    })
}

/// Every live process (zombies have no environment) whose environment has `entry`.
pub(super) fn find(entry: &[u8]) -> Vec<i32> {
    let me = std::process::id().cast_signed();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && environ_has(pid, entry))
        .collect()
}
