//! Loop stages: once the jobs before a loop stage have run, its list is read from an earlier
//! job's output (`over = "@run.peek.items"`) and the stage becomes one job per item and per
//! job of the loop, named `job[<key>]` (`key = "@item.session_id"`) or `job[<index>]`, each
//! with the item's payload over the run's.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::model::{Iteration, Pipeline, Reference};
use crate::payload::{self, Payload};

/// The value `reference` names; an error says what is missing, in words.
pub(crate) fn resolve(
    reference: &Reference,
    outputs: &HashMap<String, Value>,
    item: Option<&Value>,
    run_payload: &Payload,
) -> Result<Value, String> {
    let (root, path, name) = match reference {
        Reference::Run { job, path } => {
            let Some(v) = outputs.get(job) else {
                return Err(format!(
                    "{job} returned no value (a job returns one by writing JSON to \
                     $LORCHESTRA_OUTPUT; did it succeed?)"
                ));
            };
            (v, path.as_slice(), format!("@run.{job}"))
        }
        Reference::Item(path) => (
            item.ok_or("@item is only known inside a loop")?,
            path.as_slice(),
            "@item".to_owned(),
        ),
        Reference::Payload(key) => {
            return run_payload
                .get(key)
                .cloned()
                .ok_or_else(|| format!("the run's payload has no {key}"));
        }
    };
    let mut at = root;
    let mut walked = name;
    for part in path {
        let next = match at {
            Value::Object(map) => map.get(part),
            Value::Array(list) => part.parse::<usize>().ok().and_then(|i| list.get(i)),
            _ => None,
        };
        let Some(next) = next else {
            return Err(format!("{walked} has no {part:?}"));
        };
        walked = format!("{walked}.{part}");
        at = next;
    }
    Ok(at.clone())
}

/// Expand loop stage `si` of `pipeline` into its iterations (and recompute what every job
/// waits for). Returns the number of items; an error (the stage fails with it) when `over`
/// is not a list, an item lacks what the payload or key refers to, or two items share a key.
pub(crate) fn expand(
    pipeline: &mut Pipeline,
    si: usize,
    outputs: &HashMap<String, Value>,
    run_payload: &Payload,
) -> Result<usize, String> {
    let stage = &pipeline.stages[si];
    let l = stage.looping.as_ref().expect("a loop stage");
    let over_text = describe(&l.over);
    let list = resolve(&l.over, outputs, None, run_payload)
        .map_err(|why| format!("loop.over = {over_text}: {why}"))?;
    let Value::Array(items) = list else {
        return Err(format!(
            "loop.over = {over_text} is {}, not a list",
            payload::kind(&list)
        ));
    };
    let mut jobs = Vec::with_capacity(items.len() * l.jobs.len());
    let mut names = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let mut item_payload = run_payload.clone();
        for (k, v) in &l.payload {
            let value = match v.as_str().and_then(Reference::parse) {
                Some(Ok(r)) => resolve(&r, outputs, Some(item), run_payload)
                    .map_err(|why| format!("item {i}: loop.payload.{k}: {why}"))?,
                Some(Err(why)) => return Err(format!("loop.payload.{k}: {why}")),
                None => v.clone(),
            };
            item_payload.insert(k.clone(), value);
        }
        let name = match &l.key {
            Some(r) => {
                let v = resolve(r, outputs, Some(item), run_payload)
                    .map_err(|why| format!("item {i}: loop.key: {why}"))?;
                payload::text(&v)
            }
            None => i.to_string(),
        };
        if !names.insert(name.clone()) {
            return Err(format!(
                "two items have the key {name:?} (loop.key): each iteration needs a name of its own"
            ));
        }
        for template in &l.jobs {
            let mut job = template.clone();
            job.id = format!("{}[{name}]", template.id);
            crate::placeholders::fill(&mut job, &item_payload).map_err(|why| {
                format!(
                    "item {i}: {} uses {{{{payload.{}}}}} {}",
                    template.id,
                    why.key(),
                    why.why()
                )
            })?;
            job.iteration = Some(Iteration {
                of: template.id.clone(),
                payload: item_payload.clone(),
            });
            jobs.push(job);
        }
    }
    let n = items.len();
    let stage = &mut pipeline.stages[si];
    stage.jobs = jobs;
    stage.looping.as_mut().expect("a loop stage").expanded = true;
    pipeline.waits = crate::waits::waits(pipeline).map_err(|e| format!("{e:#}"))?;
    Ok(n)
}

/// A reference as written.
pub(crate) fn describe(r: &Reference) -> String {
    let join = |head: &str, path: &[String]| {
        std::iter::once(head.to_owned())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join(".")
    };
    match r {
        Reference::Run { job, path } => join(&format!("@run.{job}"), path),
        Reference::Item(path) => join("@item", path),
        Reference::Payload(k) => format!("@payload.{k}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_walk_objects_and_lists_and_say_what_is_missing() {
        let outputs: HashMap<String, Value> = [(
            "peek".to_owned(),
            serde_json::json!({"items": [{"id": "a"}, {"id": "b"}]}),
        )]
        .into();
        let r = |text: &str| Reference::parse(text).unwrap().unwrap();
        let p = Payload::new();
        assert_eq!(
            resolve(&r("@run.peek.items.1.id"), &outputs, None, &p).unwrap(),
            "b"
        );
        assert_eq!(
            resolve(&r("@run.peek.nope"), &outputs, None, &p).unwrap_err(),
            "@run.peek has no \"nope\""
        );
        assert!(
            resolve(&r("@run.other"), &outputs, None, &p)
                .unwrap_err()
                .starts_with("other returned no value")
        );
        let item = serde_json::json!({"s": {"id": 7}});
        assert_eq!(
            resolve(&r("@item.s.id"), &outputs, Some(&item), &p).unwrap(),
            7
        );
        assert_eq!(describe(&r("@run.peek.items")), "@run.peek.items");
    }
}
