//! A notebook's inline script metadata (PEP 723): the `# /// script` block at its top that
//! names the Python version and the packages it needs. marimo's sandbox reads the same block.

use serde::Deserialize;

/// What a notebook's header asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScriptMetadata {
    /// `requires-python`, as written (`>=3.10`).
    pub(crate) requires_python: Option<String>,
    /// `dependencies`, as written (`numpy>=2`, `marimo`).
    pub(crate) dependencies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Block {
    requires_python: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

/// The `script` block of `text`, if it has one. An error names the line and what is wrong.
///
/// The block, per PEP 723: a line `# /// script`, then lines that are `#` alone or start with
/// `# `, then a line `# ///`. Its content (the comment marks removed) is TOML.
pub(crate) fn parse(text: &str) -> Result<Option<ScriptMetadata>, String> {
    let mut lines = text.lines().enumerate();
    let Some((start, _)) = lines.find(|(_, l)| l.trim_end() == "# /// script") else {
        return Ok(None);
    };
    let mut content = String::new();
    let mut end = None;
    for (n, line) in lines {
        let line = line.trim_end_matches('\r');
        if line == "# ///" {
            end = Some(n);
            // PEP 723: the last `# ///` before a non-comment line closes the block.
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            if end.is_some() {
                // A `# ///` followed by more comment lines was part of the content.
                content.push_str("///\n");
                end = None;
            }
            content.push_str(rest);
            content.push('\n');
        } else if line == "#" {
            if end.is_some() {
                content.push_str("///\n");
                end = None;
            }
            content.push('\n');
        } else {
            break;
        }
    }
    if end.is_none() {
        return Err(format!(
            "the `# /// script` block that starts on line {} is never closed with `# ///`",
            start + 1
        ));
    }
    let block: Block = toml::from_str(&content).map_err(|e| {
        format!(
            "the `# /// script` block that starts on line {} is not valid: {}",
            start + 1,
            e.message()
        )
    })?;
    let dependencies: Vec<String> = block
        .dependencies
        .into_iter()
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    // Each one becomes a line of the requirements file given to uv, where a line break would
    // start another requirement and a leading `-` an option (`--index-url`, `-r FILE`).
    if let Some(bad) = dependencies
        .iter()
        .find(|d| d.starts_with('-') || d.chars().any(char::is_control))
    {
        return Err(format!(
            "the `# /// script` block that starts on line {} lists {bad:?} as a dependency, \
             which is not a requirement (PEP 508)",
            start + 1
        ));
    }
    Ok(Some(ScriptMetadata {
        requires_python: block.requires_python.map(|s| s.trim().to_owned()),
        dependencies,
    }))
}

/// The normalized project name a requirement is for (`Marimo[sql]>=0.9` -> `marimo`).
pub(crate) fn requirement_name(requirement: &str) -> String {
    requirement
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect::<String>()
        .to_ascii_lowercase()
        .replace(['_', '.'], "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_script_block() {
        let text = "# /// script\n# requires-python = \">=3.10\"\n# dependencies = [\n#     \"marimo\",\n#     \"numpy>=2\",\n# ]\n# ///\n\nimport marimo\n";
        assert_eq!(
            parse(text).unwrap(),
            Some(ScriptMetadata {
                requires_python: Some(">=3.10".into()),
                dependencies: vec!["marimo".into(), "numpy>=2".into()],
            })
        );
    }

    #[test]
    fn no_block_is_none_and_a_broken_block_names_its_line() {
        assert_eq!(parse("import marimo\napp = marimo.App()\n").unwrap(), None);
        let err = parse("\n# /// script\n# dependencies = [\"a\"\nimport x\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("never closed"),
            "{err}"
        );
        let err = parse("# /// script\n# dependencies = 3\n# ///\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("not valid"), "{err}");
    }

    #[test]
    fn a_dependency_that_is_not_one_requirement_is_refused() {
        for dep in [r#""numpy\n--index-url=http://x""#, r#""-r /etc/passwd""#] {
            let text = format!("# /// script\n# dependencies = [{dep}]\n# ///\n");
            let err = parse(&text).unwrap_err();
            assert!(
                err.contains("line 1") && err.contains("not a requirement"),
                "{err}"
            );
        }
    }

    #[test]
    fn requirement_names_are_normalized() {
        assert_eq!(requirement_name("Marimo[sql]>=0.9"), "marimo");
        assert_eq!(
            requirement_name("typing_extensions; python_version<'3.11'"),
            "typing-extensions"
        );
        assert_eq!(requirement_name("zope.interface==6"), "zope-interface");
    }
}
