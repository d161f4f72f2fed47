//! The weather service: a task on the smol executor that refreshes the outside
//! temperature from OpenWeatherMap at the configured interval, retries with exponential
//! backoff, and falls back to the configured temperature. It never blocks the pollers:
//! they only read the shared cell.
//!
//! The request URL carries the API key, so it never reaches a log line or an error
//! unredacted, and every error message is also scrubbed of the key itself.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::openweathermap::{ResponseError, is_retryable, read_temperature, weather_url};
use super::policy::{AfterFailure, after_failure, retry_delay};
use super::status::WeatherStatus;
use super::{OutsideReading, OutsideTemperature, TemperatureSource};
use crate::clock::Clock;
use crate::config::{Secret, WEATHER_API_KEY_VAR, WeatherConfig};
use crate::net::{HttpClient, HttpRequest, NetError, TlsOptions, redact_url};
use crate::shutdown::Shutdown;

/// Largest weather response accepted. A real response is under 1 KiB.
const MAX_WEATHER_BODY: usize = 64 * 1024;

/// The weather parts the daemon wires together: the cell that pollers read, the status
/// that the API reads, and the service to spawn when it is on.
pub struct Weather {
    pub cell: Arc<OutsideTemperature>,
    pub status: Arc<WeatherStatus>,
    pub service: Option<WeatherService>,
}

impl Weather {
    /// Builds the weather parts for `config`. Without a zip code, an API key or a usable
    /// TLS setup the service is off, and this logs why once.
    pub fn from_config(
        config: &WeatherConfig,
        api_key: Option<&Secret>,
        clock: Arc<dyn Clock>,
    ) -> Weather {
        let api_key = api_key.filter(|key| !key.expose().trim().is_empty());

        let (Some(zip), Some(api_key)) = (config.zip.as_deref(), api_key) else {
            let reason = off_reason(config.zip.is_some());
            log::info!("weather service off: {reason}; local_temp is stored as NULL");
            return Weather::off(reason);
        };

        let client = match HttpClient::new(&TlsOptions {
            extra_ca_file: None,
            verify: true,
        }) {
            Ok(client) => client,
            Err(error) => {
                let reason = format!("cannot set up the HTTP client: {error}");
                log::error!("weather service off: {reason}; local_temp is stored as NULL");
                return Weather::off(reason);
            }
        };

        let cell = Arc::new(OutsideTemperature::new(config.max_age));
        let status = Arc::new(WeatherStatus::running(cell.clone()));
        let service = WeatherService {
            client,
            url: weather_url(&config.base_url, zip, api_key.expose()),
            api_key: api_key.clone(),
            zip: zip.to_string(),
            config: config.clone(),
            cell: cell.clone(),
            status: status.clone(),
            clock,
        };
        Weather {
            cell,
            status,
            service: Some(service),
        }
    }

    fn off(reason: String) -> Weather {
        let cell = Arc::new(OutsideTemperature::disabled());
        let status = Arc::new(WeatherStatus::off(cell.clone(), reason));
        Weather {
            cell,
            status,
            service: None,
        }
    }
}

fn off_reason(has_zip: bool) -> String {
    if has_zip {
        format!("{WEATHER_API_KEY_VAR} is not set")
    } else {
        "the configuration has no [weather] section".to_string()
    }
}

/// Refreshes the outside temperature until shutdown.
pub struct WeatherService {
    client: HttpClient,
    /// The request URL, which contains the API key: pass it only to the client.
    url: String,
    api_key: Secret,
    zip: String,
    config: WeatherConfig,
    cell: Arc<OutsideTemperature>,
    status: Arc<WeatherStatus>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for WeatherService {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("WeatherService")
            .field("url", &redact_url(&self.url))
            .field("zip", &self.zip)
            .finish_non_exhaustive()
    }
}

/// One failed request.
#[derive(Debug)]
enum FetchError {
    Net(NetError),
    Response(ResponseError),
}

impl FetchError {
    fn is_retryable(&self) -> bool {
        match self {
            FetchError::Net(NetError::InvalidUrl(_)) => false,
            FetchError::Net(_) => true,
            FetchError::Response(error) => is_retryable(error),
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Net(error) => error.fmt(formatter),
            FetchError::Response(error) => error.fmt(formatter),
        }
    }
}

