//! Errors from talking to one thermostat.

use std::fmt;
use std::time::Duration;

use super::tstat::ParseError;

/// An error that left a request to a thermostat without a usable reply.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceError {
    /// The TCP connection could not be opened (refused, unreachable).
    Connect(String),
    /// No complete reply arrived before the deadline.
    Timeout(Duration),
    /// The device replied with a status other than 200.
    Status(u16),
    /// The reply was not valid HTTP, or the connection broke mid-reply.
    Protocol(String),
    /// The body was larger than any real device sends.
    BodyTooLarge(usize),
    /// The body was not the JSON the endpoint should return.
    Parse(ParseError),
    /// The device replied with its own error object, such as `{"error":-1}`.
    Reported(String),
}

impl DeviceError {
    /// Returns a short stable name for the failure, stored in `poll_failures.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout(_) => "timeout",
            Self::Status(_) => "http_status",
            Self::Protocol(_) => "protocol",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::Parse(_) => "parse",
            Self::Reported(_) => "device_error",
        }
    }
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(cause) => write!(f, "connection failed: {cause}"),
            Self::Timeout(after) => write!(f, "no answer within {} s", after.as_secs_f32()),
            Self::Status(code) => write!(f, "unexpected HTTP status {code}"),
            Self::Protocol(cause) => write!(f, "invalid HTTP answer: {cause}"),
            Self::BodyTooLarge(limit) => write!(f, "answer body larger than {limit} bytes"),
            Self::Parse(cause) => write!(f, "invalid body: {cause}"),
            Self::Reported(body) => write!(f, "device reported an error: {body}"),
        }
    }
}

impl std::error::Error for DeviceError {}

impl From<ParseError> for DeviceError {
    fn from(error: ParseError) -> Self {
        match error {
            ParseError::ErrorObject(message) => Self::Reported(message),
            other => Self::Parse(other),
        }
    }
}
