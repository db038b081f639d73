//! Judging the answers: the checks of a run (an `expected` column, `--assert` expressions,
//! `--is-json`, `--schema`, a model-graded `--grader`), checked before anything is sent, and
//! each finished row's verdict: `pass` (every check passed), `score` (their mean, 0 to 1) and
//! `reason` (what failed). A failed check is not an error: the row's status stays ok.
//!
//! The cheap checks run on the owner thread as each row is written; the grader is a request,
//! sent by the worker after the answer (`grade.rs`), and its verdict is one more check here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use minijinja::{Environment, UndefinedBehavior, Value};

use crate::experiments::{Experiment, Experiments};
use crate::grade::{Grade, Grader};
use crate::providers::Schema;
use crate::row::{Row, Verdict};

/// The column that holds a row's expected answer, and the one that may set its mode.
pub(crate) const EXPECTED: &str = "expected";
pub(crate) const EXPECT_MODE: &str = "expect_mode";

pub(crate) use crate::cli::ExpectMode as Mode;

/// The judging flags of `run`, as given.
#[derive(Debug, Clone, Default)]
pub(crate) struct JudgeArgs {
    pub(crate) expect: Option<Mode>,
    /// `--no-expect`: the `expected` column is no check.
    pub(crate) no_expect: bool,
    pub(crate) tolerance: f64,
    pub(crate) asserts: Vec<String>,
    pub(crate) is_json: bool,
    pub(crate) schema: Option<PathBuf>,
    pub(crate) grader: Option<String>,
    pub(crate) rubric: Option<PathBuf>,
}

/// The checks of a run, read and checked.
#[derive(Debug)]
pub(crate) struct Judge {
    /// The `expected` column's position among the variables, and the mode of each row.
    expected: Option<Expected>,
    /// `--assert`: each expression's source, compiled in `env`.
    asserts: Vec<String>,
    env: Environment<'static>,
    is_json: bool,
    schema: Option<(String, jsonschema::Validator)>,
    /// The same schema, sent with each request in the provider's structured-output form.
    native: Option<Schema>,
    pub(crate) grader: Option<Grader>,
}

#[derive(Debug)]
struct Expected {
    /// The mode of each experiment, by its index (the column `expect_mode`, else the flag).
    modes: Vec<Mode>,
    tolerance: f64,
    /// The compiled expected values of rows in regex mode.
    regexes: HashMap<String, regex::Regex>,
}

/// One check's outcome: passed, its score, and why it failed (or the grader's reason).
struct Check {
    pass: bool,
    score: f64,
    reason: String,
}

impl Check {
    fn of(pass: bool, why_not: impl FnOnce() -> String) -> Check {
        Check {
            pass,
            score: if pass { 1.0 } else { 0.0 },
            reason: if pass { String::new() } else { why_not() },
        }
    }
}

impl Judge {
    /// `--schema`, to send with each request as the provider's structured output.
    pub(crate) fn native_schema(&self) -> Option<&Schema> {
        self.native.as_ref()
    }

    /// The checks `args` and the experiments ask for (`None`: no judging), every one checked
    /// now: a bad mode, regular expression, number, expression, schema or rubric is an error
    /// naming where it is, before anything is sent.
    pub(crate) fn new(args: &JudgeArgs, experiments: &Experiments) -> Result<Option<Judge>> {
        let has_expected = experiments.var_names.iter().any(|v| v == EXPECTED);
        if args.expect.is_some() && !has_expected {
            bail!(
                "--expect needs an `{EXPECTED}` column in {}, and it has none",
                experiments.source
            );
        }
        let expected = if args.no_expect {
            None
        } else {
            expected(args, experiments)?
        };
        let grader = Grader::new(args.grader.as_deref(), args.rubric.as_deref(), experiments)?;
        if expected.is_none()
            && args.asserts.is_empty()
            && !args.is_json
            && args.schema.is_none()
            && grader.is_none()
        {
            return Ok(None);
        }
        for name in ["pass", "score", "reason"] {
            if experiments.var_names.iter().any(|v| v == name) {
                bail!(
                    "{}: the experiments have a column named {name}, and judging adds one: \
                     rename it",
                    experiments.source
                );
            }
        }
        let (schema, native) = match args.schema.as_deref() {
            Some(path) => {
                let (name, validator, value) = schema(path)?;
                let stem = path
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                // OpenAI's and Anthropic's structured output take an object at the root; any
                // other schema only checks the answers.
                let object = value["type"] == "object"
                    || (value.get("type").is_none() && value.get("properties").is_some());
                if !object {
                    eprintln!(
                        "parallamr: --schema {name}: its root is not an object, which the \
                         providers' structured output does not take: it only checks the answers"
                    );
                }
                let native = object.then(|| Schema::new(&stem, value));
                (Some((name, validator)), native)
            }
            None => (None, None),
        };
        let env = assert_env();
        for a in &args.asserts {
            env.compile_expression(a)
                .map_err(|e| anyhow!("--assert {a:?}: {}", describe(&e)))?;
        }
        Ok(Some(Judge {
            expected,
            asserts: args.asserts.clone(),
            env,
            is_json: args.is_json,
            schema,
            native,
            grader,
        }))
    }