impl WeatherService {
    /// Refreshes at the configured interval until `shutdown`. Each refresh starts one
    /// interval after the previous one started, however long its retries took.
    pub async fn run(self, shutdown: Shutdown) {
        log::info!(
            "weather service started for zip {}: {} every {} s, values older than {} s stored as NULL",
            self.zip,
            redact_url(&self.url),
            self.config.refresh.as_secs(),
            self.config.max_age.as_secs()
        );

        loop {
            let started = Instant::now();
            if !self.refresh(&shutdown).await {
                break;
            }
            if !shutdown.sleep_until(started + self.config.refresh).await {
                break;
            }
        }
        log::info!("weather service stopped");
    }

    /// Runs one refresh: an attempt and up to `retries` retries. Returns false when the
    /// shutdown interrupted it.
    async fn refresh(&self, shutdown: &Shutdown) -> bool {
        let attempts = self.config.retries.saturating_add(1);
        let mut last_error = String::new();

        for attempt in 1..=attempts {
            if attempt > 1 {
                let delay = retry_delay(self.config.retry_delay, attempt - 1);
                if !shutdown.sleep(delay).await {
                    return false;
                }
            }

            let Some(result) = shutdown.or_stop(self.fetch()).await else {
                return false;
            };
            let error = match result {
                Ok(fahrenheit) => {
                    self.store_live(fahrenheit);
                    return true;
                }
                Err(error) => error,
            };

            last_error = self.scrub(&error.to_string());
            self.status
                .record_error(last_error.clone(), self.clock.now());
            if !error.is_retryable() {
                break;
            }
            if attempt < attempts {
                self.log_retry(attempt, attempts, &last_error);
            }
        }

        self.handle_failed_refresh(&last_error);
        true
    }

    async fn fetch(&self) -> Result<f64, FetchError> {
        let request = HttpRequest::get(
            self.url.clone(),
            self.config.request_timeout,
            MAX_WEATHER_BODY,
        );
        let response = self.client.send(request).await.map_err(FetchError::Net)?;
        read_temperature(response.status, &response.body).map_err(FetchError::Response)
    }

    fn store_live(&self, fahrenheit: f64) {
        let now = self.clock.now();
        let failed_before = self.status.failed_refreshes_in_a_row();
        let first = self.cell.latest().is_none();

        self.cell.set(OutsideReading {
            fahrenheit,
            at: now,
            source: TemperatureSource::Live,
        });
        self.status.record_success(now);

        if failed_before > 0 {
            log::info!(
                "outside temperature available again after {failed_before} failed refresh(es): {fahrenheit} °F"
            );
        } else if first {
            log::info!("outside temperature for zip {}: {fahrenheit} °F", self.zip);
        } else {
            log::debug!("outside temperature for zip {}: {fahrenheit} °F", self.zip);
        }
    }

    /// Applies the fallback rule and logs the failure. Repeats are logged at warn level
    /// only for the 1st, 2nd, 4th, 8th... failed refresh in a row.
    fn handle_failed_refresh(&self, error: &str) {
        let in_a_row = self.status.record_failed_refresh();
        let now = self.clock.now();
        let decision = after_failure(
            self.cell.latest(),
            now,
            self.config.max_age,
            self.config.refresh,
            self.config.fallback_temp,
        );

        let outcome = match decision {
            AfterFailure::UseFallback(fahrenheit) => {
                self.cell.set(OutsideReading {
                    fahrenheit,
                    at: now,
                    source: TemperatureSource::Fallback,
                });
                format!("using the fallback of {fahrenheit} °F")
            }
            AfterFailure::KeepLatest => match self.cell.current(now) {
                Some(fahrenheit) => format!("keeping the last value of {fahrenheit} °F"),
                None => "local_temp is stored as NULL".to_string(),
            },
        };

        let message = format!(
            "weather refresh failed ({in_a_row} in a row): {error}; {outcome}; next try in {} s",
            self.config.refresh.as_secs()
        );
        if in_a_row.is_power_of_two() {
            log::warn!("{message}");
        } else {
            log::debug!("{message}");
        }
    }

    fn log_retry(&self, attempt: u32, attempts: u32, error: &str) {
        let delay = retry_delay(self.config.retry_delay, attempt);
        let message = format!(
            "weather request {attempt} of {attempts} failed: {error}; retrying in {} ms",
            delay.as_millis()
        );
        // While the failures go on, only the summary of each refresh stays visible.
        if self.status.failed_refreshes_in_a_row() == 0 {
            log::info!("{message}");
        } else {
            log::debug!("{message}");
        }
    }

    /// Removes the API key from `message`, in case a server or library echoed the URL.
    fn scrub(&self, message: &str) -> String {
        let key = self.api_key.expose();
        if key.is_empty() {
            return message.to_string();
        }
        message.replace(key, "<redacted>")
    }
}
