//! Liveness facts that the poller and the store publish and the API reads, without a
//! lock and without a database round trip.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Shared health state. Timestamps are Unix seconds, 0 meaning "never". The heartbeats
/// record that the poll tasks and the store thread are making progress.
#[derive(Debug, Default)]
pub struct Health {
    database_connected: AtomicBool,
    last_database_write: AtomicI64,
    last_poll_success: AtomicI64,
    poll_heartbeat: AtomicI64,
    store_heartbeat: AtomicI64,
    started_at: AtomicI64,
    thermostats_known: AtomicU64,
    readings_dropped: AtomicU64,
    readings_buffered: AtomicU64,
    database_writes: AtomicU64,
    database_write_micros: AtomicU64,
}

/// A copy of the health state at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub database_connected: bool,
    pub last_database_write: i64,
    pub last_poll_success: i64,
    pub poll_heartbeat: i64,
    pub store_heartbeat: i64,
    pub started_at: i64,
    pub thermostats_known: u64,
    pub readings_dropped: u64,
    pub readings_buffered: u64,
    /// Batch transactions written since start.
    pub database_writes: u64,
    /// Total time spent writing those batches, µs.
    pub database_write_micros: u64,
}

impl Health {
    pub fn new(started_at: i64) -> Self {
        let health = Self::default();
        health.started_at.store(started_at, Ordering::Relaxed);
        health
    }

    pub fn set_database_connected(&self, connected: bool) {
        self.database_connected.store(connected, Ordering::Relaxed);
    }

    pub fn record_database_write(&self, at: i64) {
        self.last_database_write.store(at, Ordering::Relaxed);
    }

    pub fn record_poll_success(&self, at: i64) {
        self.last_poll_success.fetch_max(at, Ordering::Relaxed);
    }

    pub fn record_poll_heartbeat(&self, at: i64) {
        self.poll_heartbeat.fetch_max(at, Ordering::Relaxed);
    }

    pub fn record_store_heartbeat(&self, at: i64) {
        self.store_heartbeat.fetch_max(at, Ordering::Relaxed);
    }

    /// Counts one batch transaction that took `duration`.
    pub fn record_database_write_duration(&self, duration: std::time::Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.database_writes.fetch_add(1, Ordering::Relaxed);
        self.database_write_micros
            .fetch_add(micros, Ordering::Relaxed);
    }

    pub fn set_thermostats_known(&self, count: u64) {
        self.thermostats_known.store(count, Ordering::Relaxed);
    }

    pub fn set_readings_buffered(&self, count: u64) {
        self.readings_buffered.store(count, Ordering::Relaxed);
    }

    pub fn add_readings_dropped(&self, count: u64) {
        self.readings_dropped.fetch_add(count, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            database_connected: self.database_connected.load(Ordering::Relaxed),
            last_database_write: self.last_database_write.load(Ordering::Relaxed),
            last_poll_success: self.last_poll_success.load(Ordering::Relaxed),
            poll_heartbeat: self.poll_heartbeat.load(Ordering::Relaxed),
            store_heartbeat: self.store_heartbeat.load(Ordering::Relaxed),
            started_at: self.started_at.load(Ordering::Relaxed),
            thermostats_known: self.thermostats_known.load(Ordering::Relaxed),
            readings_dropped: self.readings_dropped.load(Ordering::Relaxed),
            readings_buffered: self.readings_buffered.load(Ordering::Relaxed),
            database_writes: self.database_writes.load(Ordering::Relaxed),
            database_write_micros: self.database_write_micros.load(Ordering::Relaxed),
        }
    }
}
