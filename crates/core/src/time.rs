//! Time limits as users write them, and durations as people read them.

use std::time::Duration;

/// The longest time limit the tools accept (a year and a day). Longer ones are typos or
/// overflow bait: `Instant + 1e20 s` does not exist.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(366 * 24 * 3600);

/// A time limit in seconds, as a user wrote it, checked: positive, finite, at most
/// [`MAX_TIMEOUT`]. The error says which rule it broke.
pub fn timeout_from_secs(secs: f64) -> Result<Duration, String> {
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{secs} is not a positive number of seconds"));
    }
    if secs > MAX_TIMEOUT.as_secs_f64() {
        return Err(format!(
            "{secs} seconds is more than the longest time limit allowed, {} seconds (366 days)",
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// [`fmt_duration`] of seconds read from a record, which may be anything: negative after the
/// clock was stepped back, not a number, or huge. Never panics.
pub fn fmt_seconds(secs: f64) -> String {
    if secs.is_nan() {
        return "?".to_owned();
    }
    fmt_duration(Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX))
}

/// A duration the way people read it: `850ms`, `3.2s`, `4m05s`, `1h02m`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let s = d.as_secs();
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(fmt_duration(Duration::from_millis(3200)), "3.2s");
        assert_eq!(fmt_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(fmt_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn seconds_from_records_never_panic() {
        assert_eq!(fmt_seconds(-3.5), "0ms", "a clock stepped back");
        assert_eq!(fmt_seconds(f64::NAN), "?");
        assert!(!fmt_seconds(1e300).is_empty());
        assert_eq!(fmt_seconds(2.0), "2.0s");
    }

    #[test]
    fn timeouts_are_checked() {
        assert_eq!(timeout_from_secs(1.5), Ok(Duration::from_millis(1500)));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e20] {
            assert!(timeout_from_secs(bad).is_err(), "{bad}");
        }
    }
}
