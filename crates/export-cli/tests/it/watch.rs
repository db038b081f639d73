//! `export-nb watch` with the stand-in uv: a real file watcher on a temporary project, the
//! binary's stderr read line by line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Project, notebook};

/// `export-nb watch` running in a project, with what it printed so far.
pub(crate) struct Watching {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watching {
    pub(crate) fn start(p: &Project, args: &[&str]) -> Self {
        let path = testkit::path_with(&p.path().join("bin"));
        let mut child = testkit::command(crate::BIN)
            .arg("watch")
            .args(args)
            .current_dir(p.path())
            .env("PATH", path)
            .env("FAKE_UVX_LOG", p.path().join("calls.log"))
            .env("FAKE_UVX_DIR", p.path())
            .env("XDG_CACHE_HOME", p.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (stderr, seen) = (child.stderr.take().unwrap(), Arc::clone(&lines));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line);
            }
        });
        Watching { child, lines }
    }

    pub(crate) fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Rounds finished so far: the `index: ...` lines, printed once the index is written.
    fn rounds(&self) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("index: "))
            .count()
    }

    pub(crate) fn wait_for_round(&self, n: usize) {
        self.wait_until(&format!("round {n}"), || self.rounds() >= n);
    }

    pub(crate) fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "waited 30 s for {what}; it printed:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C; the exit code.
    pub(crate) fn interrupt(mut self) -> Option<i32> {
        testkit::interrupt(&self.child);
        self.child.wait().unwrap().code()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn importing(module: &str) -> String {
    notebook(&format!("uses {module}\n    import {module}"))
}

#[test]
fn watch_exports_what_changed_once_per_burst_until_ctrl_c() {
    let p = Project::with_fake_uvx();
    for i in 0..6 {
        p.write(&format!("notebooks/n{i}.py"), &notebook(&format!("n{i}")));
    }
    p.write("notebooks/h0.py", &importing("helpers"));
    p.write("notebooks/h1.py", &importing("helpers"));
    p.write("notebooks/helpers.py", "VALUE = 1\n");
    let w = Watching::start(&p, &["--no-progress", "-j", "2"]);
    w.wait_for_round(1);
    assert_eq!(p.take_calls().len(), 8, "{}", w.text());

    // One notebook changed: one export.
    p.write("notebooks/n3.py", &notebook("n3, edited"));
    w.wait_for_round(2);
    let calls = p.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("notebooks/n3.py"), "{calls:?}");

    // Ten saves within 200 ms: one round, one export.
    for i in 0..10 {
        p.write("notebooks/n5.py", &notebook(&format!("SHOW: save {i}")));
        std::thread::sleep(Duration::from_millis(5));
    }
    w.wait_for_round(3);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(w.rounds(), 3, "one round for the burst:\n{}", w.text());
    assert_eq!(p.take_calls().len(), 1);
    assert!(
        p.read("_site/notebooks/n5.html").contains("SHOW: save 9"),
        "the last save is exported"
    );

    // A local module imported by two notebooks: exactly those two.
    p.write("notebooks/helpers.py", "VALUE = 2\n");
    w.wait_for_round(4);
    let mut calls = p.take_calls();
    calls.sort();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].contains("h0.py") && calls[1].contains("h1.py"),
        "{calls:?}"
    );

    // Deleted and new notebooks.
    std::fs::remove_file(p.path().join("notebooks/n1.py")).unwrap();
    w.wait_for_round(5);
    assert!(!p.exists("_site/notebooks/n1.html"));
    p.write("notebooks/fresh.py", &notebook("fresh"));
    w.wait_for_round(6);
    assert_eq!(p.take_calls().len(), 1);
    assert!(p.read("_site/index.html").contains("fresh.html"));

    // A broken pyproject.toml: said, and the last good settings stay.
    let rounds = w.rounds();
    p.write("pyproject.toml", "[tool.export-nb]\nmax-workrs = 3\n");
    w.wait_for_round(rounds + 1);
    assert!(
        w.text().contains("max-workrs") && w.text().contains("keeping the last good settings"),
        "{}",
        w.text()
    );
    assert!(p.take_calls().is_empty());
    p.write("notebooks/n2.py", &notebook("n2, edited"));
    w.wait_for_round(rounds + 2);
    assert_eq!(p.take_calls().len(), 1);

    assert_eq!(w.interrupt(), Some(130));
    let manifest: serde_json::Value =
        serde_json::from_str(&p.read("_site/.export-nb/manifest.json")).unwrap();
    let pages = manifest["pages"].as_object().unwrap();
    assert_eq!(pages.len(), 8, "{pages:?}");
    for page in pages.keys() {
        assert!(
            p.exists(&format!("_site/{page}")),
            "{page} is in the manifest"
        );
    }
}

