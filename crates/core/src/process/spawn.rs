//! A [`Command`] as a duct expression ready to start: the program looked up once, stdin, the
//! child's set-up, folder and environment.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use super::command::Command;
use super::sys;

pub(super) fn base_expression(cmd: &Command) -> duct::Expression {
    expression_with_stdin(cmd, None)
}

/// The command as a duct expression, its stdin from `stdin` (else `/dev/null`). duct lets the
/// innermost redirection win, so stdin is chosen here, not wrapped around the result.
#[expect(
    clippy::disallowed_methods,
    reason = "this module is the one place that starts subprocesses"
)]
pub(super) fn expression_with_stdin(
    cmd: &Command,
    stdin: Option<os_pipe::PipeReader>,
) -> duct::Expression {
    let program = resolve(cmd).map_or(Cow::Borrowed(cmd.program.as_os_str()), |p| {
        Cow::Owned(p.into_os_string())
    });
    let expr = duct::cmd(&*program, &cmd.args);
    let expr = match stdin {
        Some(pipe) => expr.stdin_file(pipe),
        None => expr.stdin_null(),
    };
    let mut expr = expr.unchecked().before_spawn(sys::configure_child);
    if let Some(dir) = &cmd.cwd {
        expr = expr.dir(dir);
    }
    for name in &cmd.env_remove {
        expr = expr.env_remove(name);
    }
    for (name, value) in &cmd.env {
        expr = expr.env(name, value);
    }
    expr
}

/// The absolute path of a program named without a `/`, looked up on `PATH` once per program and
/// remembered. `None` leaves the lookup to the spawn: when the command sets or removes `PATH`,
/// when `PATH` has a relative entry (which depends on the child's working folder), or when the
/// program is not found (so the spawn reports the error).
///
/// Why: std starts a child with `posix_spawn` (a `vfork`) only when it needs no `PATH` search
/// of its own under a modified environment, and every job's environment is modified (the
/// cookie). Otherwise it forks, and the fork's page-table copy cost more than the job itself
/// for short jobs; searching `PATH` in the child also cost one failed `execve` per entry.
fn resolve(cmd: &Command) -> Option<PathBuf> {
    static CACHE: OnceLock<Mutex<HashMap<(OsString, OsString), PathBuf>>> = OnceLock::new();
    let program = &cmd.program;
    if program.as_bytes().contains(&b'/') || program.is_empty() {
        return None;
    }
    let touches_path = |name: &OsString| name == "PATH";
    if cmd.env.iter().any(|(name, _)| touches_path(name)) || cmd.env_remove.iter().any(touches_path)
    {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    if std::env::split_paths(&path).any(|dir| !dir.is_absolute()) {
        return None;
    }
    let cache = CACHE.get_or_init(Mutex::default);
    let key = (program.clone(), path);
    if let Some(found) = cache.lock().expect("program cache").get(&key) {
        return Some(found.clone());
    }
    let found = which::which_in(program, Some(&key.1), "/").ok()?;
    cache
        .lock()
        .expect("program cache")
        .insert(key, found.clone());
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_on_path_are_looked_up_once_unless_the_job_sets_its_own_path() {
        let sh = resolve(&Command::new("sh")).expect("sh is on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        // Paths, unknown programs and commands with their own PATH are left to the spawn.
        assert_eq!(resolve(&Command::new("/bin/sh")), None);
        assert_eq!(resolve(&Command::new("./run.sh")), None);
        assert_eq!(resolve(&Command::new("no-such-program-fanout")), None);
        assert_eq!(resolve(&Command::new("sh").env("PATH", "/nowhere")), None);
        assert_eq!(resolve(&Command::new("sh").env_remove("PATH")), None);
    }
}
