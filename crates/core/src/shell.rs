//! Values in shell scripts that stay data: a tool's template (lorchestra's `{{payload.id}}`,
//! parallamr's `--command`) is shell code with holes, and a value goes into a hole as a
//! reference to an environment variable that holds it, written for the quoting state the hole
//! is in:
//!
//! | the hole is                                  | it becomes        |
//! | -------------------------------------------- | ----------------- |
//! | unquoted (also inside `$( )`, in a comment)  | `"${NAME}"`       |
//! | inside double quotes or a here-document      | `${NAME}`         |
//! | inside single quotes                         | `'"${NAME}"'`     |
//!
//! Why references and not the value itself, quoted: the shell expands a parameter once and
//! never reads the result as code, so a value cannot run whatever it holds, and a misjudged
//! quoting state costs at most a split word, never a command (the value is never part of the
//! text the shell parses). Inlined quoting is as safe as the lexer that decides it, every case
//! of it; this is safe by construction and the lexer only decides how tidy the result is.
//!
//! The lexer follows POSIX `sh` (2024: `$'...'` included): quotes, `\`, `$( )`, `$(( ))`,
//! `${ }`, backticks, comments, here-documents (`<<`, `<<-`, quoted delimiters), `case`
//! patterns, and the words of each simple command after quote removal (`e''val` is `eval`).
//! Some places are refused, with the line and column, because no reference written there
//! means "this value, as data":
//! - right after a `\` or a `$`, inside backticks, `${ }` or `$'...'`;
//! - arithmetic (`$(( ))`, bash's `(( ))` and `[[ ]]`, `let`), which evaluates a variable's text
//!   as an expression, array subscripts and their `$(cmd)` included;
//! - a here-document with a quoted delimiter (nothing expands there), or its delimiter word;
//! - an argument of what runs its arguments as code: `eval`, `trap`, `.`/`source`;
//! - the name of the program a command runs (`{{x}} --help`, `exec {{x}}`): a value may not
//!   choose it; and the arguments of a command whose name is computed (`$CMD {{x}}`), which
//!   could be `eval`;
//! - a variable's name given to `export`, `read`, `printf -v`... (`export X={{x}}` is fine);
//! - inside an unquoted `$( )`, whose output is split into words and globbed.
//!
//! Each rule applies through nesting: `eval "$(printf {{x}})"` is refused like `eval {{x}}`.
//! What no lexer can see: a program that runs its own argument as code (`sh -c "... {{x}}"`,
//! `ssh host "..."`, `xargs sh -c`, `python -c`) gets the value as code; pass such a program
//! the variable's *name* and let it read the environment instead.

use std::fmt;

mod code;
mod lex;

use lex::Lexer;

/// A shell script being built: code as written, and holes for values.
#[derive(Debug, Default, Clone)]
pub struct ScriptBuilder {
    code: String,
    /// (offset in `code`, the variable that holds the value), in offset order.
    holes: Vec<(usize, String)>,
}

impl ScriptBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append code, as written.
    pub fn code(&mut self, code: &str) -> &mut Self {
        self.code.push_str(code);
        self
    }

    /// Append a hole for the value of the environment variable `var` (a name: letters, digits
    /// and `_`, not starting with a digit).
    pub fn value(&mut self, var: impl Into<String>) -> &mut Self {
        let var = var.into();
        debug_assert!(is_name(&var), "{var:?} is not a variable name");
        self.holes.push((self.code.len(), var));
        self
    }

    /// Whether a hole was added.
    pub fn has_values(&self) -> bool {
        !self.holes.is_empty()
    }

    /// The script: each hole replaced by a reference to its variable, written for its quoting
    /// state.
    ///
    /// # Errors
    /// A hole in a place where no reference means "this value, as data" (see the module's
    /// notes), or a NUL byte in the code (no program can receive one).
    pub fn build(&self) -> Result<String, HoleError> {
        if let Some(at) = self.code.find('\0') {
            return Err(HoleError::new(&self.code, at, Place::Nul, 0));
        }
        let places = Lexer::new(&self.code).places(self.holes.iter().map(|(at, _)| *at));
        let mut out = String::with_capacity(self.code.len() + self.holes.len() * 24);
        let mut from = 0;
        for (hole, ((at, var), place)) in self.holes.iter().zip(places).enumerate() {
            out.push_str(&self.code[from..*at]);
            from = *at;
            match place {
                Place::Unquoted | Place::Comment => {
                    out.push_str("\"${");
                    out.push_str(var);
                    out.push_str("}\"");
                }
                Place::DoubleQuoted | Place::HereDoc => {
                    out.push_str("${");
                    out.push_str(var);
                    out.push('}');
                }
                Place::SingleQuoted => {
                    out.push_str("'\"${");
                    out.push_str(var);
                    out.push_str("}\"'");
                }
                refused => return Err(HoleError::new(&self.code, *at, refused, hole)),
            }
        }
        out.push_str(&self.code[from..]);
        Ok(out)
    }
}

