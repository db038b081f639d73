//! The words of shell code as the lexer reads them: each simple command's words after quote
//! removal, what its command does with its arguments, `case` patterns, and the places in it
//! where a value may not go.

use super::{Place, is_name};

/// One level of what the lexer is inside.
#[derive(Debug)]
pub(super) enum Frame {
    /// Top level, `$( )`: words, operators, commands.
    Code(Code),
    Double,
    Single,
    AnsiC,
    Backticks,
    /// `#` to the end of the line.
    Comment,
    /// `${ ... }`; `'` quotes only outside double quotes.
    Param {
        in_double: bool,
    },
    /// `$(( ))` (or a `(( ))` command): nesting of `(`.
    Arith {
        depth: u32,
    },
    HereDoc(HereDoc),
}

#[derive(Debug, Clone)]
pub(super) struct HereDoc {
    pub(super) delimiter: String,
    pub(super) strip_tabs: bool,
    pub(super) quoted: bool,
}

/// The word being read.
#[derive(Debug, Default)]
pub(super) struct Word {
    /// Its text after quote removal, while it is known (see `opaque`).
    text: String,
    /// Its unquoted characters before any quote, expansion or hole (`NAME=` of an assignment).
    bare: String,
    bare_ended: bool,
    quoted: bool,
    /// Holds an expansion or a hole: its text is not known.
    opaque: bool,
}

impl Word {
    pub(super) fn literal(&mut self, c: char, quoted: bool) {
        self.text.push(c);
        if quoted {
            self.quoted = true;
            self.bare_ended = true;
        } else if !self.bare_ended {
            self.bare.push(c);
        }
    }

    pub(super) fn quote(&mut self) {
        self.quoted = true;
        self.bare_ended = true;
    }

    pub(super) fn opaque(&mut self) {
        self.opaque = true;
        self.bare_ended = true;
    }

    /// `NAME=...`: an assignment (before the command word), or a name given its value.
    fn assigns(&self) -> bool {
        self.bare
            .split_once('=')
            .is_some_and(|(name, _)| is_name(name))
    }

    /// An unquoted reserved word (`case`, `if`, `[[`...).
    fn is_reserved(&self, w: &str) -> bool {
        !self.quoted && !self.opaque && self.text == w
    }

