//! The oracle for values in shell scripts (`fanout::shell`), with a real `sh` as the judge:
//! shared by the core's property test and the `shell_values` fuzz target.
//!
//! A script is built once, with holes; it runs twice, the hole's variable holding the value
//! under test and then a plain stand-in. A value that stays data changes nothing but where it
//! is printed: the first run's output (and exit code) must be the second's with the stand-in
//! replaced by the value. A value that ran as code, split into words or globbed would show.

use std::path::Path;
use std::process::{Command, Stdio};

/// The stand-in value: letters no token of the generated scripts holds.
pub const STAND_IN: &str = "qQqQq";

/// The variable the hole refers to.
pub const VAR: &str = "FANOUT_TEST_VALUE";

/// A piece of a generated script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Code(String),
    Hole,
}

/// Code a script is made of: quotes, expansions, here-documents, case, commands that print
/// their arguments. No loops, no files written, no unquoted `$var` of the script's own, no `$$`
/// (a different number in each run), no
/// pipes or `&` (two processes writing to stderr at once interleave their messages). Case
/// patterns hold a `Y`, which values never do, and values end in `Z`, which no word here holds,
/// so a value matches the same patterns, and names the same (missing) command, as the
/// stand-in.
const TOKENS: &[&str] = &[
    "printf '[%s]\\n' ",
    "printf '[%s]\\n' ",
    " ",
    " ",
    "\n",
    ";",
    "\"",
    "\"",
    "'",
    "'",
    "$(",
    ")",
    "(",
    "`",
    "\\",
    "${",
    "}",
    "$((",
    "))",
    "#",
    "cat <<E\n",
    "cat <<'E'\n",
    "cat <<-E\n",
    "\nE\n",
    "\n\tE\n",
    "case ",
    " in ",
    "Y*) ",
    "*) ",
    ";;",
    " esac",
    "a=",
    "eval ",
    "let ",
    "[[ ",
    " ]]",
    "x",
    "{ ",
    " }",
    "$'",
    "2>&1",
    "true",
    ":",
    "é",
    "=",
];

/// At most this many holes in a script, and bytes in a value: a word made of values stays
/// under the length of a file name (255 bytes), past which `sh` says "File name too long"
/// instead of "not found" when the word is a command.
pub const MAX_HOLES: usize = 6;
pub const MAX_VALUE: usize = 24;

/// A script from fuzz bytes: each byte picks a token or (one in eight, at most [`MAX_HOLES`])
/// a hole.
pub fn pieces(data: &[u8]) -> Vec<Piece> {
    let mut holes = 0;
    data.iter()
        .map(|&b| {
            if b % 8 == 7 && holes < MAX_HOLES {
                holes += 1;
                Piece::Hole
            } else {
                let i = usize::from(b / 8 * 7 + b % 8) % TOKENS.len();
                Piece::Code(TOKENS[i].to_owned())
            }
        })
        .collect()
}

/// A value from fuzz bytes: any text but NUL (no program can receive one) and `Y`, ending in
/// `Z` (see [`TOKENS`]), at most [`MAX_VALUE`] bytes.
pub fn value(data: &[u8]) -> String {
    let mut v = String::from_utf8_lossy(data).replace(['\0', 'Y'], "");
    let mut end = v.len().min(MAX_VALUE - 1);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v.truncate(end);
    v.push('Z');
    v
}

/// Values that would run, split or glob if they were pasted into the script.
pub const HOSTILE: &[&str] = &[
    "a very long value, longer than a file name may be, so that it is not one: \
     0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567\
     890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567\
     8901234567890",
    "$(touch PWNED)",
    "`touch PWNED`",
    "'; touch PWNED; '",
    "\"; touch PWNED; \"",
    "x\ntouch PWNED",
    "a b  c\td",
    "*",
    "-n",
    "${HOME}",
    "\\",
    "'\"\\`$",
    "\nE\ntouch PWNED\ncat <<E\n",
    "a[$(touch PWNED)]",
    "",
    "é ☃ \u{1F600}",
    "}",
    "'",
    "\"",
];

/// Run `script` with `sh -c` in `dir`, the hole's variable holding `value`: (exit code, stdout
/// and stderr).
pub fn run(script: &str, value: &str, dir: &Path) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt as _;
    // A group of its own: tests beside it in the same binary signal their own groups.
    let out = Command::new("sh")
        .process_group(0)
        .arg("-c")
        .arg(script)
        .env(VAR, value)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("sh runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str("\n--- stderr\n");
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// The oracle: `script` (built with its holes referring to [`VAR`]) treats `value` as data.
/// `dir` must be empty; a file in it afterwards is something a value ran.
pub fn check(script: &str, value: &str, dir: &Path) -> Result<(), String> {
    let (code_v, out_v) = run(script, value, dir);
    let (code_q, out_q) = run(script, STAND_IN, dir);
    let expected = out_q.replace(STAND_IN, value);
    if code_v != code_q || out_v != expected {
        return Err(format!(
            "the value changed what the script did:\nscript: {script:?}\nvalue: {value:?}\n\
             with the value (exit {code_v:?}):\n{out_v}\nexpected (exit {code_q:?}):\n{expected}"
        ));
    }
    let left: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    if !left.is_empty() {
        return Err(format!(
            "the script left files {left:?}:\nscript: {script:?}\nvalue: {value:?}"
        ));
    }
    Ok(())
}
