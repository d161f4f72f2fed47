//! The in-memory queue of readings and failures that wait to be written. It is bounded:
//! when full it drops the oldest entry, because recent data is worth more to a site.
//! It does no IO and no logging; the writer reports what it drops.

use std::collections::VecDeque;

use jiff::Timestamp;

use crate::reading::{PollFailure, Reading};
use crate::thermostat::ThermostatId;

/// One poll result waiting to be written.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Reading(Reading),
    Failure(PollFailure),
}

impl Sample {
    pub fn ts(&self) -> Timestamp {
        match self {
            Self::Reading(reading) => reading.ts,
            Self::Failure(failure) => failure.ts,
        }
    }

    pub fn thermostat_id(&self) -> &ThermostatId {
        match self {
            Self::Reading(reading) => &reading.thermostat_id,
            Self::Failure(failure) => &failure.thermostat_id,
        }
    }
}

/// A bounded FIFO of samples in arrival order.
#[derive(Debug)]
pub struct Buffer {
    samples: VecDeque<Sample>,
    limit: usize,
}

impl Buffer {
    /// Creates an empty buffer that holds at most `limit` samples (at least 1).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            samples: VecDeque::with_capacity(limit.min(4096)),
            limit,
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Appends `sample`, dropping the oldest entry when the buffer is full. Returns the
    /// number of entries dropped (0 or 1).
    pub fn push(&mut self, sample: Sample) -> u64 {
        let mut dropped = 0;
        while self.samples.len() >= self.limit {
            self.samples.pop_front();
            dropped += 1;
        }
        self.samples.push_back(sample);
        dropped
    }

    /// Returns copies of the oldest `max` samples without removing them, so that a
    /// failed write leaves them in place.
    pub fn front(&self, max: usize) -> Vec<Sample> {
        self.samples.iter().take(max).cloned().collect()
    }

    /// Removes the oldest `count` samples, after they were written or skipped.
    pub fn remove_front(&mut self, count: usize) {
        let count = count.min(self.samples.len());
        self.samples.drain(..count);
    }

    /// Returns the oldest timestamp of any buffered sample. Samples from different
    /// thermostats can arrive slightly out of order, so this scans the whole buffer.
    pub fn oldest_ts(&self) -> Option<Timestamp> {
        self.samples.iter().map(Sample::ts).min()
    }

    /// Counts buffered readings and failures, in that order.
    pub fn counts(&self) -> (usize, usize) {
        let readings = self
            .samples
            .iter()
            .filter(|sample| matches!(sample, Sample::Reading(_)))
            .count();
        (readings, self.samples.len() - readings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(second: i64) -> Sample {
        Sample::Failure(PollFailure {
            thermostat_id: ThermostatId::parse("aa").expect("valid id"),
            ts: Timestamp::from_second(second).expect("valid second"),
            kind: "timeout",
        })
    }

    #[test]
    fn push_drops_oldest_when_full() {
        let mut buffer = Buffer::new(2);
        assert_eq!(buffer.push(failure(1)), 0);
        assert_eq!(buffer.push(failure(2)), 0);
        assert_eq!(buffer.push(failure(3)), 1);
        assert_eq!(buffer.front(10), vec![failure(2), failure(3)]);
    }

    #[test]
    fn front_keeps_samples_until_removed() {
        let mut buffer = Buffer::new(10);
        buffer.push(failure(1));
        buffer.push(failure(2));
        assert_eq!(buffer.front(1), vec![failure(1)]);
        assert_eq!(buffer.len(), 2);
        buffer.remove_front(1);
        assert_eq!(buffer.front(10), vec![failure(2)]);
    }

    #[test]
    fn oldest_ts_scans_out_of_order_samples() {
        let mut buffer = Buffer::new(10);
        buffer.push(failure(5));
        buffer.push(failure(3));
        assert_eq!(
            buffer.oldest_ts(),
            Some(Timestamp::from_second(3).expect("valid second"))
        );
    }
}
