//! When the daily retention run is due. A pure function of the last run and the local
//! time, so that a daemon that was down at the configured hour still runs it on return.

use jiff::civil::Time;
use jiff::{Timestamp, ZonedDateTime};

/// Returns true when today's retention hour (local time in `now`'s time zone) has passed
/// and the last run was before it. It is therefore due at most once per local day, and
/// as soon as the daemon is back when it was down at that hour.
///
/// On a day when `hour:00` does not exist (a DST gap), the boundary is the first instant
/// after the gap. On a day when it occurs twice, the boundary is the first occurrence.
/// An `hour` above 23 is invalid and never due.
pub fn retention_due(last_run: Option<Timestamp>, now: ZonedDateTime, hour: u8) -> bool {
    let Some(boundary) = todays_boundary(&now, hour) else {
        return false;
    };

    let hour_has_passed = now.timestamp() >= boundary;
    let not_run_since = last_run.is_none_or(|last| last < boundary);
    hour_has_passed && not_run_since
}

/// Returns the instant of `hour:00` today in `now`'s time zone, with jiff's "compatible"
/// disambiguation: later across a gap, earlier across a fold.
fn todays_boundary(now: &ZonedDateTime, hour: u8) -> Option<Timestamp> {
    let hour = i8::try_from(hour).ok().filter(|hour| *hour <= 23)?;
    let time = Time::new(hour, 0, 0, 0).ok()?;
    let local = now.date().to_datetime(time);
    local
        .to_zoned_datetime(now.time_zone().clone())
        .ok()
        .map(|zoned| zoned.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> ZonedDateTime {
        text.parse().expect("valid zoned test time")
    }

    fn instant(text: &str) -> Timestamp {
        local(text).timestamp()
    }

    #[test]
    fn due_is_false_before_the_hour() {
        let now = local("2024-05-01T01:59:59-04:00[America/New_York]");
        assert!(!retention_due(None, now, 2));
    }

    #[test]
    fn due_on_first_run_after_the_hour() {
        let now = local("2024-05-01T02:00:00-04:00[America/New_York]");
        assert!(retention_due(None, now, 2));
    }

    #[test]
    fn due_once_per_day() {
        let last = instant("2024-05-01T02:00:03-04:00[America/New_York]");
        let now = local("2024-05-01T23:00:00-04:00[America/New_York]");
        assert!(!retention_due(Some(last), now, 2));
    }

    #[test]
    fn due_next_day_after_the_hour() {
        let last = instant("2024-05-01T02:00:03-04:00[America/New_York]");
        let next_day = local("2024-05-02T02:00:00-04:00[America/New_York]");
        assert!(retention_due(Some(last), next_day, 2));
    }

    #[test]
    fn due_when_daemon_was_down_at_the_hour() {
        // Last run yesterday; the daemon was down from 01:00 to 09:15 today.
        let last = instant("2024-05-01T02:00:03-04:00[America/New_York]");
        let back = local("2024-05-02T09:15:00-04:00[America/New_York]");
        assert!(retention_due(Some(last), back, 2));
    }

    #[test]
    fn due_uses_local_not_utc_day() {
        // 21:30 local on May 1 is already May 2 in UTC; the run at 02:00 local that day
        // must still count for May 1.
        let last = instant("2024-05-01T02:00:03-04:00[America/New_York]");
        let evening = local("2024-05-01T21:30:00-04:00[America/New_York]");
        assert!(!retention_due(Some(last), evening, 2));
    }

    #[test]
    fn due_on_spring_forward_day_after_the_gap() {
        // 2024-03-10: New York clocks jump from 02:00 EST to 03:00 EDT, so 02:00 does
        // not exist and the boundary is 03:00 EDT.
        let last = instant("2024-03-09T02:00:03-05:00[America/New_York]");
        let before_gap = local("2024-03-10T01:59:00-05:00[America/New_York]");
        let after_gap = local("2024-03-10T03:00:00-04:00[America/New_York]");
        assert!(!retention_due(Some(last), before_gap, 2));
        assert!(retention_due(Some(last), after_gap, 2));
    }

    #[test]
    fn due_once_on_fall_back_day() {
        // 2024-11-03: 01:00-02:00 happens twice in New York. After a run in the first
        // 01:30 (EDT), the second 01:30 (EST) must not run again.
        let first_pass = local("2024-11-03T01:30:00-04:00[America/New_York]");
        let second_pass = local("2024-11-03T01:30:00-05:00[America/New_York]");
        let last = first_pass.timestamp();
        assert!(retention_due(None, first_pass, 1));
        assert!(!retention_due(Some(last), second_pass, 1));
    }

    #[test]
    fn due_rejects_invalid_hour() {
        let now = local("2024-05-01T23:59:00-04:00[America/New_York]");
        assert!(!retention_due(None, now, 24));
    }
}