    /// The command it names, after quote removal (`e''val` is `eval`).
    fn name(&self) -> Option<&str> {
        (!self.opaque).then_some(self.text.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    Command,
    Argument,
    CaseSubject,
    CaseIn,
}

/// What the command being read does with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Does {
    Nothing,
    /// Runs or evaluates them: `eval`, `let`, `trap`, `.`, `source`, `[[`.
    Evaluates(&'static str),
    /// Takes variable names: `export`, `read`...
    Names(&'static str),
    /// `printf`, with `-v` just read.
    Printf {
        name_next: bool,
    },
    /// Its name comes from an expansion (`$CMD`, `` `...` ``): it could be `eval`.
    Computed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Case {
    /// Reading patterns, up to `)`.
    Pattern,
    /// Reading the commands of a branch, up to `;;` or `esac`.
    Body,
}

#[derive(Debug)]
pub(super) struct Code {
    /// Ends at a `)` (a `$( )`) rather than at the end of the text.
    pub(super) in_parens: bool,
    /// `(` opened inside (subshells, function definitions).
    pub(super) depth: u32,
    pub(super) word: Option<Word>,
    /// Where the next word is: a command word, an argument, a case's subject...
    pub(super) next: Next,
    /// The word being read is a redirection's target (`> FILE`).
    pub(super) redirect: bool,
    pub(super) does: Does,
    pub(super) cases: Vec<Case>,
    /// Here-documents whose bodies start at the next newline.
    pub(super) pending: Vec<HereDoc>,
    /// A hole was met where a here-document's delimiter is read.
    pub(super) delimiter_next: Option<bool>,
}

impl Code {
    pub(super) fn new(in_parens: bool) -> Self {
        Code {
            in_parens,
            depth: 0,
            word: None,
            next: Next::Command,
            redirect: false,
            does: Does::Nothing,
            cases: Vec::new(),
            pending: Vec::new(),
            delimiter_next: None,
        }
    }

    pub(super) fn in_pattern(&self) -> bool {
        self.cases.last() == Some(&Case::Pattern) && self.next != Next::CaseSubject
    }

    pub(super) fn word(&mut self) -> &mut Word {
        self.word.get_or_insert_with(Word::default)
    }

    /// Why a value may not be part of the word being read, if it may not.
    pub(super) fn refusal(&self) -> Option<Place> {
        if self.delimiter_next.is_some() {
            return Some(Place::HereDocDelimiter);
        }
        if self.redirect || self.in_pattern() {
            return None;
        }
        let assigns = self.word.as_ref().is_some_and(Word::assigns);
        match (self.next, self.does) {
            (Next::Command, _) if !assigns => Some(Place::CommandName),
            (Next::Argument, Does::Evaluates(what)) => Some(Place::Evaluated(what)),
            (Next::Argument, Does::Names(what)) if !assigns => Some(Place::VariableName(what)),
            (Next::Argument, Does::Printf { name_next: true }) => {
                Some(Place::VariableName("printf -v"))
            }
            (Next::Argument, Does::Computed) => Some(Place::ComputedCommand),
            _ => None,
        }
    }

    /// Whether an expansion in the word being read is split into words and globbed: not in an
    /// assignment before the command (`a=$(x) cmd`; `cmd a=$(x)` is an argument, split), a
    /// case's subject or a redirection's target. (`export a=$(x)` is split by some shells and
    /// not by others: split, to be safe.)
    pub(super) fn splits(&self) -> bool {
        let assignment =
            self.next == Next::Command && self.word.as_ref().is_some_and(Word::assigns);
        !(self.redirect || self.next == Next::CaseSubject || assignment)
    }

    /// The word ends (a blank, an operator, a newline).
    pub(super) fn end_word(&mut self) {
        let Some(word) = self.word.take() else {
            return;
        };
        if std::mem::take(&mut self.redirect) {
            return;
        }
        match self.next {
            Next::CaseSubject => self.next = Next::CaseIn,
            Next::CaseIn => {
                if word.is_reserved("in") {
                    self.cases.push(Case::Pattern);
                }
                self.next = Next::Command;
            }
            _ if self.in_pattern() => {
                if word.is_reserved("esac") {
                    self.cases.pop();
                    self.next = Next::Argument;
                }
            }
            Next::Command => self.command_word(&word),
            Next::Argument => match self.does {
                Does::Evaluates("[[") if word.is_reserved("]]") => self.does = Does::Nothing,
                Does::Printf { .. } => {
                    self.does = Does::Printf {
                        name_next: word.name() == Some("-v"),
                    };
                }
                _ => {}
            },
        }
    }

    /// A word where a command starts: a reserved word, an assignment, or the command's name.
    fn command_word(&mut self, word: &Word) {
        if word.is_reserved("case") {
            self.next = Next::CaseSubject;
        } else if word.is_reserved("esac") && self.cases.last() == Some(&Case::Body) {
            self.cases.pop();
            self.next = Next::Argument;
        } else if word.is_reserved("[[") {
            self.does = Does::Evaluates("[[");
            self.next = Next::Argument;
        } else if [
            "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "{", "}", "!",
            "time",
        ]
        .iter()
        .any(|w| word.is_reserved(w))
            || word.assigns()
            || matches!(word.name(), Some("exec" | "command" | "builtin"))
        {
            // Still a command word next (`exec PROGRAM`: the program is named next).
        } else {
            self.does = match word.name() {
                None => Does::Computed,
                Some("eval") => Does::Evaluates("eval"),
                Some("let") => Does::Evaluates("let"),
                Some("trap") => Does::Evaluates("trap"),
                Some(".") => Does::Evaluates("."),
                Some("source") => Does::Evaluates("source"),
                Some("export") => Does::Names("export"),
                Some("readonly") => Does::Names("readonly"),
                Some("local") => Does::Names("local"),
                Some("declare") => Does::Names("declare"),
                Some("typeset") => Does::Names("typeset"),
                Some("read") => Does::Names("read"),
                Some("printf") => Does::Printf { name_next: false },
                _ => Does::Nothing,
            };
            self.next = Next::Argument;
        }
    }

    /// A command ends (`;`, `&`, `|`, a newline...): the next word is a command word.
    pub(super) fn end_command(&mut self) {
        self.end_word();
        self.next = Next::Command;
        self.does = Does::Nothing;
        self.redirect = false;
    }
}
