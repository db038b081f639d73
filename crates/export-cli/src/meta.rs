//! What a notebook's card and its link previews show: a title, a description, tags and a
//! picture. From `[tool.marimo.opengraph]` in the notebook's PEP 723 header (the keys marimo's
//! own gallery reads), else from its first markdown (`mo.md`): the first heading and paragraph;
//! the title falls back to the file's name. The picture: the header's `image` (an `https://`
//! URL, or a path under the notebook's `__marimo__/` folder, as marimo allows), else
//! `__marimo__/assets/<stem>/opengraph.png` beside the notebook when it exists.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::pep723::OpenGraph;

/// The longest description shown, in characters (a card's two or three lines).
const DESCRIPTION_MAX: usize = 200;

/// What is read from a notebook's text (its path is not needed for this part).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FromText {
    pub(crate) opengraph: OpenGraph,
    /// The first markdown heading and paragraph of its `mo.md(...)` cells.
    pub(crate) heading: Option<String>,
    pub(crate) paragraph: Option<String>,
}

impl FromText {
    pub(crate) fn read(text: &str) -> Self {
        let (heading, paragraph) = first_markdown(text);
        FromText {
            opengraph: crate::pep723::opengraph(text),
            heading,
            paragraph,
        }
    }
}

/// A notebook's card and preview data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct PageMeta {
    pub(crate) title: String,
    pub(crate) description: Option<String>,
    pub(crate) tags: Vec<String>,
    #[serde(skip)]
    pub(crate) image: Option<Image>,
}

/// Where a notebook's picture is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Image {
    /// An `https://` URL, used as it is.
    Url(String),
    /// A file beside the notebook, copied into the site beside its page.
    File(PathBuf),
}

impl PageMeta {
    /// The meta of the notebook at `path` (`name`: its display name, the last resort title).
    pub(crate) fn of(path: &Path, name: &str, text: &FromText) -> Self {
        let og = &text.opengraph;
        let title = og
            .title
            .clone()
            .or_else(|| text.heading.clone())
            .unwrap_or_else(|| name.to_owned());
        let description = og
            .description
            .clone()
            .or_else(|| text.paragraph.clone())
            .map(|d| shorten(&d));
        PageMeta {
            title,
            description,
            tags: og.tags.clone(),
            image: image(path, og.image.as_deref()),
        }
    }
}

/// The largest picture copied into the site.
const IMAGE_MAX_BYTES: u64 = 5 << 20;

/// The header's `image`, if allowed and there, else the default thumbnail if there.
fn image(notebook: &Path, declared: Option<&str>) -> Option<Image> {
    let folder = notebook.parent().unwrap_or(Path::new(""));
    if let Some(d) = declared {
        if d.starts_with("https://") && !d.chars().any(char::is_whitespace) {
            return Some(Image::Url(d.to_owned()));
        }
        let rel = Path::new(d);
        let spelled_inside = rel.starts_with("__marimo__")
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        let file = folder.join(rel);
        if spelled_inside && readable_inside(folder, &file) {
            return Some(Image::File(file));
        }
    }
    let stem = notebook.file_stem()?;
    let default = folder
        .join("__marimo__/assets")
        .join(stem)
        .join("opengraph.png");
    readable_inside(folder, &default).then_some(Image::File(default))
}

/// A picture file that really is in the notebook's `__marimo__/` folder: its resolved path (a
/// symlink followed) under the folder's resolved path, a regular file, not too large. A link
/// to `~/.ssh/id_ed25519` in a cloned repository is never read into the site.
fn readable_inside(folder: &Path, file: &Path) -> bool {
    let (Ok(marimo), Ok(real)) = (
        folder.join("__marimo__").canonicalize(),
        file.canonicalize(),
    ) else {
        return false;
    };
    real.starts_with(&marimo)
        && std::fs::metadata(&real).is_ok_and(|m| m.is_file() && m.len() <= IMAGE_MAX_BYTES)
}

/// A description cut at a word before `DESCRIPTION_MAX` characters, with an ellipsis.
fn shorten(text: &str) -> String {
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= DESCRIPTION_MAX {
        return text;
    }
    let cut: String = text.chars().take(DESCRIPTION_MAX).collect();
    let at_word = cut.rfind(' ').map_or(cut.as_str(), |i| &cut[..i]);
    format!("{}…", at_word.trim_end_matches([',', ';', ':', '.']))
}

/// The first heading and the first paragraph in the notebook's `mo.md(...)` strings (f-strings
/// left out: their text is not known before the notebook runs).
fn first_markdown(source: &str) -> (Option<String>, Option<String>) {
    let (mut heading, mut paragraph) = (None, None);
    for (at, _) in source.match_indices("mo.md(") {
        // `memo.md(` is another thing.
        if source[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
        {
            continue;
        }
        let Some(md) = string_literal(&source[at + "mo.md(".len()..]) else {
            continue;
        };
        for block in dedent(&md).split("\n\n") {
            let block = block.trim();
            if block.is_empty() {
                continue;
            }
            let first = block.lines().next().unwrap_or("");
            if let Some(h) = first.strip_prefix('#') {
                if heading.is_none() {
                    heading = Some(plain(h.trim_start_matches('#')));
                }
                // A paragraph may follow the heading in the same block.
                let rest: Vec<&str> = block.lines().skip(1).collect();
                if paragraph.is_none() && !rest.is_empty() && is_prose(rest[0]) {
                    paragraph = Some(plain(&rest.join(" ")));
                }
            } else if paragraph.is_none() && is_prose(first) {
                paragraph = Some(plain(block));
            }
            if heading.is_some() && paragraph.is_some() {
                return (heading, paragraph);
            }
        }
    }
    (
        heading.filter(|h| !h.is_empty()),
        paragraph.filter(|p| !p.is_empty()),
    )
}

/// A line that starts a paragraph of text, not a list, table, quote, code or HTML.
fn is_prose(line: &str) -> bool {
    let l = line.trim_start();
    !(l.is_empty()
        || l.starts_with(['#', '|', '-', '*', '+', '>', '<', '`', '!', '$', '{'])
        || l.split_once(". ")
            .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit())))
}

