//! A notebook's inline script metadata (PEP 723): the `# /// script` block at its top that
//! names the Python version and the packages it needs. marimo's sandbox reads the same block.

use serde::Deserialize;

/// What a notebook's header asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScriptMetadata {
    /// `requires-python`, as written (`>=3.10`).
    pub(crate) requires_python: Option<String>,
    /// `dependencies`, as written (`numpy>=2`, `marimo`).
    pub(crate) dependencies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Fields {
    requires_python: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

/// The `script` block of `text`, if it has one. An error names the line and what is wrong.
///
/// Found exactly as PEP 723's reference implementation finds it (its regular expression
/// `^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$`, every match, then the
/// one of type `script`), on the text as Python reads a file: a leading byte order mark dropped,
/// `\r\n` and `\r` read as `\n`. So a block is a line `# /// TYPE`, then lines that are `#` alone
/// or start with `# `, closed by the *last* `# ///` line of that run of comment lines (a
/// `# Copyright` line after it does not reopen the block); blocks of other types are skipped
/// whole. Two `script` blocks are an error, as in the PEP; so is a `# /// script` line that no
/// `# ///` closes (uv refuses it too); an empty block is none.
pub(crate) fn parse(text: &str) -> Result<Option<ScriptMetadata>, String> {
    let Some(Block723 { line, content }) = script_block(text)? else {
        return Ok(None);
    };
    let start = line - 1;
    let block: Fields = toml::from_str(&content).map_err(|e| {
        format!(
            "the `# /// script` block that starts on line {} is not valid: {}",
            start + 1,
            e.message()
        )
    })?;
    let dependencies: Vec<String> = block
        .dependencies
        .into_iter()
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    // Each one becomes a line of the requirements file given to uv, where a line break would
    // start another requirement and a leading `-` an option (`--index-url`, `-r FILE`).
    if let Some(bad) = dependencies
        .iter()
        .find(|d| d.starts_with('-') || d.chars().any(char::is_control))
    {
        return Err(format!(
            "the `# /// script` block that starts on line {} lists {bad:?} as a dependency, \
             which is not a requirement (PEP 508)",
            start + 1
        ));
    }
    let requires_python = block.requires_python.map(|s| s.trim().to_owned());
    if let Some(bad) = requires_python
        .as_deref()
        .filter(|r| !is_version_specifier(r))
    {
        return Err(format!(
            "the `# /// script` block that starts on line {} has requires-python = {bad:?}, \
             which is not a version specifier (such as \">=3.11\")",
            start + 1
        ));
    }
    Ok(Some(ScriptMetadata {
        requires_python,
        dependencies,
    }))
}

/// What `[tool.marimo.opengraph]` in the `script` block says (the keys marimo reads: `title`,
/// `description`, `image`; and `tags`, as galleries use). Lenient: a block that does not parse,
/// or a key of another type, gives nothing for it (the block's own errors are `parse`'s).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OpenGraph {
    pub(crate) title: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) image: Option<String>,
    pub(crate) tags: Vec<String>,
}

