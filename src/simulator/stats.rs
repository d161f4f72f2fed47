//! Per-device request statistics for tests: counts by path, concurrency and overlap,
//! the smallest gap between requests, fault counters, and bounded logs of POST bodies
//! and request times.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// POST bodies kept in `SimStats::post_bodies`.
pub const POST_LOG_LEN: usize = 100;

/// Requests kept in `SimStats::requests`.
pub const REQUEST_LOG_LEN: usize = 256;

/// Distinct paths counted one by one; later new paths count under `OTHER_PATHS`.
pub const MAX_COUNTED_PATHS: usize = 64;

/// The `requests_by_path` key for paths past `MAX_COUNTED_PATHS`.
pub const OTHER_PATHS: &str = "(other)";

/// Longest POST body kept in the log, in bytes; longer bodies are cut.
const MAX_LOGGED_BODY: usize = 4096;

/// One received POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRecord {
    pub path: String,
    pub body: String,
}

/// One served connection: when it was accepted and when the device finished with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpan {
    pub method: String,
    pub path: String,
    pub start: Instant,
    pub end: Instant,
}

/// A snapshot of one device's statistics.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    /// Requests read, by path without the query string.
    pub requests_by_path: BTreeMap<String, u64>,
    pub total_requests: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Most connections open at once, counting those waiting for the device.
    pub max_concurrent_connections: usize,
    /// Connections that arrived while another connection to the device was open.
    /// A correct client keeps this at 0.
    pub overlapping_requests: u64,
    /// Smallest time from the end of one connection to the start of the next, over
    /// connections that did not overlap.
    pub min_gap: Option<Duration>,
    /// Second connections reset by `Fault::RefuseConcurrent`.
    pub refused_connections: u64,
    pub flood_lockout_trips: u64,
    /// POSTs to `/sys/mode`, which a client must never send.
    pub forbidden_writes: u64,
    /// Requests left unanswered by `Hang`, `Flaky`, scripted silence or a lockout.
    pub silent_replies: u64,
    /// Connections closed because the request was too large, malformed or too slow.
    pub bad_requests: u64,
    /// The last `POST_LOG_LEN` POST bodies.
    pub post_bodies: VecDeque<PostRecord>,
    /// The last `REQUEST_LOG_LEN` served connections.
    pub requests: VecDeque<RequestSpan>,
}

impl SimStats {
    /// Requests read for `path`.
    pub fn requests_to(&self, path: &str) -> u64 {
        self.requests_by_path.get(path).copied().unwrap_or(0)
    }
}

/// The live counters behind `SimStats`, plus what is needed to compute them.
#[derive(Debug, Default)]
pub(crate) struct StatsRecorder {
    pub stats: SimStats,
    open_connections: usize,
    last_end: Option<Instant>,
}

impl StatsRecorder {
    /// Records a connection accepted at `now` and returns how many were open before.
    pub fn connection_opened(&mut self, now: Instant) -> usize {
        let before = self.open_connections;
        self.open_connections += 1;
        self.stats.connections += 1;
        self.stats.max_concurrent_connections = self
            .stats
            .max_concurrent_connections
            .max(self.open_connections);

        if before > 0 {
            self.stats.overlapping_requests += 1;
        } else if let Some(last_end) = self.last_end {
            let gap = now.saturating_duration_since(last_end);
            self.stats.min_gap = Some(self.stats.min_gap.map_or(gap, |min| min.min(gap)));
        }
        before
    }

    /// Records the end of a connection at `now`, with its request when one was read.
    pub fn connection_closed(&mut self, now: Instant, span: Option<RequestSpan>) {
        self.open_connections = self.open_connections.saturating_sub(1);
        self.last_end = Some(now);
        if let Some(span) = span {
            push_bounded(&mut self.stats.requests, span, REQUEST_LOG_LEN);
        }
    }

    pub fn request_read(&mut self, method: &str, path: &str, body: &str) {
        self.stats.total_requests += 1;
        let key = if self.stats.requests_by_path.contains_key(path)
            || self.stats.requests_by_path.len() < MAX_COUNTED_PATHS
        {
            path
        } else {
            OTHER_PATHS
        };
        *self
            .stats
            .requests_by_path
            .entry(key.to_string())
            .or_default() += 1;

        if method == "POST" {
            let record = PostRecord {
                path: path.to_string(),
                body: cut_at_char(body, MAX_LOGGED_BODY).to_string(),
            };
            push_bounded(&mut self.stats.post_bodies, record, POST_LOG_LEN);
        }
    }

    /// Clears the counters but keeps the count of open connections, which the
    /// server still closes later.
    pub fn reset(&mut self) {
        self.stats = SimStats::default();
        self.last_end = None;
    }
}

fn push_bounded<T>(log: &mut VecDeque<T>, item: T, capacity: usize) {
    if log.len() >= capacity {
        log.pop_front();
    }
    log.push_back(item);
}

fn cut_at_char(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_gap() {
        let mut recorder = StatsRecorder::default();
        let start = Instant::now();
        assert_eq!(recorder.connection_opened(start), 0);
        assert_eq!(
            recorder.connection_opened(start + Duration::from_millis(5)),
            1
        );
        recorder.connection_closed(start + Duration::from_millis(10), None);
        recorder.connection_closed(start + Duration::from_millis(20), None);
        recorder.connection_opened(start + Duration::from_millis(50));

        assert_eq!(recorder.stats.overlapping_requests, 1);
        assert_eq!(recorder.stats.max_concurrent_connections, 2);
        assert_eq!(recorder.stats.min_gap, Some(Duration::from_millis(30)));
    }

    #[test]
    fn logs_stay_bounded() {
        let mut recorder = StatsRecorder::default();
        for index in 0..(POST_LOG_LEN + 20) {
            recorder.request_read("POST", &format!("/p{index}"), "{}");
        }
        assert_eq!(recorder.stats.post_bodies.len(), POST_LOG_LEN);
        assert_eq!(recorder.stats.requests_by_path.len(), MAX_COUNTED_PATHS + 1);
        assert_eq!(
            recorder.stats.requests_to(OTHER_PATHS),
            120 - MAX_COUNTED_PATHS as u64
        );
    }
}
