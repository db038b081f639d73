//! Fast end-to-end tests with a stand-in `uv` on `PATH`. Its `uv venv` makes an environment
//! whose `bin/python` is a stand-in for `python -m marimo` (its marimo version is not one the
//! worker was tested with, so every export is a `python -m marimo export` process). The
//! stand-in logs every call and how many ran at once, and behaves like marimo according to
//! markers in the notebook.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::Run;

use crate::{Project, notebook};

/// The stand-in uv: `uv venv [...] DIR` and `uv pip install [...] --python PY -r FILE`, which
/// installs a stand-in marimo: version 0.0.0+fake or the one pinned (`marimo==VER`), with a
/// frontend (`marimo/_static`) unless `FAKE_UV_NO_FRONTEND` is set.
const FAKE_UV: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_UVX_DIR/uv.log"
case "$1" in
  venv)
    for a in "$@"; do dir="$a"; done
    mkdir -p "$dir/bin"
    cp "$FAKE_UVX_DIR/bin/fake-python" "$dir/bin/python" ;;
  pip)
    prev=""; for a in "$@"; do
      [ "$prev" = "--python" ] && dir="$(dirname "$(dirname "$a")")"
      [ "$prev" = "-r" ] && reqs="$a"
      prev="$a"
    done
    version=$(sed -n 's/^marimo==//p' "$reqs"); version="${version:-0.0.0+fake}"
    site="$dir/lib/python3.11/site-packages"
    mkdir -p "$site/marimo-$version.dist-info"
    if [ -z "$FAKE_UV_NO_FRONTEND" ]; then
      mkdir -p "$site/marimo/_static/assets"
      echo "// the stand-in frontend" > "$site/marimo/_static/assets/index.js"
      echo "icon" > "$site/marimo/_static/favicon.ico"
      echo "<html>marimo's server page</html>" > "$site/marimo/_static/index.html"
    fi ;;
  *) echo "fake uv: unexpected $*" >&2; exit 2 ;;
esac
"#;

/// The stand-in interpreter: `python -m marimo export <format...> -f --no-sandbox NB -o OUT`.
/// The page shows the notebook's first `SHOW: words` line, if it has one.
const FAKE_PYTHON: &str = r#"#!/bin/sh
[ "$1" = "-m" ] && shift 1
log="$FAKE_UVX_LOG"; out=""; nb=""; prev=""
for a in "$@"; do
  [ "$prev" = "-o" ] && out="$a"
  case "$a" in *.py) nb="$a";; esac
  prev="$a"
done
echo "start $*" >> "$log"
[ -n "$SLURM_JOB_ID" ] && echo "$SLURM_JOB_ID $SLURM_JOB_NAME" >> "$FAKE_UVX_DIR/slurm_jobs"
if grep -q FAKE_HANG "$nb"; then
  setsid sh -c "echo \$\$ > '$FAKE_UVX_DIR/hang.pid'; exec sleep 300" &
  sleep 300
fi
sleep "${FAKE_UVX_DELAY:-0}"
finish() { echo "end $nb" >> "$log"; exit "$1"; }
if grep -q FAKE_RAISE "$nb"; then
  echo "<html>half</html>" > "$out"
  echo "Traceback (most recent call last):" >&2
  echo "ValueError: boom in $nb" >&2
  echo "Error: Export was successful, but some cells failed to execute." >&2
  finish 1
fi
if grep -q FAKE_INVALID "$nb"; then
  echo "<html></html>" > "$out"
  echo "[E 261123 01:14:35 load:204] Notebook $nb is not a valid marimo notebook." >&2
  finish 0
fi
grep -q FAKE_NOPAGE "$nb" && finish 0
# Like marimo: a static page loads the frontend of its version from the CDN; a WebAssembly
# page gets a copy beside it.
site=$(dirname "$0")/../lib/python3.11/site-packages
version=$(ls "$site" | sed -n 's/^marimo-\(.*\)\.dist-info$/\1/p')
case "$*" in
  *html-wasm*)
    cdn="."
    mkdir -p "$(dirname "$out")/assets"
    echo "// the stand-in frontend" > "$(dirname "$out")/assets/index.js"
    echo "icon" > "$(dirname "$out")/favicon.ico" ;;
  *) cdn="https://cdn.jsdelivr.net/npm/@marimo-team/frontend@${FAKE_PAGE_VERSION:-$version}/dist" ;;
