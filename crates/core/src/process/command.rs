//! What to run: [`Command`] (program, arguments, environment, folder, output [`Sink`]s, time
//! limit) and where it runs ([`Launcher`]).

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::allocation::Allocation;
use super::slurm::{Slurm, SlurmError};

/// Where a stream of the child goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// `/dev/null`.
    Null,
    /// Kept in memory; only the last `max_bytes` bytes are kept.
    Capture { max_bytes: usize },
    /// Written to this file, truncating it first. The child writes to the file directly.
    File(PathBuf),
    /// Appended to this file (a retry adds to the first attempt's log).
    AppendFile(PathBuf),
}

impl Sink {
    /// Keep the last 64 KiB.
    pub fn tail() -> Self {
        Sink::Capture {
            max_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stderr {
    Sink(Sink),
    ToStdout,
}

/// Where a command runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Launcher {
    /// Here, as a child process of this program.
    #[default]
    Local,
    /// On a Slurm cluster, as a job step started with `srun` (see [`Slurm`]). Shared: the tasks of
    /// a batch carry one setting, not a copy each.
    Slurm(std::sync::Arc<Slurm>),
    /// On a worker of a Slurm allocation (see [`Allocation`]): many tasks, one scheduler job.
    Packed(std::sync::Arc<Allocation>),
}

impl Launcher {
    /// The backends' names, as users choose them.
    pub const NAMES: [&'static str; 2] = ["local", "slurm"];

    /// The launcher named `backend`, with `slurm_args` as extra `srun` options, checked before
    /// anything runs (see [`Slurm::check`]).
    ///
    /// # Errors
    /// An unknown backend, Slurm options for the local backend, or a Slurm that cannot be used
    /// here.
    pub fn select(backend: &str, slurm_args: &[String]) -> Result<Launcher, SlurmError> {
        match backend {
            "local" if slurm_args.is_empty() => Ok(Launcher::Local),
            "local" => Err(SlurmError::ArgsWithoutSlurm(slurm_args.join(" "))),
            "slurm" => {
                let slurm = Slurm {
                    args: slurm_args.to_vec(),
                    ..Slurm::default()
                };
                slurm.check()?;
                Ok(Launcher::Slurm(slurm.into()))
            }
            other => Err(SlurmError::UnknownBackend(other.to_owned())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Launcher::Local => "local",
            Launcher::Slurm(_) | Launcher::Packed(_) => "slurm",
        }
    }
}

/// A command to run: program, arguments, environment, folder, output sinks, time limit, and
/// where it runs.
#[derive(Debug, Clone)]
pub struct Command {
    pub(super) program: OsString,
    /// A name for the job on a cluster; the program's file name when unset.
    pub(super) name: Option<String>,
    pub(super) launcher: Launcher,
    pub(super) args: Vec<OsString>,
    pub(super) env: Vec<(OsString, OsString)>,
    pub(super) env_remove: Vec<OsString>,
    pub(super) cwd: Option<PathBuf>,
    pub(super) stdout: Sink,
    pub(super) stderr: Stderr,
    pub(super) timeout: Option<Duration>,
    pub(super) grace: Duration,
}

impl Command {
    /// Run `program` (looked up on `PATH` unless it contains a `/`). Output is captured as a
    /// 64 KiB tail per stream; no time limit; 2 s between SIGTERM and SIGKILL.
    pub fn new(program: impl Into<OsString>) -> Self {
        Command {
            program: program.into(),
            name: None,
            launcher: Launcher::Local,
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            stdout: Sink::tail(),
            stderr: Stderr::Sink(Sink::tail()),
            timeout: None,
            grace: Duration::from_secs(2),
        }
    }

    /// `sh -c script`.
    pub fn shell(script: impl Into<OsString>) -> Self {
        Command::new("sh").arg("-c").arg(script)
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<A: Into<OsString>>(mut self, args: impl IntoIterator<Item = A>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn env_remove(mut self, name: impl Into<OsString>) -> Self {
        self.env_remove.push(name.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdout(mut self, sink: Sink) -> Self {
        self.stdout = sink;
        self
    }

    pub fn stderr(mut self, sink: Sink) -> Self {
        self.stderr = Stderr::Sink(sink);
        self
    }

    /// Send stderr wherever stdout goes (one interleaved log).
    pub fn stderr_to_stdout(mut self) -> Self {
        self.stderr = Stderr::ToStdout;
        self
    }

    /// Kill the tree if it runs longer than this. `None`: no limit.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between SIGTERM and SIGKILL when the tree is killed.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Run it there (default: [`Launcher::Local`]).
    pub fn launcher(mut self, launcher: Launcher) -> Self {
        self.launcher = launcher;
        self
    }

    /// The job's name on a cluster (the task's name, say).
    pub fn job_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub(super) fn job_name_or_program(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            Path::new(&self.program)
                .file_name()
                .map_or_else(|| "job".to_owned(), |n| n.to_string_lossy().into_owned())
        })
    }

    pub fn program(&self) -> &OsStr {
        &self.program
    }

    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// This command as an `srun` command line on `slurm`, `marker` as the job's comment: the
    /// step's options, then the program and its arguments.
    pub(super) fn wrapped_in_srun(&self, slurm: &Slurm, marker: &str) -> Command {
        let mut args = slurm.srun_options(&self.job_name_or_program(), self.timeout, Some(marker));
        args.push(self.program.clone());
        args.extend(self.args.iter().cloned());
        let mut wrapped = self.clone();
        wrapped.program = "srun".into();
        wrapped.args = args;
        wrapped.launcher = Launcher::Local;
        wrapped
    }

    /// The `srun` options this command would run with on `slurm` (without the comment), for
    /// `--dry-run`.
    pub fn srun_line(&self, slurm: &Slurm) -> String {
        let mut line = Command::new("srun");
        line.args = slurm.srun_options(&self.job_name_or_program(), self.timeout, None);
        line.display()
    }

    /// The command line as a shell would accept it, for `--dry-run` and error messages.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(&a.to_string_lossy()).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `word` as one word for `sh`: as it is when it holds only characters no shell treats
/// specially, else in single quotes (a `'` inside written `'\''`).
pub fn shell_quote(word: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let c = Command::new("uvx").args(["marimo", "export", "my notebook.py", "it's"]);
        assert_eq!(c.display(), r"uvx marimo export 'my notebook.py' 'it'\''s'");
    }

    #[test]
    fn the_srun_line_names_the_step_limits_it_and_carries_the_command() {
        let slurm = Slurm {
            partition: Some("debug".into()),
            cpus: Some(2),
            mem: Some("2G".into()),
            args: vec!["--qos=short".into()],
            ..Slurm::default()
        };
        let cmd = Command::new("python")
            .args(["train.py", "--lr", "0.1"])
            .job_name("train lr=0.1")
            .timeout(Some(Duration::from_secs(90)));
        let w = cmd.wrapped_in_srun(&slurm, "FANOUT_JOB_1_a=7");
        assert_eq!(w.program(), "srun");
        assert_eq!(
            w.display(),
            "srun '--job-name=train lr=0.1' --ntasks=1 --quit-on-interrupt \
             --comment=FANOUT_JOB_1_a=7 --time=3 --partition=debug --cpus-per-task=2 --mem=2G \
             --qos=short python train.py --lr 0.1"
        );
    }
}
