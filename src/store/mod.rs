//! The store: the only code that talks to PostgreSQL.
//!
//! One named thread (`store`) owns the only `postgres::Client`. Pollers hand it readings
//! and failures with [`StoreHandle::submit_reading`] and [`StoreHandle::submit_failure`],
//! which never block and never await. Requests that need an answer (`upsert_thermostat`,
//! `load_thermostats`, …) travel to the same thread with a reply channel and fail fast
//! with [`StoreError::Unavailable`] while the database is away. The blocking client is
//! never called from async code.
//!
//! The thread batches samples into one transaction per flush, rolls up closed minutes,
//! runs the daily retention, and keeps a bounded backlog while PostgreSQL is down. See
//! `worker.rs` for the loop and its logging.
//!
//! `report` is the exception: the read-only queries of the `db` and `tstat list`
//! commands, on a client that the command opens on its own main thread.

pub mod buffer;
pub mod migrate;
pub mod queries;
pub mod report;
mod sync;
pub use sync::{Claim, MinuteBatch, MinuteKey, OutboxBatch, ParkEffects, Parked, SyncBacklog};
mod worker;
pub mod writer;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use async_channel::{Receiver, Sender};

use crate::clock::Clock;
use crate::control::SettingsChange;
use crate::health::Health;
use crate::reading::{PollFailure, Reading};
use crate::thermostat::{ThermostatId, ThermostatRecord};
use buffer::Sample;
pub use queries::{CurrentState, ThermostatOverview};

/// Capacity of the channel between the pollers and the store thread. The thread drains
/// it into the buffer between statements, so it only has to cover one statement's time
/// (at most the statement timeout of 30 s); 8192 is 30 s of 270 readings per second.
const SAMPLE_CHANNEL_CAPACITY: usize = 8192;

/// Capacity of the request channel. Callers await when it is full.
const REQUEST_CHANNEL_CAPACITY: usize = 64;

/// Settings of the store.
#[derive(Clone)]
pub struct StoreOptions {
    /// PostgreSQL URL, for example `postgresql://thermostat@127.0.0.1:5432/thermostats`.
    pub url: String,
    /// Password, kept apart from the URL so that the URL can be logged.
    pub password: Option<String>,
    /// Maximum readings and failures held in memory while the database is away; the
    /// oldest are dropped beyond it.
    pub buffer_limit: usize,
    /// Time between batch writes.
    pub flush_interval: Duration,
    /// Maximum time to establish a connection.
    pub connect_timeout: Duration,
    /// Time after a minute's end before it is rolled up, for readings still in flight.
    pub rollup_grace: Duration,
    /// Days of raw readings and poll failures to keep.
    pub raw_retention_days: u32,
    /// Days of minute rows to keep.
    pub minute_retention_days: u32,
    /// Local hour (0-23) after which the daily retention runs.
    pub retention_hour: u8,
    /// Time zone of `retention_hour`.
    pub time_zone: jiff::tz::TimeZone,
}

impl StoreOptions {
    /// Returns options with the defaults: 20,000 buffered samples, a flush every second,
    /// a 5 s connect timeout, 5 s rollup grace, 14 days of raw and 365 days of minute data,
    /// retention after 02:00 in the system time zone.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            buffer_limit: 20_000,
            flush_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            rollup_grace: Duration::from_secs(5),
            raw_retention_days: 14,
            minute_retention_days: 365,
            retention_hour: 2,
            time_zone: jiff::tz::TimeZone::system(),
        }
    }
}

/// Hides the password, which `postgres::Config`'s own Debug would print.
impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("buffer_limit", &self.buffer_limit)
            .field("flush_interval", &self.flush_interval)
            .field("connect_timeout", &self.connect_timeout)
            .field("rollup_grace", &self.rollup_grace)
            .field("raw_retention_days", &self.raw_retention_days)
            .field("minute_retention_days", &self.minute_retention_days)
            .field("retention_hour", &self.retention_hour)
            .field("time_zone", &self.time_zone)
            .finish()
    }
}

/// Error from a store request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The database cannot be reached right now; retry later.
    Unavailable(String),
    /// A statement failed for a reason that a retry will not fix.
    Query(String),
    /// A stored row cannot be turned into a value, for example an invalid address.
    InvalidRow(String),
    /// Applying the schema migrations failed.
    Migration(String),
    /// The store thread has stopped.
    Closed,
}

