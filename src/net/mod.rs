//! A general HTTP/1.1 client for services outside the site: OpenWeatherMap and the
//! public server.
//!
//! Each request opens its own connection (`Connection: close`) over plain TCP or TLS
//! (rustls with the ring provider), runs under one deadline that covers name resolution,
//! connect, TLS handshake, send and body, and reads a bounded body. Host names are
//! resolved on smol's blocking pool, never on an executor thread. Redirects are not
//! followed: a 3xx response is returned like any other. Error messages name the URL only
//! through [`redact_url`], because query strings carry API keys.

mod client;
mod error;
mod target;
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use client::HttpClient;
pub use error::NetError;
pub use target::redact_url;

/// Trust settings for `https://` URLs.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// A PEM file of CA certificates trusted in addition to the built-in web roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Whether server certificates are checked; `false` accepts any certificate, and the
    /// caller is expected to log a warning about it.
    pub verify: bool,
}

/// One request to send. Its `Debug` output redacts the URL and omits header values,
/// because both may carry secrets.
#[derive(Clone)]
pub struct HttpRequest {
    pub method: http::Method,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// Headers added to `Host`, `Connection: close`, `User-Agent` and `Content-Length`.
    pub headers: Vec<(http::HeaderName, String)>,
    pub body: Option<Vec<u8>>,
    /// Time allowed for the whole exchange, from resolving the host to the last body byte.
    pub deadline: Duration,
    /// Largest response body accepted, in bytes.
    pub max_body: usize,
}

impl HttpRequest {
    /// Builds a GET request without extra headers.
    pub fn get(url: impl Into<String>, deadline: Duration, max_body: usize) -> Self {
        Self {
            method: http::Method::GET,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            deadline,
            max_body,
        }
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        formatter
            .debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field("headers", &header_names)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("deadline", &self.deadline)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// A complete response, whatever its status (3xx, 4xx and 5xx included).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}
