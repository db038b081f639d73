//! The documentation's links hold: every relative link and image of every Markdown file a
//! reader opens (README, ARCHITECTURE, CONTRIBUTING, BENCHMARKS, `docs/`, the tools' READMEs)
//! names a file that exists. A test, not a task: `cargo test -p xtask` runs it.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::tasks;

    /// The Markdown files a reader opens.
    fn documents(root: &Path) -> Vec<PathBuf> {
        let mut docs: Vec<PathBuf> = [
            "README.md",
            "ARCHITECTURE.md",
            "CONTRIBUTING.md",
            "BENCHMARKS.md",
        ]
        .iter()
        .map(|f| root.join(f))
        .collect();
        for dir in [
            "docs",
            "crates/export-cli",
            "crates/pipeline-cli",
            "crates/experiment-cli",
        ] {
            for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "md") {
                    docs.push(e.path());
                }
            }
        }
        docs
    }

    /// The relative targets of `[text](target)` links and `src="target"` images.
    fn targets(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut in_code = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            for (i, _) in line.match_indices("](") {
                if let Some(end) = line[i + 2..].find(')') {
                    out.push(line[i + 2..i + 2 + end].to_owned());
                }
            }
            for (i, _) in line.match_indices("src=\"") {
                if let Some(end) = line[i + 5..].find('"') {
                    out.push(line[i + 5..i + 5 + end].to_owned());
                }
            }
        }
        out.retain(|t| !t.starts_with("http") && !t.starts_with('#') && !t.starts_with("mailto:"));
        out
    }

    #[test]
    fn every_relative_link_of_the_documentation_names_a_file_that_exists() {
        let root = tasks::root();
        let mut broken = Vec::new();
        let docs = documents(&root);
        assert!(docs.len() >= 10, "{docs:?}");
        for doc in docs {
            let text = std::fs::read_to_string(&doc).unwrap();
            for target in targets(&text) {
                let path = target.split('#').next().unwrap_or_default();
                if !doc.parent().unwrap().join(path).exists() {
                    broken.push(format!("{}: {target}", doc.display()));
                }
            }
        }
        assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    }

    #[test]
    fn links_are_found_outside_code_only() {
        let text = "see [a](docs/a.md) and <img src=\"x.png\">\n```\n[b](nope.md)\n```\n\
                    [web](https://x.invalid) [here](#top)";
        assert_eq!(targets(text), ["docs/a.md", "x.png"]);
    }
}
