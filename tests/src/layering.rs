//! The modules of a crate form layers, written down lowest first: a module uses only modules of
//! lower layers, so no module reaches, directly or through others, back to itself, and a reader
//! knows where to start. A cycle makes each module of it impossible to understand, test or move
//! alone.
//!
//! The graph is read from the source: every `crate::a::b` path and every `super::x` path of a
//! module's code (comments, doc comments and its `#[cfg(test)]` module left out; brace groups
//! across lines included) is an edge to the module it names, followed through re-exports: a
//! path to an item that a module (or the crate's root) re-exports names the module that defines
//! it. A module's own re-exports (`pub use`, `pub(crate) use`) and `mod` lines are its facade,
//! not dependencies.

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

/// Re-exports: (module, the name it exports) to the module that defines the item. The crate's
/// root is the module `""`.
type Reexports = BTreeMap<(String, String), String>;

/// The code of a module: without comments, its test module and `mod` lines.
fn code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .filter(|line| {
            let l = line.trim_start();
            !(l.starts_with("mod ")
                || l.starts_with("pub mod ")
                || l.starts_with("pub(crate) mod "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The re-export statements of `code` (`pub use ...;`, `pub(crate) use ...;`): their text after
/// `use`, and the code without them (a re-export is a facade, not a use).
fn split_reexports(code: &str) -> (Vec<&str>, String) {
    let mut statements = Vec::new();
    let mut rest = String::new();
    let mut from = 0;
    for (at, _) in code.match_indices("use ") {
        if at < from {
            continue;
        }
        let before = code[..at].trim_end();
        if !(before.ends_with("pub") || before.ends_with("pub(crate)")) {
            continue;
        }
        let start = code[..at].rfind("pub").expect("ends with pub");
        let end = code[at..].find(';').map_or(code.len(), |e| at + e);
        rest.push_str(&code[from..start]);
        statements.push(&code[at + "use ".len()..end]);
        from = end;
    }
    rest.push_str(&code[from..]);
    (statements, rest)
}

fn skip_ws(s: &[u8], i: &mut usize) {
    while *i < s.len() && s[*i].is_ascii_whitespace() {
        *i += 1;
    }
}
fn ident(s: &[u8], i: &mut usize) -> String {
    let start = *i;
    while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_') {
        *i += 1;
    }
    String::from_utf8_lossy(&s[start..*i]).into_owned()
}
/// One use tree at `s[*i..]`, as the segment lists it stands for.
fn tree(s: &[u8], i: &mut usize) -> Vec<Vec<String>> {
    skip_ws(s, i);
    if s.get(*i) == Some(&b'{') {
        *i += 1;
        let mut out = Vec::new();
        loop {
            skip_ws(s, i);
            match s.get(*i) {
                None => return out,
                Some(b'}') => {
                    *i += 1;
                    return out;
                }
                Some(b',') => *i += 1,
                Some(_) => {
                    let before = *i;
                    let mut sub = tree(s, i);
                    skip_ws(s, i);
                    if s[*i..].starts_with(b"as ") {
                        *i += 3;
                        skip_ws(s, i);
                        let alias = ident(s, i);
                        for p in &mut sub {
                            p.push(format!("as {alias}"));
                        }
                    }
                    out.extend(sub);
                    if *i == before {
                        *i += 1;
                    }
                }
            }
        }
    }
    let seg = ident(s, i);
    if seg.is_empty() {
        return Vec::new();
    }
    if s[*i..].starts_with(b"::") {
        *i += 2;
        let rest = tree(s, i);
        if rest.is_empty() {
            return vec![vec![seg]];
        }
        return rest
            .into_iter()
            .map(|mut p| {
                if p.first().is_some_and(|f| f == "self") {
                    p.remove(0);
                }
                p.insert(0, seg.clone());
                p
            })
            .collect();
    }
    vec![vec![seg]]
}

/// The paths of a use tree or a path expression at the start of `s`: `a::b::{c, d::{e, self}}`
/// is `a::b::c`, `a::b::d::e` and `a::b::d`; each path with the name it is known by (`as`).
fn paths(s: &str) -> Vec<(Vec<String>, String)> {
    let mut i = 0;
    tree(s.as_bytes(), &mut i)
        .into_iter()
        .map(|mut p| {
            let alias = match p.last() {
                Some(last) if last.starts_with("as ") => p.pop().map(|a| a[3..].to_owned()),
                _ => None,
            };
            let name = alias.unwrap_or_else(|| p.last().cloned().unwrap_or_default());
            (p, name)
        })
        .collect()
}

/// `segments` made absolute from `module`: `crate::` from the root, `super::` from the parent,
/// `self::` and a child's name from `module`.
fn absolute(module: &str, segments: &[String]) -> Vec<String> {
    let mut here: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let mut rest = segments;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            here.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {}
    }
    while rest.first().is_some_and(|s| s == "super") {
        here.pop();
        rest = &rest[1..];
    }
    here.extend(rest.iter().cloned());
    here
}

/// The module an absolute path names: the longest known prefix, followed through re-exports
/// (`crate::store::RecordWriter` is `store::writer` when `store` re-exports it from there).
fn resolve(
    segments: &[String],
    modules: &BTreeSet<String>,
    reexports: &Reexports,
) -> Option<String> {
    let n = (1..=segments.len())
        .rev()
        .find(|&n| modules.contains(&segments[..n].join("::")))
        .unwrap_or(0);
    let mut module = segments[..n].join("::");
    if let Some(name) = segments.get(n) {
        for _ in 0..8 {
            match reexports.get(&(module.clone(), name.clone())) {
                Some(target) if *target != module => module.clone_from(target),
                _ => break,
            }
        }
    }
    modules.contains(&module).then_some(module)
}

/// The re-exports of `module`'s code (`""`: the crate's root).
fn reexports_of(module: &str, text: &str, modules: &BTreeSet<String>, out: &mut Reexports) {
    let code = code(text);
    let (statements, _) = split_reexports(&code);
    for statement in statements {
        for (path, name) in paths(statement) {
            // `pub use child::Item` names a child; a path into another crate names no module.
            let first_is_local = matches!(
                path.first().map(String::as_str),
                Some("crate" | "self" | "super")
            ) || path.first().is_some_and(|f| {
                let child = if module.is_empty() {
                    f.clone()
                } else {
                    format!("{module}::{f}")
                };
                modules.contains(&child)
            });
            if !first_is_local {
                continue;
            }
            let full = absolute(module, &path);
            let n = (1..=full.len())
                .rev()
                .find(|&n| modules.contains(&full[..n].join("::")));
            if let Some(n) = n {
                let target = full[..n].join("::");
                if target != module {
                    out.insert((module.to_owned(), name), target);
                }
            }
        }
    }
}

/// The modules `module`'s code uses: every `crate::` and `super::` path (brace groups included,
/// across lines), followed through re-exports. Its own re-exports are a facade, not uses.
pub fn edges(
    module: &str,
    text: &str,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<(String, String), String>,
) -> BTreeSet<String> {
    let (_, code) = split_reexports(&code(text));
    let mut found = BTreeSet::new();
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let boundary = at == 0 || {
            let before = code[..at].chars().next_back().unwrap_or(' ');
            !(before.is_alphanumeric() || before == '_')
        };
        if !boundary {
            continue;
        }
        for (path, _) in paths(&code[at..]) {
            let full = absolute(module, &path);
            if let Some(target) = resolve(&full, modules, reexports)
                && target != module
            {
                found.insert(target);
            }
        }
    }
    found
}

/// The module graph of the crate whose sources are in `src`.
pub fn graph(src: &Path) -> Graph {
    let files = module_files(src);
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|(module, path)| {
            (
                module.clone(),
                std::fs::read_to_string(path).expect("read module"),
            )
        })
        .collect();
    let mut reexports = Reexports::new();
    if let Ok(root) = std::fs::read_to_string(src.join("lib.rs")) {
        reexports_of("", &root, &modules, &mut reexports);
    }
    for (module, text) in &texts {
        reexports_of(module, text, &modules, &mut reexports);
    }
    texts
        .iter()
        .map(|(module, text)| (module.clone(), edges(module, text, &modules, &reexports)))
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
            edges(
                "a",
                "use crate::b::c::Thing;\n",
                &modules,
                &Reexports::new(),
            ),
        );
        graph.insert("b".into(), BTreeSet::new());
        graph.insert(
            "b::c".into(),
            edges("b::c", "use super::{x, y};", &modules, &Reexports::new()),
        );
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
            edges(
                "b::c",
                "fn f() -> u8 { crate::a::g() }",
                &modules,
                &Reexports::new(),
            ),
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

    #[test]
    fn uses_are_followed_through_brace_groups_and_reexports() {
        let d = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("lib.rs", "mod a;\nmod b;\nmod c;\npub use c::Thing;\n");
        // `b` re-exports from its child `b::w`, across lines, renamed.
        write(
            "b.rs",
            "mod w;\npub(crate) use w::{\n    Writer as Pen,\n    Other,\n};\n",
        );
        write(
            "b/w.rs",
            "pub struct Writer;\npub struct Other;\nuse crate::Thing;\n",
        );
        write("c.rs", "pub struct Thing;\n");
        write(
            "a.rs",
            "use crate::b::{\n    self,\n    Pen,\n};\nfn f() -> crate::Thing { make() }\n",
        );
        let g = graph(d.path());
        assert_eq!(
            g["a"],
            BTreeSet::from(["b".to_owned(), "b::w".to_owned(), "c".to_owned()])
        );
        assert_eq!(g["b"], BTreeSet::new(), "a re-export is no use");
        assert_eq!(g["b::w"], BTreeSet::from(["c".to_owned()]));
    }
}
