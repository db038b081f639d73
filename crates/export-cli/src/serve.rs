//! `export-nb watch --serve`: the output folder over HTTP while watching, with live reload.
//!
//! The server adds a small script to every HTML page it sends (the files on disk stay exactly
//! as exported): the script asks the server every half second for the page file's modification
//! time and reloads the page when it changes. Only files inside the output folder are served:
//! `..` in a URL, and links that lead outside, answer 404, as does a missing file (with a link
//! to the index).
//!
//! A page on another site can make the browser resolve its own name to 127.0.0.1 (DNS
//! rebinding) and read what this server answers; so a request must name this server in its
//! `Host` header: the address it listens on, `localhost` or `127.0.0.1` (or `[::1]`) with its
//! port, or the host given to `--serve`. Anything else is refused (421). A server listening
//! on every address (`0.0.0.0`) is open to the network anyway and takes any name.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use tiny_http::{Header, Request, Response, Server};

/// The path of the modification-time endpoint; not a file name export-nb writes.
const MTIME_PATH: &str = "/__export-nb/mtime";

/// Threads answering requests: a marimo page loads a few hundred files at once.
const THREADS: usize = 4;

/// A running server; it stops when dropped.
pub(crate) struct SiteServer {
    pub(crate) url: String,
    server: Arc<Server>,
}

impl SiteServer {
    /// Serve `root` on `addr` (`127.0.0.1:8000`).
    pub(crate) fn start(root: &Path, addr: &str) -> Result<Self> {
        if std::net::ToSocketAddrs::to_socket_addrs(addr).is_err() {
            anyhow::bail!(
                "--serve={addr}: not a host and port like 127.0.0.1:8000, localhost:8000 or \
                 [::1]:8000"
            );
        }
        let server = Server::http(addr).map_err(|e| {
            anyhow::anyhow!(
                "--serve {addr}: could not listen there: {e} (another server on that port? pass \
                 --serve 127.0.0.1:PORT)"
            )
        })?;
        let server = Arc::new(server);
        let bound = server
            .server_addr()
            .to_ip()
            .context("the server's address")?;
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating the output folder {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("the output folder {}", root.display()))?;
        let hosts = Arc::new(Hosts::new(addr, bound));
        for _ in 0..THREADS {
            let (server, root, hosts) = (Arc::clone(&server), root.clone(), Arc::clone(&hosts));
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    if hosts.allows(&request) {
                        respond(&root, request);
                    } else {
                        let _ = request.respond(misdirected());
                    }
                }
            });
        }
        Ok(SiteServer {
            url: format!("http://{bound}/"),
            server,
        })
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

/// The host names a request's `Host` may give (see the module's notes); its port does not
/// matter (a rebinding page names its own host, whatever the port).
#[derive(Debug)]
struct Hosts {
    /// `None`: any (the server listens on every address).
    names: Option<Vec<String>>,
}

impl Hosts {
    fn new(given: &str, bound: std::net::SocketAddr) -> Self {
        if bound.ip().is_unspecified() {
            return Hosts { names: None };
        }
        let ip = match bound.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 @ std::net::IpAddr::V4(_) => v4.to_string(),
        };
        let names = vec![
            ip,
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "[::1]".to_owned(),
            host_part(given).to_ascii_lowercase(),
        ];
        Hosts { names: Some(names) }
    }

    fn allows(&self, request: &Request) -> bool {
        let Some(names) = &self.names else {
            return true;
        };
        match request.headers().iter().find(|h| h.field.equiv("Host")) {
            // No Host: not a browser's request (every browser sends one).
            None => true,
            Some(h) => {
                let host = host_part(h.value.as_str().trim()).to_ascii_lowercase();
                names.contains(&host)
            }
        }
    }
}

