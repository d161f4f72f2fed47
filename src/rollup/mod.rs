//! Per-minute summaries of raw readings, and the rule for when a minute is closed.
//!
//! Everything here is a pure function of its arguments: no database, no clock, no
//! logging. The store reads the rows, calls these functions and writes the results, so
//! the rules can be tested with explicit timestamps.

pub mod gaps;
pub mod retention;

pub use gaps::{failure_window, missing_ranges};
pub use retention::retention_due;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::reading::{Tmode, Tstate};

const MINUTE: SignedDuration = SignedDuration::from_secs(60);
const NANOS_PER_MINUTE: i128 = 60_000_000_000;

/// The fields of one successful poll that a minute row summarizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinuteSample {
    pub ts: Timestamp,
    pub temp: Option<f64>,
    pub t_heat: Option<f64>,
    pub t_cool: Option<f64>,
    pub tmode: Option<Tmode>,
    pub tstate: Option<Tstate>,
    pub local_temp: Option<f64>,
}

/// One thermostat's summary of one minute: a row of `minute_readings` without the id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinuteRow {
    pub minute_start: Timestamp,
    /// Mean of the non-null indoor temperatures, `None` when there were none.
    pub temp_avg: Option<f64>,
    /// Latest non-null heat setpoint in the minute.
    pub t_heat_last: Option<f64>,
    /// Latest non-null cool setpoint in the minute.
    pub t_cool_last: Option<f64>,
    /// Latest non-null mode in the minute.
    pub tmode_last: Option<Tmode>,
    /// Percentage of samples with a known `tstate` that were heating or cooling, rounded
    /// to 0.1; `None` when no sample reported a `tstate`.
    pub hvac_runtime_percent: Option<f64>,
    /// Successful polls.
    pub poll_count: u32,
    /// Failed polls.
    pub poll_failures: u32,
    /// Mean of the non-null outside temperatures.
    pub local_temp_avg: Option<f64>,
}

/// Summarizes one thermostat's successful polls (`samples`, in any order) and failed
/// poll count of the minute that starts at `minute_start`.
pub fn summarize_minute(
    minute_start: Timestamp,
    samples: &[MinuteSample],
    failures: u32,
) -> MinuteRow {
    MinuteRow {
        minute_start,
        temp_avg: mean(samples.iter().filter_map(|sample| sample.temp)),
        t_heat_last: latest(samples, |sample| sample.t_heat),
        t_cool_last: latest(samples, |sample| sample.t_cool),
        tmode_last: latest(samples, |sample| sample.tmode),
        hvac_runtime_percent: runtime_percent(samples),
        poll_count: u32::try_from(samples.len()).unwrap_or(u32::MAX),
        poll_failures: failures,
        local_temp_avg: mean(samples.iter().filter_map(|sample| sample.local_temp)),
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0u32), |(sum, count), value| (sum + value, count + 1));
    (count > 0).then(|| sum / f64::from(count))
}

/// Returns the field of the newest sample whose field is not `None`.
fn latest<T: Copy>(
    samples: &[MinuteSample],
    field: impl Fn(&MinuteSample) -> Option<T>,
) -> Option<T> {
    samples
        .iter()
        .filter_map(|sample| field(sample).map(|value| (sample.ts, value)))
        .max_by_key(|(ts, _)| *ts)
        .map(|(_, value)| value)
}

fn runtime_percent(samples: &[MinuteSample]) -> Option<f64> {
    let known: Vec<Tstate> = samples.iter().filter_map(|sample| sample.tstate).collect();
    if known.is_empty() {
        return None;
    }

    let running = known.iter().filter(|tstate| tstate.is_running()).count();
    let percent = running as f64 * 100.0 / known.len() as f64;
    Some((percent * 10.0).round() / 10.0)
}

/// Returns the start of the minute that contains `ts`.
pub fn minute_start(ts: Timestamp) -> Timestamp {
    let nanos = ts.as_nanosecond();
    let floored = nanos - nanos.rem_euclid(NANOS_PER_MINUTE);
    // Only a timestamp in the first minute of jiff's range can floor below its minimum;
    // keep `ts` itself there instead of failing.
    Timestamp::from_nanosecond(floored).unwrap_or(ts)
}

/// How far the rollup has got, as stored in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupProgress {
    /// Every minute up to and including the one starting at this instant is rolled up.
    RolledThrough(Timestamp),
    /// No minute was rolled up yet (first start); the oldest stored reading or failure
    /// is `oldest_data`, `None` when the tables are empty.
    NotStarted { oldest_data: Option<Timestamp> },
}

/// A run of consecutive minutes: the minute starts `first`, `first + 1 min`, … before `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteRange {
    pub first: Timestamp,
    pub end: Timestamp,
}

