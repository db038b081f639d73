//! The lexer: where each hole of a script is, as `sh` will read it.

use super::Place;
use super::code::{Case, Code, Does, Frame, HereDoc, Next};

pub(super) struct Lexer<'a> {
    s: &'a [u8],
    text: &'a str,
    stack: Vec<Frame>,
    /// The offset of the next hole not yet placed: nothing is read across it (a hole splits
    /// an operator: `;{{x}};` is two `;`, not `;;`).
    limit: usize,
    /// Past a `$'...'` with a backslash in it, which shells end in different places.
    lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Backslash,
    Dollar,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Lexer {
            s: text.as_bytes(),
            text,
            stack: vec![Frame::Code(Code::new(false))],
            limit: usize::MAX,
            lost: false,
        }
    }

    /// The place of each hole (offsets in ascending order).
    pub(super) fn places(mut self, holes: impl IntoIterator<Item = usize>) -> Vec<Place> {
        let holes: Vec<usize> = holes.into_iter().collect();
        debug_assert!(holes.windows(2).all(|w| w[0] <= w[1]), "holes in order");
        let mut out = Vec::with_capacity(holes.len());
        let mut next_hole = 0;
        let mut i = 0;
        // What the byte before `i` left open for a hole at `i`.
        let mut after = After::Nothing;
        loop {
            while holes.get(next_hole) == Some(&i) {
                next_hole += 1;
                out.push(self.hole(after));
            }
            self.limit = holes.get(next_hole).copied().unwrap_or(usize::MAX);
            if i >= self.s.len() {
                break;
            }
            let (next, state) = self.step(i);
            debug_assert!(
                next > i && next <= self.limit.max(i + 1),
                "never across a hole"
            );
            after = state;
            i = next;
        }
        // Holes past the end (a broken offset) read as unquoted.
        out.resize(holes.len(), Place::Unquoted);
        out
    }

    /// The place of a hole here; a hole is a part of the word it is in.
    fn hole(&mut self, after: After) -> Place {
        match after {
            After::Backslash => return Place::AfterBackslash,
            After::Dollar => return Place::AfterDollar,
            After::Nothing => {}
        }
        if matches!(self.stack.last(), Some(Frame::Comment)) {
            return Place::Comment;
        }
        if self.lost {
            return Place::AnsiCQuoted;
        }
        let place = match self.stack.last().expect("the top frame stays") {
            Frame::Code(_) => Place::Unquoted,
            Frame::Comment => Place::Comment,
            Frame::Double => Place::DoubleQuoted,
            Frame::Single => Place::SingleQuoted,
            Frame::AnsiC => Place::AnsiCQuoted,
            Frame::Backticks => Place::Backticks,
            Frame::Param { .. } => Place::ParameterExpansion,
            Frame::Arith { .. } => Place::Arithmetic,
            Frame::HereDoc(h) if h.quoted => Place::QuotedHereDoc,
            Frame::HereDoc(_) => Place::HereDoc,
        };
        if place.refused() {
            return place;
        }
        // Every level decides: `eval "$(printf {{x}})"` runs the value, `$(printf {{x}}) arg`
        // names the program with it, `$(( $(cat <<E ...) ))` computes with it. A
        // here-document's body is its command's input, not its words: the code that owns it
        // (the level just below) has no say.
        for (level, frame) in self.stack.iter().enumerate() {
            let above = self.stack.get(level + 1);
            match frame {
                Frame::Code(_) if matches!(above, Some(Frame::HereDoc(_))) => {}
                Frame::Code(code) => {
                    if let Some(refused) = code.refusal() {
                        return refused;
                    }
                    // `$( )` and `${ }` right in code: their result is split and globbed.
                    let expansion = matches!(above, Some(Frame::Code(_) | Frame::Param { .. }));
                    if expansion && code.splits() {
                        return Place::Split;
                    }
                }
                Frame::Arith { .. } => return Place::Arithmetic,
                _ => {}
            }
        }
        self.opaque_word();
        place
    }

    /// The byte at `i`; 0 at the end and at a hole (nothing is read across one).
    fn at(&self, i: usize) -> u8 {
        if i >= self.limit {
            0
        } else {
            self.s.get(i).copied().unwrap_or(0)
        }
    }

    /// The character at `i` (whole, even when it is several bytes).
    fn char_at(&self, i: usize) -> (char, usize) {
        let len = utf8_len(self.s[i]).min(self.s.len() - i);
        let c = self
            .text
            .get(i..i + len)
            .and_then(|s| s.chars().next())
            .unwrap_or('\u{FFFD}');
        (c, len)
    }

    /// The offset after the character a `\` at `i` escapes.
    fn escaped(&self, i: usize) -> usize {
        if i + 1 >= self.s.len() || i + 1 >= self.limit {
            i + 1
        } else {
            i + 1 + self.char_at(i + 1).1
        }
    }

    fn push(&mut self, frame: Frame, next: usize) -> (usize, After) {
        self.stack.push(frame);
        (next, After::Nothing)
    }

    fn pop(&mut self, next: usize) -> (usize, After) {
        self.stack.pop();
        (next, After::Nothing)
    }

    /// The code whose word the current text is part of: the top frame, or the code just below
    /// quotes (`"..."` and `'...'` are parts of a word).
    fn word_code(&mut self) -> Option<&mut Code> {
        let mut quoted = false;
        for frame in self.stack.iter_mut().rev() {
            match frame {
                Frame::Code(code) => {
                    if quoted {
                        code.word().quote();
                    }
                    return Some(code);
                }
                Frame::Double | Frame::Single => quoted = true,
                _ => return None,
            }
        }
        None
    }

    /// A character of the word being read, quoted or not.
    fn literal(&mut self, c: char) {
        let quoted = !matches!(self.stack.last(), Some(Frame::Code(_)));
        if let Some(code) = self.word_code() {
            code.word().literal(c, quoted);
        }
    }

    /// An expansion or a hole in the word being read: its text is no longer known. A
    /// here-document's body is no word of the code around it.
    fn opaque_word(&mut self) {
        for frame in self.stack.iter_mut().rev() {
            match frame {
                Frame::Code(code) => {
                    code.word().opaque();
                    return;
                }
                Frame::HereDoc(_) | Frame::Comment => return,
                _ => {}
            }
        }
    }

    /// Read what starts at `i`; the offset after it, and what it leaves open for a hole.
    fn step(&mut self, i: usize) -> (usize, After) {
        let c = self.s[i];
        let frame = self.stack.last().expect("the top frame stays");
        match frame {
            Frame::Single => {
                if c == b'\'' {
                    return self.pop(i + 1);
                }
                let (ch, len) = self.char_at(i);
                self.literal(ch);
                (i + len, After::Nothing)
            }
            Frame::Comment => {
                if c == b'\n' {
                    // The newline is the code's (it ends a command, starts here-documents).
                    self.stack.pop();
                    return self.code_step(i);
                }
                (i + 1, After::Nothing)
            }
            Frame::AnsiC | Frame::Backticks => {
                let ansi = matches!(frame, Frame::AnsiC);
                let close = if ansi { b'\'' } else { b'`' };
                if c == b'\\' {
                    // bash and POSIX 2024 read `$'a\'b'` as one string, dash (Debian's sh) as
                    // `$'a\'` and then a quote left open: what follows is read two ways.
                    self.lost |= ansi;
                    (self.escaped(i), After::Nothing)
                } else if c == close {
                    self.pop(i + 1)
                } else {
                    (i + 1, After::Nothing)
                }
            }
            Frame::Double => self.double_step(i, c),
            Frame::Param { in_double } => {
                let in_double = *in_double;
                match c {
                    b'}' => self.pop(i + 1),
                    b'\\' => (self.escaped(i), After::Nothing),
                    b'\'' if !in_double => self.push(Frame::Single, i + 1),
                    b'"' => self.push(Frame::Double, i + 1),
                    b'`' => self.push(Frame::Backticks, i + 1),
                    b'$' => self.dollar(i, in_double),
                    _ => (i + 1, After::Nothing),
                }
            }
            Frame::Arith { depth } => self.arith_step(i, c, *depth),
            Frame::HereDoc(_) => self.heredoc(i),
            Frame::Code(_) => self.code_step(i),
        }
    }

    /// In double quotes: `"` ends them; a backslash, backticks and `$` are special.
    fn double_step(&mut self, i: usize, c: u8) -> (usize, After) {
        match c {
            b'"' => self.pop(i + 1),
            b'\\' => self.backslash(i),
            b'`' => {
                self.opaque_word();
                self.push(Frame::Backticks, i + 1)
            }
            b'$' => self.dollar(i, true),
            _ => {
                let (ch, len) = self.char_at(i);
                self.literal(ch);
                (i + len, After::Nothing)
            }
        }
    }

    /// In arithmetic (`$(( ))`, `(( ))`): parentheses counted to its end.
    fn arith_step(&mut self, i: usize, c: u8, depth: u32) -> (usize, After) {
        match c {
            b'(' => {
                self.set_depth(depth + 1);
                (i + 1, After::Nothing)
            }
            b')' if depth > 0 => {
                self.set_depth(depth - 1);
                (i + 1, After::Nothing)
            }
            // `))`; a lone `)` ends it too (a broken script: sh will say so).
            b')' => self.pop(if self.at(i + 1) == b')' { i + 2 } else { i + 1 }),
            b'\\' => (self.escaped(i), After::Nothing),
            b'\'' => self.push(Frame::Single, i + 1),
            b'"' => self.push(Frame::Double, i + 1),
            b'`' => self.push(Frame::Backticks, i + 1),
            b'$' => self.dollar(i, false),
            _ => (i + 1, After::Nothing),
        }
    }

    fn set_depth(&mut self, to: u32) {
        if let Some(Frame::Arith { depth }) = self.stack.last_mut() {
            *depth = to;
        }
    }

    /// `\` in code, double quotes or a here-document: it escapes the next character (a newline:
    /// the line goes on).
    fn backslash(&mut self, i: usize) -> (usize, After) {
        if i + 1 == self.limit {
            return (i + 1, After::Backslash);
        }
        let next = self.escaped(i);
        if next > i + 1 {
            let (ch, _) = self.char_at(i + 1);
            match self.stack.last() {
                Some(Frame::Code(_)) if ch != '\n' => {
                    if let Some(code) = self.word_code() {
                        code.word().literal(ch, true);
                    }
                }
                Some(Frame::Double) => {
                    // In double quotes, `\` escapes only `$`, a backquote, `"`, `\` and the
                    // newline.
                    if !matches!(ch, '$' | '`' | '"' | '\\' | '\n') {
                        self.literal('\\');
                    }
                    if ch != '\n' {
                        self.literal(ch);
                    }
                }
                _ => {}
            }
        }
        (next, After::Nothing)
    }

    /// `$` in code, double quotes, `${ }`, arithmetic or a here-document.
    fn dollar(&mut self, i: usize, in_double: bool) -> (usize, After) {
        let in_code = matches!(self.stack.last(), Some(Frame::Code(_)));
        self.opaque_word();
        match (self.at(i + 1), self.at(i + 2)) {
            (b'(', b'(') => self.push(Frame::Arith { depth: 0 }, i + 3),
            (b'(', _) => self.push(Frame::Code(Code::new(true)), i + 2),
            (b'{', _) => self.push(Frame::Param { in_double }, i + 2),
            (b'\'', _) if in_code => self.push(Frame::AnsiC, i + 2),
            _ => (i + 1, After::Dollar),
        }
    }

    fn heredoc(&mut self, i: usize) -> (usize, After) {
        let Some(Frame::HereDoc(h)) = self.stack.last() else {
            unreachable!("called in a here-document")
        };
        let quoted = h.quoted;
        if i == 0 || self.s[i - 1] == b'\n' {
            let end = self.s[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.s.len(), |p| i + p);
            let mut line = &self.text[i..end];
            if h.strip_tabs {
                line = line.trim_start_matches('\t');
            }
            // A line with a hole in it is never the delimiter.
            if line == h.delimiter && self.limit > end {
                self.stack.pop();
                self.start_heredoc();
                return ((end + 1).min(self.s.len()), After::Nothing);
            }
        }
        if quoted {
            return (i + 1, After::Nothing);
        }
        match self.s[i] {
            b'\\' => self.backslash(i),
            b'`' => self.push(Frame::Backticks, i + 1),
            b'$' => self.dollar(i, true),
            _ => (i + 1, After::Nothing),
        }
    }

    /// After a newline of code, or the end of a here-document: the next pending body, if any.
    fn start_heredoc(&mut self) {
        let Some(Frame::Code(code)) = self.stack.last_mut() else {
            return;
        };
        if !code.pending.is_empty() {
            let h = code.pending.remove(0);
            self.stack.push(Frame::HereDoc(h));
        }
    }

    /// The delimiter word of a here-document, after `<<` or `<<-` (at `from`): its text
    /// without quotes, and whether any part of it was quoted (then the body stays as written).
    /// Stops at a hole, which is refused there.
    fn delimiter(&mut self, from: usize, strip_tabs: bool) -> (usize, After) {
        let mut j = from;
        while matches!(self.at(j), b' ' | b'\t') {
            j += 1;
        }
        let mut text = Vec::new();
        let mut quoted = false;
        let mut quote: Option<u8> = None;
        loop {
            let c = self.at(j);
            if c == 0 {
                if j >= self.limit {
                    // A hole in (or as) the delimiter.
                    if let Some(Frame::Code(code)) = self.stack.last_mut() {
                        code.delimiter_next = Some(strip_tabs);
                    }
                    return (j.max(from), After::Nothing);
                }
                break;
            }
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(b'"') | None, b'\\') => {
                    quoted = true;
                    if self.at(j + 1) != 0 {
                        j += 1;
                        text.push(self.s[j]);
                    }
                }
                (None, b'\'' | b'"') => {
                    quoted = true;
                    quote = Some(c);
                }
                (None, b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')') => {
                    break;
                }
                _ => text.push(c),
            }
            j += 1;
        }
        if let Some(Frame::Code(code)) = self.stack.last_mut() {
            code.pending.push(HereDoc {
                delimiter: String::from_utf8_lossy(&text).into_owned(),
                strip_tabs,
                quoted,
            });
        }
        (j.max(from + 1).min(self.s.len().max(from)), After::Nothing)
    }

    /// A redirection operator at `i` (`c`, then `n1`, `n2`): it ends a word, and the next
    /// word is its target (`2>`: the word `2`, no matter); after `<<`, a here-document's
    /// delimiter.
    fn redirection(&mut self, i: usize, c: u8, n1: u8, n2: u8) -> (usize, After) {
        let Some(Frame::Code(code)) = self.stack.last_mut() else {
            unreachable!("called in code")
        };
        code.end_word();
        if c == b'<' && n1 == b'<' && n2 != b'<' {
            let strip_tabs = n2 == b'-';
            return self.delimiter(i + if strip_tabs { 3 } else { 2 }, strip_tabs);
        }
        code.redirect = true;
        let n = if matches!(n1, b'<' | b'>' | b'&' | b'|') {
            if matches!(n2, b'<' | b'>' | b'&' | b'|') {
                3
            } else {
                2
            }
        } else {
            1
        };
        (i + n, After::Nothing)
    }

    fn code_step(&mut self, i: usize) -> (usize, After) {
        let c = self.s[i];
        let (n1, n2) = (self.at(i + 1), self.at(i + 2));
        let (ch, len) = self.char_at(i);
        let Some(Frame::Code(code)) = self.stack.last_mut() else {
            unreachable!("called in code")
        };
        match c {
            b' ' | b'\t' => {
                code.end_word();
                (i + 1, After::Nothing)
            }
            b'\n' => {
                code.end_command();
                self.start_heredoc();
                (i + 1, After::Nothing)
            }
            // A comment, to the end of the line (holes in it stay inert).
            b'#' if code.word.is_none() => self.push(Frame::Comment, i + 1),
            b'\\' => self.backslash(i),
            b'\'' => {
                code.word().quote();
                self.push(Frame::Single, i + 1)
            }
            b'"' => {
                code.word().quote();
                self.push(Frame::Double, i + 1)
            }
            b'`' => {
                code.word().opaque();
                self.push(Frame::Backticks, i + 1)
            }
            b'$' => self.dollar(i, false),
            b'(' => self.open_paren(i, n1),
            b')' => self.close_paren(i),
            b';' => {
                code.end_command();
                if n1 == b';' || n1 == b'&' {
                    // `;;`, `;&`, `;;&`: the end of a case branch.
                    if let Some(case) = code.cases.last_mut() {
                        *case = Case::Pattern;
                    }
                    let n = if n1 == b';' && n2 == b'&' { 3 } else { 2 };
                    return (i + n, After::Nothing);
                }
                (i + 1, After::Nothing)
            }
            b'|' if code.in_pattern() => {
                code.end_word();
                (i + 1, After::Nothing)
            }
            b'&' | b'|' => {
                code.end_command();
                (i + 1, After::Nothing)
            }
            b'<' | b'>' => self.redirection(i, c, n1, n2),
            _ => {
                code.word().literal(ch, false);
                (i + len, After::Nothing)
            }
        }
    }

    /// `(` in code: a case pattern's optional parenthesis, bash's `((` arithmetic (refused), or
    /// a subshell.
    fn open_paren(&mut self, i: usize, n1: u8) -> (usize, After) {
        let Some(Frame::Code(code)) = self.stack.last_mut() else {
            unreachable!("called in code")
        };
        code.end_word();
        if code.in_pattern() {
            // `case x in (a) ...`: an optional opening parenthesis.
            return (i + 1, After::Nothing);
        }
        if code.next == Next::Command && n1 == b'(' {
            // bash's arithmetic command (in sh, two subshells: refused either way).
            return self.push(Frame::Arith { depth: 0 }, i + 2);
        }
        code.end_command();
        code.depth += 1;
        (i + 1, After::Nothing)
    }

    /// `)` in code: the end of a case pattern, of a subshell, or of the `$( )` it is in.
    fn close_paren(&mut self, i: usize) -> (usize, After) {
        let Some(Frame::Code(code)) = self.stack.last_mut() else {
            unreachable!("called in code")
        };
        // `esac)` ends a case, then its `$( )`.
        code.end_word();
        if code.in_pattern() {
            *code.cases.last_mut().expect("in a case") = Case::Body;
            code.next = Next::Command;
            code.does = Does::Nothing;
            return (i + 1, After::Nothing);
        }
        code.end_command();
        if code.depth > 0 {
            code.depth -= 1;
        } else if code.in_parens {
            self.stack.pop();
        }
        (i + 1, After::Nothing)
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}
