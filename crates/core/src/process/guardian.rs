//! The guardian: a watcher process that kills a tool's jobs when the tool dies, however it dies.
//!
//! Why: the parent-death signal (see `sys.rs`) reaches a job's *direct* child only. If the tool
//! is killed with SIGKILL, the job's grandchildren (what `sh -c` forked, or a `uv run` in its own
//! session) would run on. So the runner starts one guardian per tool process: the tool's own
//! executable, re-run with [`GUARDIAN_ENV`] naming the session's cookie variable, reading a pipe
//! whose write end only the tool holds. When the tool exits or is killed, the kernel closes that
//! end, the guardian reads end-of-file, SIGKILLs every process that carries the session's
//! cookie, and exits. A normal exit finds nothing left to kill (or a leftover daemon, which it
//! should not leave anyway).
//!
//! A job that dropped its environment (`env -i`) carries no cookie, but stays in its process
//! group, so the guardian kills the running jobs' groups too. It learns them from a table the
//! tool keeps in a memory file (`memfd`) that the guardian opens at start: one 4-byte slot per
//! running job, written with one `pwrite` when a job starts and ends. The guardian reads it only
//! when the tool is gone, so a job start costs no wake-up of the guardian (a line per job on the
//! pipe cost three context switches a job, 7% of a batch of `true`), and a replacement guardian
//! finds the table as it is.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set in the guardian's environment: the cookie variable of the session it guards.
pub const GUARDIAN_ENV: &str = "FANOUT_GUARDIAN_FOR";
/// Set in the guardian's environment: `PID:FD`, where the tool holds the group table.
const GROUPS_ENV: &str = "FANOUT_GUARDIAN_GROUPS";

static ENABLED: Mutex<Option<Vec<String>>> = Mutex::new(None);
static STARTED: AtomicBool = AtomicBool::new(false);
/// Whether the guardian was told that jobs run on Slurm (a replacement is told again).
static SLURM_NOTED: AtomicBool = AtomicBool::new(false);
/// The write end of the guardian's stdin, held for the life of the process.
static PIPE: Mutex<Option<ChildStdin>> = Mutex::new(None);
/// The running guardian: its pid and a pidfd to notice its death.
static WATCHED: Mutex<Option<(i32, rustix::fd::OwnedFd)>> = Mutex::new(None);
/// The running jobs' process groups, shared with the guardian.
static GROUPS: Mutex<Option<GroupTable>> = Mutex::new(None);

/// The tool's side of the group table: which slot holds which group, and the free slots.
struct GroupTable {
    file: File,
    slots: HashMap<i32, u64>,
    free: Vec<u64>,
    next: u64,
}

impl GroupTable {
    fn create() -> Option<Self> {
        let fd = rustix::fs::memfd_create("fanout-groups", rustix::fs::MemfdFlags::CLOEXEC).ok()?;
        Some(Self {
            file: File::from(fd),
            slots: HashMap::new(),
            free: Vec::new(),
            next: 0,
        })
    }

    fn insert(&mut self, pgid: i32) {
        if self.slots.contains_key(&pgid) {
            return;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        if self
            .file
            .write_all_at(&pgid.to_ne_bytes(), slot * 4)
            .is_ok()
        {
            self.slots.insert(pgid, slot);
        } else {
            self.free.push(slot);
        }
    }

    fn remove(&mut self, pgid: i32) {
        if let Some(slot) = self.slots.remove(&pgid) {
            let _ = self.file.write_all_at(&0i32.to_ne_bytes(), slot * 4);
            self.free.push(slot);
        }
    }
}

/// The guardian's side: the groups in the table now.
fn read_groups(file: &mut File) -> std::collections::HashSet<i32> {
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return std::collections::HashSet::new();
    }
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .filter(|&g| g > 1)
        .collect()
}

/// Call first thing in `main`. In a guardian process it does the guardian's work and exits;
/// otherwise it arranges for the first [`ProcessRunner`](super::ProcessRunner) to start a
/// guardian (this executable, re-run with `args`).
pub fn init(args: &[&str]) {
    if let Some(var) = std::env::var_os(GUARDIAN_ENV) {
        guard(&var.to_string_lossy());
        // A guardian is a process of its own making: ending it here is its whole purpose.
        std::process::exit(0);
    }
    *ENABLED.lock().expect("guardian lock") = Some(args.iter().map(|a| (*a).to_owned()).collect());
}

/// Start the guardian for the session whose cookie variable is `var`, if `init` enabled it.
/// Returns its pid.
pub(crate) fn start(var: &str) -> Option<i32> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return None;
    }
    spawn(var)
}

