//! The sync's decisions as plain functions: what a response means, how long to wait
//! before a retry, when a state-change batch is due and which end of a backlog goes
//! next. No I/O, no clock reads: callers pass the time and the random draw.

use std::time::Duration;

use jiff::Timestamp;

/// Maximum readings in one state-change request.
pub const STATE_BATCH_MAX: usize = 10;

/// Maximum rows in one minute request.
pub const MINUTE_BATCH_MAX: usize = 100;

/// Maximum wait honoured from a `Retry-After` header, so a bad value cannot stall the
/// sync for days.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The meaning of an HTTP response for the payload that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the server has it; advance the checkpoint.
    Delivered,
    /// 429, 5xx or no response: keep the payload and retry after a backoff, or after
    /// `retry_after` when the server sent one.
    Retry { retry_after: Option<Duration> },
    /// 401 or 403: keep the payload and retry slowly; the token or site id is wrong.
    Unauthorized { status: u16 },
    /// Any other answer (4xx, or 1xx and 3xx, which the protocol never uses): park the
    /// payload with the reason and go on with the rest.
    Park { status: u16 },
}

/// Classifies a response. `retry_after` is the raw header value, `now` reads HTTP dates.
pub fn classify(status: u16, retry_after: Option<&str>, now: Timestamp) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        401 | 403 => Verdict::Unauthorized { status },
        429 | 500..=599 => Verdict::Retry {
            retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        _ => Verdict::Park { status },
    }
}

/// Parses `Retry-After`: delay-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`). A date in the past means no wait. Returns `None`
/// for anything else. The result is capped at [`RETRY_AFTER_CAP`].
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP));
    }

    let date = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = date.duration_since(now);
    let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
    Some(wait.min(RETRY_AFTER_CAP))
}

/// Exponential backoff with jitter for one upload stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Failures in a row so far.
    pub failures: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            failures: 0,
        }
    }

    /// Records a failure and returns the wait before the next attempt. The base is
    /// `first` doubled per failure in a row and capped at `max`. The wait is drawn from
    /// the base's upper half with `random` (0 to 1), so that many sites do not retry in
    /// step, and it is never shorter than the server's `Retry-After`.
    pub fn failed(&mut self, retry_after: Option<Duration>, random: f64) -> Duration {
        let doublings = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);

        let base = self.first.saturating_mul(1 << doublings).min(self.max);
        let jittered = base.mul_f64(0.5 + random.clamp(0.0, 1.0) * 0.5);
        match retry_after {
            Some(wait) => jittered.max(wait),
            None => jittered,
        }
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// Returns whether the pending state changes are sent now: a full batch is waiting, or
/// the oldest has waited `max_wait`.
pub fn state_batch_due(pending: usize, oldest_wait: Duration, max_wait: Duration) -> bool {
    pending >= STATE_BATCH_MAX || (pending > 0 && oldest_wait >= max_wait)
}

/// The end of the state-change outbox that the next request takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEnd {
    Oldest,
    Newest,
}

/// Picks the end of the outbox for request number `turn` while `pending` changes wait.
/// A backlog (more than two batches) drains oldest first, but every other request takes
/// the newest batch, so fresh changes reach the server while an outage's backlog drains.
/// The server upserts by (thermostat_id, ts), so the order costs nothing there.
pub fn pick_batch_end(pending: usize, turn: u64) -> BatchEnd {
    if pending > 2 * STATE_BATCH_MAX && turn % 2 == 1 {
        BatchEnd::Newest
    } else {
        BatchEnd::Oldest
    }
}

