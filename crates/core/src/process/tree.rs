//! Finding and killing a job's whole process tree.
//!
//! Why an environment cookie: a job's descendants may leave its process group and session (as
//! `uv run` and marimo's kernel do with `setsid`), so neither the child's pid nor its process
//! group reaches them. Every descendant inherits the environment, though, and Linux shows each
//! process's initial environment in `/proc/<pid>/environ` to its owner without privileges. So
//! each job gets a variable `FANOUT_JOB_<session>=<seq>` and a kill finds the tree by it (the
//! technique of Jenkins' process-tree killer). The variable's name carries the session so that
//! a nested fanout tool adds its own variable instead of overwriting ours.
//!
//! Why a child subreaper: when a job's main process exits, its orphans are re-parented to us
//! instead of init, so they stay reapable by us (no zombies left to init) and so that a leftover
//! is cheap to notice: it shows up among our own children.
//!
//! Why not a cgroup per job: it needs delegation from systemd or root, which CI machines and
//! laptops rarely give an ordinary user; the cookie works everywhere on Linux. The cookie's
//! limit: a process that re-executes itself with an emptied environment (`env -i`) escapes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};

use super::procs::{
    Held, adoptive_children, descendants, environ_has, exited, find, group_has_live_members,
    group_members, is_zombie, kill_all_marked, kill_groups, pgrp_of,
};

/// Prefix of the environment variable that marks every process of a job.
pub const JOB_ENV_PREFIX: &str = "FANOUT_JOB_";

/// Process-wide state of the runner: the session cookie and which pids are the direct
/// children of running jobs (their runner reaps them; we must not).
#[derive(Debug)]
pub(crate) struct Session {
    /// `FANOUT_JOB_<pid>_<nanos>`.
    pub(crate) var: String,
    seq: AtomicU64,
    /// Spawning takes it shared; reaping orphans takes it exclusively, so a just-spawned child
    /// cannot be mistaken for an orphan before it is registered.
    spawn_lock: RwLock<()>,
    direct: Mutex<HashSet<i32>>,
    /// The guardian is our child for our whole life (or its replacement's), not an orphan to
    /// look at after each job. 0: none.
    guardian: std::sync::atomic::AtomicI32,
    /// Whether a job of this session ran on Slurm (then kill paths cancel Slurm jobs too).
    used_slurm: std::sync::atomic::AtomicBool,
    subreaper: bool,
}

static SESSION: OnceLock<Session> = OnceLock::new();

pub(crate) fn session() -> &'static Session {
    SESSION.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let pid = std::process::id();
        let var = format!("{JOB_ENV_PREFIX}{pid}_{nanos:x}");
        let guardian = super::guardian::start(&var);
        Session {
            guardian: std::sync::atomic::AtomicI32::new(guardian.unwrap_or(0)),
            used_slurm: std::sync::atomic::AtomicBool::new(false),
            var,
            seq: AtomicU64::new(1),
            spawn_lock: RwLock::new(()),
            direct: Mutex::new(HashSet::new()),
            subreaper: rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
                .is_ok(),
        }
    })
}

/// The marker of one job: `NAME=VALUE`.
#[derive(Debug, Clone)]
pub(crate) struct Cookie {
    pub(crate) name: String,
    pub(crate) value: String,
}

impl Cookie {
    /// `NAME=VALUE\0` as it appears in an environ block.
    fn entry(&self) -> Vec<u8> {
        format!("{}={}\0", self.name, self.value).into_bytes()
    }
}

impl Session {
    pub(crate) fn next_cookie(&self) -> Cookie {
        Cookie {
            name: self.var.clone(),
            value: self.seq.fetch_add(1, Ordering::SeqCst).to_string(),
        }
    }

    /// Run `spawn` so that the orphan reaper cannot run between the spawn and the registration
    /// of the new direct child.
    pub(crate) fn spawn_registered<T>(
        &self,
        spawn: impl FnOnce() -> std::io::Result<T>,
        pid_of: impl Fn(&T) -> Option<i32>,
    ) -> std::io::Result<T> {
        let _shared = self.spawn_lock.read().expect("spawn lock");
        if let Some(pid) = super::guardian::revive_if_dead(&self.var) {
            self.guardian.store(pid, Ordering::SeqCst);
        }
        let spawned = spawn()?;
        if let Some(pid) = pid_of(&spawned) {
            self.direct.lock().expect("registry").insert(pid);
            // A direct child leads its own process group (see sys.rs).
            super::guardian::note_group(pid, true);
        }
        Ok(spawned)
    }