    /// The checks, in words (for `--dry-run`).
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.expected.is_some() {
            parts.push(format!("the {EXPECTED} column"));
        }
        parts.extend(self.asserts.iter().map(|a| format!("--assert {a:?}")));
        if self.is_json {
            parts.push("--is-json".to_owned());
        }
        if let Some((name, _)) = &self.schema {
            parts.push(format!("--schema {name}"));
        }
        if let Some(g) = &self.grader {
            parts.push(format!(
                "the grader {}/{} (a request per answer)",
                g.provider, g.model
            ));
        }
        parts.join(", ")
    }

    /// The verdict of a finished (ok or warning) row: every check, then the grader's.
    pub(crate) fn verdict(&self, e: &Experiment, row: &Row, grade: Option<&Grade>) -> Verdict {
        let mut checks = Vec::new();
        if let Some(x) = &self.expected
            && let Some(want) = e.var(EXPECTED).filter(|w| !w.trim().is_empty())
        {
            checks.push(x.check(x.modes[e.index], want, &row.output));
        }
        let json = crate::flatten::extract(&row.output);
        if !self.asserts.is_empty() {
            let ctx = context(e, row, json.as_ref());
            for a in &self.asserts {
                checks.push(self.assert(a, &ctx));
            }
        }
        if self.is_json {
            checks.push(Check::of(json.is_some(), || {
                "no JSON in the answer".to_owned()
            }));
        }
        if let Some((name, v)) = &self.schema {
            checks.push(match &json {
                None => Check::of(false, || format!("--schema {name}: no JSON in the answer")),
                Some(j) => {
                    let errors: Vec<String> = v
                        .iter_errors(j)
                        .take(3)
                        .map(|err| {
                            let at = err.instance_path.to_string();
                            let at = if at.is_empty() { "/".to_owned() } else { at };
                            format!("{at}: {err}")
                        })
                        .collect();
                    Check::of(errors.is_empty(), || {
                        format!("--schema {name}: {}", errors.join("; "))
                    })
                }
            });
        }
        if let Some(g) = grade {
            checks.push(Check {
                pass: g.pass,
                score: g.score.unwrap_or(if g.pass { 1.0 } else { 0.0 }),
                reason: g.reason.clone(),
            });
        }
        combine(&checks, grade.is_some())
    }

    fn assert(&self, source: &str, ctx: &Value) -> Check {
        let expr = match self.env.compile_expression(source) {
            Ok(x) => x,
            Err(e) => return Check::of(false, || format!("assert {source}: {}", describe(&e))),
        };
        match expr.eval(ctx) {
            Ok(v) => Check::of(v.is_true(), || format!("assert failed: {source}")),
            Err(e) => Check::of(false, || format!("assert {source}: {}", describe(&e))),
        }
    }
}