esac
show=$(grep -o 'SHOW: [A-Za-z0-9 ]*' "$nb" | head -n 1)
cat > "$out" <<PAGE
<html><head><link rel="icon" href="$cdn/favicon.ico" /><script src="$cdn/assets/index.js"></script></head>
<body>page of $nb $show</body></html>
PAGE
finish 0
"#;

impl Project {
    pub(crate) fn with_fake_uvx() -> Self {
        let p = Project::create();
        testkit::write_script(&p.path().join("bin"), "uv", FAKE_UV);
        testkit::write_script(&p.path().join("bin"), "fake-python", FAKE_PYTHON);
        p
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_delay(args, "0")
    }

    fn run_delay(&self, args: &[&str], delay: &str) -> Run {
        self.run_env(args, &[("FAKE_UVX_DELAY", delay)])
    }

    /// Run with the stand-ins and `extra` environment variables for them.
    pub(crate) fn run_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let path = testkit::path_with(&self.path().join("bin"));
        let log = self.path().join("calls.log");
        let cache = self.path().join("cache");
        let mut env = vec![
            ("PATH", path.as_os_str()),
            ("XDG_CACHE_HOME", cache.as_os_str()),
            ("FAKE_UVX_LOG", log.as_os_str()),
            ("FAKE_UVX_DIR", self.path().as_os_str()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, OsStr::new(v))));
        self.run_with(args, &env)
    }

    /// The stand-in's calls so far (argument lists), and forget them.
    pub(crate) fn take_calls(&self) -> Vec<String> {
        let log = self.path().join("calls.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let (mut running, mut peak) = (0, 0);
        let mut calls = Vec::new();
        for line in text.lines() {
            if let Some(args) = line.strip_prefix("start ") {
                running += 1;
                peak = std::cmp::max(peak, running);
                calls.push(args.to_owned());
            } else {
                running -= 1;
            }
        }
        self.peak.set(peak);
        calls
    }
}

pub(crate) fn report(p: &Project) -> Value {
    serde_json::from_str(&p.read("report.json")).unwrap()
}

