//! Batches sent: as few as the provider's limits (and `--batch-size`) allow, each recorded in
//! the state file the moment its provider names it (see `batch.rs`).

use std::time::Duration;

use anyhow::{Result, anyhow};
use fanout::TaskError;

use super::poll::Watch;
use super::state::Recorded;
use super::{Batcher, plural};
use crate::providers::{BatchApi, Provider, redact};

impl Batcher<'_> {
    /// Send `lines` to `provider` in as few batches as its limits (and `--batch-size`) allow.
    pub(super) fn submit_all(
        &self,
        provider: &str,
        lines: Vec<(String, serde_json::Value)>,
        size: Option<usize>,
    ) -> Result<()> {
        let p = self.inputs.providers[provider].as_ref();
        let api = p.batch().expect("batchable");
        let (max_count, max_bytes) = api.limits();
        let max_count = size.unwrap_or(max_count).clamp(1, max_count);
        let mut chunk: Vec<(String, serde_json::Value)> = Vec::new();
        let mut bytes = 0;
        for (key, line) in lines {
            let n = line.to_string().len() + 1;
            if !chunk.is_empty() && (chunk.len() == max_count || bytes + n > max_bytes) {
                self.submit(p, api, std::mem::take(&mut chunk))?;
                bytes = 0;
            }
            bytes += n;
            chunk.push((key, line));
        }
        if !chunk.is_empty() {
            self.submit(p, api, chunk)?;
        }
        Ok(())
    }

    /// Send one batch (a 429 or 5xx retried, after the server's `Retry-After`) and record its id
    /// at once. A batch the provider refuses fails its rows.
    fn submit(
        &self,
        p: &dyn Provider,
        api: &dyn BatchApi,
        chunk: Vec<(String, serde_json::Value)>,
    ) -> Result<()> {
        let lines: Vec<serde_json::Value> = chunk.iter().map(|(_, l)| l.clone()).collect();
        let keys: Vec<String> = chunk.into_iter().map(|(k, _)| k).collect();
        let id = match submit_retried(api, &lines) {
            Ok(id) => id,
            Err(e) => {
                let why = format!("the batch was not accepted: {e}");
                self.say(&format!(
                    "{} batch of {}: {why}",
                    p.name(),
                    plural(keys.len(), "request")
                ));
                self.finish(&keys, |_| Err(why.clone()));
                return Ok(());
            }
        };
        self.say(&format!(
            "{} batch {id}: {} sent (state in {})",
            p.name(),
            plural(keys.len(), "request"),
            self.path.display()
        ));
        let models = {
            let meta = self.meta.lock().expect("meta");
            keys.iter()
                .map(|k| meta.get(k).map(|m| m.model.clone()).unwrap_or_default())
                .collect()
        };
        let mut state = self.state.lock().expect("state");
        state.batches.push(Recorded {
            provider: p.name().to_owned(),
            endpoint: redact(&p.cache_endpoint().unwrap_or_default()).into_owned(),
            id: id.clone(),
            schema: self
                .inputs
                .judge
                .as_ref()
                .and_then(|j| j.native_schema())
                .map(|s| s.name.clone()),
            submitted: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            keys,
            models,
        });
        // Before anything else: a run killed from here on polls this batch, never sends its
        // requests again. A batch that cannot be recorded is stopped, not left to be paid for
        // twice.
        if let Err(e) = state.save(&self.path) {
            let stopped = api.cancel(&id).map_or_else(
                |c| {
                    format!(
                        "and could not be cancelled ({c}): cancel it at {}",
                        p.name()
                    )
                },
                |_| "so it was cancelled".to_owned(),
            );
            return Err(anyhow!(
                "{} batch {id} could not be recorded, {stopped}: {e:#}",
                p.name()
            ));
        }
        drop(state);
        self.watched.lock().expect("watched").push(Watch::new(&id));
        Ok(())
    }
}

/// Submit a batch, retrying what the provider says to retry (429, 5xx, a dropped connection)
/// up to three times.
fn submit_retried(api: &dyn BatchApi, lines: &[serde_json::Value]) -> Result<String, TaskError> {
    let mut attempt = 0;
    loop {
        match api.submit(lines) {
            Err(TaskError::Failed {
                retryable: true,
                retry_after,
                ..
            }) if attempt < 3 => {
                let backoff = Duration::from_secs(1 << attempt);
                std::thread::sleep(retry_after.unwrap_or(backoff).min(Duration::from_secs(60)));
                attempt += 1;
            }
            other => return other,
        }
    }
}
