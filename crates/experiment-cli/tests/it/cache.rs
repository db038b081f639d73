//! The response cache: a re-run of an unchanged sweep sends nothing.

use std::time::Duration;

use testkit::llm_server::LlmServer;

use crate::{Project, RUN, run_args, topics};

/// The rows of `out.csv` as name -> value.
fn rows(p: &Project) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(p.path().join("out.csv")).unwrap();
    let header = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            header
                .iter()
                .map(str::to_owned)
                .zip(rec.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// The rows without the columns that may differ between a sent and a cached answer (duration,
/// cached), sorted.
fn comparable(p: &Project) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = rows(p)
        .into_iter()
        .map(|mut r| {
            r.remove("duration_seconds").unwrap();
            r.remove("cached").unwrap();
            r.into_values().collect()
        })
        .collect();
    out.sort();
    out
}

fn cached_column(p: &Project) -> Vec<String> {
    rows(p).into_iter().map(|r| r["cached"].clone()).collect()
}

#[test]
fn an_unchanged_rerun_sends_nothing_and_a_changed_parameter_misses() {
    let server = LlmServer::start(Duration::from_millis(5));
    let p = Project::create(
        "About {{ topic }}",
        "provider,model,topic,temperature\n\
         openai,llama-test,cats,0.1\n\
         ollama,llama-test,dogs,0.1\n\
         ollama,broken,owls,0.1\n",
    );
    let out = p.run(&RUN, Some(&server));
    assert_eq!(out.code, Some(1), "owls fails: {}", out.stderr);
    assert_eq!(server.seen().len(), 3);
    assert!(cached_column(&p).iter().all(|c| c == "false"));
    let first = comparable(&p);

    server.reset();
    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    let out = p.run(&RUN, Some(&server));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let seen: Vec<String> = server.seen().iter().map(|s| s.model.clone()).collect();
    assert_eq!(seen, ["broken"], "errors are never cached");
    assert!(
        out.stderr.contains("(3 of 3 rows written in")
            && out.stderr.contains("; 2 from the cache, not sent)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        comparable(&p),
        first,
        "the same rows apart from duration and cached"
    );
    let mut cached = cached_column(&p);
    cached.sort();
    assert_eq!(cached, ["false", "true", "true"]);

    // One parameter changed: that row alone is sent.
    server.reset();
    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    std::fs::write(
        p.path().join("experiments.csv"),
        "provider,model,topic,temperature\nopenai,llama-test,cats,0.9\nollama,llama-test,dogs,0.1\n",
    )
    .unwrap();
    let out = p.run(&RUN, Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["temperature"], 0.9);

    // --no-cache sends everything.
    server.reset();
    std::fs::remove_file(p.path().join("out.csv")).unwrap();
    let mut args = RUN.to_vec();
    args.push("--no-cache");
    let out = p.run(&args, Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.seen().len(), 2);
    assert!(cached_column(&p).iter().all(|c| c == "false"));
}

#[test]
fn two_sweeps_at_once_share_a_cache_without_damage() {
    let server = LlmServer::start(Duration::from_millis(2));
    let p = Project::create("About {{ topic }}", &topics(60, "openai", "llama-test"));
    let sweep = |out: &'static str| {
        p.command(
            &run_args(&["-o", out, "-j", "8", "--provider-limit", "openai=8", "-q"]),
            Some(&server),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (sweep("a.csv"), sweep("b.csv"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    }
    let sent = server.seen().len();
    assert!((60..=120).contains(&sent), "{sent}");

    let info = p.run(&["cache", "info"], None);
    assert_eq!(info.code, Some(0), "{}", info.stderr);
    assert!(info.stdout.contains("answers: 60 ("), "{}", info.stdout);
    for entry in walk(&p.path().join("cache")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}: {text}", entry.display()));
        assert!(
            v["text"]
                .as_str()
                .unwrap()
                .starts_with("answer from llama-test")
        );
    }

    server.reset();
    let out = p.run(&RUN, Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.seen().len(), 0, "every answer from the cache");
    assert!(out.stderr.contains("60 from the cache"), "{}", out.stderr);

    let clear = p.run(&["cache", "clear"], None);
    assert_eq!(clear.code, Some(0), "{}", clear.stderr);
    assert!(
        clear.stdout.starts_with("removed 60 answers ("),
        "{}",
        clear.stdout
    );
    let info = p.run(&["cache", "info"], None);
    assert!(
        info.stdout.contains("answers: 0 (0 bytes)"),
        "{}",
        info.stdout
    );
}

/// Every file under `dir`.
/// Every file below `dir` but the `.pruned` mark (when the cache was last pruned): the entries,
/// and anything that should not be there.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.ends_with(".pruned") {
                out.push(path);
            }
        }
    }
    out
}

/// Issue 27: the cache has limits. Answers unused for longer than --max-age go, then the least
/// recently used until --max-size; a read counts as a use.
#[test]
fn prune_removes_old_answers_then_the_least_recently_used_beyond_the_size() {
    let server = LlmServer::start(Duration::ZERO);
    let p = Project::create("About {{ topic }}", &topics(3, "ollama", "llama-test"));
    let out = p.run(&RUN, Some(&server));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let entries = walk(&p.path().join("cache/v1"));
    assert_eq!(entries.len(), 3);
    // One answer unused for 100 days, the others a day and an hour ago.
    let ago = |secs: u64| std::time::SystemTime::now() - Duration::from_secs(secs);
    for (path, secs) in entries.iter().zip([100 * 86_400, 86_400, 3_600]) {
        let f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.set_modified(ago(secs)).unwrap();
    }
    let cache = |args: &[&str]| {
        let mut all = vec!["cache"];
        all.extend(args);
        p.run(&all, None)
    };
    let out = cache(&["prune", "--max-age", "30d"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("removed 1 answers"), "{}", out.stdout);
    assert!(!entries[0].exists() && entries[1].exists() && entries[2].exists());
    // A size for one answer keeps the most recently used.
    let size = std::fs::metadata(&entries[2]).unwrap().len().to_string();
    let out = cache(&["prune", "--max-size", &size]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        !entries[1].exists() && entries[2].exists(),
        "the older one went"
    );
    let out = cache(&["prune", "--max-size", "lots"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("\"lots\" is not a size (e.g. 500M, 2G)"),
        "{}",
        out.stderr
    );
}
