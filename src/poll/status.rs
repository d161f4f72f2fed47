//! The latest polling status of each thermostat (online, failures in a row, last
//! success, last error) and histograms of poll durations and poll lateness, written by
//! the poll tasks and read by the API and tests.

use std::sync::Mutex;
use std::time::Duration;

use crate::reading::ThermostatState;
use crate::thermostat::ThermostatId;

/// Polling status of one thermostat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThermostatStatus {
    pub online: bool,
    pub consecutive_failures: u32,
    pub polls: u64,
    pub failures: u64,
    /// Readings that differed from the one before, first readings not counted.
    pub state_changes: u64,
    /// Times the thermostat went from online to offline.
    pub offline_transitions: u64,
    pub last_success: Option<jiff::Timestamp>,
    pub last_error: Option<String>,
    /// The newest state read from the device (by a poll or a settings change), and when.
    /// It can be newer than `current_state` in the database, which is written in batches.
    pub last_state: Option<(jiff::Timestamp, ThermostatState)>,
}

/// Upper bounds, in seconds, of the poll duration histogram's buckets. Real units reply
/// to `/tstat` in about 2.5 s, and one CT80 firmware takes 16 s.
pub const LATENCY_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];

/// Upper bounds, in seconds, of the poll lateness histogram's buckets. A poll is late by
/// the time from its grid tick to the start of its request: timer and executor delay.
pub const LATENESS_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Durations in buckets, over all thermostats: the duration of successful polls
/// (request sent to reply parsed) or the lateness of every poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds of the buckets, in seconds, ascending.
    pub bounds: &'static [f64],
    /// Durations at or under each bound, not cumulative.
    pub buckets: Vec<u64>,
    /// Durations above the last bound.
    pub over: u64,
    pub count: u64,
    pub sum_seconds: f64,
    /// Maximum duration recorded.
    pub max_seconds: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: vec![0; bounds.len()],
            over: 0,
            count: 0,
            sum_seconds: 0.0,
            max_seconds: 0.0,
        }
    }

    pub fn record(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        match self.bounds.iter().position(|bound| seconds <= *bound) {
            Some(index) => self.buckets[index] += 1,
            None => self.over += 1,
        }
        self.count += 1;
        self.sum_seconds += seconds;
        self.max_seconds = self.max_seconds.max(seconds);
    }
}

/// Status of every polled thermostat.
#[derive(Debug)]
pub struct StatusBoard {
    /// Sorted by uuid. A `Vec` with at most an eighth spare takes less memory than a
    /// `HashMap`, which keeps up to half its slots empty, and readers want this order.
    statuses: Mutex<Vec<(ThermostatId, ThermostatStatus)>>,
    latency: Mutex<Histogram>,
    lateness: Mutex<Histogram>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self {
            statuses: Mutex::default(),
            latency: Mutex::new(Histogram::new(&LATENCY_BUCKETS)),
            lateness: Mutex::new(Histogram::new(&LATENESS_BUCKETS)),
        }
    }
}