impl MinuteRange {
    /// Number of minutes in the range.
    pub fn len(&self) -> usize {
        let minutes = self.end.duration_since(self.first).as_secs() / 60;
        usize::try_from(minutes).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the first `max_minutes` minutes of the range (all of it when shorter).
    pub fn take(&self, max_minutes: usize) -> MinuteRange {
        let minutes = i32::try_from(max_minutes).unwrap_or(i32::MAX);
        let end = self
            .first
            .checked_add(MINUTE.saturating_mul(minutes))
            .map_or(self.end, |end| end.min(self.end));
        MinuteRange {
            first: self.first,
            end,
        }
    }
}

/// Returns the closed minutes that are not rolled up yet, oldest first, or `None`.
///
/// A minute is closed once `now >= minute end + grace` and no reading or failure older
/// than the minute's end is still waiting to be written (`oldest_unwritten`). Minutes at
/// or before the checkpoint are never returned, so a minute is rolled up at most once.
/// On first start the range begins with the minute of the oldest stored data.
pub fn minutes_ready(
    progress: RollupProgress,
    now: Timestamp,
    grace: Duration,
    oldest_unwritten: Option<Timestamp>,
) -> Option<MinuteRange> {
    let first = match progress {
        RollupProgress::RolledThrough(last) => minute_start(last).checked_add(MINUTE).ok()?,
        RollupProgress::NotStarted { oldest_data } => minute_start(oldest_data?),
    };

    // Minutes that end at or before `now - grace` are closed in time: their starts are
    // before the start of the minute containing `now - grace`.
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    let mut end = minute_start(now.checked_sub(grace).ok()?);
    if let Some(oldest) = oldest_unwritten {
        end = end.min(minute_start(oldest));
    }

    (first < end).then_some(MinuteRange { first, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("valid test timestamp")
    }

    fn sample(ts: &str) -> MinuteSample {
        MinuteSample {
            ts: at(ts),
            temp: None,
            t_heat: None,
            t_cool: None,
            tmode: None,
            tstate: None,
            local_temp: None,
        }
    }

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn summary_averages_only_known_temps() {
        let samples = [
            MinuteSample {
                temp: Some(70.0),
                ..sample("2024-05-01T12:00:05Z")
            },
            MinuteSample {
                temp: None,
                ..sample("2024-05-01T12:00:10Z")
            },
            MinuteSample {
                temp: Some(71.0),
                ..sample("2024-05-01T12:00:15Z")
            },
        ];
        let row = summarize_minute(at("2024-05-01T12:00:00Z"), &samples, 0);
        assert_eq!(row.temp_avg, Some(70.5));
    }

    #[test]
    fn summary_without_values_is_null() {
        let samples = [sample("2024-05-01T12:00:05Z")];
        let row = summarize_minute(at("2024-05-01T12:00:00Z"), &samples, 0);
        assert_eq!(row.temp_avg, None);
        assert_eq!(row.local_temp_avg, None);
        assert_eq!(row.hvac_runtime_percent, None);
        assert_eq!(row.t_heat_last, None);
    }

    #[test]
    fn summary_takes_latest_known_setpoint() {
        // Unordered input; the newest sample has no t_heat, so the one before it wins.
        let samples = [
            MinuteSample {
                t_heat: Some(68.0),
                tmode: Some(Tmode::Heat),
                ..sample("2024-05-01T12:00:30Z")
            },
            MinuteSample {
                t_heat: Some(66.0),
                ..sample("2024-05-01T12:00:05Z")
            },
            MinuteSample {
                t_cool: Some(76.0),
                tmode: Some(Tmode::Cool),
                ..sample("2024-05-01T12:00:55Z")
            },
        ];
        let row = summarize_minute(at("2024-05-01T12:00:00Z"), &samples, 0);
        assert_eq!(row.t_heat_last, Some(68.0));
        assert_eq!(row.t_cool_last, Some(76.0));
        assert_eq!(row.tmode_last, Some(Tmode::Cool));
    }

    #[test]
    fn summary_runtime_counts_only_known_tstate() {
        // 1 heating, 1 cooling, 1 idle, 1 unknown: 2 of 3 known are running.
        let samples = [
            MinuteSample {
                tstate: Some(Tstate::Heating),
                ..sample("2024-05-01T12:00:05Z")
            },
            MinuteSample {
                tstate: Some(Tstate::Cooling),
                ..sample("2024-05-01T12:00:10Z")
            },
            MinuteSample {
                tstate: Some(Tstate::Idle),
                ..sample("2024-05-01T12:00:15Z")
            },
            MinuteSample {
                tstate: None,
                ..sample("2024-05-01T12:00:20Z")
            },
        ];
        let row = summarize_minute(at("2024-05-01T12:00:00Z"), &samples, 0);
        assert_eq!(row.hvac_runtime_percent, Some(66.7));
    }

    #[test]
    fn summary_counts_polls_and_failures() {
        let samples = [
            sample("2024-05-01T12:00:05Z"),
            sample("2024-05-01T12:00:10Z"),
        ];
        let row = summarize_minute(at("2024-05-01T12:00:00Z"), &samples, 3);
        assert_eq!(row.poll_count, 2);
        assert_eq!(row.poll_failures, 3);
    }

    #[test]
    fn summary_of_failures_only_has_zero_polls() {
        let row = summarize_minute(at("2024-05-01T12:00:00Z"), &[], 12);
        assert_eq!(row.poll_count, 0);
        assert_eq!(row.poll_failures, 12);
        assert_eq!(row.temp_avg, None);
    }

    #[test]
    fn minute_start_floors_to_the_minute() {
        assert_eq!(
            minute_start(at("2024-05-01T12:00:59.999Z")),
            at("2024-05-01T12:00:00Z")
        );
        assert_eq!(
            minute_start(at("2024-05-01T12:01:00Z")),
            at("2024-05-01T12:01:00Z")
        );
        assert_eq!(
            minute_start(at("1969-12-31T23:59:30Z")),
            at("1969-12-31T23:59:00Z")
        );
    }

    #[test]
    fn ready_waits_for_grace_after_minute_end() {
        let progress = RollupProgress::RolledThrough(at("2024-05-01T11:59:00Z"));
        let before = minutes_ready(progress, at("2024-05-01T12:01:04Z"), GRACE, None);
        let after = minutes_ready(progress, at("2024-05-01T12:01:05Z"), GRACE, None);
        assert_eq!(before, None);
        assert_eq!(
            after,
            Some(MinuteRange {
                first: at("2024-05-01T12:00:00Z"),
                end: at("2024-05-01T12:01:00Z")
            })
        );
    }

    #[test]
    fn ready_never_repeats_the_checkpoint_minute() {
        let progress = RollupProgress::RolledThrough(at("2024-05-01T12:00:00Z"));
        let ready = minutes_ready(progress, at("2024-05-01T12:01:30Z"), GRACE, None);
        assert_eq!(ready, None);
    }

    #[test]
    fn ready_stops_before_unwritten_readings() {
        // Readings from 12:02:30 still buffered (database was down): 12:02 must wait,
        // 12:00 and 12:01 may close.
        let progress = RollupProgress::RolledThrough(at("2024-05-01T11:59:00Z"));
        let ready = minutes_ready(
            progress,
            at("2024-05-01T12:10:00Z"),
            GRACE,
            Some(at("2024-05-01T12:02:30Z")),
        );
        assert_eq!(
            ready,
            Some(MinuteRange {
                first: at("2024-05-01T12:00:00Z"),
                end: at("2024-05-01T12:02:00Z")
            })
        );
    }

    #[test]
    fn ready_allows_minute_ending_at_unwritten_reading() {
        let progress = RollupProgress::RolledThrough(at("2024-05-01T11:59:00Z"));
        let ready = minutes_ready(
            progress,
            at("2024-05-01T12:10:00Z"),
            GRACE,
            Some(at("2024-05-01T12:01:00Z")),
        );
        assert_eq!(ready.map(|range| range.len()), Some(1));
    }

    #[test]
    fn ready_on_first_start_begins_at_oldest_data() {
        let progress = RollupProgress::NotStarted {
            oldest_data: Some(at("2024-05-01T09:30:40Z")),
        };
        let ready = minutes_ready(progress, at("2024-05-01T09:33:10Z"), GRACE, None);
        assert_eq!(
            ready,
            Some(MinuteRange {
                first: at("2024-05-01T09:30:00Z"),
                end: at("2024-05-01T09:33:00Z")
            })
        );
    }

    #[test]
    fn ready_on_first_start_without_data_is_none() {
        let progress = RollupProgress::NotStarted { oldest_data: None };
        let ready = minutes_ready(progress, at("2024-05-01T09:33:10Z"), GRACE, None);
        assert_eq!(ready, None);
    }

    #[test]
    fn ready_after_restart_mid_minute_resumes_next_minute() {
        // The previous run rolled 12:04 and stopped at 12:05:40; the new run starts at
        // 12:05:50 and must neither skip nor repeat 12:05.
        let progress = RollupProgress::RolledThrough(at("2024-05-01T12:04:00Z"));
        let early = minutes_ready(progress, at("2024-05-01T12:05:50Z"), GRACE, None);
        let later = minutes_ready(progress, at("2024-05-01T12:06:05Z"), GRACE, None);
        assert_eq!(early, None);
        assert_eq!(
            later,
            Some(MinuteRange {
                first: at("2024-05-01T12:05:00Z"),
                end: at("2024-05-01T12:06:00Z")
            })
        );
    }

    #[test]
    fn ready_after_long_downtime_covers_every_minute() {
        let progress = RollupProgress::RolledThrough(at("2024-05-01T12:04:00Z"));
        let ready = minutes_ready(progress, at("2024-05-02T12:04:30Z"), GRACE, None);
        assert_eq!(ready.map(|range| range.len()), Some(24 * 60 - 1));
    }

    #[test]
    fn range_take_limits_length() {
        let range = MinuteRange {
            first: at("2024-05-01T12:00:00Z"),
            end: at("2024-05-01T14:00:00Z"),
        };
        assert_eq!(range.take(60).end, at("2024-05-01T13:00:00Z"));
        assert_eq!(range.take(500).end, range.end);
    }
}
