//! `parallamr init`: an example prompt, experiments file and README snippet (never overwriting).

use anyhow::{Context, Result, bail};

/// `parallamr init`: example files, refusing to overwrite.
pub(crate) fn init(dir: &std::path::Path) -> Result<()> {
    let files = [
        (
            "prompt.txt",
            "Write one sentence about {{ topic }} in a {{ tone }} tone.\n",
        ),
        (
            "experiments.csv",
            "provider,model,topic,tone\nmock,mock,octopuses,cheerful\nmock,mock,glaciers,solemn\nmock,mock-small,volcanoes,dry\n",
        ),
        (
            "PARALLAMR.md",
            "## Experiments with parallamr\n\n```sh\nparallamr run -p prompt.txt -e experiments.csv -o results.csv -j 8\n```\n\n\
             Each row of `experiments.csv` names a provider and a model; every other column is a\n\
             variable for `prompt.txt` (`{{ topic }}`). Results stream into `results.csv`; after an\n\
             interruption, `--resume` runs only the experiments without a result.\n",
        ),
    ];
    for (name, _) in &files {
        let p = dir.join(name);
        if p.exists() {
            bail!(
                "{} already exists; init writes nothing over existing files",
                p.display()
            );
        }
    }
    for (name, text) in &files {
        let p = dir.join(name);
        fanout::fsutil::write_atomic(&p, text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