/// If the guardian died (killed by someone: `pkill -f`, an OOM kill), start another (it opens
/// the same group table). Returns the new guardian's pid. Cheap when it lives: one poll.
pub(crate) fn revive_if_dead(var: &str) -> Option<i32> {
    // At most one look every 50 ms: a batch of short jobs spawns far more often than that.
    static NEXT_LOOK: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    {
        let now = std::time::Instant::now();
        let mut next = NEXT_LOOK.lock().expect("guardian lock");
        if next.is_some_and(|t| now < t) {
            return None;
        }
        *next = Some(now + std::time::Duration::from_millis(50));
    }
    let dead = {
        let watched = WATCHED.lock().expect("guardian lock");
        let (pid, fd) = watched.as_ref()?;
        super::procs::exited(fd).then_some(*pid)
    }?;
    // Reap the old one (our child), then replace it.
    if let Some(p) = rustix::process::Pid::from_raw(dead) {
        let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
    }
    *WATCHED.lock().expect("guardian lock") = None;
    *PIPE.lock().expect("guardian lock") = None;
    let pid = spawn(var)?;
    if SLURM_NOTED.load(Ordering::SeqCst) {
        note_slurm();
    }
    Some(pid)
}

fn spawn(var: &str) -> Option<i32> {
    let args = ENABLED.lock().expect("guardian lock").clone()?;
    let exe = std::env::current_exe().ok()?;
    let table = {
        let mut groups = GROUPS.lock().expect("guardian lock");
        if groups.is_none() {
            *groups = GroupTable::create();
        }
        groups
            .as_ref()
            .map(|t| format!("{}:{}", std::process::id(), t.file.as_raw_fd()))
    };
    #[expect(
        clippy::disallowed_methods,
        reason = "the guardian is started by the process module, like every other process"
    )]
    let spawned = std::process::Command::new(exe)
        // Its command line names no tool either, so `pkill -9 -f <tool>` spares it too.
        .arg0("fanout-guardian")
        .args(args)
        .env(GUARDIAN_ENV, var)
        .env(GROUPS_ENV, table.unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: the terminal's Ctrl-C must not take the guardian down before us.
        .process_group(0)
        .spawn();
    let mut child = spawned.ok()?;
    let pid = child.id().cast_signed();
    *PIPE.lock().expect("guardian lock") = child.stdin.take();
    *WATCHED.lock().expect("guardian lock") = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .map(|fd| (pid, fd));
    // The child handle is dropped without waiting: the guardian outlives us by design. It ends
    // first only if killed; then a new one replaces it (`revive_if_dead`).
    Some(pid)
}

/// Whether a guardian watches this process's jobs (then it, not the parent-death signal, is
/// what kills them if the tool dies).
pub(crate) fn running() -> bool {
    PIPE.lock().expect("guardian lock").is_some()
}

/// Tell the guardian that jobs of this session run on Slurm (it cancels them before it kills).
pub(crate) fn note_slurm() {
    use std::io::Write;
    SLURM_NOTED.store(true, Ordering::SeqCst);
    if let Some(pipe) = PIPE.lock().expect("guardian lock").as_mut() {
        let _ = writeln!(pipe, "slurm");
    }
}

/// Note a job's process group in the guardian's table (`started`), or take it out: a job that
/// dropped its environment (`env -i`) carries no cookie, but stays in its group.
pub(crate) fn note_group(pgid: i32, started: bool) {
    if let Some(table) = GROUPS.lock().expect("guardian lock").as_mut() {
        if started {
            table.insert(pgid);
        } else {
            table.remove(pgid);
        }
    }
}

/// The guardian's work: wait for end-of-file on stdin (the tool is gone), then kill every
/// process of the session and every group in the tool's table.
fn guard(var: &str) {
    // A name of its own, so that `pkill -9 <tool>` or `killall -9 <tool>`, which match the
    // process name, kill the tool but not its guardian (which then kills the tool's jobs).
    // /proc/self/comm is the main thread's name, which is what ps and pkill show, whichever
    // thread runs this.
    let _ = std::fs::write("/proc/self/comm", "fanout-guardian");
    // Opened now, while the tool lives (its /proc entry goes with it).
    let mut table = std::env::var(GROUPS_ENV).ok().and_then(|v| {
        let (pid, fd) = v.split_once(':')?;
        File::open(format!("/proc/{pid}/fd/{fd}")).ok()
    });
    let mut slurm = false;
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(&chunk[..n]);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if line.trim_ascii() == b"slurm" {
                        slurm = true;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let groups = table.as_mut().map(read_groups).unwrap_or_default();
    // srun, once SIGKILLed, cannot cancel its job: cancel the session's Slurm jobs first.
    if slurm {
        super::slurm::cancel_session(var);
    }
    super::procs::kill_groups(&groups);
    super::procs::kill_all_marked(var);
}
