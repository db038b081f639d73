//! `lorchestra report`'s timeline in a real headless Chromium, at desktop and phone widths.

use serde_json::Value;
use testkit::browser::{Browser, screenshot_dir};

use super::Project;

/// Three stages with every ending a user meets: successes, a failure, a timeout.
const PIPELINE: &str = r#"
description = "Nightly sales report"
stop_on_failure = false

[[stages]]
name = "extract"
jobs = ["fetch_orders", "fetch_customers", "fetch_refunds"]

[[stages]]
name = "transform"
jobs = ["clean_orders", "join_customers"]

[[stages]]
name = "load"
jobs = ["publish_dashboard", "archive_raw"]

[jobs.fetch_orders]
command = "sleep 0.6"
[jobs.fetch_customers]
command = "sleep 0.3"
[jobs.fetch_refunds]
command = "sleep 0.2; echo 'HTTP 503 from the refunds API' >&2; exit 3"
[jobs.clean_orders]
command = "sleep 0.4"
[jobs.join_customers]
command = "sleep 0.5"
[jobs.publish_dashboard]
command = "sleep 0.3"
[jobs.archive_raw]
command = "sleep 30"
timeout = 0.5
"#;

#[test]
fn the_timeline_works_in_a_browser_at_desktop_and_phone_widths() {
    let p = Project::create(&[("pipelines/nightly.toml", PIPELINE)]);
    let run = p.run(&["pipeline", "nightly", "-j", "2", "-q"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let record = p.last_record();
    let run_id = record["run_id"].as_str().unwrap().to_owned();
    let out = p.run(&["report", &run_id, "-o", "timeline.html"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let expected = jobs_of(&record, false);
    assert_eq!(expected.len(), 7);
    // The chart lists each stage's jobs in the order they started (the table in the
    // pipeline's): jobs that start together on two workers may start either way round.
    let started = jobs_of(&record, true);

    let browser = Browser::launch();
    let shots = screenshot_dir("lorchestra");
    for (width, name) in [(1280, "desktop"), (390, "phone")] {
        let page = browser.open(&p.path().join("timeline.html"), width);

        // One bar per job, in the record's order, with its status as the bar's class, a mark
        // in its label, and a title that names the job, its stage, status and times.
        let bars: Vec<(String, String, String, f64)> = page.eval(
            "[...document.querySelectorAll('svg g.job')].map(g => [
               g.querySelector('rect') ? g.querySelector('rect').getAttribute('class') : '',
               g.querySelector('text').textContent.trim(),
               g.querySelector('title').textContent,
               g.querySelector('rect') ? g.querySelector('rect').getBoundingClientRect().width : 0])",
        );
        assert_eq!(bars.len(), expected.len(), "one bar per job: {bars:?}");
        for ((class, label, title, bar_width), (stage, job, status)) in bars.iter().zip(&started) {
            assert_eq!(class, status, "{job}'s bar");
            assert!(*bar_width > 0.0, "{job}'s bar is drawn");
            assert!(
                label.ends_with(job.as_str()) && label.len() > job.len(),
                "{job}: {label}"
            );
            let words = status.replace('_', " ");
            assert!(
                title.starts_with(&format!("{job} ({stage}): {words}, started ")),
                "{job}'s title: {title}"
            );
            assert!(
                title.contains(", finished ") && title.contains(", took "),
                "{title}"
            );
        }
        let failed = bars.iter().find(|b| b.0 == "failed").unwrap();
        assert!(failed.2.ends_with("exited with code 3"), "{}", failed.2);
        // Marks differ by status, so the chart reads without colour.
        let mark = |status: &str| {
            let b = bars.iter().find(|b| b.0 == status).unwrap();
            b.1.chars().next().unwrap()
        };
        assert_ne!(mark("succeeded"), mark("failed"));
        assert_ne!(mark("failed"), mark("timed_out"));

        // The table lists each job with its status in words.
        let rows: Vec<(String, String, String)> = page.eval(
            "[...document.querySelectorAll('tbody tr')].map(r =>
               [...r.cells].slice(0, 3).map(c => c.textContent))",
        );
        let want: Vec<(String, String, String)> = expected
            .iter()
            .map(|(s, j, st)| (s.clone(), j.clone(), st.replace('_', " ")))
            .collect();
        assert_eq!(rows, want);

        page.assert_sound();
        page.screenshot(&shots.join(format!("lorchestra-timeline-{name}.png")));
    }
}

/// `(stage, job, status)` of every job in the record: in order, or with `by_start` each stage's
/// jobs in the order they started.
fn jobs_of(record: &Value, by_start: bool) -> Vec<(String, String, String)> {
    let mut jobs = Vec::new();
    for stage in record["stages"].as_array().unwrap() {
        let mut in_stage: Vec<&Value> = stage["jobs"].as_array().unwrap().iter().collect();
        if by_start {
            let start = |j: &Value| j["started_at_unix"].as_f64().unwrap_or(f64::INFINITY);
            in_stage.sort_by(|a, b| start(a).total_cmp(&start(b)));
        }
        for job in in_stage {
            jobs.push((
                stage["name"].as_str().unwrap().to_owned(),
                job["job_id"].as_str().unwrap().to_owned(),
                job["status"].as_str().unwrap().to_owned(),
            ));
        }
    }
    jobs
}

/// A training pipeline run four times with another learning rate each time.
const TRAIN: &str = r#"
[jobs.train]
command = "mkdir -p out; lr=$(grep lr params.yaml | cut -d: -f2); printf '{\"acc\": %s, \"eval\": {\"loss\": %s}}' $(cat acc.txt) $(cat loss.txt) > out/metrics.json"
params = ["params.yaml:train.lr"]
metrics = ["out/metrics.json"]
"#;

#[test]
fn the_compare_page_draws_each_metric_across_runs_at_desktop_and_phone_widths() {
    let p = Project::create(&[("pipelines/train.toml", TRAIN)]);
    let runs = [
        ("0.1", "0.71", "0.62"),
        ("0.05", "0.78", "0.51"),
        ("0.02", "0.83", "0.44"),
        ("0.01", "0.81", "0.47"),
    ];
    let mut ids = Vec::new();
    for (lr, acc, loss) in runs {
        p.write("params.yaml", &format!("train:\n  lr: {lr}\n"));
        p.write("acc.txt", acc);
        p.write("loss.txt", loss);
        let out = p.run(&["pipeline", "train", "-q"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        ids.push(p.last_record()["run_id"].as_str().unwrap().to_owned());
        // Run ids sort by the millisecond they started.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // No runs named: the recent runs of the newest run's pipeline, oldest first.
    let out = p.run(&["report", "--compare", "-o", "compare.html"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("4 runs compared"), "{}", out.stdout);

    let browser = Browser::launch();
    let shots = screenshot_dir("lorchestra");
    for (width, name) in [(1280, "desktop"), (390, "phone")] {
        let page = browser.open(&p.path().join("compare.html"), width);
        // A chart per metric, named job / metric, each with a point per run whose value and
        // title are the numbers the job wrote, in the order the runs started.
        let charts: Vec<(String, Vec<String>, Vec<String>, f64)> = page.eval(
            "[...document.querySelectorAll('figure.metric')].map(f => [
               f.querySelector('figcaption').firstChild.textContent.trim(),
               [...f.querySelectorAll('g.point text')].map(t => t.textContent),
               [...f.querySelectorAll('g.point title')].map(t => t.textContent),
               f.querySelector('polyline').getBoundingClientRect().width])",
        );
        let names: Vec<&str> = charts.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["train / acc", "train / eval.loss"]);
        let acc: Vec<&str> = runs.iter().map(|r| r.1).collect();
        let loss: Vec<&str> = runs.iter().map(|r| r.2).collect();
        assert_eq!(charts[0].1, acc);
        assert_eq!(charts[1].1, loss);
        for (i, id) in ids.iter().enumerate() {
            let title = &charts[0].2[i];
            assert!(title.contains(id) && title.contains(acc[i]), "{title}");
        }
        assert!(charts[0].3 > 100.0, "the line is drawn: {charts:?}");
        // Higher values sit higher: 0.83 (run C) above 0.71 (run A).
        let ys: Vec<f64> = page.eval(
            "[...document.querySelector('figure.metric').querySelectorAll('circle')]
               .map(c => c.getBoundingClientRect().top)",
        );
        assert!(ys[2] < ys[0], "{ys:?}");
        // The change from the first run to the last, in words.
        let change: String =
            page.eval("document.querySelector('figure.metric .change').textContent");
        assert_eq!(change, "0.71 \u{2192} 0.81 (+0.1, +14.1%)");
        // The runs table names each run with the learning rate it used.
        let rows: Vec<Vec<String>> = page.eval(
            "[...document.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.textContent))",
        );
        assert_eq!(rows.len(), 4);
        for (row, (id, (lr, _, _))) in rows.iter().zip(ids.iter().zip(runs)) {
            assert_eq!(row[1], *id);
            assert_eq!(row.last().unwrap(), lr);
        }
        page.assert_sound();
        page.screenshot(&shots.join(format!("lorchestra-compare-{name}.png")));
    }
}
