//! A response before it is sent: status, content type, body and extra headers, with the
//! JSON error form `{"error": "..."}` that every failed request gets.

/// A response to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra headers such as `Allow` or `WWW-Authenticate`.
    pub headers: Vec<(&'static str, String)>,
}

pub const JSON: &str = "application/json";
pub const HTML: &str = "text/html; charset=utf-8";
/// The Prometheus text exposition format, version 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: JSON,
            body: value.to_string(),
            headers: Vec::new(),
        }
    }

    /// Builds `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl AsRef<str>) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.as_ref() }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Turns the `(status, JSON body)` pairs of the older handlers into a reply.
impl From<(u16, String)> for Reply {
    fn from((status, body): (u16, String)) -> Self {
        Self {
            status,
            content_type: JSON,
            body,
            headers: Vec::new(),
        }
    }
}
