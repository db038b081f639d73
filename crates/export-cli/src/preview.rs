//! Link previews: the `og:` and `twitter:` tags (and, with `--base-url`, the canonical link) put
//! into each exported page and the index, each notebook's picture copied into the site beside
//! its page, and `sitemap.xml`. All of it is made here, from the notebooks: a page opened from
//! the site asks nothing of another server.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::meta::{Image, PageMeta};

/// What one page's preview says.
#[derive(Debug, Clone, Default)]
pub(crate) struct Preview {
    pub(crate) title: String,
    pub(crate) description: Option<String>,
    /// The picture's URL: absolute with `--base-url`, else relative to the page.
    pub(crate) image: Option<String>,
    /// The page's own absolute URL (with `--base-url`).
    pub(crate) url: Option<String>,
    /// The site's name (`--title`): on the index (a page does not carry it, so a new title
    /// does not export every page again).
    pub(crate) site_name: Option<String>,
}

impl Preview {
    /// The preview of a notebook's page `page` (a path in the site) with `meta`.
    /// `thumbnail`: with `--thumbnails`, a notebook without a picture gets its page's
    /// photograph.
    pub(crate) fn of_page(
        meta: &PageMeta,
        page: &Path,
        base_url: Option<&str>,
        thumbnail: bool,
    ) -> Self {
        let photo = (meta.image.is_none() && thumbnail).then(|| {
            let beside = crate::site::thumb_path(page);
            match base_url {
                Some(base) => format!("{base}{}", crate::site::url_path(&beside)),
                None => crate::site::url_path(Path::new(beside.file_name().unwrap_or_default())),
            }
        });
        let image = photo.or_else(|| {
            meta.image.as_ref().and_then(|i| match i {
                Image::Url(u) => Some(u.clone()),
                Image::File(_) => {
                    let beside = image_path(page, i)?;
                    Some(match base_url {
                        Some(base) => format!("{base}{}", crate::site::url_path(&beside)),
                        None => crate::site::url_path(Path::new(beside.file_name()?)),
                    })
                }
            })
        });
        Preview {
            title: meta.title.clone(),
            description: meta.description.clone(),
            image,
            url: base_url.map(|b| format!("{b}{}", crate::site::url_path(page))),
            site_name: None,
        }
    }

    /// The tags for the page's `<head>`: `og:`, `twitter:`, a description and, with an URL,
    /// the canonical link. Every value escaped for an attribute.
    pub(crate) fn tags(&self) -> String {
        let mut t = String::from("<!-- link previews: export-nb -->\n");
        let mut meta = |attr: &str, name: &str, value: &str| {
            let _ = writeln!(t, "<meta {attr}=\"{name}\" content=\"{}\">", escape(value));
        };
        meta("property", "og:type", "website");
        meta("property", "og:title", &self.title);
        if let Some(s) = &self.site_name {
            meta("property", "og:site_name", s);
        }
        meta("name", "twitter:title", &self.title);
        if let Some(d) = &self.description {
            meta("name", "description", d);
            meta("property", "og:description", d);
            meta("name", "twitter:description", d);
        }
        match &self.image {
            Some(i) => {
                meta("property", "og:image", i);
                meta("name", "twitter:image", i);
                meta("name", "twitter:card", "summary_large_image");
            }
            None => meta("name", "twitter:card", "summary"),
        }
        if let Some(u) = &self.url {
            meta("property", "og:url", u);
            let _ = writeln!(t, "<link rel=\"canonical\" href=\"{}\">", escape(u));
        }
        t
    }
}

/// `html` with `tags` at the start of its `<head>` (after the `<head>` tag); a page that has
/// `og:title` already (marimo may write its own) keeps its own.
pub(crate) fn inject(html: &str, tags: &str) -> String {
    if html.contains("property=\"og:title\"") {
        return html.to_owned();
    }
    // At the end of <head>: the page's own `<meta charset>` stays within its first bytes.
    match html.to_ascii_lowercase().find("</head") {
        Some(at) => format!("{}{tags}{}", &html[..at], &html[at..]),
        None => html.to_owned(),
    }
}

/// Where a notebook's picture goes in the site: beside its page, `<page stem>.og.<ext>`
/// (`None` for a picture at an URL).
pub(crate) fn image_path(page: &Path, image: &Image) -> Option<PathBuf> {
    let Image::File(file) = image else {
        return None;
    };
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| e.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or("png")
        .to_ascii_lowercase();
    let stem = page.file_stem()?.to_string_lossy();
    Some(page.with_file_name(format!("{stem}.og.{ext}")))
}

