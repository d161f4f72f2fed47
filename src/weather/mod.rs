//! Outside temperature: the latest value, shared between the weather service that sets
//! it and the pollers that store it beside each reading.
//!
//! [`service::WeatherService`] refreshes it from OpenWeatherMap on the executor,
//! [`status::WeatherStatus`] keeps what `GET /api/weather/status` reports, and
//! [`Weather::from_config`] builds the parts the daemon wires together.

mod openweathermap;
mod policy;
mod service;
mod status;

use std::sync::Mutex;
use std::time::Duration;

pub use openweathermap::{ResponseError, is_retryable, read_temperature, weather_url};
pub use policy::{AfterFailure, after_failure, retry_delay};
pub use service::{Weather, WeatherService};
pub use status::{WeatherReport, WeatherStatus, describe_source};

/// The origin of the current outside temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemperatureSource {
    /// Fetched from the weather service.
    Live,
    /// The configured fallback after the service failed.
    Fallback,
}

impl TemperatureSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Fallback => "fallback",
        }
    }
}

/// The latest outside temperature (°F), when it was obtained, and its source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutsideReading {
    pub fahrenheit: f64,
    pub at: jiff::Timestamp,
    pub source: TemperatureSource,
}

/// A shared cell holding the latest outside temperature. A value older than
/// `max_age` reads as `None`, so a stale temperature is stored as NULL rather than
/// passed off as current.
#[derive(Debug)]
pub struct OutsideTemperature {
    latest: Mutex<Option<OutsideReading>>,
    max_age: Duration,
    enabled: bool,
}

impl OutsideTemperature {
    pub fn new(max_age: Duration) -> Self {
        Self {
            latest: Mutex::new(None),
            max_age,
            enabled: true,
        }
    }

    /// Returns a cell that ignores every value, for a site without a weather service.
    pub fn disabled() -> Self {
        Self {
            latest: Mutex::new(None),
            max_age: Duration::ZERO,
            enabled: false,
        }
    }

    pub fn set(&self, reading: OutsideReading) {
        if self.enabled {
            *self.lock() = Some(reading);
        }
    }

    /// Returns the latest reading, however old.
    pub fn latest(&self) -> Option<OutsideReading> {
        *self.lock()
    }

    /// Returns the age after which a value reads as `None`.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Returns the temperature if it is no older than `max_age` at `now`.
    pub fn current(&self, now: jiff::Timestamp) -> Option<f64> {
        let reading = (*self.lock())?;
        let age = now.duration_since(reading.at);
        let max_age =
            jiff::SignedDuration::try_from(self.max_age).unwrap_or(jiff::SignedDuration::MAX);
        (age <= max_age).then_some(reading.fahrenheit)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OutsideReading>> {
        self.latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).expect("valid timestamp")
    }

    fn live(fahrenheit: f64, seconds: i64) -> OutsideReading {
        OutsideReading {
            fahrenheit,
            at: at(seconds),
            source: TemperatureSource::Live,
        }
    }

    #[test]
    fn empty_cell_has_no_temperature() {
        let cell = OutsideTemperature::new(Duration::from_secs(60));
        assert_eq!(cell.current(at(1_000)), None);
    }

    #[test]
    fn fresh_value_is_current() {
        let cell = OutsideTemperature::new(Duration::from_secs(60));
        cell.set(live(41.5, 1_000));
        assert_eq!(cell.current(at(1_060)), Some(41.5));
    }

    #[test]
    fn stale_value_reads_as_none() {
        let cell = OutsideTemperature::new(Duration::from_secs(60));
        cell.set(live(41.5, 1_000));
        assert_eq!(cell.current(at(1_061)), None);
        assert_eq!(cell.latest().map(|reading| reading.fahrenheit), Some(41.5));
    }

    #[test]
    fn disabled_cell_never_current() {
        let cell = OutsideTemperature::disabled();
        cell.set(live(41.5, 1_000));
        assert_eq!(cell.current(at(1_000)), None);
        assert_eq!(cell.latest(), None);
    }
}