/// Whether `s` can name a shell variable.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where a hole is, as the shell will read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Unquoted,
    Comment,
    DoubleQuoted,
    SingleQuoted,
    /// The body of a here-document whose delimiter is not quoted (it expands parameters).
    HereDoc,
    // Refused:
    AfterBackslash,
    AfterDollar,
    Backticks,
    ParameterExpansion,
    AnsiCQuoted,
    Arithmetic,
    /// The body of `<<'EOF'`: nothing expands.
    QuotedHereDoc,
    HereDocDelimiter,
    /// An argument of a command that evaluates its arguments: `eval`, `let`, `trap`, `.`,
    /// `source`, `[[ ]]`.
    Evaluated(&'static str),
    /// The name of the program a command runs (a value may not choose it).
    CommandName,
    /// A variable's name given to `export`, `read`, `printf -v`... (bash evaluates array
    /// subscripts in it: `a[$(cmd)]`).
    VariableName(&'static str),
    /// An argument of a command whose name is computed (`$CMD`, `` `...` ``): it may be `eval`.
    ComputedCommand,
    /// Inside an unquoted `$( )` or `${ }`, whose result is split into words and globbed.
    Split,
    /// A NUL byte in the code.
    Nul,
}

impl Place {
    /// Whether a value may not be put here.
    pub fn refused(self) -> bool {
        !matches!(
            self,
            Place::Unquoted
                | Place::Comment
                | Place::DoubleQuoted
                | Place::SingleQuoted
                | Place::HereDoc
        )
    }

    /// Where the hole is, in words; for a refused place, why and what to write instead.
    pub fn describe(self) -> &'static str {
        match self {
            Place::Unquoted => "unquoted",
            Place::Comment => "in a comment",
            Place::DoubleQuoted => "inside double quotes",
            Place::SingleQuoted => "inside single quotes",
            Place::HereDoc => "inside a here-document",
            Place::AfterBackslash => "right after a backslash, which would escape the quoting",
            Place::AfterDollar => "right after a `$`, which would read it as a variable name",
            Place::Backticks => "inside backticks: write $(...) instead of `...`",
            Place::ParameterExpansion => {
                "inside ${...}: set a variable to the value first (X={{...}}), then use ${X...}"
            }
            Place::AnsiCQuoted => {
                "inside or after a $'...' string (which shells read differently): use \"...\" or \
                 '...'"
            }
            Place::Arithmetic => {
                "inside arithmetic ($((...)) or ((...))), which evaluates a value as an \
                 expression (and can run commands from it)"
            }
            Place::QuotedHereDoc => {
                "inside a here-document with a quoted delimiter (<<'EOF'), where nothing is \
                 expanded: leave the delimiter unquoted (<<EOF)"
            }
            Place::HereDocDelimiter => "as a here-document's delimiter",
            Place::Evaluated("eval") => "in an argument of eval, which runs it as code",
            Place::Evaluated("trap") => "in an argument of trap, which runs it as code",
            Place::Evaluated("." | "source") => {
                "in an argument of . (source), which runs the file it names as code"
            }
            Place::Evaluated("let") => {
                "in an argument of let, which evaluates it as an expression (and can run \
                 commands from it)"
            }
            Place::Evaluated(_) => {
                "inside [[ ]], which evaluates operands of -eq, -lt... as expressions (and can \
                 run commands from them): use [ ] instead"
            }
            Place::CommandName => {
                "where the program to run is named: a value may not choose it (write the \
                 program in the command; a value can be its argument)"
            }
            Place::ComputedCommand => {
                "in an argument of a command whose name is computed ($CMD, $(...)), which could \
                 be eval: write the program's name in the command"
            }
            Place::VariableName(_) => {
                "where a variable's name is expected (bash evaluates a name like a[$(cmd)]): \
                 write the name in the command, the value after its ="
            }
            Place::Split => {
                "inside an unquoted $(...), whose output is split into words and globbed: put \
                 double quotes around it, \"$(...)\""
            }
            Place::Nul => "a NUL byte in the command, which no program can be given",
        }
    }
}

/// A hole in a place where a value cannot be data, or code no program can receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoleError {
    pub place: Place,
    /// Which hole (0 for the first added).
    pub hole: usize,
    /// Byte offset in the code (holes take no room in it).
    pub offset: usize,
    /// 1-based line and column (in characters) of the code.
    pub line: usize,
    pub column: usize,
    /// The code around the hole, the hole shown as `{{…}}`.
    pub excerpt: String,
}

impl HoleError {
    fn new(code: &str, offset: usize, place: Place, hole: usize) -> Self {
        let before = &code[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = code[line_start..offset].chars().count() + 1;
        let line_end = code[offset..].find('\n').map_or(code.len(), |i| offset + i);
        let head: String = {
            let h: Vec<char> = code[line_start..offset].chars().collect();
            let from = h.len().saturating_sub(30);
            let prefix = if from > 0 { "…" } else { "" };
            format!("{prefix}{}", h[from..].iter().collect::<String>())
        };
        let tail: String = {
            let t: Vec<char> = code[offset..line_end].chars().collect();
            let suffix = if t.len() > 30 { "…" } else { "" };
            format!("{}{suffix}", t.iter().take(30).collect::<String>())
        };
        let marker = if place == Place::Nul { "" } else { "{{…}}" };
        HoleError {
            place,
            hole,
            offset,
            line,
            column,
            excerpt: format!("{head}{marker}{tail}"),
        }
    }
}

impl fmt::Display for HoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.place == Place::Nul {
            "the command holds"
        } else {
            "a placeholder"
        };
        write!(
            f,
            "{what} {} (line {}, column {}: `{}`)",
            self.place.describe(),
            self.line,
            self.column,
            self.excerpt.replace('\n', "⏎")
        )
    }
}

impl std::error::Error for HoleError {}
