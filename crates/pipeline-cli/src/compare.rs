//! Runs compared, as `dvc params diff`, `dvc metrics show|diff` and `dvc exp show` do: the
//! parameters and metrics each run recorded (`params.rs`, `metrics.rs`), as tables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Result, anyhow};
use fanout::ExitStatus;
use fanout_cli::UsageResult;

use crate::cli::DiffArgs;
use crate::metrics;
use crate::store::{self, RunRecord};

/// The two runs to compare: as named, else the newest run and the one before it of the same
/// pipeline (with one name: that run and the newest other run of its pipeline).
fn two_runs(dir: &Path, a: Option<&str>, b: Option<&str>) -> Result<(RunRecord, RunRecord)> {
    let runs = store::list(dir);
    let newest = || {
        runs.first()
            .cloned()
            .ok_or_else(|| anyhow!("no runs yet in {}", dir.join(store::RUNS_DIR).display()))
    };
    Ok(match (a, b) {
        (Some(a), Some(b)) => (store::load(dir, a)?, store::load(dir, b)?),
        (Some(a), None) => {
            let a = store::load(dir, a)?;
            let latest = runs
                .iter()
                .find(|r| r.pipeline == a.pipeline && r.run_id != a.run_id)
                .cloned()
                .ok_or_else(|| anyhow!("{} is the only run of {}", a.run_id, a.pipeline))?;
            (a, latest)
        }
        _ => {
            let newest = newest()?;
            let before = runs
                .iter()
                .skip(1)
                .find(|r| r.pipeline == newest.pipeline)
                .cloned()
                .ok_or_else(|| {
                    anyhow!(
                        "only one run of {} so far: name two runs to compare (`lorchestra runs` \
                         lists them)",
                        newest.pipeline
                    )
                })?;
            (before, newest)
        }
    })
}

/// The runs `lorchestra report --compare` draws, oldest first: as named (at least two), else
/// the recent runs of the newest run's pipeline (up to [`COMPARED`]).
pub(crate) fn compared_runs(dir: &Path, ids: &[String]) -> Result<Vec<RunRecord>> {
    let mut runs = if ids.is_empty() {
        let all = store::list(dir);
        let newest = all
            .first()
            .ok_or_else(|| anyhow!("no runs yet in {}", dir.join(store::RUNS_DIR).display()))?;
        let pipeline = newest.pipeline.clone();
        all.into_iter()
            .filter(|r| r.pipeline == pipeline)
            .take(COMPARED)
            .collect()
    } else {
        ids.iter()
            .map(|id| store::load(dir, id))
            .collect::<Result<Vec<_>>>()?
    };
    if runs.len() < 2 {
        return Err(anyhow!(
            "--compare needs two runs or more (`lorchestra runs` lists them); for one run's \
             timeline, `lorchestra report RUN_ID -o FILE`"
        ));
    }
    runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(runs)
}

/// The most runs `report --compare` draws when none are named.
const COMPARED: usize = 20;

/// One run: as named, else the newest.
fn one_run(dir: &Path, id: Option<&str>) -> Result<RunRecord> {
    match id {
        Some(id) => store::load(dir, id),
        None => store::list(dir)
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no runs yet in {}", dir.join(store::RUNS_DIR).display())),
    }
}

/// Rows as aligned columns, the first row the header.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `lorchestra params diff [RUN_A] [RUN_B] [--all]`.
pub(crate) fn params_diff(dir: &Path, d: &DiffArgs) -> Result<ExitStatus> {
    let (old, new) = two_runs(dir, d.a.as_deref(), d.b.as_deref()).usage()?;
    let all = d.all;
    let names: BTreeSet<&String> = old.params.keys().chain(new.params.keys()).collect();
    let show =
        |v: Option<&serde_json::Value>| v.map_or_else(|| "-".to_owned(), crate::params::show);
    let mut rows = vec![vec![
        "PARAM".to_owned(),
        old.run_id.clone(),
        new.run_id.clone(),
    ]];
    rows.extend(
        names
            .into_iter()
            .filter(|n| all || old.params.get(*n) != new.params.get(*n))
            .map(|n| vec![n.clone(), show(old.params.get(n)), show(new.params.get(n))]),
    );
    if rows.len() == 1 {
        println!(
            "no parameter differs between {} and {}",
            old.run_id, new.run_id
        );
    } else {
        print!("{}", table(&rows));
    }
    for run in [&old, &new] {
        if !run.params_set.is_empty() {
            let pairs: Vec<String> = run
                .params_set
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!("{} ran with --set {}", run.run_id, pairs.join(" --set "));
        }
    }
    Ok(ExitStatus::Success)
}