/// Copy a notebook's picture into the site beside its page (`page` in the site, `output` the
/// site's folder), when it differs from what is there; its site path, or `None`.
pub(crate) fn publish_image(output: &Path, page: &Path, image: &Image) -> Option<PathBuf> {
    let rel = image_path(page, image)?;
    let Image::File(from) = image else {
        return None;
    };
    let to = crate::site::path_inside(output, &rel)?;
    let bytes = std::fs::read(from).ok()?;
    if std::fs::read(&to).ok().as_deref() != Some(bytes.as_slice()) {
        std::fs::create_dir_all(to.parent()?).ok()?;
        fanout::fsutil::write_atomic(&to, &bytes).ok()?;
    }
    Some(rel)
}

/// Remove the pictures beside a page that is gone (`page`: its file in the site).
pub(crate) fn remove_images_of(page: &Path) {
    let (Some(dir), Some(stem)) = (page.parent(), page.file_stem()) else {
        return;
    };
    let stem = stem.to_string_lossy();
    let (og, thumb) = (format!("{stem}.og."), format!("{stem}.thumb.png"));
    // `<stem>.og.<ext>`, a picture's extension: not `a.og.html`, another notebook's page.
    let picture = |name: &str| {
        name.strip_prefix(&og).is_some_and(|ext| {
            !ext.is_empty()
                && ext.chars().all(|c| c.is_ascii_alphanumeric())
                && !ext.eq_ignore_ascii_case("html")
        })
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if picture(&name) || name == thumb {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// `sitemap.xml` for the site at `base` (ending in `/`): the index, then every page.
pub(crate) fn sitemap(base: &str, pages: &[String]) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for p in std::iter::once("index.html").chain(pages.iter().map(String::as_str)) {
        let _ = writeln!(
            xml,
            "  <url><loc>{}</loc></url>",
            escape(&format!("{base}{p}"))
        );
    }
    xml.push_str("</urlset>\n");
    xml
}

/// A value for an HTML attribute or XML text.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_escaped_and_the_image_is_absolute_with_a_base_url() {
        let meta = PageMeta {
            title: "\"><script>alert(1)</script>".into(),
            description: Some("Tom & Jerry's <b>".into()),
            tags: vec![],
            image: Some(Image::File("nbs/__marimo__/assets/a/opengraph.png".into())),
        };
        let page = Path::new("notebooks/sub/a b.html");
        let p = Preview::of_page(&meta, page, Some("https://x.io/nb/"), false);
        let t = p.tags();
        assert!(!t.contains("<script>"), "{t}");
        assert!(t.contains("content=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
        assert!(t.contains("content=\"Tom &amp; Jerry&#39;s &lt;b&gt;\""));
        assert!(t.contains(
            "<meta property=\"og:image\" content=\"https://x.io/nb/notebooks/sub/a%20b.og.png\">"
        ));
        assert!(t.contains(
            "<link rel=\"canonical\" href=\"https://x.io/nb/notebooks/sub/a%20b.html\">"
        ));
        let local = Preview::of_page(&meta, page, None, false).tags();
        let bare = PageMeta {
            image: None,
            ..meta.clone()
        };
        let photo = Preview::of_page(&bare, page, None, true).tags();
        assert!(photo.contains("content=\"a%20b.thumb.png\""), "{photo}");
        assert!(local.contains("content=\"a%20b.og.png\""), "{local}");
        assert!(!local.contains("canonical"));
    }

    #[test]
    fn injection_goes_at_the_end_of_the_head_once() {
        let html = "<!DOCTYPE html><html><HEAD lang=x><meta charset=\"utf-8\"><title>t</title></HEAD></html>";
        let out = inject(html, "<meta property=\"og:title\" content=\"x\">\n");
        assert_eq!(
            out,
            "<!DOCTYPE html><html><HEAD lang=x><meta charset=\"utf-8\"><title>t</title><meta property=\"og:title\" content=\"x\">\n</HEAD></html>"
        );
        assert_eq!(
            inject(&out, "<meta other>"),
            out,
            "a page with og:title keeps it"
        );
    }

    #[test]
    fn base_urls_and_sitemaps() {
        use crate::cli::parse_base_url as base_url;
        assert_eq!(base_url("https://x.io/nb").unwrap(), "https://x.io/nb/");
        assert!(base_url("x.io").is_err());
        assert!(base_url("https://x.io/\"><b>").is_err());
        let s = sitemap("https://x.io/", &["notebooks/a.html".into()]);
        assert!(s.contains("<loc>https://x.io/index.html</loc>"));
        assert!(s.contains("<loc>https://x.io/notebooks/a.html</loc>"));
        assert!(s.starts_with("<?xml"));
    }
}
