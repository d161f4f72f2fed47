//! The OpenWeatherMap current-weather request and the reading of its response, without
//! I/O: `GET {base}/data/2.5/weather?zip={zip},US&appid={key}&units=imperial`, whose
//! response carries the temperature in °F as `main.temp`.

use std::fmt;

use serde_json::Value;

use crate::config::PLAUSIBLE_OUTSIDE_FAHRENHEIT;

/// Builds the request URL. The result contains the API key, so it must go through
/// [`crate::net::redact_url`] before it reaches a log line or an error.
pub fn weather_url(base_url: &str, zip: &str, api_key: &str) -> String {
    format!(
        "{}/data/2.5/weather?zip={},US&appid={}&units=imperial",
        base_url.trim_end_matches('/'),
        percent_encode(zip),
        percent_encode(api_key)
    )
}

/// A response that carries no usable temperature.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseError {
    /// The HTTP status was not 2xx. `401` means the API key was rejected.
    Status(u16),
    /// The body is not a JSON object.
    NotJson(String),
    /// `main.temp` is absent or not a number.
    MissingTemperature,
    /// `main.temp` lies outside [`PLAUSIBLE_OUTSIDE_FAHRENHEIT`].
    Implausible(f64),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(401) => formatter.write_str(
                "OpenWeatherMap rejected the API key (HTTP 401); check THERMOSTAT_WEATHER_API_KEY",
            ),
            Self::Status(404) => formatter.write_str(
                "OpenWeatherMap does not know the zip code (HTTP 404); check weather.zip",
            ),
            Self::Status(status) => write!(formatter, "the weather server returned HTTP {status}"),
            Self::NotJson(error) => write!(
                formatter,
                "the weather response is not a JSON object: {error}"
            ),
            Self::MissingTemperature => {
                formatter.write_str("the weather response has no numeric main.temp")
            }
            Self::Implausible(value) => write!(
                formatter,
                "the weather response has main.temp = {value} °F, outside the plausible range \
                 {} to {} °F",
                PLAUSIBLE_OUTSIDE_FAHRENHEIT.start(),
                PLAUSIBLE_OUTSIDE_FAHRENHEIT.end()
            ),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Returns whether a request that got `error` is worth repeating within the same
/// refresh: server trouble (5xx, 429) may pass, a rejected key or unknown zip will not.
pub fn is_retryable(error: &ResponseError) -> bool {
    match error {
        ResponseError::Status(status) => *status == 429 || *status >= 500,
        _ => true,
    }
}

/// Reads the outside temperature (°F) from a response. Unknown keys are ignored, and
/// `main.temp` may be a JSON number or a string holding one.
pub fn read_temperature(status: u16, body: &[u8]) -> Result<f64, ResponseError> {
    if !(200..300).contains(&status) {
        return Err(ResponseError::Status(status));
    }

    let document: Value =
        serde_json::from_slice(body).map_err(|error| ResponseError::NotJson(error.to_string()))?;
    if !document.is_object() {
        return Err(ResponseError::NotJson(
            "the top level is not an object".to_string(),
        ));
    }

    let temperature = document
        .get("main")
        .and_then(|main| main.get("temp"))
        .and_then(number_of)
        .ok_or(ResponseError::MissingTemperature)?;

    if !PLAUSIBLE_OUTSIDE_FAHRENHEIT.contains(&temperature) {
        return Err(ResponseError::Implausible(temperature));
    }
    Ok(temperature)
}

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that a key or zip
/// with unusual characters cannot change the query.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trimmed real-shaped response of `/data/2.5/weather` with `units=imperial`.
    const ANSWER: &str = r#"{"coord":{"lon":-70.28,"lat":41.65},"weather":[{"id":800,"main":"Clear"}],
        "main":{"temp":41.5,"feels_like":36.1,"pressure":1021,"humidity":60},
        "name":"Hyannis","cod":200}"#;

    #[test]
    fn url_has_zip_key_and_units() {
        let url = weather_url("http://127.0.0.1:9/", "02601", "abc123");
        assert_eq!(
            url,
            "http://127.0.0.1:9/data/2.5/weather?zip=02601,US&appid=abc123&units=imperial"
        );
    }

    #[test]
    fn url_encodes_unusual_key() {
        let url = weather_url("http://h", "02601", "a&b=c");
        assert!(url.contains("appid=a%26b%3Dc&"), "{url}");
    }

    #[test]
    fn reads_main_temp() {
        assert_eq!(read_temperature(200, ANSWER.as_bytes()), Ok(41.5));
    }

    #[test]
    fn reads_integer_temp() {
        let body = br#"{"main":{"temp":41}}"#;
        assert_eq!(read_temperature(200, body), Ok(41.0));
    }

    #[test]
    fn reads_string_temp() {
        let body = br#"{"main":{"temp":" 41.5 "}}"#;
        assert_eq!(read_temperature(200, body), Ok(41.5));
    }

    #[test]
    fn rejects_error_status() {
        let body = br#"{"cod":401,"message":"Invalid API key"}"#;
        assert_eq!(read_temperature(401, body), Err(ResponseError::Status(401)));
    }

    #[test]
    fn rejects_missing_main() {
        let body = br#"{"cod":200,"weather":[]}"#;
        assert_eq!(
            read_temperature(200, body),
            Err(ResponseError::MissingTemperature)
        );
    }

    #[test]
    fn rejects_null_temp() {
        let body = br#"{"main":{"temp":null}}"#;
        assert_eq!(
            read_temperature(200, body),
            Err(ResponseError::MissingTemperature)
        );
    }

    #[test]
    fn rejects_non_numeric_string() {
        let body = br#"{"main":{"temp":"warm"}}"#;
        assert_eq!(
            read_temperature(200, body),
            Err(ResponseError::MissingTemperature)
        );
    }

    #[test]
    fn rejects_truncated_json() {
        let result = read_temperature(200, br#"{"main":{"temp":4"#);
        assert!(
            matches!(result, Err(ResponseError::NotJson(_))),
            "{result:?}"
        );
    }

    #[test]
    fn rejects_json_array() {
        let result = read_temperature(200, b"[41.5]");
        assert!(
            matches!(result, Err(ResponseError::NotJson(_))),
            "{result:?}"
        );
    }

    #[test]
    fn rejects_kelvin_sized_value() {
        // 278.7 is 41.5 °F in kelvin: what the API returns when `units` is lost.
        let body = br#"{"main":{"temp":278.7}}"#;
        assert_eq!(
            read_temperature(200, body),
            Err(ResponseError::Implausible(278.7))
        );
    }

    #[test]
    fn rejects_absurd_cold() {
        let body = br#"{"main":{"temp":-459.67}}"#;
        assert_eq!(
            read_temperature(200, body),
            Err(ResponseError::Implausible(-459.67))
        );
    }

    #[test]
    fn server_errors_are_retryable() {
        assert!(is_retryable(&ResponseError::Status(500)));
        assert!(is_retryable(&ResponseError::Status(503)));
        assert!(is_retryable(&ResponseError::Status(429)));
    }

    #[test]
    fn rejected_key_is_not_retryable() {
        assert!(!is_retryable(&ResponseError::Status(401)));
        assert!(!is_retryable(&ResponseError::Status(404)));
    }

    #[test]
    fn malformed_body_is_retryable() {
        assert!(is_retryable(&ResponseError::MissingTemperature));
    }
}
