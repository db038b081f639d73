//! `lorchestra graph`: what each job of a pipeline waits for, as text or Graphviz dot.

use std::fmt::Write as _;

use crate::model::Pipeline;

/// Per job: `needs a, b` and/or `after c, d`, empty for a job that waits for nothing.
fn waits_words(p: &Pipeline, fi: usize) -> String {
    let ids: Vec<&str> = p.jobs().map(|(_, _, j)| j.id.as_str()).collect();
    let w = &p.waits[fi];
    let mut parts = Vec::new();
    if !w.needs.is_empty() {
        let names: Vec<&str> = w.needs.iter().map(|&d| ids[d]).collect();
        parts.push(format!("needs {}", names.join(", ")));
    }
    match w.after.len() {
        0 => {}
        1..=4 => {
            let names: Vec<&str> = w.after.iter().map(|&d| ids[d]).collect();
            parts.push(format!("after {}", names.join(", ")));
        }
        n => parts.push(format!("after {n} jobs of the earlier stages")),
    }
    parts.join("; ")
}

/// The text form: jobs by stage, each with what it waits for.
pub(crate) fn text(p: &Pipeline) -> String {
    let mut out = String::new();
    let n = p.job_count();
    let _ = writeln!(
        out,
        "pipeline {} ({}): {n} job{}{}",
        p.name,
        p.file.display(),
        if n == 1 { "" } else { "s" },
        if p.is_graph {
            ", run as a graph by their needs"
        } else {
            ""
        }
    );
    let width = p.jobs().map(|(_, _, j)| j.id.len()).max().unwrap_or(0);
    let mut current = usize::MAX;
    let print_loops = |out: &mut String, upto: usize, current: &mut usize| {
        // Loop stages (no jobs until they run) up to stage `upto`.
        while p.stages.get(current.wrapping_add(1)).is_some() && current.wrapping_add(1) < upto {
            *current = current.wrapping_add(1);
            let stage = &p.stages[*current];
            if let Some(l) = &stage.looping {
                let jobs: Vec<&str> = l.jobs.iter().map(|j| j.id.as_str()).collect();
                let _ = writeln!(
                    out,
                    "stage {}\n  for each item of {}: {}",
                    stage.name,
                    crate::looping::describe(&l.over),
                    jobs.join(", ")
                );
            }
        }
    };
    for (fi, (si, _, job)) in p.jobs().enumerate() {
        if si != current && !p.is_graph {
            print_loops(&mut out, si, &mut current);
            let _ = writeln!(out, "stage {}", p.stages[si].name);
            current = si;
        }
        let waits = waits_words(p, fi);
        let line = format!("  {:<width$}  {waits}", job.id);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    print_loops(&mut out, p.stages.len(), &mut current);
    out
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The Graphviz form: a box per job, stages as clusters, an arrow from each job to those that
/// wait for it (solid: needs, dashed: after).
pub(crate) fn dot(p: &Pipeline) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quoted(&p.name));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box];");
    let ids: Vec<&str> = p.jobs().map(|(_, _, j)| j.id.as_str()).collect();
    for (si, stage) in p.stages.iter().enumerate() {
        if p.is_graph {
            for job in &stage.jobs {
                let _ = writeln!(out, "  {};", quoted(&job.id));
            }
            continue;
        }
        let _ = writeln!(out, "  subgraph {} {{", quoted(&format!("cluster_{si}")));
        let _ = writeln!(
            out,
            "    label={};",
            quoted(&format!("stage {}", stage.name))
        );
        for job in &stage.jobs {
            let _ = writeln!(out, "    {};", quoted(&job.id));
        }
        let _ = writeln!(out, "  }}");
    }
    // A stage's jobs share one `after` list: drawn once, through a point, when it is long.
    let mut points: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
    for (fi, w) in p.waits.iter().enumerate() {
        for &d in &w.needs {
            let _ = writeln!(out, "  {} -> {};", quoted(ids[d]), quoted(ids[fi]));
        }
        if w.after.len() == 1 {
            let _ = writeln!(
                out,
                "  {} -> {} [style=dashed];",
                quoted(ids[w.after[0]]),
                quoted(ids[fi])
            );
        } else if w.after.len() > 1 {
            let next = points.len();
            let point = points.entry(w.after.as_ptr().addr()).or_insert_with(|| {
                let name = quoted(&format!("after #{next}"));
                let _ = writeln!(out, "  {name} [shape=point];");
                for &d in w.after.iter() {
                    let _ = writeln!(out, "  {} -> {name} [style=dashed];", quoted(ids[d]));
                }
                name
            });
            let _ = writeln!(out, "  {point} -> {} [style=dashed];", quoted(ids[fi]));
        }
    }
    out.push_str("}\n");
    out
}
