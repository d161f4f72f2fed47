//! [`SyncClient`]: requests to the public server with the site token, one deadline each,
//! and the response turned into a [`Sent`] verdict. [`Stream`] keeps the retry state and
//! the log lines of one upload stream.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderName, Method};
use serde_json::Value;

use super::decide::{Backoff, Verdict, classify, log_due};
use super::status::LinkStatus;
use crate::config::Secret;
use crate::net::{HttpClient, HttpRequest, NetError, redact_url};

/// Largest response body read from the public server.
const MAX_RESPONSE_BODY: usize = 1024 * 1024;

/// Maximum part of a rejection body kept as the reason, in bytes.
const MAX_REASON_BYTES: usize = 1000;

const SITE_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-site-token");

/// The outcome of one request.
#[derive(Debug)]
pub enum Sent {
    /// 2xx, with the response body.
    Delivered(bytes::Bytes),
    /// No response, 429 or 5xx: keep the payload and retry.
    Retry {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// 401 or 403: keep the payload and retry slowly.
    Unauthorized { status: u16 },
    /// Any other status: park the payload with `reason`.
    Park { status: u16, reason: String },
}

/// Requests to `{base_url}/api/v1/sites/{site_id}`.
pub struct SyncClient {
    http: HttpClient,
    site_url: String,
    token: Secret,
    timeout: Duration,
    auth_retry: Duration,
    last_auth_log: Mutex<Option<Instant>>,
    status: Arc<LinkStatus>,
}

impl SyncClient {
    pub fn new(
        http: HttpClient,
        base_url: &str,
        site_id: &str,
        token: Secret,
        timeout: Duration,
        auth_retry: Duration,
        status: Arc<LinkStatus>,
    ) -> Self {
        let site_url = format!("{}/api/v1/sites/{site_id}", base_url.trim_end_matches('/'));
        Self {
            http,
            site_url,
            token,
            timeout,
            auth_retry,
            last_auth_log: Mutex::new(None),
            status,
        }
    }

    /// Returns the URL of `path` under the site, for log lines.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.site_url)
    }

    /// Sends `POST path` with `body`.
    pub async fn post(&self, path: &str, body: &Value) -> Sent {
        self.send(Method::POST, path, Some(body.to_string().into_bytes()))
            .await
    }

