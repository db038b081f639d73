//! The modules of a crate form layers, written down lowest first: a module uses only modules of
//! lower layers, so no module reaches, directly or through others, back to itself, and a reader
//! knows where to start. A cycle makes each module of it impossible to understand, test or move
//! alone.
//!
//! The graph is read from the source: every `crate::a::b` path and every `super::x` path of a
//! module's code (comments, doc comments and its `#[cfg(test)]` module left out) is an edge to
//! the module it names. Re-exports (`pub use`) and `mod` lines of a parent are its facade, not
//! dependencies, and are left out too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`process::tree`) to the modules its code uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_files(src: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for entry in walk(src) {
        let rel = entry.strip_prefix(src).expect("under src");
        let name = rel.with_extension("").to_string_lossy().replace('/', "::");
        // The library's root only declares and re-exports; a binary's `main` uses the library
        // by its name, not through `crate::`.
        if name != "lib" && name != "main" {
            out.push((name, entry));
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of a module: without comments, its test module, re-exports and `mod` lines.
fn code_lines(text: &str) -> Vec<&str> {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .filter(|line| {
            let l = line.trim_start();
            !(l.starts_with("pub use ") || l.starts_with("mod ") || l.starts_with("pub mod "))
        })
        .collect()
}

/// The module a path names, given the known modules: the longest known prefix.
fn resolve(segments: &[&str], modules: &BTreeSet<String>) -> Option<String> {
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| modules.contains(m))
}

pub fn edges(module: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let parent: Vec<&str> = module.split("::").collect();
    let parent = &parent[..parent.len() - 1];
    let mut found = BTreeSet::new();
    for line in code_lines(text) {
        let mut rest = line;
        while let Some(at) = rest.find(['c', 's']) {
            let tail = &rest[at..];
            let boundary = at == 0 || {
                let before = rest[..at].chars().next_back().unwrap_or(' ');
                !(before.is_alphanumeric() || before == '_')
            };
            let (base, after) = if boundary && tail.starts_with("crate::") {
                (Vec::new(), &tail["crate::".len()..])
            } else if boundary && tail.starts_with("super::") {
                (parent.to_vec(), &tail["super::".len()..])
            } else {
                rest = &rest[at + 1..];
                continue;
            };
            // `super::{a, b::C}` or `crate::a::b`: every path inside braces counts.
            let paths: Vec<String> = if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                inner.split(',').map(|p| p.trim().to_owned()).collect()
            } else {
                let end = after
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(after.len());
                vec![after[..end].to_owned()]
            };
            for path in paths {
                let mut segments = base.clone();
                segments.extend(path.split("::").filter(|s| !s.is_empty()));
                if let Some(target) = resolve(&segments, modules)
                    && target != module
                {
                    found.insert(target);
                }
            }
            rest = &rest[at + 1..];
        }
    }
    found
}

/// The module graph of the crate whose sources are in `src`.
pub fn graph(src: &Path) -> Graph {
    let files = module_files(src);
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    files
        .iter()
        .map(|(module, path)| {
            let text = std::fs::read_to_string(path).expect("read module");
            (module.clone(), edges(module, &text, &modules))
        })
        .collect()
}

/// A cycle through the graph, if there is one, as the list of its modules.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// Check that the modules of the crate in `src` form `layers` (lowest first; each a
/// whitespace-separated list of module paths, `process::tree`): every module is in exactly
/// one layer, and every module uses only modules of lower layers.
///
/// # Panics
/// With the modules left out or listed twice, the edges that go up or across, and a layer list
/// that would hold (each module on the lowest layer its uses allow).
pub fn assert_layers(src: &Path, layers: &[&str]) {
    let graph = graph(src);
    let mut layer_of: BTreeMap<&str, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        for module in layer.split_whitespace() {
            if layer_of.insert(module, i).is_some() {
                problems.push(format!("{module} is listed twice"));
            }
            if !graph.contains_key(module) {
                problems.push(format!("{module} is listed but is no module"));
            }
        }
    }
    for (module, uses) in &graph {
        let Some(&mine) = layer_of.get(module.as_str()) else {
            problems.push(format!("{module} is in no layer"));
            continue;
        };
        for used in uses {
            if let Some(&theirs) = layer_of.get(used.as_str())
                && theirs >= mine
            {
                problems.push(format!(
                    "{module} (layer {}) uses {used} (layer {}): only lower layers",
                    mine + 1,
                    theirs + 1
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!("a cycle: {}", cycle.join(" -> ")));
    }
    assert!(
        problems.is_empty(),
        "the layers of {} do not hold:\n  {}\nlayers that would (lowest first):\n{}",
        src.display(),
        problems.join("\n  "),
        suggested(&graph)
            .iter()
            .map(|l| format!("  {}", l.join(" ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Each module on the lowest layer its uses allow (modules of a cycle are left out).
pub fn suggested(graph: &Graph) -> Vec<Vec<String>> {
    let mut level: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..=graph.len() {
        for (module, uses) in graph {
            let l = uses
                .iter()
                .filter(|u| *u != module)
                .map(|u| level.get(u).map_or(0, |l| l + 1))
                .max()
                .unwrap_or(0);
            level.insert(module.clone(), l.min(graph.len()));
        }
    }
    let mut layers: Vec<Vec<String>> = Vec::new();
    for (module, l) in level {
        if layers.len() <= l {
            layers.resize(l + 1, Vec::new());
        }
        layers[l].push(module);
    }
    layers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_found() {
        let modules: BTreeSet<String> = ["a", "b", "b::c"].map(str::to_owned).into();
        let mut graph = Graph::new();
        graph.insert(
            "a".into(),
            edges("a", "use crate::b::c::Thing;\n", &modules),
        );
        graph.insert("b".into(), BTreeSet::new());
        graph.insert("b::c".into(), edges("b::c", "use super::{x, y};", &modules));
        assert_eq!(graph["b::c"], BTreeSet::from(["b".to_owned()]));
        assert_eq!(find_cycle(&graph), None);
        assert_eq!(
            suggested(&graph),
            [
                vec!["b".to_owned()],
                vec!["b::c".to_owned()],
                vec!["a".to_owned()]
            ]
        );
        graph.insert(
            "b::c".into(),
            edges("b::c", "fn f() -> u8 { crate::a::g() }", &modules),
        );
        assert_eq!(
            find_cycle(&graph),
            Some(vec!["a".to_owned(), "b::c".to_owned(), "a".to_owned()])
        );
    }

    #[test]
    fn a_module_used_from_its_own_or_a_lower_layer_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("lib.rs"), "mod a;\nmod b;\n").unwrap();
        std::fs::write(d.path().join("a.rs"), "use crate::b::X;\n").unwrap();
        std::fs::write(d.path().join("b.rs"), "pub struct X;\n").unwrap();
        assert_layers(d.path(), &["b", "a"]);
        let fails = |layers: &'static [&'static str]| -> String {
            let src = d.path().to_path_buf();
            let panic = std::panic::catch_unwind(move || assert_layers(&src, layers))
                .expect_err("the layers do not hold");
            panic.downcast_ref::<String>().cloned().unwrap_or_default()
        };
        let upside_down = fails(&["a", "b"]);
        assert!(
            upside_down.contains("a (layer 1) uses b (layer 2): only lower layers")
                && upside_down.contains("layers that would (lowest first):\n  b\n  a"),
            "{upside_down}"
        );
        assert!(fails(&["a b"]).contains("a (layer 1) uses b (layer 1)"));
        assert!(fails(&["b"]).contains("a is in no layer"));
        assert!(fails(&["b", "a", "c"]).contains("c is listed but is no module"));
    }
}
