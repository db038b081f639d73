//! The index page: a minijinja template rendered from the run's outcomes.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::config::Category;

/// The bundled template: self-contained (inline CSS, nothing fetched).
pub(crate) const BUNDLED: &str = include_str!("../templates/index.html");

/// The template context. Documented at the top of `templates/index.html` and in README.
#[derive(Debug, Serialize)]
pub(crate) struct Context {
    pub(crate) title: String,
    pub(crate) generated_at: String,
    pub(crate) summary: Counts,
    pub(crate) categories: Vec<CategoryView>,
    /// Every tag of the listed notebooks, sorted: the index's filter.
    pub(crate) tags: Vec<String>,
    /// Whether `search-index.js` (the text of every page) is beside the index.
    pub(crate) search: bool,
    /// The index's link previews (`og:`, `twitter:`, canonical with `--base-url`), as HTML for
    /// its `<head>`: `{{ meta_tags | safe }}`.
    pub(crate) meta_tags: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Counts {
    pub(crate) total: usize,
    pub(crate) ok: usize,
    pub(crate) failed: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct CategoryView {
    pub(crate) key: &'static str,
    pub(crate) label: &'static str,
    pub(crate) notebooks: Vec<NotebookView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct NotebookView {
    pub(crate) name: String,
    /// From `[tool.marimo.opengraph]`, else its first markdown heading, else `name`.
    pub(crate) title: String,
    /// From `[tool.marimo.opengraph]`, else its first markdown paragraph.
    pub(crate) description: Option<String>,
    pub(crate) tags: Vec<String>,
    /// Its picture: a path relative to the index, or an `https://` URL.
    pub(crate) image: Option<String>,
    /// The notebook's path as found (`docs/notebooks/sub/intro.py`).
    pub(crate) source: String,
    /// Its path within its folder (`sub/intro.py`).
    pub(crate) file: String,
    /// Link relative to the index; `None` when there is no working page.
    pub(crate) href: Option<String>,
    /// `ok`, `cell_errors` (published though cells raised: `--keep-failed-pages`), `failed`,
    /// `timed_out` or `cancelled`.
    pub(crate) status: &'static str,
    pub(crate) up_to_date: bool,
    pub(crate) duration_seconds: f64,
    pub(crate) error: Option<String>,
}

impl Context {
    pub(crate) fn new(
        title: &str,
        mut items: Vec<(Category, NotebookView)>,
        base_url: Option<&str>,
    ) -> Self {
        items.sort_by_key(|(c, _)| *c);
        let total = items.len();
        let ok = items.iter().filter(|(_, n)| n.status == "ok").count();
        let mut tags: Vec<String> = items.iter().flat_map(|(_, n)| n.tags.clone()).collect();
        tags.sort_by_key(|t| t.to_lowercase());
        tags.dedup_by_key(|t| t.to_lowercase());
        let preview = crate::preview::Preview {
            title: title.to_owned(),
            description: Some(format!(
                "{total} marimo notebook{}",
                if total == 1 { "" } else { "s" }
            )),
            image: base_url.and_then(|base| {
                let first = items.iter().find_map(|(_, n)| n.image.as_ref())?;
                Some(format!("{base}{first}"))
            }),
            url: base_url.map(|b| format!("{b}index.html")),
            site_name: Some(title.to_owned()),
        };
        let mut categories: Vec<CategoryView> = Vec::new();
        for (category, view) in items {
            match categories.last_mut() {
                Some(last) if last.key == category.dir() => last.notebooks.push(view),
                _ => categories.push(CategoryView {
                    key: category.dir(),
                    label: category.label(),
                    notebooks: vec![view],
                }),
            }
        }
        Context {
            title: title.to_owned(),
            generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
            summary: Counts {
                total,
                ok,
                failed: total - ok,
            },
            categories,
            tags,
            search: false,
            meta_tags: preview.tags(),
        }
    }
}

/// A loaded template, checked for syntax before anything runs.
#[derive(Debug)]
pub(crate) struct Template {
    env: Environment<'static>,
    name: String,
    /// For the manifest.
    pub(crate) hash: String,
}

impl Template {
    /// The bundled template, or `file`. Syntax errors name the file and line.
    pub(crate) fn load(file: Option<&Path>) -> Result<Self> {
        let (name, source) = match file {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the template {}", path.display()))?,
            ),
            None => ("index.html (bundled)".to_owned(), BUNDLED.to_owned()),
        };
        let hash = crate::site::hex(&<sha2::Sha256 as sha2::Digest>::digest(source.as_bytes()));
        let mut env = Environment::new();
        // A typo in a custom template should be an error, not a silently empty value.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // The index is HTML whatever the template file is called (minijinja would otherwise
        // decide from the name's extension, and `page.j2` would go unescaped).
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_formatter(html_formatter);
        env.add_template_owned(name.clone(), source)
            .map_err(|e| template_error(&e))?;
        Ok(Template { env, name, hash })
    }

    /// Render with sample data (one notebook of each status), writing nothing: catches a custom
    /// template's undefined names before any export runs.
    pub(crate) fn check(&self) -> Result<()> {
        let sample = |name: &str, status: &'static str| NotebookView {
            name: name.to_owned(),
            title: format!("{name} title"),
            description: Some("A sample description.".to_owned()),
            tags: vec!["sample".to_owned()],
            image: Some(format!("notebooks/{name}.og.png")),
            source: format!("notebooks/{name}.py"),
            file: format!("{name}.py"),
            href: matches!(status, "ok" | "cell_errors").then(|| format!("notebooks/{name}.html")),
            status,
            up_to_date: false,
            duration_seconds: 1.5,
            error: (status != "ok").then(|| "marimo exited with code 1".to_owned()),
        };
        let items = ["ok", "cell_errors", "failed", "timed_out", "cancelled"]
            .into_iter()
            .flat_map(|s| {
                Category::ALL
                    .into_iter()
                    .map(move |c| (c, sample(&format!("sample_{s}"), s)))
            })
            .collect();
        self.env
            .get_template(&self.name)
            .and_then(|t| t.render(Context::new("Sample", items, Some("https://example.com/"))))
            .map(drop)
            .map_err(|e| template_error(&e))
    }

    /// Render and write `<output>/index.html` atomically, and `<output>/.nojekyll` (GitHub Pages
    /// would otherwise hide folders starting with `_`).
    pub(crate) fn write(&self, context: &Context, output: &Path) -> Result<PathBuf> {
        let html = self
            .env
            .get_template(&self.name)
            .and_then(|t| t.render(context))
            .map_err(|e| template_error(&e))?;
        let index = output.join("index.html");
        fanout::fsutil::write_atomic(&index, html.as_bytes())?;
        let nojekyll = output.join(".nojekyll");
        if !nojekyll.exists() {
            fanout::fsutil::write_atomic(&nojekyll, b"")?;
        }
        Ok(index)
    }
}

/// Escape `& < > " '` in strings, and leave `/` alone (minijinja's HTML escaping writes it as
/// `&#x2f;`, which is valid but turns every path and link into noise in the page source).
fn html_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(text) if !value.is_safe() && state.auto_escape() == AutoEscape::Html => {
            let io = |e: std::fmt::Error| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            };
            for c in text.chars() {
                match c {
                    '&' => out.write_str("&amp;"),
                    '<' => out.write_str("&lt;"),
                    '>' => out.write_str("&gt;"),
                    '"' => out.write_str("&quot;"),
                    '\'' => out.write_str("&#x27;"),
                    c => out.write_str(c.encode_utf8(&mut [0; 4])),
                }
                .map_err(io)?;
            }
            Ok(())
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// minijinja's error with its location, as `FILE line N: what`.
fn template_error(e: &minijinja::Error) -> anyhow::Error {
    let place = match (e.name(), e.line()) {
        (Some(name), Some(line)) => format!("{name} line {line}"),
        (Some(name), None) => name.to_owned(),
        _ => "the index template".to_owned(),
    };
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    anyhow::anyhow!("template error in {place}: {}{detail}", e.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, status: &'static str, href: Option<&str>) -> NotebookView {
        NotebookView {
            name: name.to_owned(),
            title: name.to_owned(),
            description: None,
            tags: Vec::new(),
            image: None,
            source: format!("nbs/{name}.py"),
            file: format!("{name}.py"),
            href: href.map(str::to_owned),
            status,
            up_to_date: false,
            duration_seconds: 1.0,
            error: (status != "ok").then(|| "a cell raised an error".to_owned()),
        }
    }

    #[test]
    fn cards_show_title_description_tags_and_picture_and_the_head_has_previews() {
        let dir = tempfile::tempdir().unwrap();
        let mut nb = view("sales", "ok", Some("notebooks/sales.html"));
        nb.title = "Sales <by> region".into();
        nb.description = Some("Per \"region\".".into());
        nb.tags = vec!["finance".into(), "it's".into()];
        nb.image = Some("notebooks/sales.og.png".into());
        let mut other = view("misc", "ok", Some("notebooks/misc.html"));
        other.tags = vec!["finance".into()];
        let ctx = Context::new(
            "Team",
            vec![(Category::Notebooks, nb), (Category::Notebooks, other)],
            Some("https://x.io/nb/"),
        );
        assert_eq!(ctx.tags, ["finance", "it's"]);
        let html = std::fs::read_to_string(
            Template::load(None)
                .unwrap()
                .write(&ctx, dir.path())
                .unwrap(),
        )
        .unwrap();
        assert!(html.contains(r#"<a href="notebooks/sales.html">Sales &lt;by&gt; region</a>"#));
        assert!(html.contains(r#"<p class="description">Per &quot;region&quot;.</p>"#));
        assert!(
            html.contains(r#"<img src="notebooks/sales.og.png" alt="" "#),
            "{html}"
        );
        assert!(html.contains("<li>it&#x27;s</li>"), "tags escaped");
        assert!(html.contains(
            r#"<meta property="og:image" content="https://x.io/nb/notebooks/sales.og.png">"#
        ));
        assert!(html.contains(r#"<link rel="canonical" href="https://x.io/nb/index.html">"#));
        assert!(html.contains(r#"<button type="button" aria-pressed="false" data-tag="finance">"#));
    }

    #[test]
    fn the_bundled_page_links_working_pages_and_marks_failures_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::new(
            "My <site>",
            vec![
                (Category::Apps, view("dash", "ok", Some("apps/dash.html"))),
                (
                    Category::Notebooks,
                    view("intro", "ok", Some("notebooks/intro.html")),
                ),
                (Category::Notebooks, view("broken", "failed", None)),
            ],
            None,
        );
        let path = Template::load(None)
            .unwrap()
            .write(&ctx, dir.path())
            .unwrap();
        let html = std::fs::read_to_string(path).unwrap();
        assert!(
            html.contains("<title>My &lt;site&gt;</title>"),
            "escaped title"
        );
        assert!(html.contains(r#"<a href="notebooks/intro.html">intro</a>"#));
        assert!(html.contains(r#"<a href="apps/dash.html">dash</a>"#));
        assert!(
            !html.contains("broken.html"),
            "failed notebooks are not linked"
        );
        assert!(html.contains("export failed"));
        assert!(html.find(">Notebooks</h2>").unwrap() < html.find(">Apps</h2>").unwrap());
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "self-contained"
        );
        assert!(dir.path().join(".nojekyll").exists());
    }

    #[test]
    fn template_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.html");
        std::fs::write(&path, "<h1>{{ title }}</h1>\n{% for x in %}\n").unwrap();
        let err = Template::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("mine.html line 2"), "{err}");

        std::fs::write(&path, "<h1>{{ title }}</h1>\n{{ no_such_thing.x }}\n").unwrap();
        let err = Template::load(Some(&path))
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("mine.html line 2"), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }
}
