//! The weather service's state for `GET /api/weather/status`: the latest value and its
//! source, error counts and the last error. The API reads it from memory and never
//! waits on the network.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::{OutsideReading, OutsideTemperature, TemperatureSource};

/// Shared between the weather service, which records outcomes, and the API threads,
/// which read reports.
#[derive(Debug)]
pub struct WeatherStatus {
    cell: Arc<OutsideTemperature>,
    enabled: bool,
    /// Reason the service is off, for the report; `None` while it is on.
    off_reason: Option<String>,
    counters: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    error_count: u64,
    failed_refreshes_in_a_row: u32,
    last_error: Option<String>,
    last_error_at: Option<jiff::Timestamp>,
    last_success_at: Option<jiff::Timestamp>,
}

/// The body of `GET /api/weather/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeatherReport {
    pub enabled: bool,
    /// Reason the service is off, when it is.
    pub off_reason: Option<String>,
    /// Latest outside temperature in °F, however old.
    pub temperature_f: Option<f64>,
    /// `live` (the last refresh succeeded), `cached` (a live value kept after failed
    /// refreshes), `fallback` (the configured value), or null before any value.
    pub source: Option<&'static str>,
    /// Time the latest value was obtained, RFC 3339.
    pub obtained_at: Option<String>,
    pub age_seconds: Option<i64>,
    /// Whether the latest value is within `max_age` and so is stored with readings.
    pub current: bool,
    pub max_age_seconds: u64,
    /// Failed requests since start, retries included.
    pub error_count: u64,
    pub failed_refreshes_in_a_row: u32,
    /// The last error, with URLs redacted.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success_at: Option<String>,
}

impl WeatherStatus {
    /// Builds the status of a running service that stores into `cell`.
    pub fn running(cell: Arc<OutsideTemperature>) -> Self {
        Self {
            cell,
            enabled: true,
            off_reason: None,
            counters: Mutex::new(Counters::default()),
        }
    }

    /// Builds the status of a service that is off, for `reason`.
    pub fn off(cell: Arc<OutsideTemperature>, reason: impl Into<String>) -> Self {
        Self {
            cell,
            enabled: false,
            off_reason: Some(reason.into()),
            counters: Mutex::new(Counters::default()),
        }
    }

    pub fn record_success(&self, at: jiff::Timestamp) {
        let mut counters = self.lock();
        counters.last_success_at = Some(at);
        counters.failed_refreshes_in_a_row = 0;
    }

    /// Counts one failed request. `message` must already be free of secrets.
    pub fn record_error(&self, message: String, at: jiff::Timestamp) {
        let mut counters = self.lock();
        counters.error_count += 1;
        counters.last_error = Some(message);
        counters.last_error_at = Some(at);
    }

    /// Counts a refresh whose every attempt failed, and returns how many failed in a row.
    pub fn record_failed_refresh(&self) -> u32 {
        let mut counters = self.lock();
        counters.failed_refreshes_in_a_row = counters.failed_refreshes_in_a_row.saturating_add(1);
        counters.failed_refreshes_in_a_row
    }

    pub fn failed_refreshes_in_a_row(&self) -> u32 {
        self.lock().failed_refreshes_in_a_row
    }

    /// Builds the report as of `now`.
    pub fn report(&self, now: jiff::Timestamp) -> WeatherReport {
        let latest = self.cell.latest();
        let counters = self.lock();
        let last_refresh_failed = counters.failed_refreshes_in_a_row > 0;

        WeatherReport {
            enabled: self.enabled,
            off_reason: self.off_reason.clone(),
            temperature_f: latest.map(|reading| reading.fahrenheit),
            source: describe_source(latest.as_ref(), last_refresh_failed),
            obtained_at: latest.map(|reading| reading.at.to_string()),
            age_seconds: latest.map(|reading| now.duration_since(reading.at).as_secs()),
            current: self.cell.current(now).is_some(),
            max_age_seconds: self.cell.max_age().as_secs(),
            error_count: counters.error_count,
            failed_refreshes_in_a_row: counters.failed_refreshes_in_a_row,
            last_error: counters.last_error.clone(),
            last_error_at: counters.last_error_at.map(|at| at.to_string()),
            last_success_at: counters.last_success_at.map(|at| at.to_string()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Names the source of `latest` for the report. A live value counts as `cached` once a
/// later refresh has failed.
pub fn describe_source(
    latest: Option<&OutsideReading>,
    last_refresh_failed: bool,
) -> Option<&'static str> {
    let reading = latest?;
    let name = match reading.source {
        TemperatureSource::Fallback => "fallback",
        TemperatureSource::Live if last_refresh_failed => "cached",
        TemperatureSource::Live => "live",
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn reading(source: TemperatureSource) -> OutsideReading {
        OutsideReading {
            fahrenheit: 41.5,
            at: jiff::Timestamp::from_second(1_800_000_000).expect("valid timestamp"),
            source,
        }
    }

    #[test]
    fn source_of_nothing_is_none() {
        assert_eq!(describe_source(None, false), None);
    }

    #[test]
    fn source_after_success_is_live() {
        let latest = reading(TemperatureSource::Live);
        assert_eq!(describe_source(Some(&latest), false), Some("live"));
    }

    #[test]
    fn source_after_failure_is_cached() {
        let latest = reading(TemperatureSource::Live);
        assert_eq!(describe_source(Some(&latest), true), Some("cached"));
    }

    #[test]
    fn source_of_fallback_is_fallback() {
        let latest = reading(TemperatureSource::Fallback);
        assert_eq!(describe_source(Some(&latest), true), Some("fallback"));
    }

    #[test]
    fn report_counts_errors() {
        let cell = Arc::new(OutsideTemperature::new(Duration::from_secs(60)));
        let status = WeatherStatus::running(cell);
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("valid timestamp");

        status.record_error("first".to_string(), now);
        status.record_error("second".to_string(), now);
        let report = status.report(now);

        assert_eq!(report.error_count, 2);
        assert_eq!(report.last_error.as_deref(), Some("second"));
    }

    #[test]
    fn report_ages_value() {
        let cell = Arc::new(OutsideTemperature::new(Duration::from_secs(60)));
        let latest = reading(TemperatureSource::Live);
        cell.set(latest);
        let status = WeatherStatus::running(cell);

        let report = status.report(latest.at + jiff::SignedDuration::from_secs(90));

        assert_eq!(report.age_seconds, Some(90));
        assert!(!report.current);
        assert_eq!(report.temperature_f, Some(41.5));
    }
}