impl StoreError {
    /// Returns true when retrying later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Classifies a PostgreSQL error raised during `step`.
    pub(crate) fn from_postgres(step: &str, error: &postgres::Error) -> Self {
        if is_transient(error) {
            Self::Unavailable(format!("{step}: {error}"))
        } else {
            Self::Query(format!("{step}: {}", describe(error)))
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(detail) => write!(f, "database unavailable: {detail}"),
            Self::Query(detail) => write!(f, "database query failed: {detail}"),
            Self::InvalidRow(detail) => write!(f, "invalid stored row: {detail}"),
            Self::Migration(detail) => write!(f, "schema migration failed: {detail}"),
            Self::Closed => f.write_str("the store thread has stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Returns true for errors that a later retry can fix: a lost or refused connection, a
/// server shutting down or starting, a timeout, a serialization failure or a deadlock.
pub(crate) fn is_transient(error: &postgres::Error) -> bool {
    let Some(db_error) = error.as_db_error() else {
        // No SQLSTATE: an IO error, a closed connection or a timeout on our side.
        return true;
    };
    let code = db_error.code().code();
    code.starts_with("08")      // connection exception
        || code.starts_with("53") // insufficient resources (disk full, too many connections)
        || code.starts_with("57") // operator intervention: shutdown, cancel, statement timeout
        || code == "40001"        // serialization failure
        || code == "40P01" // deadlock detected
}

/// Returns true for a transient error after which the connection still works, because
/// the server rejected only the statement (disk full, out of memory, statement timeout,
/// serialization failure, deadlock). A lost connection, a server shutting down (57P01 to
/// 57P03) and an error without a SQLSTATE need a reconnect.
pub(crate) fn keeps_connection(sqlstate: Option<&str>) -> bool {
    let Some(code) = sqlstate else {
        return false;
    };
    (code.starts_with("53") && code != "53300")
        || code == "57014"
        || code == "40001"
        || code == "40P01"
}

/// Formats an error with its SQLSTATE and detail, or with its causes, which `Display`
/// leaves out.
pub(crate) fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db_error) => {
            let mut text = format!(
                "{} (SQLSTATE {})",
                db_error.message(),
                db_error.code().code()
            );
            if let Some(detail) = db_error.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        None => with_causes(error),
    }
}

/// Formats an error followed by its causes: a connection error's `Display` shows only
/// "error connecting to server" and keeps "Connection refused" in its source.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Converts a jiff timestamp to the type the postgres crate maps to `timestamptz`.
pub(crate) fn sql_time(ts: jiff::Timestamp) -> SystemTime {
    // Fails only beyond the platform's SystemTime range, which on 64-bit Linux covers
    // all of jiff's years -9999 to 9999.
    SystemTime::try_from(ts).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Converts a `timestamptz` value back to a jiff timestamp.
pub(crate) fn from_sql_time(ts: SystemTime) -> Result<jiff::Timestamp, StoreError> {
    jiff::Timestamp::try_from(ts)
        .map_err(|error| StoreError::InvalidRow(format!("timestamp out of range: {error}")))
}

/// Counts from one flush, returned by [`StoreHandle::flush`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub readings_written: u64,
    pub failures_written: u64,
    pub minutes_rolled_up: u64,
    pub retention_ran: bool,
    /// Samples still buffered after the flush.
    pub still_buffered: usize,
}

/// Outcome of [`Store::shutdown`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Readings written over the store's lifetime.
    pub readings_written: u64,
    /// Failures written over the store's lifetime.
    pub failures_written: u64,
    /// Readings and failures still unwritten when the thread stopped.
    pub unwritten: usize,
    /// Readings and failures dropped because the buffer or channel was full.
    pub dropped: u64,
    /// True when the thread did not stop within the deadline and was left running.
    pub timed_out: bool,
}

enum Request {
    UpsertThermostat {
        record: Box<ThermostatRecord>,
        reply: Sender<Result<ThermostatRecord, StoreError>>,
    },
    LoadThermostats {
        reply: Sender<Result<Vec<ThermostatRecord>, StoreError>>,
    },
    ThermostatOverviews {
        id: Option<ThermostatId>,
        reply: Sender<Result<Vec<ThermostatOverview>, StoreError>>,
    },
    RecordSettings {
        id: ThermostatId,
        change: SettingsChange,
        source: String,
        reply: Sender<Result<(), StoreError>>,
    },
    WaitUntilMigrated {
        deadline: Instant,
        reply: Sender<Result<(), StoreError>>,
    },
    Flush {
        reply: Sender<Result<FlushReport, StoreError>>,
    },
    /// Work of the public server sync (`sync.rs`), which sends its own reply.
    Job { step: &'static str, job: Job },
    Stop {
        deadline: Instant,
        reply: std::sync::mpsc::Sender<ShutdownReport>,
    },
}

/// Statements run on the store thread for a caller, with the connection or the reason
/// there is none and the store clock's time. The job sends its own reply and returns its
/// error, so that the thread notices a lost connection.
type Job = Box<
    dyn FnOnce(Result<&mut postgres::Client, StoreError>, jiff::Timestamp) -> Option<StoreError>
        + Send,
>;

/// The running store. Dropping it without [`Store::shutdown`] sends the thread a stop request
/// with a 1 s flush deadline and does not wait for it.
pub struct Store {
    handle: StoreHandle,
    thread: Option<JoinHandle<()>>,
}

/// Cloneable access to the store for pollers, the API and the daemon.
#[derive(Clone)]
pub struct StoreHandle {
    samples: Sender<Sample>,
    requests: Sender<Request>,
    /// Samples displaced from a full channel, shared with the thread for its warnings.
    channel_dropped: Arc<AtomicU64>,
    health: Arc<Health>,
}

/// Starts the store thread. It connects, applies migrations and reconnects by itself;
/// use [`StoreHandle::wait_until_migrated`] to learn when the schema is in place.
///
/// # Panics
///
/// Panics when the operating system cannot start a thread.
pub fn start(options: StoreOptions, clock: Arc<dyn Clock>, health: Arc<Health>) -> Store {
    let (samples_tx, samples_rx) = async_channel::bounded(SAMPLE_CHANNEL_CAPACITY);
    let (requests_tx, requests_rx) = async_channel::bounded(REQUEST_CHANNEL_CAPACITY);
    let channel_dropped = Arc::new(AtomicU64::new(0));

    let worker = worker::Worker::new(
        options,
        clock,
        Arc::clone(&health),
        samples_rx,
        requests_rx,
        Arc::clone(&channel_dropped),
    );
    let thread = std::thread::Builder::new()
        .name("store".to_string())
        .spawn(move || worker.run())
        .expect("spawning the store thread");

    Store {
        handle: StoreHandle {
            samples: samples_tx,
            requests: requests_tx,
            channel_dropped,
            health,
        },
        thread: Some(thread),
    }
}

impl Store {
    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// Stops the store: writes what is buffered (best effort until `deadline` from now),
    /// rolls up the closed minutes, and joins the thread. Blocks; call it from a plain
    /// thread, not from async code.
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let report = self.request_stop(deadline);
        if !report.timed_out
            && let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the store thread panicked during shutdown");
        }
        report
    }

