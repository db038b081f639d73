//! Metrics, as DVC reads them: a job declares `metrics = ["out/metrics.json"]` (JSON, YAML,
//! TOML, or CSV whose last row holds the values), relative to its folder. After it succeeds (or
//! is up to date) its numbers, nested keys flattened with dots (`eval.acc`), go into the run
//! record; `lorchestra metrics show|diff` and `runs --metrics` read them there.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// A job's metrics by name.
pub(crate) type Metrics = BTreeMap<String, f64>;

/// Checked when the pipeline loads: a file of a kind metrics can be read from.
pub(crate) fn check(file: &str) -> Result<(), String> {
    match ext(file).as_deref() {
        Some("json" | "yaml" | "yml" | "toml" | "csv") => Ok(()),
        _ => Err(format!(
            "{file:?}: a metrics file is .json, .yaml, .yml, .toml or .csv"
        )),
    }
}

fn ext(file: &str) -> Option<String> {
    Some(Path::new(file).extension()?.to_str()?.to_ascii_lowercase())
}

/// The numbers in `files` (relative to `dir`), flattened. With several files, a name in a later
/// file wins. A missing or unreadable file is an error naming it.
pub(crate) fn read(dir: &Path, files: &[String]) -> Result<Metrics, String> {
    let mut out = Metrics::new();
    for file in files {
        let text = std::fs::read_to_string(dir.join(file))
            .map_err(|e| format!("metrics file {file}: {e}"))?;
        let value = match ext(file).as_deref() {
            Some("json") => serde_json::from_str(&text).map_err(|e| e.to_string()),
            Some("yaml" | "yml") => serde_saphyr::from_str(&text).map_err(|e| e.to_string()),
            Some("toml") => toml::from_str(&text).map_err(|e| e.to_string()),
            _ => last_csv_row(&text),
        }
        .map_err(|e| format!("metrics file {file}: {e}"))?;
        flatten("", &value, &mut out);
    }
    Ok(out)
}

/// A CSV's last row, by its header (the values that read as numbers).
fn last_csv_row(text: &str) -> Result<Value, String> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().map_err(|e| e.to_string())?.clone();
    let mut last = None;
    for rec in r.records() {
        last = Some(rec.map_err(|e| e.to_string())?);
    }
    let last = last.ok_or("it has a header and no row")?;
    Ok(Value::Object(
        header
            .iter()
            .zip(last.iter())
            .filter_map(|(h, v)| {
                let n: f64 = v.trim().parse().ok()?;
                Some((h.trim().to_owned(), serde_json::Number::from_f64(n)?.into()))
            })
            .collect(),
    ))
}

fn flatten(prefix: &str, v: &Value, out: &mut Metrics) {
    let name = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_owned(), x);
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&name(k), v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&name(&i.to_string()), v, out);
            }
        }
        _ => {}
    }
}

/// A metric as tables show it: six significant digits without trailing zeros, in scientific
/// notation below 1e-4 or from 1e15 on.
pub(crate) fn show(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned();
    }
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if !(1e-4..1e15).contains(&x.abs()) {
        let s = format!("{x:.5e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{exp}", trim(mantissa.to_owned()));
    }
    if x.fract() == 0.0 {
        return format!("{x:.0}");
    }
    let digits = 5 - x.abs().log10().floor() as i32;
    trim(format!(
        "{x:.*}",
        usize::try_from(digits.max(0)).unwrap_or(0)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_flattened_from_every_kind_of_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("m.json"),
            r#"{"acc": 0.91, "eval": {"loss": 0.3, "f1": [0.5, 0.7]}, "name": "x", "ok": true}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("m.yaml"), "acc: 0.93\ntime: 12\n").unwrap();
        std::fs::write(d.path().join("m.toml"), "[train]\nsteps = 100\n").unwrap();
        std::fs::write(
            d.path().join("m.csv"),
            "epoch,loss,note\n1,0.9,a\n2,0.4,b\n",
        )
        .unwrap();
        let m = read(
            d.path(),
            &["m.json", "m.yaml", "m.toml", "m.csv"].map(str::to_owned),
        )
        .unwrap();
        let want: Metrics = [
            ("acc", 0.93),
            ("eval.loss", 0.3),
            ("eval.f1.0", 0.5),
            ("eval.f1.1", 0.7),
            ("time", 12.0),
            ("train.steps", 100.0),
            ("epoch", 2.0),
            ("loss", 0.4),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(m, want);
        assert!(
            read(d.path(), &["gone.json".to_owned()])
                .unwrap_err()
                .starts_with("metrics file gone.json: ")
        );
        assert!(check("m.txt").is_err() && check("m.CSV").is_ok());
        assert_eq!(
            [
                show(1e-20),
                show(-3.2e-12),
                show(-0.0),
                show(1e300),
                show(-0.5)
            ],
            ["1e-20", "-3.2e-12", "0", "1e300", "-0.5"]
        );
        assert_eq!(
            (show(0.912_345_6), show(12.0), show(1_234.567_8)),
            ("0.912346".into(), "12".into(), "1234.57".into())
        );
    }
}
