//! Search across the notebooks: the text of each page (its markdown and rendered outputs, as
//! marimo wrote them into the page), kept per page in the state folder when the page is new or
//! changed, and gathered into `search-index.js` beside the index, which the index's search box
//! reads. Plain JavaScript, nothing from elsewhere; a script file rather than a JSON file
//! because browsers load a script beside a page opened from disk (`file:`), not a fetched file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

/// The most text kept per page: enough for its words, small enough for a site of hundreds.
const TEXT_MAX: usize = 20_000;

/// One page in the search index.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) href: String,
    pub(crate) title: String,
    pub(crate) text: String,
}

/// The text of an exported page: from marimo's session data in the page (every cell's
/// markdown, HTML and plain outputs, and what it printed), else the page's visible text.
pub(crate) fn page_text(html: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(session) = session(html) {
        for cell in session["cells"].as_array().into_iter().flatten() {
            let outputs = cell["outputs"].as_array().into_iter().flatten();
            let console = cell["console"].as_array().into_iter().flatten();
            for out in outputs.chain(console) {
                // A console stream: `{"type": "stream", "name": "stdout", "text": ...}`.
                if out["type"] == "stream" {
                    if let Some(t) = out["text"].as_str().filter(|_| out["name"] != "media") {
                        parts.push(t.to_owned());
                    }
                    continue;
                }
                let data = &out["data"];
                if let Some(map) = data.as_object() {
                    for (mime, value) in map {
                        if let Some(v) = value.as_str() {
                            parts.push(match mime.as_str() {
                                "text/html" | "text/markdown" => strip_tags(v),
                                m if m.starts_with("text/") => v.to_owned(),
                                _ => continue,
                            });
                        }
                    }
                } else if let Some(text) = data.as_str() {
                    parts.push(strip_tags(text));
                }
            }
        }
    } else {
        let body = html.find("<body").map_or(html, |b| &html[b..]);
        parts.push(strip_tags(&without_scripts(body)));
    }
    let text = parts.join(" ");
    let mut words = String::new();
    for w in text.split_whitespace() {
        // A word longer than any a reader types (an encoded blob) is left out, not a reason to
        // drop the rest of the page.
        if w.len() > 100 {
            continue;
        }
        if words.len() + w.len() + 1 > TEXT_MAX {
            break;
        }
        if !words.is_empty() {
            words.push(' ');
        }
        words.push_str(w);
    }
    words
}

/// marimo's `"session": {...}` in the page's mount configuration.
fn session(html: &str) -> Option<serde_json::Value> {
    let config = html.find("__MARIMO_MOUNT_CONFIG__")?;
    let at = html[config..].find("\"session\":")? + config + "\"session\":".len();
    serde_json::Deserializer::from_str(&html[at..])
        .into_iter::<serde_json::Value>()
        .next()?
        .ok()
        .filter(serde_json::Value::is_object)
}

/// `html` without its `<script>` and `<style>` elements.
fn without_scripts(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    loop {
        let lower = rest.to_ascii_lowercase();
        let next = ["<script", "<style"]
            .iter()
            .filter_map(|t| lower.find(t).map(|i| (i, *t)))
            .min();
        let Some((i, tag)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        let close = format!("</{}", &tag[1..]);
        match lower[i..].find(&close) {
            Some(c) => {
                let end = lower[i + c..]
                    .find('>')
                    .map_or(lower.len(), |e| i + c + e + 1);
                rest = &rest[end..];
            }
            None => return out,
        }
    }
}

/// The text of an HTML fragment: tags dropped (each a space), the usual entities decoded.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// Where a page's text is kept: `.export-nb/text/<page>.txt`.
fn kept(output: &Path, page: &Path) -> PathBuf {
    output
        .join(crate::site::STATE_DIR)
        .join("text")
        .join(page.with_extension("txt"))
}

/// A page's text: kept from when the page was written, else read from it now (and kept).
pub(crate) fn text_of(output: &Path, page: &Path) -> Option<String> {
    let file = crate::site::page_inside(output, page)?;
    let keep = kept(output, page);
    let page_time = std::fs::metadata(&file).and_then(|m| m.modified()).ok()?;
    let fresh = std::fs::metadata(&keep)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= page_time);
    if fresh && let Ok(text) = std::fs::read_to_string(&keep) {
        return Some(text);
    }
    let text = page_text(&std::fs::read_to_string(&file).ok()?);
    if let Some(dir) = keep.parent() {
        let _ = std::fs::create_dir_all(dir);
        let _ = fanout::fsutil::write_atomic(&keep, text.as_bytes());
    }
    Some(text)
}

/// Write `search-index.js`: the entries as JSON, assigned to `window.exportNbSearch`, safe in
/// a script (no `</script>` can end it early).
pub(crate) fn write_index(output: &Path, entries: &[Entry]) -> Result<()> {
    let json = serde_json::to_string(entries)?
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let mut js =
        String::from("// The text of every page, for the index's search box (export-nb).\n");
    let _ = writeln!(js, "window.exportNbSearch = {json};");
    fanout::fsutil::write_atomic(&output.join("search-index.js"), js.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_a_marimo_page_is_its_outputs() {
        let html = r#"<html><head><script>var x = "not text";</script></head><body>
<script data-marimo="true">
  Object.defineProperty(window, "__MARIMO_MOUNT_CONFIG__", { value: Object.freeze({
    "notebook": {"cells": [{"code": "secret_code_word = 1"}]},
    "session": {"cells": [{"outputs": [{"data": {"text/markdown": "\u003Ch1\u003EHello &amp; welcome\u003C/h1\u003E"}, "type": "data"}], "console": [{"type": "stream", "name": "stdout", "text": "zebrafish 42\n"}, {"type": "stream", "name": "media", "mimetype": "image/png", "data": "iVBORw0KGgo"}]}, {"outputs": [{"data": {"text/plain": "plain words AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA after", "image/png": "iVBOR"}}]}]},
    "runtimeConfig": null }) });
</script></body></html>"#;
        let text = page_text(html);
        assert_eq!(text, "Hello & welcome zebrafish 42 plain words after");
        assert!(!text.contains("secret_code_word"), "code is not output");
    }

    #[test]
    fn a_page_without_marimo_data_gives_its_visible_text() {
        let html = "<html><head><style>p{}</style></head><body><p>page of <b>a.py</b></p>\
                    <script>var hidden = 1;</script><p>SHOW: x</p></body></html>";
        assert_eq!(page_text(html), "page of a.py SHOW: x");
    }

    #[test]
    fn the_index_file_cannot_close_its_script() {
        let dir = tempfile::tempdir().unwrap();
        let e = Entry {
            href: "notebooks/a.html".into(),
            title: "</script><script>alert(1)</script>".into(),
            text: "x".into(),
        };
        write_index(dir.path(), &[e]).unwrap();
        let js = std::fs::read_to_string(dir.path().join("search-index.js")).unwrap();
        assert!(!js.contains("</script>"), "{js}");
        assert!(js.contains("\\u003c/script\\u003e"));
    }
}