    fn request_stop(&mut self, deadline: Duration) -> ShutdownReport {
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        let stop = Request::Stop {
            deadline: Instant::now() + deadline,
            reply: reply_tx,
        };
        if self.handle.requests.send_blocking(stop).is_err() {
            return ShutdownReport::default();
        }

        // The thread checks the deadline between statements; one statement can run up to
        // the statement timeout past it, so wait that much longer before giving up.
        match reply_rx.recv_timeout(deadline + worker::STATEMENT_TIMEOUT) {
            Ok(report) => report,
            Err(_) => {
                log::error!(
                    "the store thread did not stop within {deadline:?}; leaving it running"
                );
                ShutdownReport {
                    timed_out: true,
                    ..ShutdownReport::default()
                }
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let (reply_tx, _reply_rx) = std::sync::mpsc::channel();
            let stop = Request::Stop {
                deadline: Instant::now() + Duration::from_secs(1),
                reply: reply_tx,
            };
            let _ = self.handle.requests.try_send(stop);
        }
    }
}

impl StoreHandle {
    /// Queues a reading for the next batch. Never blocks: when the channel is full the
    /// oldest queued sample is dropped and counted in health.
    pub fn submit_reading(&self, reading: Reading) {
        self.submit(Sample::Reading(reading));
    }

    /// Queues a failed poll, like [`StoreHandle::submit_reading`].
    pub fn submit_failure(&self, failure: PollFailure) {
        self.submit(Sample::Failure(failure));
    }

