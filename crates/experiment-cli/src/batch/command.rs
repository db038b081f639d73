//! `parallamr batch status|cancel RESULTS`: the batches a `run --batch` left at the providers,
//! as each provider describes them (and, for `cancel`, after asking it to stop).

use std::time::Duration;

use anyhow::Result;
use fanout::ExitStatus;
use fanout_cli::UsageResult;

use super::state::{State, state_path};
use crate::cli::BatchAction;
use crate::providers::{self, BatchState, redact};

pub(crate) fn command(action: &BatchAction) -> Result<ExitStatus> {
    let (results, cancel) = match action {
        BatchAction::Status { results } => (results, false),
        BatchAction::Cancel { results } => (results, true),
    };
    let path = state_path(results);
    let state = State::load(&path).usage()?;
    if state.batches.is_empty() {
        println!(
            "no batch of {} is in flight ({} does not exist)",
            results.display(),
            path.display()
        );
        return Ok(ExitStatus::Success);
    }
    let settings = crate::settings::Settings::load().usage()?;
    let http = providers::Http::new(Duration::from_secs(60));
    let mut failed = false;
    println!(
        "{:<10} {:<32} {:<12} {:>9} {:>9} {:>9}  SENT",
        "PROVIDER", "BATCH", "STATUS", "REQUESTS", "ANSWERED", "FAILED"
    );
    for r in &state.batches {
        let described = ask(&r.provider, &r.endpoint, &r.id, cancel, &http, &settings);
        let sent = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(r.submitted),
        );
        let (status, total, answered, failed_n) = match &described {
            Ok(s) => (
                s.status.clone(),
                s.total.to_string(),
                s.succeeded.to_string(),
                s.failed.to_string(),
            ),
            Err(why) => {
                failed = true;
                eprintln!("parallamr: {} batch {}: {why}", r.provider, r.id);
                (
                    "?".to_owned(),
                    r.keys.len().to_string(),
                    "?".to_owned(),
                    "?".to_owned(),
                )
            }
        };
        println!(
            "{:<10} {:<32} {status:<12} {total:>9} {answered:>9} {failed_n:>9}  {sent}",
            r.provider, r.id
        );
    }
    if cancel {
        println!(
            "Asked to stop. `parallamr run ... --batch --resume` collects what they answered; \
             the requests they did not answer become error rows, which the next `--batch \
             --resume` sends again."
        );
    } else {
        println!(
            "`parallamr run ... --batch --resume` collects their answers; to abandon them, \
             `parallamr batch cancel {}`.",
            results.display()
        );
    }
    Ok(if failed {
        ExitStatus::TaskFailed
    } else {
        ExitStatus::Success
    })
}

/// Where batch `id` is (after asking it to stop, with `cancel`), asked of `provider` at the
/// endpoint the settings name now: refused when that is not where the batch was sent.
fn ask(
    provider: &str,
    endpoint: &str,
    id: &str,
    cancel: bool,
    http: &providers::Http,
    settings: &crate::settings::Settings,
) -> Result<BatchState, String> {
    let p = providers::one(provider, http, settings).map_err(|e| format!("{e:#}"))?;
    let now = p.cache_endpoint().unwrap_or_default();
    if redact(&now) != endpoint {
        return Err(format!(
            "it was sent to {endpoint}, but the settings now name {}",
            redact(&now)
        ));
    }
    let api = p
        .batch()
        .ok_or_else(|| format!("{provider} has no batch API"))?;
    if cancel { api.cancel(id) } else { api.poll(id) }.map_err(|e| e.to_string())
}
