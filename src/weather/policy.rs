//! Pure decisions of the weather service: how long to wait before a retry, and what to
//! store once every attempt of a refresh has failed.

use std::time::Duration;

use super::{OutsideReading, TemperatureSource};

/// Maximum wait between two attempts of one refresh.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5 * 60);

/// Returns the wait before retry number `retry` (1 for the first retry): `first`, then
/// twice as long for each later retry, at most 5 minutes.
pub fn retry_delay(first: Duration, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1));
    first.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

/// Action after a refresh whose every attempt failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterFailure {
    /// Leave the latest value in place. It is a live value that stays fresh until the
    /// next refresh, or there is no fallback and it will go stale on its own.
    KeepLatest,
    /// Store the configured fallback temperature (°F) as of now.
    UseFallback(f64),
}

/// Decides what to store after a failed refresh at `now`. A live value is kept while it
/// stays within `max_age` until the next refresh, because a recent measurement is closer
/// to the truth than a fixed fallback. Otherwise the fallback, if configured, replaces it.
pub fn after_failure(
    latest: Option<OutsideReading>,
    now: jiff::Timestamp,
    max_age: Duration,
    refresh: Duration,
    fallback: Option<f64>,
) -> AfterFailure {
    let Some(fallback) = fallback else {
        return AfterFailure::KeepLatest;
    };

    let lasts_until_next_refresh = latest.is_some_and(|reading| {
        reading.source == TemperatureSource::Live
            && age_at_next_refresh(reading.at, now, refresh) <= max_age
    });
    if lasts_until_next_refresh {
        AfterFailure::KeepLatest
    } else {
        AfterFailure::UseFallback(fallback)
    }
}

/// Returns how old a value obtained at `at` will be at the next refresh, `refresh` after
/// `now`. A value from the future (after a clock step backwards) counts as age zero.
fn age_at_next_refresh(at: jiff::Timestamp, now: jiff::Timestamp, refresh: Duration) -> Duration {
    let age_now = Duration::try_from(now.duration_since(at)).unwrap_or(Duration::ZERO);
    age_now.saturating_add(refresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at_minute(minute: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + minute * 60).expect("valid timestamp")
    }

    fn reading(minute: i64, source: TemperatureSource) -> OutsideReading {
        OutsideReading {
            fahrenheit: 41.5,
            at: at_minute(minute),
            source,
        }
    }

    #[test]
    fn retry_delay_doubles() {
        let first = Duration::from_secs(2);
        assert_eq!(retry_delay(first, 1), Duration::from_secs(2));
        assert_eq!(retry_delay(first, 2), Duration::from_secs(4));
        assert_eq!(retry_delay(first, 3), Duration::from_secs(8));
    }

    #[test]
    fn retry_delay_is_capped() {
        assert_eq!(retry_delay(Duration::from_secs(2), 40), MAX_RETRY_DELAY);
    }

    #[test]
    fn without_fallback_latest_stays() {
        let decision = after_failure(None, at_minute(0), 30 * MINUTE, 10 * MINUTE, None);
        assert_eq!(decision, AfterFailure::KeepLatest);
    }

    #[test]
    fn nothing_cached_uses_fallback() {
        let decision = after_failure(None, at_minute(0), 30 * MINUTE, 10 * MINUTE, Some(45.0));
        assert_eq!(decision, AfterFailure::UseFallback(45.0));
    }

    #[test]
    fn recent_live_value_is_kept() {
        let latest = Some(reading(0, TemperatureSource::Live));
        let decision = after_failure(latest, at_minute(10), 30 * MINUTE, 10 * MINUTE, Some(45.0));
        assert_eq!(decision, AfterFailure::KeepLatest);
    }

    #[test]
    fn live_value_kept_up_to_max_age() {
        let latest = Some(reading(0, TemperatureSource::Live));
        let decision = after_failure(latest, at_minute(20), 30 * MINUTE, 10 * MINUTE, Some(45.0));
        assert_eq!(decision, AfterFailure::KeepLatest);
    }

    #[test]
    fn live_value_stale_by_next_refresh_gives_fallback() {
        let latest = Some(reading(0, TemperatureSource::Live));
        let decision = after_failure(latest, at_minute(21), 30 * MINUTE, 10 * MINUTE, Some(45.0));
        assert_eq!(decision, AfterFailure::UseFallback(45.0));
    }

    #[test]
    fn earlier_fallback_is_renewed() {
        let latest = Some(reading(0, TemperatureSource::Fallback));
        let decision = after_failure(latest, at_minute(10), 30 * MINUTE, 10 * MINUTE, Some(45.0));
        assert_eq!(decision, AfterFailure::UseFallback(45.0));
    }
}
