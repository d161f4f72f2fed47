//! Errors of the HTTP client. Messages carry the URL only in its redacted form.

use std::fmt;
use std::time::Duration;

/// A failed request. The `String` payloads are complete messages that name the redacted
/// URL or host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// The URL cannot be parsed, has no host, or has a scheme other than http or https.
    InvalidUrl(String),
    /// The host name did not resolve to any address.
    Resolve(String),
    /// No TCP connection could be opened to any resolved address.
    Connect(String),
    /// The TLS handshake failed, for example because the certificate is not trusted.
    Tls(String),
    /// The whole exchange took longer than the request's deadline.
    Timeout(Duration),
    /// The server broke HTTP/1.1 or closed the connection early.
    Protocol(String),
    /// The response body was longer than the request's `max_body` bytes.
    BodyTooLarge(usize),
}

impl fmt::Display for NetError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::InvalidUrl(message) => write!(formatter, "invalid URL: {message}"),
            NetError::Resolve(message) => write!(formatter, "name resolution failed: {message}"),
            NetError::Connect(message) => write!(formatter, "connect failed: {message}"),
            NetError::Tls(message) => write!(formatter, "TLS failed: {message}"),
            NetError::Timeout(deadline) => write!(
                formatter,
                "request timed out after {} ms",
                deadline.as_millis()
            ),
            NetError::Protocol(message) => write!(formatter, "HTTP protocol error: {message}"),
            NetError::BodyTooLarge(limit) => write!(
                formatter,
                "response body is larger than the limit of {limit} bytes"
            ),
        }
    }
}

impl std::error::Error for NetError {}