pub(crate) fn opengraph(text: &str) -> OpenGraph {
    let Ok(Some(Block723 { content, .. })) = script_block(text) else {
        return OpenGraph::default();
    };
    let Ok(table) = content.parse::<toml::Table>() else {
        return OpenGraph::default();
    };
    let og = table
        .get("tool")
        .and_then(|t| t.get("marimo"))
        .and_then(|m| m.get("opengraph"));
    let text_of = |key: &str| {
        og.and_then(|o| o.get(key))
            .and_then(toml::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    OpenGraph {
        title: text_of("title"),
        description: text_of("description"),
        image: text_of("image"),
        tags: og
            .and_then(|o| o.get("tags"))
            .and_then(toml::Value::as_array)
            .map(|tags| {
                tags.iter()
                    .filter_map(toml::Value::as_str)
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Whether `text` reads as a Python version specifier: comma-separated clauses, each a
/// version (`3.11`, `3.11.*`) after an optional operator (`>=`, `~=`, `==`, `!=`, `<`, ...).
fn is_version_specifier(text: &str) -> bool {
    text.split(',').all(|clause| {
        let clause = clause.trim();
        let version = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"]
            .iter()
            .find_map(|op| clause.strip_prefix(op))
            .unwrap_or(clause)
            .trim();
        version.starts_with(|c: char| c.is_ascii_digit())
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '*' | '+' | '!' | '-'))
    })
}

/// A metadata block of type `script`: the 1-based line of its `# /// script`, and its content
/// with the comment marks removed (TOML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block723 {
    pub(crate) line: usize,
    pub(crate) content: String,
}

/// The text as Python reads a file in text mode: no byte order mark, every line end `\n`.
pub(crate) fn normalize(text: &str) -> std::borrow::Cow<'_, str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n").into()
    } else {
        text.into()
    }
}

/// `line` without its comment mark, as the PEP's reference does: `# ` or else one character.
fn uncomment(line: &str) -> &str {
    line.strip_prefix("# ").unwrap_or_else(|| {
        let mut chars = line.chars();
        chars.next();
        chars.as_str()
    })
}

/// `text` cut as Python's `str.splitlines(keepends=True)` cuts it: after `\n`, `\r\n`, `\r`,
/// and the other line boundaries Python knows (`\x0b`, `\x0c`, `\x1c`-`\x1e`, `\u{85}`,
/// `\u{2028}`, `\u{2029}`). The reference joins a block's content from these pieces.
pub(crate) fn python_lines(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let end = match c {
            '\r' if chars.peek().is_some_and(|&(_, n)| n == '\n') => {
                chars.next();
                at + 2
            }
            '\n' | '\r' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => at + c.len_utf8(),
            _ => continue,
        };
        pieces.push(&text[start..end]);
        start = end;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// PEP 723's reference implementation, word for word: its regular expression over the whole
/// (normalized) text, every match, the `script` ones kept; more than one is an error. The
/// oracle [`script_block`] is checked against, in the tests and by the `pep723` fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn reference(text: &str) -> Result<Option<String>, ()> {
    static REGEX: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$",
        )
        .expect("the PEP's expression")
    });
    let text = normalize(text);
    let matches: Vec<_> = REGEX
        .captures_iter(&text)
        .filter(|m| &m["type"] == "script")
        .collect();
    match matches.as_slice() {
        [] => Ok(None),
        [m] => Ok(Some(
            python_lines(&m["content"])
                .into_iter()
                .map(|line| match line.strip_prefix("# ") {
                    Some(rest) => rest,
                    None => &line[line.chars().next().map_or(0, char::len_utf8)..],
                })
                .collect(),
        )),
        _ => Err(()),
    }
}

/// Ours agrees with the reference: the same content, or both refuse two blocks; where the
/// reference finds none, ours finds none or refuses an unclosed `# /// script`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_against_reference(text: &str) {
    let ours = script_block(text);
    match (reference(text), &ours) {
        (Ok(Some(content)), Ok(Some(block))) => assert_eq!(block.content, content, "{text:?}"),
        (Ok(None), Ok(None)) | (Err(()), Err(_)) => {}
        (Ok(None), Err(e)) if e.contains("never closed") => assert_nothing_closes(text, e),
        (theirs, _) => panic!("{text:?}: the reference gives {theirs:?}, ours {ours:?}"),
    }
}

/// Each line of `text`, and whether a `\n` ends it (the last line may have none).
fn lines_of(text: &str) -> Vec<(&str, bool)> {
    let mut lines: Vec<(&str, bool)> = text
        .split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').map_or((l, false), |l| (l, true)))
        .collect();
    if lines.is_empty() {
        lines.push(("", false));
    }
    lines
}

/// For each line, where the run of comment lines (each ended by `\n`) starting there ends; and
/// the last `# ///` line at or before it. One pass each, so a file of a thousand unclosed
/// openers is read in linear time.
fn runs(lines: &[(&str, bool)]) -> (Vec<usize>, Vec<Option<usize>>) {
    let is_comment = |l: &str| l == "#" || l.starts_with("# ");
    let n = lines.len();
    let mut run_end = vec![n; n + 1];
    for j in (0..n).rev() {
        run_end[j] = if lines[j].1 && is_comment(lines[j].0) {
            run_end[j + 1]
        } else {
            j
        };
    }
    let mut last_close: Vec<Option<usize>> = Vec::with_capacity(n);
    for (j, (line, _)) in lines.iter().enumerate() {
        let before = j.checked_sub(1).and_then(|k| last_close[k]);
        last_close.push(if *line == "# ///" { Some(j) } else { before });
    }
    (run_end, last_close)
}