    /// Sends `GET path`.
    pub async fn get(&self, path: &str) -> Sent {
        self.send(Method::GET, path, None).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Sent {
        let sent = self.exchange(method, path, body).await;
        let now = jiff::Timestamp::now().as_second();
        match &sent {
            Sent::Delivered(_) | Sent::Park { .. } => self.status.record_success(now),
            Sent::Retry { detail, .. } => self.status.record_failure(now, detail.clone()),
            Sent::Unauthorized { status } => self.status.record_failure(
                now,
                format!("the server rejected the site token (status {status})"),
            ),
        }
        sent
    }

    async fn exchange(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Sent {
        let mut headers = vec![(SITE_TOKEN_HEADER, self.token.expose().to_string())];
        if body.is_some() {
            headers.push((http::header::CONTENT_TYPE, "application/json".to_string()));
        }
        let request = HttpRequest {
            method,
            url: self.url(path),
            headers,
            body,
            deadline: self.timeout,
            max_body: MAX_RESPONSE_BODY,
        };

        let response = match self.http.send(request).await {
            Ok(response) => response,
            Err(error) => {
                return Sent::Retry {
                    detail: describe_net_error(&error),
                    retry_after: None,
                };
            }
        };

        let retry_after = response
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok());
        match classify(response.status, retry_after, jiff::Timestamp::now()) {
            Verdict::Delivered => Sent::Delivered(response.body),
            Verdict::Retry { retry_after } => Sent::Retry {
                detail: format!("the server returned status {}", response.status),
                retry_after,
            },
            Verdict::Unauthorized { status } => Sent::Unauthorized { status },
            Verdict::Park { status } => Sent::Park {
                status,
                reason: match response.headers.get(http::header::LOCATION) {
                    Some(location) if (300..400).contains(&status) => redirect_reason(location),
                    _ => reason_from_body(&response.body),
                },
            },
        }
    }

    /// Logs a rejected site token at most once per retry interval across all streams,
    /// and returns that interval.
    pub fn auth_failed(&self, status: u16, path: &str) -> Duration {
        let now = Instant::now();
        let mut last = self
            .last_auth_log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if log_due(*last, now, self.auth_retry) {
            log::error!(
                "the public server rejected the site token with status {status} on {}; \
                 check THERMOSTAT_SITE_TOKEN and site.site_id; unsent data stays in the \
                 database and is retried every {} s",
                self.url(path),
                self.auth_retry.as_secs()
            );
            *last = Some(now);
        }
        self.auth_retry
    }
}

/// Formats a failed request for the log. A TLS error names why the certificate is not
/// trusted. No message contains the token, because it travels only in a header.
fn describe_net_error(error: &NetError) -> String {
    match error {
        NetError::Tls(_) => format!(
            "{error}; the daemon does not send data to a server it cannot verify \
             (public_server.ca_cert names the CA file)"
        ),
        _ => error.to_string(),
    }
}

/// Names where a 3xx response pointed, without its query string, and why it is refused.
fn redirect_reason(location: &http::HeaderValue) -> String {
    let target = String::from_utf8_lossy(location.as_bytes());
    let target: String = redact_url(&target).chars().take(MAX_REASON_BYTES).collect();
    format!(
        "the server redirected to {target}, and redirects are not followed; \
         set public_server.base_url to the server's real address"
    )
}

/// Returns the start of a rejection body as text, for the parked payload's reason.
fn reason_from_body(body: &[u8]) -> String {
    let end = body.len().min(MAX_REASON_BYTES);
    let text = String::from_utf8_lossy(&body[..end]).trim().to_string();
    if text.is_empty() {
        "the server sent no reason".to_string()
    } else {
        text
    }
}

/// Interval of the warning repeated while a stream keeps failing, so that a long outage
/// or a certificate problem stays visible in the log without a line per retry.
const REPEAT_WARNING_INTERVAL: Duration = Duration::from_secs(600);

/// Retry state and log lines of one upload stream (state changes, minute rows, ...).
pub struct Stream {
    name: &'static str,
    backoff: Backoff,
    last_warning: Option<Instant>,
}

impl Stream {
    pub fn new(name: &'static str, first: Duration, max: Duration) -> Self {
        Self {
            name,
            backoff: Backoff::new(first, max),
            last_warning: None,
        }
    }

    /// Records a delivered request and logs the recovery after failures.
    pub fn delivered(&mut self) {
        if self.backoff.failures > 0 {
            log::info!(
                "{}: the public server accepted a request again after {} failed attempt(s)",
                self.name,
                self.backoff.failures
            );
        }
        self.backoff.succeeded();
        self.last_warning = None;
    }

    /// Records a failed request and returns the wait before the next one. The first
    /// failure in a row is logged as a warning and repeated every 10 minutes while the
    /// failures go on; the others are logged at debug level.
    pub fn failed(&mut self, url: &str, detail: &str, retry_after: Option<Duration>) -> Duration {
        let wait = self.backoff.failed(retry_after, fastrand::f64());
        let now = Instant::now();
        if log_due(self.last_warning, now, REPEAT_WARNING_INTERVAL) {
            log::warn!(
                "{}: request to {url} failed ({} in a row): {detail}; keeping the data and \
                 retrying with backoff",
                self.name,
                self.backoff.failures
            );
            self.last_warning = Some(now);
        } else {
            log::debug!(
                "{}: request to {url} failed again ({} in a row): {detail}; next try in {} ms",
                self.name,
                self.backoff.failures,
                wait.as_millis()
            );
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_rejection_has_reason() {
        assert_eq!(reason_from_body(b"  "), "the server sent no reason");
    }

    #[test]
    fn redirect_reason_names_the_target_without_query() {
        let location = http::HeaderValue::from_static("https://elsewhere.example/x?key=secret");
        let reason = redirect_reason(&location);
        assert!(reason.contains("elsewhere.example"), "{reason}");
        assert!(!reason.contains("secret"), "{reason}");
        assert!(reason.contains("not followed"), "{reason}");
    }

    #[test]
    fn long_rejection_cut() {
        let body = vec![b'x'; 5000];
        assert_eq!(reason_from_body(&body).len(), MAX_REASON_BYTES);
    }
}
