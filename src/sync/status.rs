//! The state of the link to the public server, written by every request and read by
//! the local API's status page and metrics without waiting on the network.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// Outcome times (Unix seconds, 0 for never) and the last error of the requests.
#[derive(Debug, Default)]
pub struct LinkStatus {
    last_success: AtomicI64,
    last_failure: AtomicI64,
    last_error: Mutex<Option<String>>,
}

/// A copy of the link state for one response.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkReport {
    /// True unless the latest request failed: no response, 429, 5xx, 401 or 403.
    pub ok: bool,
    /// Unix time of the last 2xx (or parked 4xx) response.
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
}

impl LinkStatus {
    /// Records a response from the server. A parked 4xx counts too: the link works.
    pub fn record_success(&self, at: i64) {
        self.last_success.fetch_max(at, Ordering::Relaxed);
    }

    /// Records a request that got no usable response; `error` must hold no secret.
    pub fn record_failure(&self, at: i64, error: String) {
        self.last_failure.fetch_max(at, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
    }

    pub fn report(&self) -> LinkReport {
        let success = self.last_success.load(Ordering::Relaxed);
        let failure = self.last_failure.load(Ordering::Relaxed);
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        LinkReport {
            ok: failure == 0 || success >= failure,
            last_success: (success > 0).then_some(success),
            last_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_link_is_ok_without_success() {
        let report = LinkStatus::default().report();
        assert!(report.ok);
        assert_eq!(report.last_success, None);
    }

    #[test]
    fn failure_after_success_is_not_ok() {
        let status = LinkStatus::default();
        status.record_success(100);
        status.record_failure(160, "the server returned status 503".into());
        let report = status.report();
        assert!(!report.ok);
        assert_eq!(report.last_success, Some(100));
        assert_eq!(
            report.last_error.as_deref(),
            Some("the server returned status 503")
        );
    }

    #[test]
    fn success_after_failure_is_ok_again() {
        let status = LinkStatus::default();
        status.record_failure(100, "connection refused".into());
        status.record_success(130);
        assert!(status.report().ok);
    }
}