    /// A job of this session goes to Slurm: from now on, the kill paths that SIGKILL `srun`
    /// cancel the session's Slurm jobs first (and the guardian is told to).
    pub(crate) fn note_slurm(&self) {
        if !self.used_slurm.swap(true, Ordering::SeqCst) {
            super::guardian::note_slurm();
        }
    }

    /// Forget a direct child once its runner has reaped it.
    pub(crate) fn unregister(&self, pid: i32) {
        self.direct.lock().expect("registry").remove(&pid);
        super::guardian::note_group(pid, false);
    }

    /// After a job's main process exited on its own: are any of its processes left? If so,
    /// kill them (the job is over; leftovers would hold our pipes and outlive the tool). Then
    /// reap whatever orphans have exited. Returns how many processes were killed. Cheap when
    /// nothing is left: one signal-0 to the process group and one read of our children lists.
    pub(crate) fn finish(&self, cookie: &Cookie, pgid: i32, grace: Duration) -> usize {
        let group_alive = Pid::from_raw(pgid)
            .is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok());
        let orphans = self.adopted_orphans();
        let adopted_with_cookie = match &orphans {
            Some(orphans) => {
                let entry = cookie.entry();
                orphans.iter().any(|&pid| environ_has(pid, &entry))
            }
            // No subreaper or no children lists: fall back to the full scan.
            None => !find(&cookie.entry()).is_empty(),
        };
        if group_alive || adopted_with_cookie {
            // The main process was reaped: the group's id is no longer pinned.
            return self.kill_tree(cookie, JobGroup::Loose(pgid), grace);
        }
        if orphans.is_some_and(|o| !o.is_empty()) {
            self.reap_orphans();
        }
        0
    }

    /// SIGTERM every process of the job (its group and everything carrying its cookie), wait up
    /// to `grace` for them to exit, then SIGKILL whatever is left, repeating until nothing
    /// carries the cookie (a process may fork while we kill). Returns how many were signalled.
    ///
    /// SIGTERM first because tools like uv and marimo clean up temporary files and kernels on
    /// it; SIGKILL after the grace period because a job that ignores SIGTERM must still die.
    ///
    /// Every signal reaches the process that was seen, never one that reused its pid: each is
    /// held by a pidfd from the moment it is found, and the group is signalled by its id only
    /// while that id is pinned (see [`JobGroup`]).
    pub(crate) fn kill_tree(&self, cookie: &Cookie, group: JobGroup, grace: Duration) -> usize {
        let entry = cookie.entry();
        let pgid = group.id();
        let mut held = Held::default();
        let signal_all = |sig: Signal, held: &mut Held| {
            // Found before the group is signalled, so the count includes the group's members.
            for pid in find(&entry) {
                held.hold(pid, |p| environ_has(p, &entry));
            }
            match group {
                JobGroup::Pinned(g) => {
                    if let Some(g) = Pid::from_raw(g) {
                        let _ = rustix::process::kill_process_group(g, sig);
                    }
                }
                JobGroup::Loose(g) => {
                    for pid in group_members(g) {
                        held.hold(pid, |p| pgrp_of(p) == Some(g));
                    }
                }
                JobGroup::None => {}
            }
            held.signal(sig);
        };
        // Liveness: anything carrying the cookie, or a live member of the job's process group
        // (a process that dropped its environment, `env -i`, has no cookie but stays in the
        // group). Not signal 0 to the group: an unreaped zombie (the job's main process, until
        // its runner reaps it) still counts as a member, and waiting for it to "exit" would burn
        // the whole grace period.
        let alive = || !find(&entry).is_empty() || group_has_live_members(pgid);

        signal_all(Signal::TERM, &mut held);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && alive() {
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..200 {
            if !alive() {
                break;
            }
            signal_all(Signal::KILL, &mut held);
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap_orphans();
        held.len()
    }

    /// Kill a job whose main process a fork server of ours forked: it is not our child (we
    /// cannot wait for it), but we hold a pidfd for it, and it keeps its exit status for us
    /// until we say so (see `forkserver.rs`), so signalling it never reaches a reused pid.
    ///
    /// Its processes: its descendants (it is a child subreaper, so a descendant whose parent
    /// dies stays below it, even after `setsid`) and whatever carries the job's cookie. Each is
    /// held by a pidfd from the moment it is seen, so one re-parented away later (its parent
    /// died) is still reached, and never a process that reused its pid. SIGTERM to all, a grace
    /// period, then SIGSTOP to all (so none forks again) until no new one appears, then
    /// SIGKILL. Returns how many processes were signalled.
    pub(crate) fn kill_forked(
        &self,
        pid: i32,
        pidfd: &rustix::fd::OwnedFd,
        cookie: &Cookie,
        grace: Duration,
    ) -> usize {
        use rustix::process::{PidfdFlags, pidfd_open, pidfd_send_signal};
        let entry = cookie.entry();
        let mut held: std::collections::HashMap<i32, rustix::fd::OwnedFd> =
            std::collections::HashMap::new();
        // Adds the processes not held yet; returns how many were new.
        let discover = |held: &mut std::collections::HashMap<i32, rustix::fd::OwnedFd>| {
            let mut new = 0;
            for p in descendants(pid).into_iter().chain(find(&entry)) {
                if p == pid || held.contains_key(&p) {
                    continue;
                }
                if let Some(fd) =
                    Pid::from_raw(p).and_then(|q| pidfd_open(q, PidfdFlags::empty()).ok())
                {
                    held.insert(p, fd);
                    new += 1;
                }
            }
            new
        };
        let signal_all = |held: &std::collections::HashMap<i32, rustix::fd::OwnedFd>,
                          sig: Signal| {
            let _ = pidfd_send_signal(pidfd, sig);
            for fd in held.values() {
                let _ = pidfd_send_signal(fd, sig);
            }
        };
        let all_exited = |held: &std::collections::HashMap<i32, rustix::fd::OwnedFd>| {
            exited(pidfd) && held.values().all(exited)
        };

        discover(&mut held);
        signal_all(&held, Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            discover(&mut held);
            if all_exited(&held) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..200 {
            signal_all(&held, Signal::STOP);
            if discover(&mut held) == 0 {
                break;
            }
        }
        for _ in 0..200 {
            signal_all(&held, Signal::KILL);
            discover(&mut held);
            if all_exited(&held) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap_orphans();
        held.len() + 1
    }

    /// After a forked job's main process ended on its own: kill whatever still carries its
    /// cookie (its descendants were re-parented away when it died). Returns how many.
    pub(crate) fn finish_forked(&self, cookie: &Cookie, grace: Duration) -> usize {
        if find(&cookie.entry()).is_empty() {
            self.reap_orphans();
            return 0;
        }
        self.kill_tree(cookie, JobGroup::None, grace)
    }

    /// SIGKILL every process of every job of this session: the running jobs' process groups
    /// and everything carrying the session's cookie. For the second Ctrl-C.
    pub(crate) fn kill_all(&self) {
        // SIGKILLed, srun could not cancel its job: cancel the session's jobs first.
        if self.used_slurm.load(Ordering::SeqCst) {
            super::slurm::cancel_session(&self.var);
        }
        let groups: HashSet<i32> = self.direct.lock().expect("registry").clone();
        kill_groups(&groups);
        kill_all_marked(&self.var);
    }

    /// Our children that are not the direct children of running jobs: orphans we adopted as
    /// subreaper. `None` when that cannot be known here.
    fn adopted_orphans(&self) -> Option<Vec<i32>> {
        if !self.subreaper {
            return None;
        }
        let children = adoptive_children()?;
        let direct = self.direct.lock().expect("registry");
        Some(
            children
                .into_iter()
                .filter(|p| !direct.contains(p) && *p != self.guardian.load(Ordering::SeqCst))
                .collect(),
        )
    }

    /// Reap adopted orphans that have exited (zombies). Never touches a running job's direct
    /// child: its runner reaps those, and reaping one here would make its wait fail.
    pub(crate) fn reap_orphans(&self) {
        if !self.subreaper {
            return;
        }
        let _exclusive = self.spawn_lock.write().expect("spawn lock");
        let Some(orphans) = self.adopted_orphans() else {
            return;
        };
        for pid in orphans {
            if is_zombie(pid)
                && let Some(p) = Pid::from_raw(pid)
            {
                let _ = rustix::process::waitpid(Some(p), WaitOptions::NOHANG);
            }
        }
    }
}

/// A job's process group, as a kill sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JobGroup {
    /// The group's leader (our direct child, the job's main process) is not reaped yet, so its
    /// pid, which is the group's id, cannot be reused: the group is signalled by its id, which
    /// also reaches a member forked while the signal is sent.
    Pinned(i32),
    /// The leader may be reaped: once the group is empty its id can be reused by an unrelated
    /// group, so each member is found and held by a pidfd instead.
    Loose(i32),
    /// No group of its own (a forked job: its descendants are found otherwise).
    None,
}

impl JobGroup {
    fn id(self) -> i32 {
        match self {
            JobGroup::Pinned(g) | JobGroup::Loose(g) => g,
            JobGroup::None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::procs::contains_entry;
    use super::*;

    /// A child that sleeps, and its pid. With `at`, the kernel is asked to give it that pid
    /// (`ns_last_pid`, root only); `None` if it got another one (a process of someone else's
    /// took the pid first).
    #[expect(
        clippy::disallowed_methods,
        reason = "the test needs a bare child it controls, outside the runner"
    )]
    fn sleeper(at: Option<i32>) -> Option<std::process::Child> {
        if let Some(pid) = at {
            fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        }
        let child = std::process::Command::new("sleep").arg("60").spawn().ok()?;
        if at.is_some_and(|pid| child.id().cast_signed() != pid) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Some(child)
    }

    /// A pidfd of `child`, to tell whether it lives whoever reaps it.
    fn pidfd(child: &std::process::Child) -> rustix::fd::OwnedFd {
        let pid = Pid::from_raw(child.id().cast_signed()).expect("a pid");
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).expect("pidfd")
    }

    #[test]
    fn a_held_process_is_never_confused_with_one_that_reused_its_pid() {
        // Only root may choose the next pid; elsewhere this cannot be staged.
        if fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/kernel/ns_last_pid")
            .is_err()
        {
            #[expect(clippy::print_stderr, reason = "says why the test did nothing")]
            {
                eprintln!("skipped: choosing a pid needs root (/proc/sys/kernel/ns_last_pid)");
            }
            return;
        }
        // Another process may take the pid between the write and our spawn: try a few times.
        for _ in 0..20 {
            let mut first = sleeper(None).expect("sleep starts");
            let pid = first.id().cast_signed();
            let mut held = Held::default();
            held.hold(pid, |_| true);
            assert_eq!(held.len(), 1);
            first.kill().expect("kill");
            // Reaped here, or by the session's orphan reaper in another test (this binary is
            // a subreaper, and it is not a registered job): either way the pid is free.
            let _ = first.wait();
            let Some(mut second) = sleeper(Some(pid)) else {
                continue;
            };
            let watch = pidfd(&second);
            held.signal(Signal::KILL);
            std::thread::sleep(Duration::from_millis(50));
            let survived = !exited(&watch);
            let _ = second.kill();
            let _ = second.wait();
            assert!(
                survived,
                "a signal for the first process reached the second"
            );
            return;
        }
        panic!("could not give a process a chosen pid in 20 tries");
    }

    #[test]
    fn a_process_that_is_not_the_one_seen_is_not_held() {
        let mut child = sleeper(None).expect("sleep starts");
        let pid = child.id().cast_signed();
        let mut held = Held::default();
        let watch = pidfd(&child);
        held.hold(pid, |_| false);
        held.signal(Signal::KILL);
        std::thread::sleep(Duration::from_millis(50));
        let alive = !exited(&watch);
        let _ = child.kill();
        let _ = child.wait();
        assert!(alive && held.len() == 0);
    }

    #[test]
    fn cookie_matching_is_exact() {
        let env = b"PATH=/bin\0FANOUT_JOB_1_a=12\0HOME=/root\0";
        assert!(contains_entry(env, b"FANOUT_JOB_1_a=12\0"));
        assert!(!contains_entry(env, b"FANOUT_JOB_1_a=1\0"), "1 is not 12");
        assert!(!contains_entry(env, b"FANOUT_JOB_1_a=123\0"));
        assert!(contains_entry(env, b"FANOUT_JOB_1_a="), "prefix form");
        assert!(!contains_entry(
            b"XFANOUT_JOB_1_a=12\0",
            b"FANOUT_JOB_1_a=12\0"
        ));
        // The last entry may lack its trailing NUL.
        assert!(contains_entry(
            b"A=1\0FANOUT_JOB_1_a=12",
            b"FANOUT_JOB_1_a=12\0"
        ));
    }
}
