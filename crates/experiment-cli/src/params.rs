//! Request parameters from the experiments file: columns such as `temperature` are sent with the
//! request (and stay variables of the template), so a sweep over them is a column.

use anyhow::{Result, bail};
use serde_json::Value;

/// Columns sent as request parameters when they are present and `--param-columns` is not given.
pub(crate) const DEFAULT: [&str; 4] = ["temperature", "max_tokens", "top_p", "seed"];

/// A row's parameters, in column order; empty cells are not sent.
pub(crate) type Params = Vec<(String, Value)>;

/// The parameter columns of a file with `columns`: the `--param-columns` list (each must be a
/// column), else those of [`DEFAULT`] that it has.
pub(crate) fn columns(explicit: Option<&[String]>, columns: &[String]) -> Result<Vec<String>> {
    let Some(list) = explicit else {
        return Ok(DEFAULT
            .iter()
            .filter(|d| columns.iter().any(|c| c == *d))
            .map(|d| (*d).to_owned())
            .collect());
    };
    let list: Vec<String> = list
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    if let Some(unknown) = list.iter().find(|n| !columns.contains(n)) {
        bail!(
            "--param-columns names {unknown:?}, which is not a variable column (the variables: {})",
            columns.join(", ")
        );
    }
    Ok(list)
}

/// A cell as the value to send: numbers for the parameters known to be numbers, else JSON when it
/// parses (`true`, `["\n"]`), else the text. `None` for an empty cell.
pub(crate) fn value(name: &str, cell: &str) -> Result<Option<Value>, String> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(None);
    }
    match name {
        "temperature" | "top_p" | "frequency_penalty" | "presence_penalty" | "min_p" => {
            match cell.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Some(x.into())),
                _ => Err(format!("{name} {cell:?} is not a number")),
            }
        }
        "max_tokens" | "top_k" => match cell.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n.into())),
            _ => Err(format!("{name} {cell:?} is not a whole number above 0")),
        },
        "seed" => cell
            .parse::<i64>()
            .map(|n| Some(n.into()))
            .map_err(|_| format!("seed {cell:?} is not a whole number")),
        _ => Ok(Some(
            serde_json::from_str(cell).unwrap_or_else(|_| Value::String(cell.to_owned())),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_default_columns_are_those_present_and_a_list_is_checked() {
        let c = cols(&["topic", "seed", "temperature"]);
        assert_eq!(columns(None, &c).unwrap(), ["temperature", "seed"]);
        assert_eq!(columns(Some(&cols(&["topic", ""])), &c).unwrap(), ["topic"]);
        assert!(columns(Some(&cols(&[""])), &c).unwrap().is_empty());
        let e = columns(Some(&cols(&["tmp"])), &c).unwrap_err().to_string();
        assert!(e.contains("--param-columns names \"tmp\""), "{e}");
    }

    #[test]
    fn cells_become_typed_values() {
        assert_eq!(value("temperature", " 0.7 ").unwrap(), Some(0.7.into()));
        assert_eq!(value("max_tokens", "64").unwrap(), Some(64.into()));
        assert_eq!(value("seed", "-3").unwrap(), Some((-3).into()));
        assert_eq!(value("temperature", "").unwrap(), None);
        assert_eq!(
            value("temperature", "hot").unwrap_err(),
            "temperature \"hot\" is not a number"
        );
        assert!(value("max_tokens", "0").is_err());
        assert!(value("temperature", "NaN").is_err());
        assert_eq!(
            value("stop", r#"["\n"]"#).unwrap(),
            Some(serde_json::json!(["\n"]))
        );
        assert_eq!(value("style", "terse").unwrap(), Some("terse".into()));
    }
}