/// A run's metrics by job and name.
fn metrics_of(r: &RunRecord) -> BTreeMap<(String, String), f64> {
    r.stages
        .iter()
        .flat_map(|s| &s.jobs)
        .flat_map(|j| {
            j.metrics
                .iter()
                .map(|(k, v)| ((j.job_id.clone(), k.clone()), *v))
        })
        .collect()
}

/// `lorchestra metrics show [RUN]`.
pub(crate) fn metrics_show(dir: &Path, id: Option<&str>) -> Result<ExitStatus> {
    let r = one_run(dir, id).usage()?;
    let m = metrics_of(&r);
    if m.is_empty() {
        println!(
            "run {} recorded no metrics (a job declares them with metrics = [\"FILE\"])",
            r.run_id
        );
        return Ok(ExitStatus::Success);
    }
    let mut rows = vec![vec![
        "JOB".to_owned(),
        "METRIC".to_owned(),
        r.run_id.clone(),
    ]];
    rows.extend(
        m.iter()
            .map(|((job, name), v)| vec![job.clone(), name.clone(), metrics::show(*v)]),
    );
    print!("{}", table(&rows));
    Ok(ExitStatus::Success)
}

/// `lorchestra metrics diff [RUN_A] [RUN_B] [--all]`: each metric of either run, with its change
/// (absolute, and relative to the first run's value).
pub(crate) fn metrics_diff(dir: &Path, d: &DiffArgs) -> Result<ExitStatus> {
    let (old, new) = two_runs(dir, d.a.as_deref(), d.b.as_deref()).usage()?;
    let all = d.all;
    let (ma, mb) = (metrics_of(&old), metrics_of(&new));
    let keys: BTreeSet<&(String, String)> = ma.keys().chain(mb.keys()).collect();
    let mut rows = vec![
        [
            "JOB",
            "METRIC",
            &old.run_id,
            &new.run_id,
            "CHANGE",
            "RELATIVE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for k in keys {
        let (x, y) = (ma.get(k).copied(), mb.get(k).copied());
        if !all && x == y {
            continue;
        }
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), metrics::show);
        let (change, relative) = match (x, y) {
            (Some(x), Some(y)) => (
                format!("{}{}", if y >= x { "+" } else { "" }, metrics::show(y - x)),
                if x == 0.0 {
                    "-".to_owned()
                } else {
                    format!("{:+.1}%", (y - x) / x.abs() * 100.0)
                },
            ),
            _ => ("-".to_owned(), "-".to_owned()),
        };
        rows.push(vec![
            k.0.clone(),
            k.1.clone(),
            cell(x),
            cell(y),
            change,
            relative,
        ]);
    }
    if rows.len() == 1 {
        println!(
            "no metric differs between {} and {}",
            old.run_id, new.run_id
        );
    } else {
        print!("{}", table(&rows));
    }
    Ok(ExitStatus::Success)
}

/// `lorchestra runs --metrics acc,loss`: the recent runs with the parameters that differ among
/// them and the metrics asked for (by name, from the first job that has it), as `dvc exp show`.
pub(crate) fn runs_table(dir: &Path, limit: usize, wanted: &[String]) -> ExitStatus {
    let runs: Vec<RunRecord> = store::list(dir).into_iter().take(limit).collect();
    if runs.is_empty() {
        println!("no runs yet in {}", dir.join(store::RUNS_DIR).display());
        return ExitStatus::Success;
    }
    let names: BTreeSet<&String> = runs.iter().flat_map(|r| r.params.keys()).collect();
    let varying: Vec<&String> = names
        .into_iter()
        .filter(|n| {
            runs.iter()
                .any(|r| r.params.get(*n) != runs[0].params.get(*n))
        })
        .collect();
    let mut header = vec![
        "RUN_ID".to_owned(),
        "PIPELINE".to_owned(),
        "STATUS".to_owned(),
    ];
    header.extend(varying.iter().map(|n| (*n).clone()));
    header.extend(wanted.iter().cloned());
    let mut rows = vec![header];
    for r in &runs {
        let m = metrics_of(r);
        let mut row = vec![
            r.run_id.clone(),
            r.pipeline.clone(),
            r.status.as_str().to_owned(),
        ];
        row.extend(varying.iter().map(|n| {
            r.params
                .get(*n)
                .map_or_else(|| "-".to_owned(), crate::params::show)
        }));
        row.extend(wanted.iter().map(|w| {
            m.iter()
                .find(|((_, name), _)| name == w)
                .map_or_else(|| "-".to_owned(), |(_, v)| metrics::show(*v))
        }));
        rows.push(row);
    }
    print!("{}", table(&rows));
    ExitStatus::Success
}