impl StatusBoard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns a copy of the status of `id`, if it has been polled.
    pub fn get(&self, id: &ThermostatId) -> Option<ThermostatStatus> {
        let board = self.lock();
        let index = find(&board, id).ok()?;
        Some(board[index].1.clone())
    }

    /// Returns a copy of every status, sorted by uuid.
    pub fn all(&self) -> Vec<(ThermostatId, ThermostatStatus)> {
        self.map_all(ThermostatStatus::clone)
    }

    /// Returns `pick` of every status, sorted by uuid, for readers that need only a few
    /// fields and should not copy every status.
    pub fn map_all<T>(&self, pick: impl Fn(&ThermostatStatus) -> T) -> Vec<(ThermostatId, T)> {
        self.lock()
            .iter()
            .map(|(id, status)| (id.clone(), pick(status)))
            .collect()
    }

    /// Returns a copy of the poll duration histogram.
    pub fn latency(&self) -> Histogram {
        lock_histogram(&self.latency).clone()
    }

    /// Returns a copy of the poll lateness histogram.
    pub fn lateness(&self) -> Histogram {
        lock_histogram(&self.lateness).clone()
    }

    pub(crate) fn record_latency(&self, duration: Duration) {
        lock_histogram(&self.latency).record(duration);
    }

    /// Records how long after its grid tick a poll started.
    pub(crate) fn record_lateness(&self, lateness: Duration) {
        lock_histogram(&self.lateness).record(lateness);
    }

    /// Records `state` as read from `id` at `at`, unless a newer state is recorded.
    pub(crate) fn record_state(
        &self,
        id: &ThermostatId,
        at: jiff::Timestamp,
        state: ThermostatState,
    ) {
        self.update(id, |status| {
            let newer = status.last_state.is_none_or(|(known, _)| known <= at);
            if newer {
                status.last_state = Some((at, state));
            }
        });
    }

    pub(crate) fn update(&self, id: &ThermostatId, change: impl FnOnce(&mut ThermostatStatus)) {
        let mut board = self.lock();
        let index = match find(&board, id) {
            Ok(index) => index,
            Err(index) => {
                reserve_one(&mut board);
                let status = ThermostatStatus {
                    online: true,
                    ..Default::default()
                };
                board.insert(index, (id.clone(), status));
                index
            }
        };
        change(&mut board[index].1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ThermostatId, ThermostatStatus)>> {
        self.statuses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns the index of `id` in the sorted `board`, or where to insert it.
fn find(board: &[(ThermostatId, ThermostatStatus)], id: &ThermostatId) -> Result<usize, usize> {
    board.binary_search_by(|(known, _)| known.cmp(id))
}

/// Makes room for one more entry, growing by an eighth of the length plus 8 instead of
/// doubling, so that a large vector keeps at most about 11 % of its capacity unused.
pub(super) fn reserve_one<T>(board: &mut Vec<T>) {
    if board.len() == board.capacity() {
        board.reserve_exact(board.len() / 8 + 8);
    }
}

fn lock_histogram(histogram: &Mutex<Histogram>) -> std::sync::MutexGuard<'_, Histogram> {
    histogram
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_first_fitting_bucket() {
        let mut histogram = Histogram::new(&LATENCY_BUCKETS);
        histogram.record(Duration::from_millis(2500));
        histogram.record(Duration::from_secs(16));
        histogram.record(Duration::from_secs(45));
        assert_eq!(histogram.buckets[5], 1);
        assert_eq!(histogram.buckets[8], 1);
        assert_eq!(histogram.over, 1);
        assert_eq!(histogram.count, 3);
        assert_eq!(histogram.max_seconds, 45.0);
    }

    fn id(raw: &str) -> ThermostatId {
        ThermostatId::parse(raw).expect("valid uuid")
    }

    #[test]
    fn board_lists_statuses_sorted_by_uuid() {
        let board = StatusBoard::new();
        for raw in ["c3", "a1", "b2"] {
            board.update(&id(raw), |status| status.polls += 1);
        }
        board.update(&id("a1"), |status| status.polls += 1);

        let all = board.all();
        let ids: Vec<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a1", "b2", "c3"]);
        assert_eq!(board.get(&id("a1")).map(|status| status.polls), Some(2));
        assert_eq!(board.get(&id("b2")).map(|status| status.polls), Some(1));
        assert_eq!(board.get(&id("d4")), None);
    }

    #[test]
    fn board_new_entry_starts_online() {
        let board = StatusBoard::new();
        board.update(&id("a1"), |_| {});
        let status = board.get(&id("a1")).expect("entry created by update");
        assert!(status.online);
        assert_eq!(status.polls, 0);
    }

    #[test]
    fn board_spare_capacity_stays_small() {
        let board = StatusBoard::new();
        for index in 0..1000 {
            board.update(&id(&format!("unit{index:04}")), |_| {});
        }
        let capacity = board.lock().capacity();
        assert!(
            capacity <= 1000 + 1000 / 8 + 8,
            "1,000 statuses in a board of capacity {capacity}"
        );
    }

    #[test]
    fn board_records_lateness_apart_from_latency() {
        let board = StatusBoard::new();
        board.record_lateness(Duration::from_micros(1500));
        board.record_lateness(Duration::from_millis(300));
        let lateness = board.lateness();
        assert_eq!(lateness.buckets[1], 1, "1.5 ms lands under 2 ms");
        assert_eq!(lateness.buckets[8], 1, "300 ms lands under 500 ms");
        assert_eq!(lateness.max_seconds, 0.3);
        assert_eq!(board.latency().count, 0);
    }
}
