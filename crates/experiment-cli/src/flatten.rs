//! `--flatten`: the JSON in a model's answer, as columns. The JSON is a fenced block (tagged
//! `json`, else any fence whose content is JSON), else the first JSON object or array in the text; it
//! becomes `a_b` for nested keys and `items_0` for list items, down to a depth and a list length
//! (beyond them the rest is kept whole, as JSON: `items_rest`, or the nested value itself).

use serde_json::Value;

/// How deep and how long: `--flatten-depth`, `--flatten-items`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) depth: usize,
    pub(crate) items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: 5,
            items: 10,
        }
    }
}

/// How many places in a text are tried as the start of a JSON value.
const MAX_TRIES: usize = 1000;

/// The JSON object or array in `text`, if there is one.
pub(crate) fn extract(text: &str) -> Option<Value> {
    let fenced = fences(text);
    let tagged = fenced
        .iter()
        .filter(|(tag, _)| tag.eq_ignore_ascii_case("json"))
        .chain(
            fenced
                .iter()
                .filter(|(tag, _)| !tag.eq_ignore_ascii_case("json")),
        );
    for (_, body) in tagged {
        if let Ok(v @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str(body.trim()) {
            return Some(v);
        }
    }
    text.char_indices()
        .filter(|(_, c)| *c == '{' || *c == '[')
        .take(MAX_TRIES)
        .find_map(|(i, _)| {
            let mut values = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
            match values.next() {
                Some(Ok(v @ (Value::Object(_) | Value::Array(_)))) => Some(v),
                _ => None,
            }
        })
}

/// The fenced blocks of a Markdown text: (the tag after the opening fence, the content).
fn fences(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let Some(eol) = after.find('\n') else { break };
        let tag = after[..eol].trim();
        let body = &after[eol + 1..];
        let Some(close) = body.find("```") else { break };
        out.push((tag, &body[..close]));
        rest = &body[close + 3..];
    }
    out
}

/// `value` as named columns, in order: `a_b` for nested keys, `items_0` for list items. A top
/// level list's items are `json_0`, `json_1`...
///
/// Two paths can make one name (`{"a_b": 1, "a": {"b": 2}}`): the later one gets `_2` (then
/// `_3`...), so no value is dropped.
pub(crate) fn flatten(value: &Value, limits: Limits) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    match value {
        Value::Array(items) => walk_items("json", items, 1, limits, &mut out),
        other => walk("", other, 0, limits, &mut out),
    }
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (name, _) in &mut out {
        if !taken.insert(name.clone()) {
            let mut n = 2;
            while taken.contains(&format!("{name}_{n}")) {
                n += 1;
            }
            let unique = format!("{name}_{n}");
            taken.insert(unique.clone());
            *name = unique;
        }
    }
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}_{key}")
    }
}

fn walk(prefix: &str, v: &Value, depth: usize, limits: Limits, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) if depth < limits.depth => {
            for (k, child) in map {
                walk(&join(prefix, k), child, depth + 1, limits, out);
            }
        }
        Value::Array(items) if depth < limits.depth && !prefix.is_empty() => {
            walk_items(prefix, items, depth + 1, limits, out);
        }
        // A scalar, or what lies past the depth limit: kept whole.
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

fn walk_items(
    prefix: &str,
    items: &[Value],
    depth: usize,
    limits: Limits,
    out: &mut Vec<(String, Value)>,
) {
    for (i, item) in items.iter().take(limits.items).enumerate() {
        walk(&join(prefix, &i.to_string()), item, depth, limits, out);
    }
    if items.len() > limits.items {
        out.push((
            join(prefix, "rest"),
            Value::Array(items[limits.items..].to_vec()),
        ));
    }
}

/// A value as a CSV cell: text as it is, other values as JSON, null as nothing.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_is_found_fenced_inline_or_not_at_all() {
        let fenced = "Here you go:\n```json\n{\"a\": 1}\n```\nand {\"b\": 2}";
        assert_eq!(extract(fenced), Some(json!({"a": 1})));
        let plain_fence = "```\n[1, 2]\n```";
        assert_eq!(extract(plain_fence), Some(json!([1, 2])));
        let inline = "The answer is {\"score\": 7, \"why\": \"{braces} in text\"} as asked.";
        assert_eq!(
            extract(inline),
            Some(json!({"score": 7, "why": "{braces} in text"}))
        );
        assert_eq!(
            extract("a {broken { and then [\"ok\"]"),
            Some(json!(["ok"]))
        );
        assert_eq!(extract("no json here, only 42"), None);
        assert_eq!(extract("```json\nnot json\n```"), None);
    }

    #[test]
    fn nested_values_become_columns_within_the_limits() {
        let v = json!({
            "score": 7,
            "tags": ["a", "b", "c"],
            "author": {"name": "Ada", "address": {"city": "London"}},
            "none": null
        });
        let limits = Limits { depth: 2, items: 2 };
        let cols: Vec<(String, Value)> = flatten(&v, limits);
        assert_eq!(
            cols,
            vec![
                ("author_address".to_owned(), json!({"city": "London"})),
                ("author_name".to_owned(), json!("Ada")),
                ("none".to_owned(), Value::Null),
                ("score".to_owned(), json!(7)),
                ("tags_0".to_owned(), json!("a")),
                ("tags_1".to_owned(), json!("b")),
                ("tags_rest".to_owned(), json!(["c"])),
            ]
        );
        assert_eq!(cell(&json!({"city": "London"})), r#"{"city":"London"}"#);
        assert_eq!(cell(&json!("Ada")), "Ada");
        assert_eq!(cell(&Value::Null), "");
        // One name from two paths: both values kept.
        assert_eq!(
            flatten(&json!({"a_b": 1, "a": {"b": 2}}), Limits::default()),
            vec![("a_b".to_owned(), json!(2)), ("a_b_2".to_owned(), json!(1))]
        );
        let top = flatten(&json!([{"x": 1}, 2]), Limits::default());
        assert_eq!(
            top,
            vec![
                ("json_0_x".to_owned(), json!(1)),
                ("json_1".to_owned(), json!(2))
            ]
        );
    }
}