pub(crate) fn statuses(report: &Value) -> Vec<(String, String)> {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn exports_a_folder_recursively_into_a_site_with_an_index() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/intro.py", &notebook("ok"));
    p.write("notebooks/deep/dive/analysis_two.py", &notebook("ok"));
    let out = p.run(&["-j", "2"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        p.read("_site/notebooks/intro.html")
            .contains("page of notebooks/intro.py")
    );
    assert!(p.exists("_site/notebooks/deep/dive/analysis_two.html"));
    assert!(p.exists("_site/.nojekyll"));
    let index = p.read("_site/index.html");
    assert!(
        index.contains(r#"<a href="notebooks/intro.html">intro</a>"#),
        "{index}"
    );
    assert!(index.contains(r#"<a href="notebooks/deep/dive/analysis_two.html">analysis two</a>"#));
    let calls = p.take_calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("marimo export html -f --no-sandbox notebooks/intro.py -o ")),
        "{calls:?}"
    );
    assert!(
        out.stderr.contains("2 notebooks: 2 succeeded in "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("index: _site/index.html"),
        "{}",
        out.stderr
    );
    assert!(
        !p.exists("_site/.export-nb/tmp"),
        "temporary exports are cleaned up"
    );
}

#[test]
fn apps_and_wasm_folders_use_their_formats_and_share_one_pool() {
    let p = Project::with_fake_uvx();
    for i in 0..3 {
        p.write(&format!("notebooks/n{i}.py"), &notebook("ok"));
        p.write(&format!("apps/a{i}.py"), &notebook("ok"));
        p.write(&format!("wasm/w{i}.py"), &notebook("ok"));
    }
    let out = p.run_delay(
        &[
            "notebooks",
            "--apps",
            "apps",
            "--wasm",
            "wasm",
            "-j",
            "2",
            "--no-sandbox",
        ],
        "0.2",
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let calls = p.take_calls();
    assert_eq!(calls.len(), 9);
    assert_eq!(
        p.peak.get(),
        2,
        "one pool of 2 workers across all categories"
    );
    assert!(calls.iter().any(|c| c.starts_with(
        "marimo export html-wasm --mode run --no-show-code -f --no-sandbox apps/a0.py -o "
    )));
    assert!(calls.iter().any(|c| {
        c.starts_with("marimo export html-wasm --mode edit -f --no-sandbox wasm/w1.py -o ")
    }));
    assert!(p.exists("_site/apps/a2.html"));
    assert!(
        p.exists("_site/_marimo/0.0.0+fake/assets/index.js"),
        "one copy of the frontend for the site"
    );
    assert!(
        !p.exists("_site/apps/assets") && !p.exists("_site/notebooks_wasm/favicon.ico"),
        "not a copy per category"
    );
    assert!(
        p.read("_site/apps/a2.html")
            .contains(r#"<script src="../_marimo/0.0.0+fake/assets/index.js">"#)
    );
    assert!(p.exists("_site/notebooks_wasm/w0.html"));
    let index = p.read("_site/index.html");
    let pos = |s: &str| index.find(s).unwrap_or_else(|| panic!("{s} missing"));
    assert!(pos(">Notebooks</h2>") < pos(">Apps</h2>"));
    assert!(pos(">Apps</h2>") < pos(">Interactive notebooks</h2>"));
}

#[test]
fn failures_are_reported_not_linked_and_do_not_stop_the_others() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/good.py", &notebook("ok"));
    p.write("notebooks/raises.py", &notebook("FAKE_RAISE"));
    p.write("notebooks/invalid.py", &notebook("FAKE_INVALID"));
    p.write("notebooks/nopage.py", &notebook("FAKE_NOPAGE"));
    p.write("notebooks/helpers.py", "def helper():\n    return 1\n");
    let out = p.run(&["--report", "report.json", "-j", "2"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);

    let r = report(&p);
    let mut st = statuses(&r);
    st.sort();
    assert_eq!(
        st,
        [
            ("notebooks/good.py".into(), "succeeded".into()),
            ("notebooks/helpers.py".into(), "skipped".into()),
            ("notebooks/invalid.py".into(), "failed".into()),
            ("notebooks/nopage.py".into(), "failed".into()),
            ("notebooks/raises.py".into(), "failed".into()),
        ]
    );
    let task = |name: &str| {
        r["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        task("notebooks/raises.py")["error"],
        "a cell raised an error: ValueError: boom in notebooks/raises.py"
    );
    assert!(
        task("notebooks/raises.py")["error_detail"]
            .as_str()
            .unwrap()
            .contains("some cells failed to execute")
    );
    assert_eq!(
        task("notebooks/invalid.py")["error"],
        "marimo could not load it: not a valid marimo notebook"
    );
    assert_eq!(
        task("notebooks/nopage.py")["error"],
        "marimo reported success but wrote no page"
    );
    assert_eq!(
        task("notebooks/helpers.py")["error"],
        "not a marimo notebook (no marimo.App)"
    );
    assert_eq!(
        task("notebooks/good.py")["page"],
        "_site/notebooks/good.html"
    );
    assert_eq!(task("notebooks/good.py")["category"], "notebooks");

    assert!(
        !p.exists("_site/notebooks/raises.html"),
        "a failed export installs no page"
    );
    assert!(!p.exists("_site/notebooks/invalid.html"));
    let index = p.read("_site/index.html");
    assert!(!index.contains("raises.html") && !index.contains("invalid.html"));
    assert!(index.contains("export failed"));
    assert!(!index.contains("helpers"), "non-notebooks are not listed");
    assert!(out.stderr.contains("run with -v"), "{}", out.stderr);

    let verbose = p.run(&["-v"]);
    assert!(
        verbose.stderr.contains("ValueError: boom"),
        "{}",
        verbose.stderr
    );
}

#[test]
fn an_unchanged_rerun_makes_no_export_call_and_changes_are_picked_up() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook("a"));
    p.write("notebooks/b.py", &notebook("b"));
    p.write("notebooks/c.py", &notebook("c"));
    assert_eq!(p.run(&[]).code, Some(0));
    assert_eq!(p.take_calls().len(), 3);

    let start = Instant::now();
    let again = p.run(&["--report", "report.json"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(p.take_calls().is_empty(), "nothing changed: no export");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(statuses(&report(&p)).iter().all(|(_, s)| s == "skipped"));
    assert!(
        p.read("_site/index.html")
            .contains(r#"href="notebooks/a.html""#),
        "still linked"
    );

    // Edit one, delete one: only the edited one is exported, the deleted one's page goes.
    p.write("notebooks/a.py", &notebook("a, edited"));
    std::fs::remove_file(p.path().join("notebooks/c.py")).unwrap();
    assert_eq!(p.run(&[]).code, Some(0));
    let calls = p.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("notebooks/a.py"));
    assert!(!p.exists("_site/notebooks/c.html"));
    assert!(!p.read("_site/index.html").contains("c.html"));

    // Other flags make other pages: everything is exported again; so does --force.
    assert_eq!(p.run(&["--no-sandbox"]).code, Some(0));
    assert_eq!(p.take_calls().len(), 2);
    assert_eq!(p.run(&["--no-sandbox", "--force"]).code, Some(0));
    assert_eq!(p.take_calls().len(), 2);
    // A deleted page is exported again even if the notebook is unchanged.
    std::fs::remove_file(p.path().join("_site/notebooks/b.html")).unwrap();
    assert_eq!(p.run(&["--no-sandbox"]).code, Some(0));
    assert_eq!(
        p.take_calls(),
        vec![format!(
            "marimo export html -f --no-sandbox notebooks/b.py -o {}",
            p.path()
                .join("_site/.export-nb/tmp/1/b.html")
                .strip_prefix(p.path())
                .unwrap()
                .display()
        )]
    );
}

#[test]
fn parallel_exports_are_faster_and_bounded() {
    let p = Project::with_fake_uvx();
    for i in 0..8 {
        p.write(&format!("notebooks/nb{i}.py"), &notebook("ok"));
    }
    let start = Instant::now();
    assert_eq!(p.run_delay(&["-j", "4", "--force"], "1").code, Some(0));
    let parallel = start.elapsed();
    p.take_calls();
    assert_eq!(p.peak.get(), 4);

    let start = Instant::now();
    assert_eq!(p.run_delay(&["--sequential", "--force"], "1").code, Some(0));
    let serial = start.elapsed();
    p.take_calls();
    assert_eq!(p.peak.get(), 1);
    // Serial cannot take less than 8 x 1 s; four at a time needs about 2 s. The ratio itself
    // is measured by the benchmark suite, not here.
    assert!(serial >= Duration::from_secs(8));
    assert!(
        parallel < serial / 2,
        "parallel {parallel:?}, serial {serial:?}"
    );
}

#[test]
fn a_timeout_kills_the_export_and_its_escaped_processes() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/hangs.py", &notebook("FAKE_HANG"));
    p.write("notebooks/fine.py", &notebook("ok"));
    let start = Instant::now();
    let out = p.run(&["--timeout", "1", "--report", "report.json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(start.elapsed() < Duration::from_secs(60));
    let r = report(&p);
    let mut st = statuses(&r);
    st.sort();
    assert_eq!(
        st,
        [
            ("notebooks/fine.py".into(), "succeeded".into()),
            ("notebooks/hangs.py".into(), "timed_out".into())
        ]
    );
    let pid: i32 = p.read("hang.pid").trim().parse().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap()
                .is_empty(),
        "the escaped grandchild {pid} survived"
    );
    assert!(p.read("_site/index.html").contains("export timed out"));
}

#[test]
fn dry_run_prints_the_commands_and_writes_nothing() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/one.py", &notebook("ok"));
    p.write("notebooks/util.py", "x = 1\n");
    let out = p.run(&["--dry-run", "--marimo-version", "0.9.1", "--no-sandbox"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let envs = format!("{}/cache/export-nb/envs/", p.path().display());
    assert!(out.stdout.starts_with(&envs), "{}", out.stdout);
    assert!(
        out.stdout.ends_with(
            "/bin/python -m marimo export html -f --no-sandbox notebooks/one.py \
             -o _site/.export-nb/tmp/0/one.html\n"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(
        out.stderr.contains("# environment ") && out.stderr.contains(": python: marimo==0.9.1"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("# skipped notebooks/util.py: not a marimo notebook")
    );
    assert!(p.take_calls().is_empty());
    assert!(!p.exists("_site"));
}

#[test]
fn excluded_notebooks_are_left_out() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/keep.py", &notebook("ok"));
    p.write("notebooks/drafts/wip.py", &notebook("ok"));
    p.write("notebooks/scratch_test.py", &notebook("ok"));
    let out = p.run(&["--exclude", "drafts/**", "--exclude", "*_test.py"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let calls = p.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("notebooks/keep.py"));
}

#[test]
fn settings_come_from_pyproject_and_flags_win() {
    let p = Project::with_fake_uvx();
    p.write("docs/nb.py", &notebook_with_deps(&["six"]));
    p.write(
        "pyproject.toml",
        "[project]\nname = \"demo\"\n\n[tool.export-nb]\nfolders = [\"docs\"]\noutput = \"public\"\ntitle = \"Team notebooks\"\nsandbox = false\n",
    );
    let out = p.run(&[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(p.exists("public/notebooks/nb.html"));
    assert!(
        p.read("public/index.html")
            .contains("<title>Team notebooks</title>")
    );
    assert_eq!(
        p.environments(),
        ["marimo"],
        "no sandbox: the header is ignored"
    );

    let out = p.run(&["--title", "From the flag", "--sandbox"]);
    assert_eq!(out.code, Some(0));
    assert!(
        p.read("public/index.html")
            .contains("<title>From the flag</title>")
    );
    assert_eq!(p.environments(), ["marimo", "marimo,six"], "the flag wins");
}

#[test]
fn a_custom_template_gets_the_documented_context() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/alpha.py", &notebook("ok"));
    p.write("notebooks/beta.py", &notebook("FAKE_RAISE"));
    p.write(
        "site.html",
        "<h1>{{ title }}</h1>{{ summary.total }}/{{ summary.ok }}/{{ summary.failed }}\n\
         {% for c in categories %}[{{ c.key }}:{{ c.label }}]{% for n in c.notebooks %}\n\
         {{ n.name }}|{{ n.source }}|{{ n.file }}|{{ n.href }}|{{ n.status }}|{{ n.up_to_date }}|{{ n.error }}{% endfor %}{% endfor %}\n\
         {% for c in categories %}{% for n in c.notebooks %}<{{ n.title }}|{{ n.description }}|{{ n.tags | join(\",\") }}|{{ n.image }}>{% endfor %}{% endfor %}\n\
         tags={{ tags | join(\",\") }}\n{{ meta_tags | safe }}",
    );
    let out = p.run(&["--template", "site.html", "--title", "T"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let index = p.read("_site/index.html");
    assert!(
        index.starts_with("<h1>T</h1>2/1/1\n[notebooks:Notebooks]"),
        "{index}"
    );
    assert!(
        index.contains("\nalpha|notebooks/alpha.py|alpha.py|notebooks/alpha.html|ok|False|None"),
        "{index}"
    );
    assert!(
        index.contains("\nbeta|notebooks/beta.py|beta.py|None|failed|False|a cell raised an error"),
        "{index}"
    );
    assert!(
        index.contains("<alpha|None||None><beta|None||None>"),
        "{index}"
    );
    assert!(index.contains("\ntags=\n"), "{index}");
    assert!(
        index.contains(r#"<meta property="og:title" content="T">"#),
        "{index}"
    );
}

#[test]
fn bad_input_is_a_clear_usage_error_before_anything_runs() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook("ok"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-j", "0"],
            "max_workers must be between 1 and 16, got 0",
        ),
        (
            vec!["-j", "17"],
            "max_workers must be between 1 and 16, got 17",
        ),
        (
            vec!["missing-folder"],
            "missing-folder does not exist: name a folder of notebooks, a notebook (.py), or a glob",
        ),
        (
            vec!["--template", "nope.html"],
            "the index template nope.html does not exist",
        ),
        (
            vec!["--uvx", "/opt/none/uvx"],
            "--uvx /opt/none/uvx does not exist",
        ),
        (
            vec!["--timeout", "0"],
            "--timeout 0: 0 is not a positive number of seconds",
        ),
        (
            vec!["--exclude", "a[b"],
            "--exclude \"a[b\" is not a valid glob",
        ),
    ];
    for (args, message) in cases {
        let out = p.run(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    p.write("bad.html", "{% if %}");
    let out = p.run(&["--template", "bad.html"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("template error in bad.html line 1"),
        "{}",
        out.stderr
    );

    p.write("pyproject.toml", "[tool.export-nb]\nmax_workers = 2\n");
    let out = p.run(&[]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("pyproject.toml") && out.stderr.contains("line 2"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(p.path().join("pyproject.toml")).unwrap();

    // uv neither on PATH nor given.
    let out = p.run_with(&[], &[("PATH", OsStr::new("/usr/bin:/bin"))]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("`uv` is not on PATH"), "{}", out.stderr);
    assert!(p.take_calls().is_empty(), "nothing ran");
    assert!(!p.exists("_site/notebooks"), "nothing was written");

    let empty = Project::with_fake_uvx();
    std::fs::remove_dir(empty.path().join("notebooks")).unwrap();
    let out = empty.run(&[]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("there is no ./notebooks folder"),
        "{}",
        out.stderr
    );
}

#[test]
fn ctrl_c_stops_exports_writes_the_report_and_exits_130() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/hangs.py", &notebook("FAKE_HANG"));
    let path = testkit::path_with(&p.path().join("bin"));
    let log = p.path().join("calls.log");
    let mut child = testkit::command(crate::BIN)
        .args(["--report", "report.json"])
        .current_dir(p.path())
        .env("PATH", path)
        .env("FAKE_UVX_LOG", &log)
        .env("FAKE_UVX_DIR", p.path())
        .env("XDG_CACHE_HOME", p.path().join("cache"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.exists("hang.pid") {
        assert!(Instant::now() < deadline, "the export never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    testkit::interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        statuses(&report(&p)),
        [("notebooks/hangs.py".into(), "cancelled".into())]
    );
    let pid: i32 = p.read("hang.pid").trim().parse().unwrap();
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .is_empty(),
        "the export's escaped process {pid} survived Ctrl-C"
    );
}

/// A notebook whose PEP 723 header names `deps`.
pub(crate) fn notebook_with_deps(deps: &[&str]) -> String {
    let list: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "# /// script\n# requires-python = \">=3.10\"\n# dependencies = [{}]\n# ///\n{}",
        list.join(", "),
        notebook("ok")
    )
}

impl Project {
    /// The environments built so far: each one's requirements file.
    fn environments(&self) -> Vec<String> {
        let root = self.path().join("cache/export-nb/envs");
        let mut found: Vec<String> = std::fs::read_dir(&root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| {
                        std::fs::read_to_string(e.path().join("export-nb-requirements.txt"))
                            .unwrap_or_default()
                            .trim()
                            .replace('\n', ",")
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    fn venv_calls(&self) -> usize {
        let log = self.path().join("uv.log");
        let n = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("venv "))
            .count();
        let _ = std::fs::remove_file(log);
        n
    }
}

#[test]
fn notebooks_with_the_same_header_share_one_environment_built_once() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook_with_deps(&["marimo", "numpy"]));
    p.write("notebooks/b.py", &notebook_with_deps(&["numpy", "marimo"]));
    p.write("notebooks/c.py", &notebook_with_deps(&["marimo"]));
    p.write("notebooks/d.py", &notebook("no header"));
    let out = p.run(&["-j", "4"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(p.take_calls().len(), 4);
    assert_eq!(
        p.environments(),
        ["marimo", "marimo", "marimo,numpy"],
        "a and b share one; c (python >=3.10) and d (no constraint) differ"
    );
    assert_eq!(p.venv_calls(), 3, "each environment is built once");

    // The next run builds nothing; a changed header gets a new environment.
    assert_eq!(p.run(&["--force"]).code, Some(0));
    assert_eq!(p.venv_calls(), 0);
    p.write("notebooks/c.py", &notebook_with_deps(&["marimo", "polars"]));
    let out = p.run(&[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(p.venv_calls(), 1);
    assert!(p.environments().contains(&"marimo,polars".to_owned()));

    // Without the sandbox, headers are ignored: one environment with marimo alone.
    let plain = Project::with_fake_uvx();
    plain.write("notebooks/a.py", &notebook_with_deps(&["numpy"]));
    plain.write("notebooks/b.py", &notebook_with_deps(&["pandas"]));
    assert_eq!(plain.run(&["--no-sandbox"]).code, Some(0));
    assert_eq!(plain.environments(), ["marimo"]);
}

#[test]
fn a_broken_header_fails_that_notebook_with_its_line() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/good.py", &notebook("ok"));
    p.write(
        "notebooks/broken.py",
        &format!(
            "# /// script\n# dependencies = [\"numpy\"\n{}",
            notebook("ok")
        ),
    );
    let out = p.run(&["--report", "report.json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let r = report(&p);
    let broken = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "notebooks/broken.py")
        .unwrap();
    assert_eq!(broken["status"], "failed");
    let error = broken["error"].as_str().unwrap();
    assert!(
        error.contains("inline script metadata") && error.contains("line 1"),
        "{error}"
    );
    assert!(p.exists("_site/notebooks/good.html"));
}

#[test]
fn a_manifest_from_elsewhere_never_deletes_outside_the_output() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook("ok"));
    assert_eq!(p.run(&[]).code, Some(0));
    let victim = p.write("victim.html", "keep me");
    let absolute = p.write("outside/abs.html", "keep me too");
    std::fs::create_dir_all(p.path().join("outside/dir")).unwrap();
    let linked = p.write("outside/dir/linked.html", "and me");
    std::os::unix::fs::symlink(p.path().join("outside/dir"), p.path().join("_site/link")).unwrap();
    // A manifest restored from somewhere else, naming pages of notebooks that are "gone".
    let manifest = p.path().join("_site/.export-nb/manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    for key in [
        "../victim.html".to_owned(),
        absolute.display().to_string(),
        "link/linked.html".to_owned(),
    ] {
        m["pages"][key] = serde_json::json!({"source": "gone.py", "key": "x"});
    }
    std::fs::write(&manifest, m.to_string()).unwrap();
    let out = p.run(&[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for file in [&victim, &absolute, &linked] {
        assert!(file.exists(), "{} was deleted", file.display());
    }
    assert!(
        out.stderr
            .contains("is not a page inside _site, so it is left alone"),
        "{}",
        out.stderr
    );
    assert!(p.exists("_site/notebooks/a.html"));
}

/// A failure after the exports ran (the report cannot be written) exits 1, not 2 ("nothing
/// ran"); the pages are there.
#[test]
fn a_failure_after_the_exports_ran_exits_1() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook("ok"));
    p.write("blocker", "a file, not a folder");
    let out = p.run(&["--report", "blocker/report.json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("export-nb: error: "), "{}", out.stderr);
    assert!(p.exists("_site/notebooks/a.html"));
}

/// A notebook whose cell runs `statement` (an import, say).
fn notebook_running(statement: &str) -> String {
    format!(
        "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    {statement}\n    \
         return\n\n\nif __name__ == \"__main__\":\n    app.run()\n"
    )
}

fn reasons(p: &Project) -> Vec<(String, String)> {
    report(p)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| {
            Some((
                t["name"].as_str()?.to_owned(),
                t["exported_because"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn a_changed_local_module_re_exports_exactly_its_notebooks_and_each_export_says_why() {
    let p = Project::with_fake_uvx();
    p.write("notebooks/a.py", &notebook_running("import helpers"));
    p.write("notebooks/b.py", &notebook_running("from helpers import f"));
    p.write("notebooks/c.py", &notebook_running("import json"));
    p.write("notebooks/sub/d.py", &notebook_running("import helpers"));
    p.write(
        "notebooks/helpers.py",
        "import shared\n\ndef f():\n    return 1\n",
    );
    p.write("notebooks/shared.py", "VALUE = 1\n");
    let args = ["--report", "report.json", "-v"];
    assert_eq!(p.run(&args).code, Some(0));
    assert_eq!(p.take_calls().len(), 4);
    assert!(
        reasons(&p).iter().all(|(_, why)| why == "new"),
        "{:?}",
        reasons(&p)
    );

    // helpers.py changed: the two notebooks beside it that import it, not sub/d.py (no
    // helpers.py beside it) nor c.py.
    p.write(
        "notebooks/helpers.py",
        "import shared\n\ndef f():\n    return 2\n",
    );
    let out = p.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(p.take_calls().len(), 2);
    let why = "its local module helpers.py changed";
    assert_eq!(
        reasons(&p),
        [
            ("notebooks/a.py".to_owned(), why.to_owned()),
            ("notebooks/b.py".to_owned(), why.to_owned())
        ]
    );
    assert!(
        out.stderr
            .contains(&format!("export notebooks/a.py: {why}")),
        "-v says why: {}",
        out.stderr
    );

    // A module the module imports counts too.
    p.write("notebooks/shared.py", "VALUE = 2\n");
    assert_eq!(p.run(&args).code, Some(0));
    assert_eq!(p.take_calls().len(), 2);
    assert_eq!(reasons(&p)[0].1, "its local module shared.py changed");

    // Nothing changed: nothing runs.
    assert_eq!(p.run(&args).code, Some(0));
    assert!(p.take_calls().is_empty());

    // The other reasons: an edit that fails, deleted and new notebooks, a failure again.
    p.write(
        "notebooks/c.py",
        &notebook_running("import json  # FAKE_RAISE"),
    );
    assert_eq!(p.run(&args).code, Some(1));
    assert_eq!(
        reasons(&p),
        [("notebooks/c.py".to_owned(), "changed".to_owned())]
    );
    p.write("notebooks/c.py", &notebook_running("import json"));
    std::fs::remove_file(p.path().join("notebooks/b.py")).unwrap();
    p.write("notebooks/e.py", &notebook_running("import helpers"));
    assert_eq!(p.run(&args).code, Some(0));
    assert_eq!(
        reasons(&p),
        [
            ("notebooks/c.py".to_owned(), "changed".to_owned()),
            ("notebooks/e.py".to_owned(), "new".to_owned())
        ]
    );
    assert!(
        !p.exists("_site/notebooks/b.html"),
        "a deleted notebook's page goes"
    );
    p.write(
        "notebooks/c.py",
        &notebook_running("import json  # FAKE_RAISE"),
    );
    assert_eq!(p.run(&args).code, Some(1));
    // Unchanged since it failed.
    assert_eq!(p.run(&args).code, Some(1));
    assert_eq!(
        reasons(&p),
        [("notebooks/c.py".to_owned(), "failed last time".to_owned())]
    );
    p.write("notebooks/c.py", &notebook_running("import json"));
    assert_eq!(
        p.run(&["--no-sandbox", "--report", "report.json"]).code,
        Some(0)
    );
    assert!(
        reasons(&p)
            .iter()
            .any(|(_, why)| why == "marimo version or export settings changed"),
        "{:?}",
        reasons(&p)
    );
    assert_eq!(p.run(&["--force", "--report", "report.json"]).code, Some(0));
    assert!(reasons(&p).iter().all(|(_, why)| why == "forced (--force)"));
}
