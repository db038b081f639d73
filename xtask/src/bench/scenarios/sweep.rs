//! parallamr's scenario: a prompt sweep against a local LLM server.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::Bench;
use crate::bench::measure::{measure, wall};

impl Bench {
    /// 4. parallamr against a loopback OpenAI-compatible server answering after 50 ms, at one
    ///    and 32 experiments in flight; the anchor is the same requests by curl under xargs -P.
    pub(crate) fn sweep(&mut self) -> Result<()> {
        eprintln!("sweeps (parallamr)");
        let n = self.sizes.experiments;
        let latency = 0.05;
        let server = testkit::llm_server::LlmServer::start(Duration::from_secs_f64(latency));
        let dir = self.dir("sweep")?;
        std::fs::write(dir.join("prompt.txt"), "Tell me about {{ topic }}.\n")?;
        let mut csv = String::from("provider,model,topic\n");
        let bodies = dir.join("bodies");
        std::fs::create_dir_all(&bodies)?;
        for i in 0..n {
            let _ = writeln!(csv, "openai,llama-test,topic{i}");
            std::fs::write(
                bodies.join(format!("{i}.json")),
                serde_json::json!({
                    "model": "llama-test",
                    "messages": [{ "role": "user", "content": format!("Tell me about topic{i}.") }]
                })
                .to_string(),
            )?;
        }
        std::fs::write(dir.join("experiments.csv"), csv)?;
        let parallamr = self.bin.join("parallamr");
        for j in [1, 32] {
            let out = dir.join(format!("results-{j}.csv"));
            let ours = measure(
                &format!("parallamr: {n} experiments, -j{j}"),
                self.plan(true),
                || {
                    let _ = std::fs::remove_file(&out);
                    wall(
                        Command::new(&parallamr)
                            // Every repetition sends every request (the response cache
                            // would answer all but the first).
                            .args(["run", "-p", "prompt.txt", "-e", "experiments.csv", "-q"])
                            .arg("--no-cache")
                            .arg("-o")
                            .arg(&out)
                            .args([
                                "-j",
                                &j.to_string(),
                                "--provider-limit",
                                &format!("openai={j}"),
                            ])
                            .current_dir(&dir)
                            .env("OPENAI_BASE_URL", &server.url)
                            .env_remove("OPENAI_API_KEY"),
                    )
                },
            )?;
            let mut base = Self::row(
                "sweep",
                format!("sweep {n} experiments, 50 ms server, -j{j}"),
                format!("parallamr run -j {j} --provider-limit openai={j}"),
                &ours,
                (n, j),
            );
            base.ideal_seconds = Some(n.div_ceil(j) as f64 * latency);
            let curl = self.anchors.curl.clone();
            let script = format!(
                "ls bodies | xargs -P {j} -I{{}} curl -sf -o /dev/null \
                 -H 'Content-Type: application/json' --data @bodies/{{}} {}/chat/completions",
                server.url
            );
            self.with_anchor(
                &base,
                &format!("curl under xargs -P {j}"),
                &curl,
                self.plan(true),
                &script,
                &dir,
            )?;
        }
        Ok(())
    }
}
