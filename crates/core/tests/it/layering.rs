//! The core's modules form layers: no module reaches, directly or through others, back to
//! itself. A cycle makes each module of it impossible to understand, test or move alone (the
//! pool needed the map's chunking, the map needed the pool's internals...).
//!
//! The graph is read from the source: every `crate::a::b` path and every `super::x` path of a
//! module's code (comments, doc comments and its `#[cfg(test)]` module left out) is an edge to
//! the module it names. Re-exports (`pub use`) and `mod` lines of a parent are its facade, not
//! dependencies, and are left out too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`process::tree`) to the modules its code uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_files(src: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for entry in walk(src) {
        let rel = entry.strip_prefix(src).expect("under src");
        let name = rel.with_extension("").to_string_lossy().replace('/', "::");
        if name != "lib" {
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

fn edges(module: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
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

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = module_files(&src);
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
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
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

#[test]
fn the_core_modules_have_no_cycle() {
    let graph = graph();
    // The analysis sees what it must: a sample of known edges.
    for (from, to) in [
        ("map", "pool"),
        ("process::runner", "process::tree"),
        ("process::tree", "process::guardian"),
        ("interrupt", "process"),
    ] {
        assert!(
            graph[from].contains(to),
            "{from} -> {to} not found: {:?}",
            graph[from]
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the core's modules have a cycle: {}", cycle.join(" -> "));
    }
}

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
    graph.insert(
        "b::c".into(),
        edges("b::c", "fn f() -> u8 { crate::a::g() }", &modules),
    );
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".to_owned(), "b::c".to_owned(), "a".to_owned()])
    );
}