/// Every check passed; the mean score; the failures' reasons (or, all passed, the grader's).
fn combine(checks: &[Check], graded: bool) -> Verdict {
    let pass = checks.iter().all(|c| c.pass);
    let score = if checks.is_empty() {
        1.0
    } else {
        checks.iter().map(|c| c.score).sum::<f64>() / checks.len() as f64
    };
    let reason = if pass {
        if graded {
            checks.last().map(|c| c.reason.clone()).unwrap_or_default()
        } else {
            String::new()
        }
    } else {
        checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.reason.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    Verdict {
        pass,
        score: (score * 1000.0).round() / 1000.0,
        reason,
    }
}

impl Expected {
    fn check(&self, mode: Mode, want: &str, answer: &str) -> Check {
        match mode {
            Mode::Contains => {
                Check::of(answer.to_lowercase().contains(&want.to_lowercase()), || {
                    format!("expected the answer to contain {want:?}")
                })
            }
            Mode::Exact => Check::of(answer.trim() == want.trim(), || {
                format!("expected exactly {want:?}")
            }),
            Mode::Regex => Check::of(self.regexes[want].is_match(answer), || {
                format!("expected the answer to match /{want}/")
            }),
            Mode::Number => {
                let target = expected_number(want).unwrap_or(f64::NAN);
                let found = last_number(answer);
                Check::of(
                    found.is_some_and(|x| (x - target).abs() <= self.tolerance),
                    || match found {
                        Some(x) => format!(
                            "expected {want} (within {}), the answer's last number is {x}",
                            self.tolerance
                        ),
                        None => format!("expected the number {want}, the answer has none"),
                    },
                )
            }
        }
    }
}

/// The `expected` column's check, if the experiments have the column: each row's mode (its
/// `expect_mode` cell, else `--expect`, else contains) and, in regex or number mode, its
/// value checked.
fn expected(args: &JudgeArgs, experiments: &Experiments) -> Result<Option<Expected>> {
    let has = |c: &str| experiments.var_names.iter().any(|v| v == c);
    if !has(EXPECTED) {
        if has(EXPECT_MODE) {
            bail!(
                "{}: an {EXPECT_MODE} column needs an {EXPECTED} column",
                experiments.source
            );
        }
        return Ok(None);
    }
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        bail!("--tolerance {}: give a number of 0 or more", args.tolerance);
    }
    let mut modes = Vec::with_capacity(experiments.rows.len());
    let mut regexes = HashMap::new();
    for e in &experiments.rows {
        let at = || format!("{} line {}", experiments.source, e.line);
        let mode = match e.var(EXPECT_MODE).filter(|m| !m.trim().is_empty()) {
            Some(m) => <Mode as clap::ValueEnum>::from_str(m.trim(), true).map_err(|_| {
                anyhow!(
                    "{}: {EXPECT_MODE} {m:?} is not one of contains, exact, regex, number",
                    at()
                )
            })?,
            None => args.expect.unwrap_or(Mode::Contains),
        };
        let want = e.var(EXPECTED).unwrap_or_default();
        if !want.trim().is_empty() {
            match mode {
                Mode::Regex if !regexes.contains_key(want) => {
                    let r = regex::Regex::new(want).map_err(|err| {
                        anyhow!(
                            "{}: the expected value is not a regular expression: {err}",
                            at()
                        )
                    })?;
                    regexes.insert(want.to_owned(), r);
                }
                Mode::Number if expected_number(want).is_none() => {
                    bail!("{}: the expected value {want:?} is not a number", at());
                }
                _ => {}
            }
        }
        modes.push(mode);
    }
    Ok(Some(Expected {
        modes,
        tolerance: args.tolerance,
        regexes,
    }))
}

/// The last number written in `text` (`-3`, `4.5`, `1,000` read as 1000, `2e3`). A `-` is a
/// minus sign only where no word or number ends right before it (`10-12` is 10 and 12).
pub(crate) fn last_number(text: &str) -> Option<f64> {
    static NUMBER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?:^|([\w.])|[^\w.])(-?)(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)",
        )
        .expect("a valid expression")
    });
    NUMBER.captures_iter(text).last().and_then(|c| {
        let minus = c.get(2).is_some_and(|m| !m.is_empty()) && c.get(1).is_none();
        let digits = c.get(3)?.as_str().replace(',', "");
        let x: f64 = digits.parse().ok()?;
        Some(if minus { -x } else { x })
    })
}

/// An expected number as written (`1,000` is 1000).
fn expected_number(s: &str) -> Option<f64> {
    s.trim().replace(',', "").parse().ok()
}

/// `--schema FILE`, read and compiled: its name, its validator and the schema.
fn schema(path: &Path) -> Result<(String, jsonschema::Validator, serde_json::Value)> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read --schema {name}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("--schema {name} is not JSON"))?;
    let v = jsonschema::validator_for(&value)
        .map_err(|e| anyhow!("--schema {name} is not a valid JSON Schema: {e}"))?;
    Ok((name, v, value))
}

/// The environment `--assert` expressions are evaluated in: minijinja's, with `containing` and
/// `matching` tests, and an undefined name an error (a typo must not pass silently).
fn assert_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_test("containing", |v: Value, part: Value| -> bool {
        match (v.as_str(), part.as_str()) {
            (Some(s), Some(p)) => s.contains(p),
            _ => v
                .try_iter()
                .is_ok_and(|mut items| items.any(|item| item == part)),
        }
    });
    env.add_test(
        "matching",
        |v: &str, pattern: &str| -> Result<bool, minijinja::Error> {
            let r = regex::Regex::new(pattern).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
            })?;
            Ok(r.is_match(v))
        },
    );
    env
}