/// Issue 27: a watch and a plain export on one output folder used to delete each other's
/// temporary files and overwrite each other's manifest; the folder is now one run's at a time.
#[test]
fn a_plain_export_is_refused_while_watch_holds_the_output_folder_or_waits_with_wait() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook("a"));
    let w = Watching::start(&p, &["--no-progress", "notebooks"]);
    w.wait_for_round(1);
    let out = p.run(&["--no-progress", "notebooks"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let expected = format!(
        "the output folder _site is in use by another export-nb: pid {} (export-nb watch), \
         started",
        w.child.id()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    assert!(p.exists("_site/notebooks/a.html"), "the watch's page stays");

    // With --wait, the export runs once the watch has ended.
    let waiting = {
        let path = testkit::path_with(&p.path().join("bin"));
        testkit::command(crate::BIN)
            .args(["--no-progress", "--wait", "notebooks"])
            .current_dir(p.path())
            .env("PATH", path)
            .env("FAKE_UVX_LOG", p.path().join("calls.log"))
            .env("FAKE_UVX_DIR", p.path())
            .env("XDG_CACHE_HOME", p.path().join("cache"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    w.wait_until("the second run to wait", || {
        std::fs::read_to_string(format!("/proc/{}/wchan", waiting.id()))
            .is_ok_and(|c| c.starts_with("locks_") || c.contains("flock"))
    });
    assert_eq!(w.interrupt(), Some(130));
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !p.exists("_site/.export-nb/lock"),
        "the lock went with the run"
    );
}

#[test]
fn a_notebook_changed_while_it_exports_is_stopped_and_exported_again() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/slow.py", &notebook("FAKE_HANG"));
    let w = Watching::start(&p, &["--no-progress"]);
    w.wait_until("the export to start", || p.exists("hang.pid"));
    let pid: i32 = p.read("hang.pid").trim().parse().unwrap();
    p.write("notebooks/slow.py", &notebook("fixed"));
    w.wait_until("the second round", || w.rounds() >= 2);
    assert!(w.text().contains("starting over"), "{}", w.text());
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .is_empty(),
        "the stopped export's process {pid} survived"
    );
    assert!(p.read("_site/notebooks/slow.html").contains("page of"));
    assert_eq!(w.interrupt(), Some(130));
}

/// A free port on 127.0.0.1 (taken, then let go).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A raw GET, path as given (no client normalizes `..` away): status and body.
fn get(port: u16, path: &str) -> (u16, String) {
    get_as(port, path, "127.0.0.1")
}

/// `get`, the request naming `host` in its `Host` header.
fn get_as(port: u16, path: &str, host: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_answers_pages_with_the_reload_script_and_nothing_outside_the_site() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook("SHOW: served"));
    p.write("secret.txt", "not for the web");
    let port = free_port();
    let w = Watching::start(&p, &["--no-progress", &format!("--serve=127.0.0.1:{port}")]);
    w.wait_for_round(1);
    assert!(
        w.text()
            .contains(&format!("the site: http://127.0.0.1:{port}/")),
        "{}",
        w.text()
    );
    let (status, body) = get(port, "/notebooks/a.html");
    assert_eq!(status, 200);
    assert!(
        body.contains("SHOW: served") && body.contains("/__export-nb/mtime"),
        "{body}"
    );
    assert!(
        !p.read("_site/notebooks/a.html").contains("__export-nb"),
        "the file on disk stays as exported"
    );
    let (status, body) = get(port, "/");
    assert_eq!(status, 200);
    assert!(body.contains("a.html"), "the index: {body}");

    std::os::unix::fs::symlink(p.path(), p.path().join("_site/escape")).unwrap();
    for path in [
        "/../secret.txt",
        "/notebooks/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/escape/secret.txt",
    ] {
        let (status, body) = get(port, path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("not for the web"));
    }
    // DNS rebinding: a page of another site that resolves its name to 127.0.0.1 names its own
    // host; it is refused. This machine's names are answered.
    for (host, status) in [
        ("evil.example", 421),
        (&*format!("evil.example:{port}"), 421),
        (&*format!("localhost:{port}"), 200),
        (&*format!("[::1]:{port}"), 200),
    ] {
        assert_eq!(get_as(port, "/", host).0, status, "Host: {host}");
    }
    let (status, body) = get(port, "/notebooks/missing.html");
    assert_eq!(status, 404);
    assert!(body.contains(r#"<a href="/index.html">"#), "{body}");

    // The port taken: a clear error, exit 2 (another output folder: this one is the first
    // watch's).
    let taken = p.run_with(
        &[
            "watch",
            "-o",
            "_other",
            &format!("--serve=127.0.0.1:{port}"),
        ],
        &[],
    );
    assert_eq!(taken.code, Some(2), "{}", taken.stderr);
    assert!(
        taken
            .stderr
            .contains(&format!("--serve 127.0.0.1:{port}: could not listen")),
        "{}",
        taken.stderr
    );
    for (args, says) in [
        (
            vec!["watch", "--serve", "127.0.0.1:9"],
            "127.0.0.1:9 is read as a folder: give --serve its address with =",
        ),
        (
            vec!["watch", "--serve=nowhere"],
            "--serve=nowhere: not a host and port",
        ),
    ] {
        let out = p.run_with(&args, &[]);
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        assert!(out.stderr.contains(says), "{}", out.stderr);
    }
    assert_eq!(w.interrupt(), Some(130));
}
