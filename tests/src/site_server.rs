//! A static file server on 127.0.0.1 for a folder, as a user would serve an exported site
//! (`python3 -m http.server`): browsers run the module scripts of marimo's frontend only from
//! `http:` URLs, not from `file:` ones.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tiny_http::{Header, Response, Server};

/// The running server; it stops when dropped.
pub struct SiteServer {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub url: String,
    server: Arc<Server>,
}

impl SiteServer {
    /// Serve the files under `root` on a free port.
    ///
    /// # Panics
    /// When no port can be bound on 127.0.0.1.
    pub fn start(root: &Path) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let (s, root) = (Arc::clone(&server), root.to_path_buf());
        std::thread::spawn(move || {
            for req in s.incoming_requests() {
                let file = file_for(&root, req.url());
                let _ = match file.and_then(|f| std::fs::read(&f).ok().map(|b| (f, b))) {
                    Some((file, bytes)) => {
                        let header = Header::from_bytes("Content-Type", content_type(&file))
                            .expect("a valid header");
                        req.respond(Response::from_data(bytes).with_header(header))
                    }
                    None => req.respond(Response::from_string("not found").with_status_code(404)),
                };
            }
        });
        SiteServer {
            url: format!("http://127.0.0.1:{port}"),
            server,
        }
    }

    /// The URL of `path` (relative to the served folder, `/`-separated).
    pub fn url_of(&self, path: &str) -> String {
        format!("{}/{}", self.url, path.trim_start_matches('/'))
    }
}

impl std::fmt::Debug for SiteServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SiteServer({})", self.url)
    }
}

impl Drop for SiteServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// The file a URL path names under `root`: query and fragment dropped, `%XX` decoded, a folder
/// served by its `index.html`; nothing outside `root`.
fn file_for(root: &Path, url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let file = root.join(rel);
    Some(if file.is_dir() {
        file.join("index.html")
    } else {
        file
    })
}

/// A URL path with its `%XX` escapes decoded; `None` if that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// The content type by the file's extension (module scripts must come with a JavaScript
/// type: browsers check it; HTML and text as UTF-8).
fn content_type(file: &Path) -> String {
    let mime = mime_guess::from_path(file).first_or_octet_stream();
    if mime.type_() == mime_guess::mime::TEXT {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_files_inside_the_root_only() {
        let root = Path::new("/site");
        assert_eq!(
            file_for(root, "/notebooks/a%20b.html?x=1"),
            Some(PathBuf::from("/site/notebooks/a b.html"))
        );
        assert_eq!(file_for(root, "/../etc/passwd"), None);
        assert_eq!(file_for(root, "/a/%2e%2e/%2e%2e/etc"), None);
        // Not an escape: taken as written, like other servers do.
        assert_eq!(
            file_for(root, "/bad%zz"),
            Some(PathBuf::from("/site/bad%zz"))
        );
    }
}