/// Returns whether a repeated failure is due to be logged again, which is once per
/// `interval` after the last line.
pub fn log_due(
    last_logged: Option<std::time::Instant>,
    now: std::time::Instant,
    interval: Duration,
) -> bool {
    match last_logged {
        None => true,
        Some(last) => now.saturating_duration_since(last) >= interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-10-21T07:27:00Z".parse().expect("valid ts")
    }

    #[test]
    fn success_statuses_delivered() {
        assert_eq!(classify(200, None, now()), Verdict::Delivered);
        assert_eq!(classify(204, None, now()), Verdict::Delivered);
    }

    #[test]
    fn throttle_retried_with_retry_after() {
        let verdict = classify(429, Some("7"), now());
        assert_eq!(
            verdict,
            Verdict::Retry {
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn server_error_retried() {
        assert_eq!(
            classify(503, None, now()),
            Verdict::Retry { retry_after: None }
        );
    }

    #[test]
    fn auth_failures_kept() {
        assert_eq!(
            classify(401, None, now()),
            Verdict::Unauthorized { status: 401 }
        );
        assert_eq!(
            classify(403, None, now()),
            Verdict::Unauthorized { status: 403 }
        );
    }

    #[test]
    fn other_client_errors_parked() {
        assert_eq!(classify(400, None, now()), Verdict::Park { status: 400 });
        assert_eq!(classify(422, None, now()), Verdict::Park { status: 422 });
        assert_eq!(classify(404, None, now()), Verdict::Park { status: 404 });
    }

    #[test]
    fn redirect_parked() {
        assert_eq!(classify(302, None, now()), Verdict::Park { status: 302 });
    }

    #[test]
    fn retry_after_http_date() {
        let wait = parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now());
        assert_eq!(wait, Some(Duration::from_secs(60)));
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let wait = parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now());
        assert_eq!(wait, Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_garbage_ignored() {
        assert_eq!(parse_retry_after("soon", now()), None);
    }

    #[test]
    fn retry_after_capped() {
        let wait = parse_retry_after("99999999", now());
        assert_eq!(wait, Some(RETRY_AFTER_CAP));
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let waits: Vec<Duration> = (0..6).map(|_| backoff.failed(None, 1.0)).collect();
        let seconds: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(seconds, vec![1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn backoff_jitter_stays_in_upper_half() {
        let mut backoff = Backoff::new(Duration::from_secs(4), Duration::from_secs(60));
        let wait = backoff.failed(None, 0.0);
        assert_eq!(wait, Duration::from_secs(2));
    }

    #[test]
    fn backoff_honours_longer_retry_after() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let wait = backoff.failed(Some(Duration::from_secs(30)), 0.5);
        assert_eq!(wait, Duration::from_secs(30));
    }

    #[test]
    fn backoff_resets_after_success() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        backoff.failed(None, 1.0);
        backoff.failed(None, 1.0);
        backoff.succeeded();
        assert_eq!(backoff.failed(None, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn full_batch_due_at_once() {
        assert!(state_batch_due(10, Duration::ZERO, Duration::from_secs(5)));
    }

    #[test]
    fn partial_batch_waits() {
        assert!(!state_batch_due(
            3,
            Duration::from_secs(2),
            Duration::from_secs(5)
        ));
    }

    #[test]
    fn partial_batch_due_after_max_wait() {
        assert!(state_batch_due(
            3,
            Duration::from_secs(5),
            Duration::from_secs(5)
        ));
    }

    #[test]
    fn empty_outbox_never_due() {
        assert!(!state_batch_due(
            0,
            Duration::from_secs(60),
            Duration::from_secs(5)
        ));
    }

    #[test]
    fn small_outbox_always_oldest() {
        assert_eq!(pick_batch_end(15, 1), BatchEnd::Oldest);
    }

    #[test]
    fn backlog_alternates_ends() {
        let ends: Vec<BatchEnd> = (0..4).map(|turn| pick_batch_end(500, turn)).collect();
        assert_eq!(
            ends,
            vec![
                BatchEnd::Oldest,
                BatchEnd::Newest,
                BatchEnd::Oldest,
                BatchEnd::Newest
            ]
        );
    }

    #[test]
    fn repeated_failure_logged_once_per_interval() {
        let start = std::time::Instant::now();
        let interval = Duration::from_secs(60);
        assert!(log_due(None, start, interval));
        assert!(!log_due(
            Some(start),
            start + Duration::from_secs(59),
            interval
        ));
        assert!(log_due(
            Some(start),
            start + Duration::from_secs(60),
            interval
        ));
    }
}
