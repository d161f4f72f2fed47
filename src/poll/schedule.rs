//! When to poll one thermostat next: a fixed grid of ticks, a missed tick skipped
//! rather than queued, a growing delay after consecutive failures, and offline only
//! after several failures in a row. Pure: the caller passes the instants.

use std::time::{Duration, Instant};

/// Scheduling rules shared by every thermostat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleOptions {
    pub interval: Duration,
    /// Upper bound of the delay after repeated failures.
    pub max_backoff: Duration,
    /// Consecutive failures after which a thermostat counts as offline.
    pub offline_after_failures: u32,
}

/// The result of a poll, as far as scheduling is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// The change in a thermostat's state after a poll, for logging and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transition {
    pub went_offline: bool,
    pub came_online: bool,
    /// Grid ticks that passed without a poll because the previous one was still running
    /// or the schedule was backing off.
    pub skipped_ticks: u32,
    /// How long after its due time the poll started.
    pub lateness: Duration,
}

/// The schedule of one thermostat.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSchedule {
    options: ScheduleOptions,
    /// The grid: polls are due at `origin + k * interval`.
    origin: Instant,
    next_due: Instant,
    consecutive_failures: u32,
    online: bool,
}

impl PollSchedule {
    /// Starts a schedule whose first poll is due at `first_due`. Spreading `first_due`
    /// over one interval keeps a fleet from polling all at once.
    pub fn new(options: ScheduleOptions, first_due: Instant) -> Self {
        Self {
            options,
            origin: first_due,
            next_due: first_due,
            consecutive_failures: 0,
            online: true,
        }
    }

    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    pub fn is_online(&self) -> bool {
        self.online
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Records a poll that started at `started` and ended at `finished`. The next poll
    /// is due at the first grid tick after `finished` that is also at least one
    /// (backed-off) delay after this poll's due tick. The delay counts from the due
    /// tick, not from `started`, because a timer that wakes a little late would
    /// otherwise push every poll onto the following tick.
    pub fn record(&mut self, started: Instant, finished: Instant, outcome: Outcome) -> Transition {
        let mut transition = Transition {
            lateness: started.saturating_duration_since(self.next_due),
            ..Transition::default()
        };
        match outcome {
            Outcome::Success => {
                transition.came_online = !self.online;
                self.online = true;
                self.consecutive_failures = 0;
            }
            Outcome::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.online && self.consecutive_failures >= self.options.offline_after_failures {
                    self.online = false;
                    transition.went_offline = true;
                }
            }
        }

        let earliest = finished.max(self.next_due + self.delay());
        let next = self.first_tick_at_or_after(earliest);
        transition.skipped_ticks = self.ticks_between(self.next_due, next).saturating_sub(1);
        self.next_due = next;
        transition
    }

    /// Returns the delay between poll starts: the interval, doubled for each
    /// consecutive failure after the first, capped at `max_backoff`.
    pub fn delay(&self) -> Duration {
        let doublings = self.consecutive_failures.saturating_sub(1).min(16);
        let backed_off = self.options.interval.saturating_mul(1 << doublings);
        backed_off.min(self.options.max_backoff.max(self.options.interval))
    }

    fn first_tick_at_or_after(&self, instant: Instant) -> Instant {
        let interval = self.options.interval.as_nanos().max(1);
        let since_origin = instant.saturating_duration_since(self.origin).as_nanos();
        let ticks = since_origin.div_ceil(interval);
        let offset = u64::try_from(ticks * interval).unwrap_or(u64::MAX);
        self.origin + Duration::from_nanos(offset)
    }

