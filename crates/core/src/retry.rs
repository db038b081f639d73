//! Retry policy: how many attempts, how long to wait between them, and which errors qualify.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::result::TaskError;

/// Which errors are worth another attempt.
pub type RetryPredicate = Arc<dyn Fn(&TaskError) -> bool + Send + Sync>;

/// Attempts with exponential backoff and jitter.
///
/// The delay before attempt `n + 1` is `initial_backoff × multiplier^(n-1)`, capped at
/// `max_backoff`, then scaled by a random factor in `[1 - jitter, 1 + jitter]` so that many
/// clients that failed together do not retry together. A delay the other side asked for
/// ([`TaskError::retry_after`], e.g. HTTP `Retry-After`) replaces the computed one, capped at
/// `max_retry_after`.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Total attempts, first included. 1 means no retries.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub multiplier: f64,
    pub max_backoff: Duration,
    /// Fraction of random spread, 0.0 to 1.0.
    pub jitter: f64,
    /// Longest server-given delay to honour.
    pub max_retry_after: Duration,
    predicate: RetryPredicate,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("multiplier", &self.multiplier)
            .field("max_backoff", &self.max_backoff)
            .field("jitter", &self.jitter)
            .field("max_retry_after", &self.max_retry_after)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    /// One attempt: no retries.
    fn default() -> Self {
        Self::none()
    }
}

impl RetryPolicy {
    /// A single attempt.
    pub fn none() -> Self {
        Self::retries(0)
    }

    /// `retries` retries after the first attempt (so `retries + 1` attempts), backoff from
    /// 500 ms doubling up to 30 s, 20% jitter, retrying errors marked retryable.
    pub fn retries(retries: u32) -> Self {
        RetryPolicy {
            max_attempts: retries.saturating_add(1),
            initial_backoff: Duration::from_millis(500),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(30),
            jitter: 0.2,
            max_retry_after: Duration::from_secs(300),
            predicate: Arc::new(TaskError::is_retryable),
        }
    }

    /// Set the first backoff delay.
    pub fn with_initial_backoff(mut self, delay: Duration) -> Self {
        self.initial_backoff = delay;
        self
    }

    /// Set the longest backoff delay.
    pub fn with_max_backoff(mut self, delay: Duration) -> Self {
        self.max_backoff = delay;
        self
    }

    /// Set the jitter fraction (clamped to 0..=1).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Replace the predicate that decides which errors are retried. The default retries
    /// errors built with [`TaskError::retryable`]. Never retried whatever the predicate says:
    /// cancellation and skips.
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&TaskError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Arc::new(predicate);
        self
    }

    /// Whether an error after attempt number `attempt` (1-based) earns another attempt.
    pub fn should_retry(&self, attempt: u32, error: &TaskError) -> bool {
        attempt < self.max_attempts
            && !matches!(error, TaskError::Cancelled | TaskError::Skipped { .. })
            && (self.predicate)(error)
    }

    /// The delay before the attempt after attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32, error: &TaskError) -> Duration {
        if let Some(asked) = error.retry_after() {
            return asked.min(self.max_retry_after);
        }
        let exp = self.multiplier.powi(
            i32::try_from(attempt.saturating_sub(1))
                .unwrap_or(i32::MAX)
                .min(64),
        );
        let base = (self.initial_backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        let spread = if self.jitter > 0.0 {
            1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0)
        } else {
            1.0
        };
        Duration::from_secs_f64((base * spread).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let p = RetryPolicy::retries(10)
            .with_jitter(0.0)
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_millis(700));
        let e = TaskError::retryable("503");
        let delays: Vec<u128> = (1..=5).map(|a| p.delay(a, &e).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 700, 700]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = RetryPolicy::retries(3)
            .with_initial_backoff(Duration::from_secs(1))
            .with_jitter(0.2);
        let e = TaskError::retryable("x");
        for _ in 0..200 {
            let d = p.delay(1, &e).as_secs_f64();
            assert!((0.8..=1.2).contains(&d), "{d}");
        }
    }

    #[test]
    fn server_given_delay_wins_but_is_capped() {
        let p = RetryPolicy::retries(3);
        let e = TaskError::retryable("429").with_retry_after(Duration::from_secs(7));
        assert_eq!(p.delay(1, &e), Duration::from_secs(7));
        let e = TaskError::retryable("429").with_retry_after(Duration::from_secs(100_000));
        assert_eq!(p.delay(1, &e), p.max_retry_after);
    }

    #[test]
    fn predicate_and_attempt_limit_decide_retries() {
        let p = RetryPolicy::retries(2);
        assert!(p.should_retry(1, &TaskError::retryable("x")));
        assert!(p.should_retry(2, &TaskError::retryable("x")));
        assert!(
            !p.should_retry(3, &TaskError::retryable("x")),
            "3 attempts in all"
        );
        assert!(!p.should_retry(1, &TaskError::failed("400")));
        assert!(!p.should_retry(1, &TaskError::Cancelled));

        let all = RetryPolicy::retries(1).retry_if(|_| true);
        assert!(all.should_retry(1, &TaskError::failed("anything")));
        assert!(
            !all.should_retry(1, &TaskError::Cancelled),
            "never retry a cancel"
        );
        assert!(!RetryPolicy::none().should_retry(1, &TaskError::retryable("x")));
    }
}