/// For an input ours calls unclosed: no `# ///` line follows its opening line in the run of
/// comment lines after it (or right after that run).
#[cfg(any(test, feature = "fuzzing"))]
fn assert_nothing_closes(text: &str, error: &str) {
    let line: usize = error
        .split("starts on line ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the error names its line");
    let text = normalize(text);
    for l in text.split_inclusive('\n').skip(line) {
        let body = l.strip_suffix('\n');
        assert_ne!(
            body.unwrap_or(l),
            "# ///",
            "{text:?}: closed, yet called unclosed"
        );
        if !body.is_some_and(|b| b == "#" || b.starts_with("# ")) {
            break;
        }
    }
}

/// The `script` block of `text` (see [`parse`]), its TOML not read yet.
pub(crate) fn script_block(text: &str) -> Result<Option<Block723>, String> {
    let text = normalize(text);
    let lines = lines_of(&text);
    let n = lines.len();
    let (run_end, last_close) = runs(&lines);
    let mut found: Vec<Block723> = Vec::new();
    let mut unclosed = None;
    let mut i = 0;
    while i < n {
        let (line, newline) = lines[i];
        let Some(kind) = line.strip_prefix("# /// ").filter(|k| {
            newline && !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }) else {
            i += 1;
            continue;
        };
        // The run of comment lines after it, then the last `# ///` in it or right after it (at
        // the end of the text, with no `\n`), with at least one line of content before it.
        let last = run_end[i + 1].min(n - 1);
        let Some(close) = last_close[last].filter(|&c| c >= i + 2) else {
            // `# /// script` then `# ///` at once is an empty block, which the PEP's
            // expression does not match (and uv runs the file): no header, not an error.
            let no_closing_line = last_close[last].is_none_or(|c| c <= i);
            if kind == "script" && no_closing_line && unclosed.is_none() {
                unclosed = Some(i + 1);
            }
            i += 1;
            continue;
        };
        if kind == "script" {
            let content = lines[i + 1..close]
                .iter()
                .map(|(l, _)| {
                    let line = format!("{l}\n");
                    python_lines(&line)
                        .into_iter()
                        .map(uncomment)
                        .collect::<String>()
                })
                .collect();
            found.push(Block723 {
                line: i + 1,
                content,
            });
        }
        i = close + 1;
    }
    match (found.len(), unclosed) {
        (0, None) => Ok(None),
        (0, Some(line)) => Err(format!(
            "the `# /// script` block that starts on line {line} is never closed with `# ///`"
        )),
        (1, _) => Ok(found.pop()),
        _ => Err(format!(
            "there are {} `# /// script` blocks (lines {}); PEP 723 allows one: merge them",
            found.len(),
            found
                .iter()
                .map(|b| b.line.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The normalized project name a requirement is for (`Marimo[sql]>=0.9` -> `marimo`).
pub(crate) fn requirement_name(requirement: &str) -> String {
    requirement
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect::<String>()
        .to_ascii_lowercase()
        .replace(['_', '.'], "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_script_block() {
        let text = "# /// script\n# requires-python = \">=3.10\"\n# dependencies = [\n#     \"marimo\",\n#     \"numpy>=2\",\n# ]\n# ///\n\nimport marimo\n";
        assert_eq!(
            parse(text).unwrap(),
            Some(ScriptMetadata {
                requires_python: Some(">=3.10".into()),
                dependencies: vec!["marimo".into(), "numpy>=2".into()],
            })
        );
    }

    #[test]
    fn no_block_is_none_and_a_broken_block_names_its_line() {
        assert_eq!(parse("import marimo\napp = marimo.App()\n").unwrap(), None);
        let err = parse("\n# /// script\n# dependencies = [\"a\"\nimport x\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("never closed"),
            "{err}"
        );
        let err = parse("# /// script\n# dependencies = 3\n# ///\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("not valid"), "{err}");
    }

    #[test]
    fn the_last_closing_line_of_the_comment_run_closes_the_block() {
        // marimo's examples/ui/image_comparison_demo.py: a shebang, the block, then a comment.
        let text = "#!/usr/bin/env python3\n# /// script\n# requires-python = \">=3.11\"\n\
                    # dependencies = [\n#     \"marimo\",\n# ]\n# ///\n# Copyright 2026 X.\n\n\
                    import marimo\n";
        let header = parse(text).unwrap().unwrap();
        assert_eq!(header.requires_python.as_deref(), Some(">=3.11"));
        assert_eq!(header.dependencies, ["marimo"]);
        // A `# ///` inside the TOML (in a string) is content when a later one closes.
        let text = "# /// script\n# dependencies = [\"a\"]\n# ///\n# [tool.x]\n# y = 1\n# ///\n";
        let block = script_block(text).unwrap().unwrap();
        assert_eq!(
            block.content,
            "dependencies = [\"a\"]\n///\n[tool.x]\ny = 1\n"
        );
    }

    #[test]
    fn other_blocks_crlf_and_a_byte_order_mark_are_read_as_uv_reads_them() {
        let text = "\u{feff}# /// pyproject\r\n# [run]\r\n# ///\r\n\r\n# /// script\r\n\
                    # dependencies = [\"numpy\"]\r\n# ///\r\nimport marimo\r\n";
        let block = script_block(text).unwrap().unwrap();
        assert_eq!(block.line, 5);
        // With no line between them, the first block runs to the last `# ///`: the PEP's
        // expression reads the `script` block as the `pyproject` block's content.
        let joined = text.replacen("\r\n\r\n", "\r\n", 1);
        assert_eq!(script_block(&joined).unwrap(), None);
        assert_eq!(parse(text).unwrap().unwrap().dependencies, ["numpy"]);
        // A `# /// script` inside another block's content is that block's content.
        let text = "# /// other\n# /// script\n# ///\n";
        assert_eq!(script_block(text).unwrap(), None);
        let two = "# /// script\n# a = 1\n# ///\nx\n# /// script\n# b = 1\n# ///\n";
        let err = script_block(two).unwrap_err();
        assert!(err.contains("lines 1, 5"), "{err}");
        // `# /// script ` (a trailing space) is not an opening line, for the PEP nor for us.
        assert_eq!(
            script_block("# /// script \n# a = 1\n# ///\n").unwrap(),
            None
        );
    }

    #[test]
    fn requires_python_must_be_a_version_specifier() {
        let header = |r: &str| format!("# /// script\n# requires-python = \"{r}\"\n# ///\n");
        for good in [">=3.10", "3.11", ">=3.9, <4", "~=3.11.0", "==3.12.*"] {
            assert!(parse(&header(good)).is_ok(), "{good}");
        }
        for bad in ["foo", "", ">=", "3.11; rm -rf /"] {
            let err = parse(&header(bad)).unwrap_err();
            assert!(err.contains("not a version specifier"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_empty_block_is_no_header_and_many_openers_are_read_quickly() {
        assert_eq!(
            script_block("# /// script\n# ///\nimport marimo\n").unwrap(),
            None
        );
        assert!(script_block("# /// script\n# a = 1\nimport marimo\n").is_err());
        // 60,000 openers and no closing line: one pass, not one per opener.
        let text = "# /// a\n".repeat(60_000);
        assert_eq!(script_block(&text).unwrap(), None);
    }

    /// Lines a header is made of, and the ones that trip parsers.
    const LINES: &[&str] = &[
        "# /// script",
        "# /// script",
        "# /// pyproject",
        "# ///",
        "# ///",
        "#",
        "# a = 1",
        "# dependencies = [\"x\"]",
        "# Copyright",
        "# /// script ",
        "#///",
        "# ////",
        "import marimo",
        "",
        " # ///",
        "# x\u{2028}y",
        "#\u{85}",
        "# \x0c# ///",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        #[test]
        fn finds_what_the_peps_reference_expression_finds(
            picks in proptest::collection::vec(0..LINES.len(), 0..14),
            ends in proptest::collection::vec(0..3usize, 14),
            last_newline: bool,
            bom: bool,
        ) {
            let mut text = String::from(if bom { "\u{feff}" } else { "" });
            for (n, &p) in picks.iter().enumerate() {
                text.push_str(LINES[p]);
                if n + 1 < picks.len() || last_newline {
                    text.push_str(["\n", "\r\n", "\r"][ends[n]]);
                }
            }
            check_against_reference(&text);
        }
    }

    #[test]
    fn a_dependency_that_is_not_one_requirement_is_refused() {
        for dep in [r#""numpy\n--index-url=http://x""#, r#""-r /etc/passwd""#] {
            let text = format!("# /// script\n# dependencies = [{dep}]\n# ///\n");
            let err = parse(&text).unwrap_err();
            assert!(
                err.contains("line 1") && err.contains("not a requirement"),
                "{err}"
            );
        }
    }

    #[test]
    fn requirement_names_are_normalized() {
        assert_eq!(requirement_name("Marimo[sql]>=0.9"), "marimo");
        assert_eq!(
            requirement_name("typing_extensions; python_version<'3.11'"),
            "typing-extensions"
        );
        assert_eq!(requirement_name("zope.interface==6"), "zope-interface");
    }
}