/// `name:port` or `[v6]:port` without the port.
fn host_part(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn misdirected() -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(
        "This server answers only requests for localhost, 127.0.0.1 or the address it was \
         given (--serve).",
    )
    .with_status_code(421)
    .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn respond(root: &Path, request: Request) {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    if path == MTIME_PATH {
        let page = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("page="))
            .and_then(percent_decode)
            .and_then(|p| file_for(root, &p));
        let mtime = page.as_deref().map_or(0, mtime_of);
        let _ = request.respond(
            Response::from_string(mtime.to_string())
                .with_header(header("Cache-Control", "no-store")),
        );
        return;
    }
    let Some(file) = percent_decode(path).and_then(|p| file_for(root, &p)) else {
        let _ = request.respond(not_found());
        return;
    };
    let Ok(bytes) = std::fs::read(&file) else {
        let _ = request.respond(not_found());
        return;
    };
    let kind = content_type(&file);
    let body = if kind.starts_with("text/html") {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        with_reload_script(&bytes, &format!("/{}", rel.display()), mtime_of(&file))
    } else {
        bytes
    };
    // marimo's frontend in `_marimo/<version>/` never changes under a version: a reload
    // fetches the page, not the 700 files again.
    let frontend = file
        .strip_prefix(root)
        .is_ok_and(|rel| rel.starts_with(crate::site::DIR));
    let cache = if frontend {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let _ = request.respond(
        Response::from_data(body)
            .with_header(header("Content-Type", &kind))
            .with_header(header("Cache-Control", cache)),
    );
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name, value).expect("a valid header")
}

fn not_found() -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Not found</title>\
         <p>Nothing here. <a href=\"/index.html\">Back to the index</a></p></html>",
    )
    .with_status_code(404)
    .with_header(header("Content-Type", "text/html; charset=utf-8"))
}

/// The file a decoded URL path names inside `root`, a folder by its `index.html`; `None` for
/// anything else: `..`, a link that leads outside, a file that is not there.
fn file_for(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut file = root.join(rel).canonicalize().ok()?;
    if !file.starts_with(root) {
        return None;
    }
    if file.is_dir() {
        file = file.join("index.html").canonicalize().ok()?;
        if !file.starts_with(root) {
            return None;
        }
    }
    file.is_file().then_some(file)
}

/// A URL path with its `%XX` escapes decoded; `None` if that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// Nanoseconds since the epoch of the file's last change; 0 if it is not there.
fn mtime_of(file: &Path) -> u128 {
    std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// The page with the live-reload script before `</body>` (or at the end).
fn with_reload_script(html: &[u8], page: &str, mtime: u128) -> Vec<u8> {
    // JSON in a <script>: `</script>` (and `<!--`) in a folder's name must not end it.
    let page_json = serde_json::to_string(page)
        .expect("a string serializes")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let script = format!(
        "<script>(() => {{ const page = {page_json}, seen = '{mtime}'; \
         const check = () => fetch('{MTIME_PATH}?page=' + encodeURIComponent(page), \
         {{cache: 'no-store'}}).then(r => r.text()).then(t => {{ \
         if (t !== seen && t !== '0') location.reload(); else setTimeout(check, 500); }}, \
         () => setTimeout(check, 2000)); setTimeout(check, 500); }})();</script>"
    );
    let text = String::from_utf8_lossy(html);
    let at = text.rfind("</body>").unwrap_or(text.len());
    let mut out = String::with_capacity(text.len() + script.len());
    out.push_str(&text[..at]);
    out.push_str(&script);
    out.push_str(&text[at..]);
    out.into_bytes()
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
    fn only_files_inside_the_root_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(root.join("notebooks")).unwrap();
        std::fs::write(root.join("index.html"), "i").unwrap();
        std::fs::write(root.join("notebooks/a b.html"), "a").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(
            file_for(&root, "/notebooks/a b.html"),
            Some(root.join("notebooks/a b.html"))
        );
        assert_eq!(file_for(&root, "/"), Some(root.join("index.html")));
        for bad in [
            "/../secret.txt",
            "/notebooks/../../secret.txt",
            "/escape/secret.txt",
            "/nope",
        ] {
            assert_eq!(file_for(&root, bad), None, "{bad}");
        }
    }

    #[test]
    fn the_script_goes_before_the_end_of_the_body() {
        let out = with_reload_script(b"<html><body>x</body></html>", "/a.html", 7);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("<html><body>x<script>"), "{out}");
        assert!(out.ends_with("</script></body></html>"), "{out}");
        assert!(
            out.contains(r#"const page = "/a.html", seen = '7'"#),
            "{out}"
        );
        // A folder named to end the script stays inside the string.
        let out = with_reload_script(b"<body></body>", "/</script><script>alert(1)//.html", 1);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches("</script>").count(), 1, "{out}");
        assert!(out.contains(r#""/\u003c/script\u003e\u003cscript\u003ealert(1)//.html""#));
    }
}