    fn submit(&self, sample: Sample) {
        match self.samples.force_send(sample) {
            Ok(None) => {}
            Ok(Some(_displaced)) => {
                self.channel_dropped.fetch_add(1, Ordering::Relaxed);
                self.health.add_readings_dropped(1);
            }
            // Closed: the store has stopped, and shutdown reported what was unwritten.
            Err(_) => {}
        }
    }

    /// Inserts or updates a thermostat and returns the stored row, with the `away_temp`
    /// and `first_seen` of an existing row kept.
    pub async fn upsert_thermostat(
        &self,
        record: ThermostatRecord,
    ) -> Result<ThermostatRecord, StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        let record = Box::new(record);
        self.request(Request::UpsertThermostat { record, reply }, answer)
            .await
    }

    /// Records in `device_config` the settings of `change` as applied to `id` now by
    /// `source` (for example `local_api` or `public_server`).
    pub async fn record_settings(
        &self,
        id: ThermostatId,
        change: SettingsChange,
        source: &str,
    ) -> Result<(), StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        let source = source.to_string();
        self.request(
            Request::RecordSettings {
                id,
                change,
                source,
                reply,
            },
            answer,
        )
        .await
    }

    /// Loads the stored desired state of every thermostat that has one.
    pub async fn load_desired(
        &self,
    ) -> Result<Vec<(ThermostatId, crate::desired::StoredDesired)>, StoreError> {
        self.run_job("load desired states", |client, _| {
            queries::load_desired(client)
        })
        .await
    }

    /// Stores the drift policy of every known thermostat in `device_config`.
    pub async fn record_policies(
        &self,
        policies: crate::desired::Policies,
    ) -> Result<u64, StoreError> {
        self.run_job("record drift policies", move |client, _| {
            queries::record_policies(client, &policies)
        })
        .await
    }

    /// Loads the active thermostats.
    pub async fn load_thermostats(&self) -> Result<Vec<ThermostatRecord>, StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        self.request(Request::LoadThermostats { reply }, answer)
            .await
    }

    /// Loads every thermostat with its current state, or only `id` when given.
    pub async fn thermostat_overviews(
        &self,
        id: Option<ThermostatId>,
    ) -> Result<Vec<ThermostatOverview>, StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        self.request(Request::ThermostatOverviews { id, reply }, answer)
            .await
    }

    /// Returns the samples waiting in the channel to the store thread and the requests
    /// waiting for it, for metrics.
    pub fn queue_depths(&self) -> (usize, usize) {
        (self.samples.len(), self.requests.len())
    }

    /// Waits until the store has connected and applied the migrations, or `timeout`
    /// passes ([`StoreError::Unavailable`]). A failed migration returns at once.
    pub async fn wait_until_migrated(&self, timeout: Duration) -> Result<(), StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        let deadline = Instant::now() + timeout;
        self.request(Request::WaitUntilMigrated { deadline, reply }, answer)
            .await
    }

    /// Writes everything buffered now, rolls up closed minutes and runs retention when
    /// due, instead of waiting for the flush interval.
    pub async fn flush(&self) -> Result<FlushReport, StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        self.request(Request::Flush { reply }, answer).await
    }

    /// Runs `work` on the store thread with the connection and returns its result;
    /// fails fast with [`StoreError::Unavailable`] while the database is away.
    async fn run_job<T, F>(&self, step: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut postgres::Client, jiff::Timestamp) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = async_channel::bounded(1);
        let job: Job = Box::new(move |client, now| {
            let result = client.and_then(|client| work(client, now));
            let error = result.as_ref().err().cloned();
            let _ = reply.try_send(result);
            error
        });
        self.request(Request::Job { step, job }, answer).await
    }

    async fn request<T>(
        &self,
        request: Request,
        answer: Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.recv().await.map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::keeps_connection;

    #[test]
    fn rejected_statement_keeps_connection() {
        // disk full, out of memory, statement timeout, serialization failure, deadlock
        for code in ["53100", "53200", "57014", "40001", "40P01"] {
            assert!(keeps_connection(Some(code)), "{code}");
        }
    }

    #[test]
    fn lost_connection_needs_reconnect() {
        // connection failure, admin shutdown (pg_terminate_backend), crash shutdown,
        // too many connections, and an IO error without a SQLSTATE
        for code in ["08006", "57P01", "57P02", "53300"] {
            assert!(!keeps_connection(Some(code)), "{code}");
        }
        assert!(!keeps_connection(None));
    }
}