/// Markdown made plain text: links and images by their text, emphasis and code marks dropped.
fn plain(md: &str) -> String {
    let mut out = String::new();
    let mut rest = md;
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        out.push_str(before.trim_end_matches('!'));
        match after.find("](").zip(after.find(')')) {
            Some((mid, close)) if mid < close => {
                out.push_str(&after[1..mid]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    let out = out
        .replace("**", "")
        .replace("__", "")
        .replace(['`', '*'], "");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The Python string literal at the start of `code` (after spaces): `"..."`, `'...'`,
/// triple-quoted, with an `r` prefix or none; `None` for an f-string or anything else.
fn string_literal(code: &str) -> Option<String> {
    let code = code.trim_start();
    let (raw, body) = match code.as_bytes().first()? {
        b'r' | b'R' => (true, &code[1..]),
        b'"' | b'\'' => (false, code),
        _ => return None,
    };
    let quote = ["\"\"\"", "'''", "\"", "'"]
        .into_iter()
        .find(|q| body.starts_with(q))?;
    let body = &body[quote.len()..];
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if body[i..].starts_with(quote) {
            return Some(out);
        }
        match c {
            '\\' if !raw => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '\n')) => {}
                Some((_, other)) => out.push(other),
                None => return None,
            },
            '\n' if quote.len() == 1 => return None,
            _ => out.push(c),
        }
    }
    None
}

/// Text with the indentation its non-empty lines share removed (Python's `textwrap.dedent`).
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTEBOOK: &str = r#"import marimo
app = marimo.App()

@app.cell
def _(mo):
    mo.md(f"Skipped: {x}")
    return

@app.cell
def _(mo):
    mo.md(r"""
    # Sales *by* region

    Quarterly sales per [region](https://example.com), with **forecasts**
    and a map.

    - a list
    """)
    return
"#;

    #[test]
    fn the_first_heading_and_paragraph_of_the_markdown() {
        let t = FromText::read(NOTEBOOK);
        assert_eq!(t.heading.as_deref(), Some("Sales by region"));
        assert_eq!(
            t.paragraph.as_deref(),
            Some("Quarterly sales per region, with forecasts and a map.")
        );
        let m = PageMeta::of(Path::new("nbs/sales.py"), "sales", &t);
        assert_eq!(m.title, "Sales by region");
        assert_eq!(m.image, None);
        let none = FromText::read("import marimo\napp = marimo.App()\nmemo.md(\"# Not this\")\n");
        assert_eq!(PageMeta::of(Path::new("a_b.py"), "a b", &none).title, "a b");
        let inline = FromText::read("mo.md(\"# Hello, marimo\\nA first notebook.\")");
        assert_eq!(inline.heading.as_deref(), Some("Hello, marimo"));
        assert_eq!(inline.paragraph.as_deref(), Some("A first notebook."));
    }

    #[test]
    fn the_header_wins_and_its_image_must_stay_in_marimo_folder() {
        let dir = tempfile::tempdir().unwrap();
        let nb = dir.path().join("sales.py");
        let header = "# /// script\n# [tool.marimo.opengraph]\n# title = \"Sales\"\n\
                      # description = \"Per region.\"\n# tags = [\"finance\", \" maps \"]\n\
                      # image = \"__marimo__/assets/sales/custom.png\"\n# ///\n";
        let text = format!("{header}{NOTEBOOK}");
        let t = FromText::read(&text);
        let m = PageMeta::of(&nb, "sales", &t);
        assert_eq!(
            (m.title.as_str(), m.description.as_deref(), m.tags.clone()),
            (
                "Sales",
                Some("Per region."),
                vec!["finance".into(), "maps".into()]
            )
        );
        assert_eq!(m.image, None, "the declared file does not exist");
        let assets = dir.path().join("__marimo__/assets/sales");
        std::fs::create_dir_all(&assets).unwrap();
        std::fs::write(assets.join("opengraph.png"), b"png").unwrap();
        assert_eq!(
            PageMeta::of(&nb, "sales", &t).image,
            Some(Image::File(assets.join("opengraph.png"))),
            "the default thumbnail"
        );
        std::fs::write(assets.join("custom.png"), b"png").unwrap();
        assert_eq!(
            PageMeta::of(&nb, "sales", &t).image,
            Some(Image::File(
                dir.path().join("__marimo__/assets/sales/custom.png")
            ))
        );
        // A link out of the folder is not followed.
        std::os::unix::fs::symlink("/etc/passwd", assets.join("link.png")).unwrap();
        assert_eq!(
            image(&nb, Some("__marimo__/assets/sales/link.png")),
            Some(Image::File(assets.join("opengraph.png")))
        );
        for bad in [
            "../secret.png",
            "/etc/passwd",
            "__marimo__/../x.png",
            "http://x/y.png",
        ] {
            assert!(
                image(&nb, Some(bad)) != Some(Image::File(PathBuf::from(bad))),
                "{bad}"
            );
        }
        assert_eq!(
            image(&nb, Some("https://example.com/a.png")),
            Some(Image::Url("https://example.com/a.png".into()))
        );
    }

    #[test]
    fn long_descriptions_are_cut_at_a_word() {
        let long = "word ".repeat(100);
        let s = shorten(&long);
        assert!(
            s.ends_with("word…") && s.chars().count() <= DESCRIPTION_MAX + 1,
            "{s}"
        );
    }
}
