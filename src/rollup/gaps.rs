//! Gap analysis: which closed minutes of a window have no minute row, as ranges of
//! consecutive missing minutes. Pure; `store::report` reads the rows and the poll
//! failures around each range.

use jiff::{SignedDuration, Timestamp};

use super::{MINUTE, MinuteRange, minute_start};

/// Returns the runs of minutes in `window` that `present` does not contain, oldest first.
/// `present` contains minute starts of one thermostat in any order; starts outside the
/// window are ignored. Consecutive missing minutes merge into one range.
pub fn missing_ranges(present: &[Timestamp], window: MinuteRange) -> Vec<MinuteRange> {
    let first = minute_start(window.first);
    let end = minute_start(window.end);
    let mut seen: Vec<Timestamp> = present
        .iter()
        .map(|ts| minute_start(*ts))
        .filter(|ts| *ts >= first && *ts < end)
        .collect();
    seen.sort();
    seen.dedup();

    let mut ranges = Vec::new();
    let mut cursor = first;
    for minute in seen {
        if minute > cursor {
            ranges.push(MinuteRange {
                first: cursor,
                end: minute,
            });
        }
        cursor = minute + MINUTE;
    }
    if cursor < end {
        ranges.push(MinuteRange { first: cursor, end });
    }
    ranges
}

/// Widens `range` by `margin` on both sides: the window in which poll failures explain
/// a gap.
pub fn failure_window(range: MinuteRange, margin: SignedDuration) -> MinuteRange {
    MinuteRange {
        first: range.first.checked_sub(margin).unwrap_or(range.first),
        end: range.end.checked_add(margin).unwrap_or(range.end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minute * 60).expect("valid time")
    }

    fn window(first: i64, end: i64) -> MinuteRange {
        MinuteRange {
            first: at(first),
            end: at(end),
        }
    }

    #[test]
    fn full_window_has_no_gap() {
        let present: Vec<_> = (0..10).map(at).collect();
        assert!(missing_ranges(&present, window(0, 10)).is_empty());
    }

    #[test]
    fn holes_merge_into_ranges() {
        // Present 0-2, 5, 9: missing 3-4 and 6-8.
        let present = [at(9), at(0), at(1), at(2), at(5)];
        assert_eq!(
            missing_ranges(&present, window(0, 10)),
            vec![window(3, 5), window(6, 9)]
        );
    }

    #[test]
    fn missing_edges_reported() {
        let present = [at(2), at(3)];
        assert_eq!(
            missing_ranges(&present, window(0, 6)),
            vec![window(0, 2), window(4, 6)]
        );
    }

    #[test]
    fn no_rows_is_one_range() {
        assert_eq!(missing_ranges(&[], window(0, 60)), vec![window(0, 60)]);
        assert_eq!(missing_ranges(&[], window(0, 60))[0].len(), 60);
    }

    #[test]
    fn rows_outside_window_and_duplicates_ignored() {
        let present = [at(-5), at(1), at(1), at(20)];
        assert_eq!(
            missing_ranges(&present, window(0, 3)),
            vec![window(0, 1), window(2, 3)]
        );
    }

    #[test]
    fn failure_window_widens_both_sides() {
        let widened = failure_window(window(10, 12), SignedDuration::from_mins(5));
        assert_eq!(widened, window(5, 17));
    }
}