    fn ticks_between(&self, from: Instant, to: Instant) -> u32 {
        let interval = self.options.interval.as_nanos().max(1);
        let elapsed = to.saturating_duration_since(from).as_nanos();
        u32::try_from(elapsed / interval).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Duration = Duration::from_secs(5);

    fn options() -> ScheduleOptions {
        ScheduleOptions {
            interval: FIVE,
            max_backoff: Duration::from_secs(60),
            offline_after_failures: 3,
        }
    }

    fn secs(value: f64) -> Duration {
        Duration::from_secs_f64(value)
    }

    #[test]
    fn fast_answer_keeps_the_grid() {
        let t0 = Instant::now();
        let mut schedule = PollSchedule::new(options(), t0);
        let transition = schedule.record(t0, t0 + secs(2.5), Outcome::Success);
        assert_eq!(schedule.next_due(), t0 + FIVE);
        assert_eq!(transition.skipped_ticks, 0);
    }

    #[test]
    fn late_timer_wake_keeps_the_grid() {
        let t0 = Instant::now();
        let mut schedule = PollSchedule::new(options(), t0);
        let started = t0 + Duration::from_millis(2);
        let transition = schedule.record(started, started + secs(0.5), Outcome::Success);
        assert_eq!(schedule.next_due(), t0 + FIVE);
        assert_eq!(transition.lateness, Duration::from_millis(2));
    }

    #[test]
    fn slow_answer_skips_missed_ticks() {
        // A 16 s reply: the ticks at 5, 10 and 15 s are skipped, not queued.
        let t0 = Instant::now();
        let mut schedule = PollSchedule::new(options(), t0);
        let transition = schedule.record(t0, t0 + secs(16.2), Outcome::Success);
        assert_eq!(schedule.next_due(), t0 + secs(20.0));
        assert_eq!(transition.skipped_ticks, 3);
    }

    #[test]
    fn reply_on_tick_polls_at_tick() {
        let t0 = Instant::now();
        let mut schedule = PollSchedule::new(options(), t0);
        schedule.record(t0, t0 + FIVE, Outcome::Success);
        assert_eq!(schedule.next_due(), t0 + FIVE);
    }

    #[test]
    fn failures_back_off_and_cap() {
        let t0 = Instant::now();
        let mut schedule = PollSchedule::new(options(), t0);
        let mut start = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            schedule.record(start, start + secs(0.1), Outcome::Failure);
            delays.push(schedule.next_due() - start);
            start = schedule.next_due();
        }
        let expected: Vec<Duration> = [5, 10, 20, 40, 60, 60, 60, 60]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        assert_eq!(delays, expected);
    }

    #[test]
    fn one_timeout_does_not_mark_offline() {
        let t0 = Instant::now();
        let mut schedule = PollSchedule::new(options(), t0);
        let transition = schedule.record(t0, t0 + secs(25.0), Outcome::Failure);
        assert!(!transition.went_offline);
        assert!(schedule.is_online());
    }

    #[test]
    fn offline_after_three_failures_in_a_row() {
        let t0 = Instant::now();
        let mut schedule = PollSchedule::new(options(), t0);
        let mut transitions = Vec::new();
        for _ in 0..4 {
            let start = schedule.next_due();
            transitions.push(schedule.record(start, start + secs(1.0), Outcome::Failure));
        }
        let offline: Vec<bool> = transitions.iter().map(|t| t.went_offline).collect();
        assert_eq!(offline, [false, false, true, false]);
        assert!(!schedule.is_online());
    }

    #[test]
    fn success_resets_failures_and_reports_return() {
        let t0 = Instant::now();
        let mut schedule = PollSchedule::new(options(), t0);
        for _ in 0..3 {
            let start = schedule.next_due();
            schedule.record(start, start + secs(1.0), Outcome::Failure);
        }
        let start = schedule.next_due();
        let transition = schedule.record(start, start + secs(1.0), Outcome::Success);
        assert!(transition.came_online);
        assert_eq!(schedule.consecutive_failures(), 0);
        assert_eq!(schedule.next_due(), start + FIVE);
    }

    #[test]
    fn failure_between_successes_is_not_offline() {
        // Flapping device: every other poll fails, never three in a row.
        let t0 = Instant::now();
        let mut schedule = PollSchedule::new(options(), t0);
        for round in 0..10 {
            let start = schedule.next_due();
            let outcome = if round % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            let transition = schedule.record(start, start + secs(2.0), outcome);
            assert!(!transition.went_offline, "round {round}");
        }
    }
}
