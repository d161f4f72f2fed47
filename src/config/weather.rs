//! The `[weather]` section: where the outside temperature comes from and how often it
//! is refreshed. The OpenWeatherMap API key is a secret and comes from
//! `THERMOSTAT_WEATHER_API_KEY`, never from this section.

use std::time::Duration;

use toml::Table;

use super::fields::{Field, Section, quote};
use super::{Problem, Secrets, WEATHER_API_KEY_VAR};

pub(super) const WEATHER_KEYS: &[&str] = &[
    "zip",
    "base_url",
    "refresh_minutes",
    "max_age_minutes",
    "fallback_temp",
    "retries",
    "request_timeout_seconds",
];

/// The production OpenWeatherMap endpoint. Tests set `base_url` to a local server.
pub const DEFAULT_WEATHER_BASE_URL: &str = "https://api.openweathermap.org";

/// Lowest and highest outside temperatures accepted, in °F: a little beyond the US
/// records of −80 °F (Prospect Creek, Alaska, 1971) and 134 °F (Death Valley, 1913).
pub const PLAUSIBLE_OUTSIDE_FAHRENHEIT: std::ops::RangeInclusive<f64> = -90.0..=140.0;

const ZIP_FORM: &str = "a 5-digit US zip code in quotes, such as \"02134\"";
const BASE_URL_FORM: &str = "an http or https URL without a query string, such as \
                             \"https://api.openweathermap.org\"";

/// The `[weather]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct WeatherConfig {
    /// US zip code whose weather is read; `None` when the file has no `[weather]`
    /// section, which turns the weather service off.
    pub zip: Option<String>,
    /// Scheme, host and optional port of the OpenWeatherMap API, without a trailing `/`.
    pub base_url: String,
    /// Time between two refreshes.
    pub refresh: Duration,
    /// Age after which a temperature is stored as NULL rather than as current.
    pub max_age: Duration,
    /// Temperature (°F) used after every attempt of a refresh failed; `None` stores NULL.
    pub fallback_temp: Option<f64>,
    /// Retries after a failed request, each after twice the previous delay.
    pub retries: u32,
    /// Deadline of one request, from name resolution to the last body byte.
    pub request_timeout: Duration,
    /// Delay before the first retry. Not read from the file: tests shorten it.
    pub retry_delay: Duration,
}

impl Default for WeatherConfig {
    fn default() -> Self {
        Self {
            zip: None,
            base_url: DEFAULT_WEATHER_BASE_URL.to_string(),
            refresh: Duration::from_secs(10 * 60),
            max_age: Duration::from_secs(30 * 60),
            fallback_temp: None,
            retries: 3,
            request_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_secs(2),
        }
    }
}

/// Reads `[weather]`. Without the section the weather service is off; with it, `zip`
/// is required.
pub(super) fn read_weather(
    root: &Table,
    problems: &mut Vec<Problem>,
    all_sections: &[(&'static str, &'static [&'static str])],
) -> WeatherConfig {
    let present = root.contains_key("weather");
    let mut section = Section::open(root, "weather", WEATHER_KEYS, problems);
    let defaults = WeatherConfig::default();

    let zip = if present {
        section
            .required_string("zip", ZIP_FORM)
            .filter(|zip| check_zip(&mut section, zip))
    } else {
        None
    };

    let base_url = match section.string("base_url", BASE_URL_FORM) {
        Field::Valid(url) => check_base_url(&mut section, &url),
        Field::Absent => Some(defaults.base_url.clone()),
        Field::Invalid => None,
    };

    let refresh_minutes = section
        .integer("refresh_minutes", 1..=1440, "minutes")
        .or_default(10u64);
    let max_age_minutes = section
        .integer("max_age_minutes", 1..=1440, "minutes")
        .or_default(30u64);
    let fallback_temp = match section.number("fallback_temp", PLAUSIBLE_OUTSIDE_FAHRENHEIT, "°F") {
        Field::Valid(value) => Some(value),
        _ => None,
    };
    let retries = section
        .integer("retries", 0..=10, "retries")
        .or_default(defaults.retries);
    let request_timeout = section
        .integer("request_timeout_seconds", 1..=120, "seconds")
        .or_default(defaults.request_timeout.as_secs());

    // A value that may go stale before the next refresh would be stored as NULL between
    // refreshes even while the service works.
    if let (Some(refresh), Some(max_age)) = (refresh_minutes, max_age_minutes)
        && max_age < refresh
    {
        section.report(
            "max_age_minutes",
            format!("must be at least weather.refresh_minutes ({refresh}), found {max_age}"),
        );
    }

    section.finish(all_sections);

    WeatherConfig {
        zip,
        base_url: base_url.unwrap_or(defaults.base_url),
        refresh: refresh_minutes.map_or(defaults.refresh, minutes),
        max_age: max_age_minutes.map_or(defaults.max_age, minutes),
        fallback_temp,
        retries: retries.unwrap_or(defaults.retries),
        request_timeout: request_timeout.map_or(defaults.request_timeout, Duration::from_secs),
        retry_delay: defaults.retry_delay,
    }
}

/// Warns when a zip code is set but the API key is not, because the service then stays
/// off although the file configures it.
pub(super) fn check_weather_key(
    weather: &WeatherConfig,
    secrets: &Secrets,
    warnings: &mut Vec<Problem>,
) {
    if weather.zip.is_none() || secrets.weather_api_key.is_some() {
        return;
    }
    warnings.push(Problem::new(
        "weather.zip",
        format!(
            "{WEATHER_API_KEY_VAR} is not set in the environment or in secrets.env_file, so the \
             weather service stays off and local_temp is stored as NULL"
        ),
    ));
}

fn minutes(count: u64) -> Duration {
    Duration::from_secs(count * 60)
}

fn check_zip(section: &mut Section<'_>, zip: &str) -> bool {
    let valid = zip.len() == 5 && zip.chars().all(|c| c.is_ascii_digit());
    if !valid {
        section.report("zip", format!("expected {ZIP_FORM}, found {}", quote(zip)));
    }
    valid
}

/// Checks `url` and returns it without a trailing `/`.
fn check_base_url(section: &mut Section<'_>, url: &str) -> Option<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let uri = match trimmed.parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(error) => {
            let message = format!("{error}; expected {BASE_URL_FORM}, found {}", quote(url));
            section.report("base_url", message);
            return None;
        }
    };

    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let has_host = uri.host().is_some_and(|host| !host.is_empty());
    if !scheme_ok || !has_host || uri.query().is_some() {
        section.report(
            "base_url",
            format!("expected {BASE_URL_FORM}, found {}", quote(url)),
        );
        return None;
    }
    Some(trimmed.to_string())
}