/// A minijinja error in one line: its kind and detail.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{} ({d})", e.kind()),
        None => e.kind().to_string(),
    }
}

/// What an `--assert` expression sees: the row's variables, then `output`, `json` (the JSON in
/// the answer, or none), `latency_ms`, `cost_usd`, `input_tokens`, `output_tokens`,
/// `provider`, `model`, `repeat` and `status`.
fn context(e: &Experiment, row: &Row, json: Option<&serde_json::Value>) -> Value {
    let mut ctx: BTreeMap<&str, Value> = e
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), Value::from(v.as_str())))
        .collect();
    let opt = |x: Option<u64>| x.map_or(Value::from(()), Value::from);
    ctx.insert("output", Value::from(row.output.as_str()));
    ctx.insert("json", json.map_or(Value::from(()), Value::from_serialize));
    ctx.insert(
        "latency_ms",
        Value::from((row.duration_seconds * 1000.0).round()),
    );
    ctx.insert(
        "cost_usd",
        row.cost_usd.map_or(Value::from(()), Value::from),
    );
    ctx.insert("input_tokens", opt(row.input_tokens));
    ctx.insert("output_tokens", opt(row.output_tokens));
    ctx.insert("provider", Value::from(e.provider.as_str()));
    ctx.insert("model", Value::from(e.model.as_str()));
    ctx.insert("repeat", Value::from(e.repeat.unwrap_or(1)));
    ctx.insert("status", Value::from(row.status));
    Value::from(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(csv: &str, args: &JudgeArgs) -> Result<Option<Judge>> {
        let e = Experiments::parse(csv, "e.csv", &["mock", "command"]).unwrap();
        Judge::new(args, &e)
    }

    /// An ok row of `e`, with no answer yet.
    fn ok_row(e: &Experiment) -> Row {
        Row {
            key: e.key(),
            status: "ok",
            input_tokens: None,
            context_window: None,
            output_tokens: None,
            duration_seconds: 0.5,
            output: String::new(),
            error_message: String::new(),
            cached: false,
            cost_usd: None,
            flat: None,
            verdict: None,
            judged: false,
        }
    }

    fn verdict(csv: &str, args: &JudgeArgs, answer: &str) -> Verdict {
        let e = Experiments::parse(csv, "e.csv", &["mock", "command"]).unwrap();
        let j = Judge::new(args, &e).unwrap().unwrap();
        let mut row = ok_row(&e.rows[0]);
        row.output = answer.to_owned();
        j.verdict(&e.rows[0], &row, None)
    }

    #[test]
    fn the_expected_column_is_held_against_the_answer_in_each_mode() {
        let a = JudgeArgs::default();
        let row = |want: &str, mode: &str| {
            format!("provider,model,expected,expect_mode\nmock,m,{want},{mode}\n")
        };
        assert!(verdict(&row("PARIS", ""), &a, "It is Paris.").pass);
        let v = verdict(&row("Lyon", ""), &a, "It is Paris.");
        assert_eq!(
            (v.pass, v.score, v.reason.as_str()),
            (false, 0.0, "expected the answer to contain \"Lyon\"")
        );
        assert!(verdict(&row("Paris", "exact"), &a, " Paris\n").pass);
        assert!(!verdict(&row("Paris", "exact"), &a, "Paris.").pass);
        assert!(verdict(&row(r"^\d+ cats$", "regex"), &a, "12 cats").pass);
        assert!(!verdict(&row(r"^\d+ cats$", "regex"), &a, "many cats").pass);
        let tol = JudgeArgs {
            tolerance: 0.5,
            ..JudgeArgs::default()
        };
        assert!(verdict(&row("42", "number"), &tol, "6 x 7 is 42.4").pass);
        let v = verdict(&row("42", "number"), &tol, "6 x 7 is 43");
        assert_eq!(
            v.reason,
            "expected 42 (within 0.5), the answer's last number is 43"
        );
        assert!(verdict(&row("1000", "number"), &a, "about 1,000").pass);
        // An empty expected value is no check.
        assert!(verdict(&row("", ""), &a, "anything").pass);
    }

    #[test]
    fn bad_checks_are_refused_before_anything_is_sent() {
        let a = JudgeArgs::default();
        let err = |csv: &str, a: &JudgeArgs| format!("{:#}", judge(csv, a).unwrap_err());
        assert_eq!(
            err("provider,model,expected,expect_mode\nmock,m,x,fuzzy\n", &a),
            "e.csv line 2: expect_mode \"fuzzy\" is not one of contains, exact, regex, number"
        );
        assert!(
            err("provider,model,expected,expect_mode\nmock,m,(,regex\n", &a)
                .starts_with("e.csv line 2: the expected value is not a regular expression")
        );
        assert_eq!(
            err(
                "provider,model,expected,expect_mode\nmock,m,ten,number\n",
                &a
            ),
            "e.csv line 2: the expected value \"ten\" is not a number"
        );
        let bad = JudgeArgs {
            asserts: vec!["output is".into()],
            ..JudgeArgs::default()
        };
        assert!(
            err("provider,model\nmock,m\n", &bad).starts_with("--assert \"output is\": syntax"),
            "{}",
            err("provider,model\nmock,m\n", &bad)
        );
        assert!(judge("provider,model\nmock,m\n", &a).unwrap().is_none());
        let expect = JudgeArgs {
            expect: Some(Mode::Exact),
            ..JudgeArgs::default()
        };
        assert!(err("provider,model\nmock,m\n", &expect).contains("needs an `expected` column"));
        assert!(
            err("provider,model,pass\nmock,m,1\n", &bad).contains("a column named pass"),
            "judging adds the column"
        );
    }

    #[test]
    fn asserts_see_the_answer_its_json_and_the_row() {
        let a = JudgeArgs {
            asserts: vec![
                "output | lower is containing \"paris\"".into(),
                "json.score >= 0.8".into(),
                "output is matching(\"[0-9]\")".into(),
                "city == \"Paris\"".into(),
            ],
            ..JudgeArgs::default()
        };
        let csv = "provider,model,city\nmock,m,Paris\n";
        let v = verdict(csv, &a, "PARIS: ```json\n{\"score\": 0.9}\n```");
        assert!(v.pass, "{v:?}");
        let v = verdict(csv, &a, "Lyon {\"score\": 0.5}");
        assert!(!v.pass);
        assert!(
            (v.score - 0.5).abs() < 1e-9,
            "two of four checks passed: {v:?}"
        );
        assert_eq!(
            v.reason,
            "assert failed: output | lower is containing \"paris\"; assert failed: json.score \
             >= 0.8"
        );
        // An answer without JSON fails the assert that reads it, saying why.
        let v = verdict(csv, &a, "Paris 1");
        assert!(v.reason.starts_with("assert json.score >= 0.8: "), "{v:?}");
    }

    #[test]
    fn json_and_schema_checks() {
        let dir = tempfile::tempdir().unwrap();
        let schema = dir.path().join("s.json");
        std::fs::write(
            &schema,
            r#"{"type": "object", "required": ["name"], "properties": {"age": {"type": "integer"}}}"#,
        )
        .unwrap();
        let a = JudgeArgs {
            is_json: true,
            schema: Some(schema.clone()),
            ..JudgeArgs::default()
        };
        let csv = "provider,model\nmock,m\n";
        assert!(verdict(csv, &a, r#"{"name": "x", "age": 3}"#).pass);
        let v = verdict(csv, &a, r#"{"age": "old"}"#);
        assert!(!v.pass);
        assert!(
            v.reason
                .contains("/age: \"old\" is not of type \"integer\""),
            "{v:?}"
        );
        assert!(
            v.reason.contains("\"name\" is a required property"),
            "{v:?}"
        );
        let v = verdict(csv, &a, "no json");
        assert!(v.score.abs() < 1e-9, "{v:?}");
        std::fs::write(&schema, "{\"type\": 3}").unwrap();
        let e = format!("{:#}", judge(csv, &a).unwrap_err());
        assert!(e.contains("is not a valid JSON Schema"), "{e}");
    }

    #[test]
    fn the_last_number_of_an_answer() {
        assert_eq!(last_number("3 apples and -4.5 pears"), Some(-4.5));
        assert_eq!(last_number("1,234,567 stars"), Some(1_234_567.0));
        assert_eq!(last_number("2e3"), Some(2000.0));
        assert_eq!(last_number("none"), None);
        assert_eq!(last_number("between 10-12"), Some(12.0));
        assert_eq!(last_number("on 2024-03-01"), Some(1.0));
        assert_eq!(last_number("-7"), Some(-7.0));
        assert_eq!(last_number("it is -7"), Some(-7.0));
        assert_eq!(expected_number("1,000"), Some(1000.0));
    }
}
