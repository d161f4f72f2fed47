//! The store thread's loop: drain samples, answer requests, flush, roll up, prune.
//!
//! Logging: info for connects and migrations; warn once per outage for a lost
//! connection and once per minute for dropped samples; error for rows the database
//! rejects (then skipped, not retried); debug for each flush. Writes that the server
//! rejects on a working connection (a full disk) get one warning, and one info line
//! when they pass again. The password is never logged: connection errors name only
//! host, port and database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::future;
use jiff::{SignedDuration, Timestamp};
use postgres::{Client, Config, NoTls};

use super::buffer::{Buffer, Sample};
use super::queries::{self, RetentionTable};
use super::writer::{Batch, WriteOutcome, write_batch};
use super::{
    FlushReport, Request, ShutdownReport, StoreError, StoreOptions, describe, is_transient,
    keeps_connection, migrate,
};
use crate::clock::Clock;
use crate::health::Health;
use crate::rollup::{MinuteRange, minutes_ready, retention_due};

/// Server-side limit on one statement, so a stuck query cannot hold the thread.
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum samples per transaction; a larger backlog is written in several.
const MAX_BATCH: usize = 2_000;

/// Maximum time between two drains of the sample channel. With the channel's capacity
/// (8192 samples), this allows thousands of polls per second.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Maximum minutes rolled up per transaction. A catch-up chunk keeps every sample of
/// its minutes in memory at once: 10 minutes at 1,000 thermostats is 120,000 samples
/// of 88 bytes, about 11 MB.
const ROLLUP_CHUNK_MINUTES: usize = 10;

/// Maximum rows deleted per retention statement.
const RETENTION_CHUNK_ROWS: i64 = 5_000;

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Why a batch write failed: worth retrying later, or rejected by the database.
enum WriteFailure {
    /// A retry can succeed; `connection_kept` when the server rejected the statement
    /// but the connection still works (a full disk, a statement timeout).
    Transient {
        detail: String,
        connection_kept: bool,
    },
    Rejected(String),
}

enum Wake {
    Request(Request),
    Timeout,
    Closed,
}

/// Reconnect schedule: exponential from 250 ms to 30 s, with ±20 % jitter so that many
/// daemons restarting with one server do not reconnect in step.
struct Backoff {
    delay: Duration,
    next_attempt: Instant,
}

impl Backoff {
    fn new() -> Self {
        Self {
            delay: BACKOFF_FIRST,
            next_attempt: Instant::now(),
        }
    }

    fn failed(&mut self) {
        let jitter = 0.8 + fastrand::f64() * 0.4;
        self.next_attempt = Instant::now() + self.delay.mul_f64(jitter);
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }

    fn succeeded(&mut self) {
        self.delay = BACKOFF_FIRST;
    }

    fn due(&self) -> bool {
        Instant::now() >= self.next_attempt
    }
}

pub(super) struct Worker {
    options: StoreOptions,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
    samples: Receiver<Sample>,
    requests: Receiver<Request>,
    channel_dropped: Arc<AtomicU64>,

    buffer: Buffer,
    client: Option<Client>,
    backoff: Backoff,
    ever_connected: bool,
    outage_logged: bool,
    migrated: bool,
    migration_waiters: Vec<(Instant, Sender<Result<(), StoreError>>)>,
    next_flush: Instant,
    /// The time before which no batch is written while the server rejects writes.
    write_retry_at: Instant,
    /// The server rejects writes on a working connection. It is logged once, until a write passes.
    writes_rejected: bool,

    readings_written: u64,
    failures_written: u64,
    dropped_total: u64,
    dropped_reported: u64,
    last_drop_warning: Option<Instant>,
    last_flush_error: Option<String>,
}

impl Worker {
    pub(super) fn new(
        options: StoreOptions,
        clock: Arc<dyn Clock>,
        health: Arc<Health>,
        samples: Receiver<Sample>,
        requests: Receiver<Request>,
        channel_dropped: Arc<AtomicU64>,
    ) -> Self {
        let buffer = Buffer::new(options.buffer_limit);
        Self {
            options,
            clock,
            health,
            samples,
            requests,
            channel_dropped,
            buffer,
            client: None,
            backoff: Backoff::new(),
            ever_connected: false,
            outage_logged: false,
            migrated: false,
            migration_waiters: Vec::new(),
            next_flush: Instant::now(),
            write_retry_at: Instant::now(),
            writes_rejected: false,
            readings_written: 0,
            failures_written: 0,
            dropped_total: 0,
            dropped_reported: 0,
            last_drop_warning: None,
            last_flush_error: None,
        }
    }

    pub(super) fn run(mut self) {
        self.ensure_connected();
        loop {
            match self.wait() {
                Wake::Request(Request::Stop { deadline, reply }) => {
                    let report = self.stop(deadline);
                    let _ = reply.send(report);
                    return;
                }
                Wake::Request(request) => self.handle_request(request),
                Wake::Timeout => {}
                Wake::Closed => {
                    self.stop(Instant::now() + Duration::from_secs(1));
                    return;
                }
            }

            // The watchdog checks this: a store thread stuck in a call stops it, while a
            // database outage does not, because the loop keeps draining and reconnecting.
            self.health
                .record_store_heartbeat(self.clock.now().as_second());
            self.drain();
            self.expire_migration_waiters();
            let batch_full =
                self.buffer.len() >= MAX_BATCH && Instant::now() >= self.write_retry_at;
            if Instant::now() >= self.next_flush || batch_full {
                self.next_flush = Instant::now() + self.options.flush_interval;
                let result = self.flush_and_maintain();
                self.log_flush_error(result.err());
            }
        }
    }

    /// Blocks until a request arrives or the next timed step is due. Samples are not
    /// waited for one by one: the loop drains the channel at every wake, at least every
    /// `MAX_DRAIN_WAIT`, because a wake per sample cost a timer and a thread switch per
    /// poll.
    fn wait(&self) -> Wake {
        if self.samples.is_closed() {
            return Wake::Closed;
        }
        let mut wake_at = self.next_flush.min(Instant::now() + MAX_DRAIN_WAIT);
        if self.client.is_none() {
            wake_at = wake_at.min(self.backoff.next_attempt);
        }
        if let Some(deadline) = self
            .migration_waiters
            .iter()
            .map(|(deadline, _)| *deadline)
            .min()
        {
            wake_at = wake_at.min(deadline);
        }

        future::block_on(async {
            let request = async {
                self.requests
                    .recv()
                    .await
                    .map_or(Wake::Closed, Wake::Request)
            };
            let timer = async {
                async_io::Timer::at(wake_at).await;
                Wake::Timeout
            };
            future::or(request, timer).await
        })
    }

    fn push(&mut self, sample: Sample) {
        let dropped = self.buffer.push(sample);
        if dropped > 0 {
            self.dropped_total += dropped;
            self.health.add_readings_dropped(dropped);
        }
    }

    /// Moves everything queued in the channel into the buffer and publishes its depth.
    fn drain(&mut self) {
        while let Ok(sample) = self.samples.try_recv() {
            self.push(sample);
        }
        self.dropped_total += self.channel_dropped.swap(0, Ordering::Relaxed);
        self.health.set_readings_buffered(self.buffer.len() as u64);
        self.warn_about_drops();
    }

    fn warn_about_drops(&mut self) {
        if self.dropped_total == self.dropped_reported {
            return;
        }
        let recently_warned = self
            .last_drop_warning
            .is_some_and(|at| at.elapsed() < DROP_WARNING_INTERVAL);
        if recently_warned {
            return;
        }
        log::warn!(
            "store buffer full ({} samples): dropped the oldest readings and failures, {} in total so far",
            self.options.buffer_limit,
            self.dropped_total
        );
        self.dropped_reported = self.dropped_total;
        self.last_drop_warning = Some(Instant::now());
    }

    fn handle_request(&mut self, request: Request) {
        match request {
            Request::UpsertThermostat { record, reply } => {
                let now = self.clock.now();
                let result = self.with_client("upserting a thermostat", |client| {
                    queries::upsert_thermostat(client, &record, now)
                });
                let _ = reply.try_send(result);
            }
            Request::RecordSettings {
                id,
                change,
                source,
                reply,
            } => {
                let now = self.clock.now();
                let result = self.with_client("recording applied settings", |client| {
                    queries::record_settings(client, &id, &change, &source, now)
                });
                let _ = reply.try_send(result);
            }
            Request::LoadThermostats { reply } => {
                let result =
                    self.with_client("loading thermostats", queries::load_active_thermostats);
                let _ = reply.try_send(result);
            }
            Request::ThermostatOverviews { id, reply } => {
                let result = self.with_client("loading thermostats with their state", |client| {
                    queries::thermostat_overviews(client, id.as_ref())
                });
                let _ = reply.try_send(result);
            }
            Request::WaitUntilMigrated { deadline, reply } => {
                if self.migrated {
                    let _ = reply.try_send(Ok(()));
                } else {
                    self.migration_waiters.push((deadline, reply));
                }
            }
            Request::Flush { reply } => {
                self.drain();
                let result = self.flush_and_maintain();
                let _ = reply.try_send(result);
            }
            Request::Job { step, job } => self.run_job(step, job),
            Request::Stop { .. } => {}
        }
    }

    fn run_job(&mut self, step: &str, job: super::Job) {
        let now = self.clock.now();
        self.ensure_connected();
        let target = self.target();
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable(format!("{step}: not connected to {target}")));
        let connected = client.is_ok();
        if let Some(StoreError::Unavailable(detail)) = job(client, now)
            && connected
        {
            self.lost_connection(detail);
        }
    }

    /// Runs `action` with the connection, connecting first when the backoff allows.
    /// Fails fast with `Unavailable` while disconnected.
    fn with_client<T>(
        &mut self,
        step: &str,
        action: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.ensure_connected();
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::Unavailable(format!(
                "{step}: not connected to {}",
                self.target()
            )));
        };
        let result = action(client);
        if let Err(StoreError::Unavailable(detail)) = &result {
            self.lost_connection(detail.clone());
        }
        result
    }

    fn expire_migration_waiters(&mut self) {
        let now = Instant::now();
        let target = self.target();
        self.migration_waiters.retain(|(deadline, reply)| {
            if *deadline > now {
                return true;
            }
            let error =
                StoreError::Unavailable(format!("schema not in place yet: cannot reach {target}"));
            let _ = reply.try_send(Err(error));
            false
        });
    }

    fn answer_migration_waiters(&mut self, result: &Result<(), StoreError>) {
        for (_, reply) in self.migration_waiters.drain(..) {
            let _ = reply.try_send(result.clone());
        }
    }

    /// Returns `host:port/database` from the URL, without user or password.
    fn target(&self) -> String {
        describe_target(&self.options.url)
    }

    /// Connects and migrates when disconnected and the backoff allows an attempt.
    fn ensure_connected(&mut self) {
        if self.client.is_some() || !self.backoff.due() {
            return;
        }

        match self.connect() {
            Ok(client) => self.connected(client),
            Err(error) => {
                self.backoff.failed();
                self.report_connect_failure(&error);
            }
        }
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let mut client = open_client(&self.options)?;
        let applied = migrate::apply_migrations(&mut client).map_err(|error| {
            if is_transient(&error) {
                StoreError::Unavailable(format!("applying migrations: {error}"))
            } else {
                StoreError::Migration(describe(&error))
            }
        })?;
        if !applied.is_empty() {
            log::info!("applied schema migrations {applied:?} to {}", self.target());
        }
        Ok(client)
    }

    fn connected(&mut self, client: Client) {
        if self.ever_connected {
            log::info!(
                "reconnected to {}, {} samples waiting",
                self.target(),
                self.buffer.len()
            );
        } else {
            log::info!("connected to {}", self.target());
        }
        self.client = Some(client);
        self.ever_connected = true;
        self.outage_logged = false;
        self.writes_rejected = false;
        self.migrated = true;
        self.backoff.succeeded();
        self.health.set_database_connected(true);
        self.answer_migration_waiters(&Ok(()));
    }

    fn report_connect_failure(&mut self, error: &StoreError) {
        self.health.set_database_connected(false);
        if let StoreError::Migration(_) = error {
            // Retrying cannot fix a broken migration; tell the waiters now, keep retrying
            // in case an operator repairs the database.
            log::error!("{error}; retrying in {:?}", self.backoff.delay);
            self.answer_migration_waiters(&Err(error.clone()));
            return;
        }
        if !self.outage_logged {
            log::warn!(
                "{error}; retrying with backoff up to {BACKOFF_MAX:?} while buffering readings"
            );
            self.outage_logged = true;
        } else {
            log::debug!("{error}");
        }
    }

    fn lost_connection(&mut self, detail: String) {
        self.client = None;
        self.health.set_database_connected(false);
        self.backoff.failed();
        if !self.outage_logged {
            log::warn!(
                "lost the database connection to {}: {detail}; buffering readings",
                self.target()
            );
            self.outage_logged = true;
        }
    }

    /// Logs a failed periodic flush. Transient errors were logged as an outage already;
    /// any other error is logged once until a different one, or success, replaces it.
    fn log_flush_error(&mut self, error: Option<StoreError>) {
        let message = error
            .filter(|error| !error.is_transient())
            .map(|error| error.to_string());
        if message.is_some() && message != self.last_flush_error {
            log::error!(
                "store maintenance failed: {}",
                message.as_deref().unwrap_or_default()
            );
        }
        self.last_flush_error = message;
    }

    /// Writes the buffer oldest first, then rolls up and prunes. Stops at the first
    /// transient failure and keeps the rest buffered.
    fn flush_and_maintain(&mut self) -> Result<FlushReport, StoreError> {
        self.ensure_connected();
        if self.client.is_none() {
            return Err(StoreError::Unavailable(format!(
                "not connected to {}",
                self.target()
            )));
        }

        // Only what was buffered when the flush began: samples that arrive during the
        // writes wait for the next flush, so readings cost one commit per flush interval
        // and a backlog one per full batch.
        let mut report = FlushReport::default();
        let mut unwritten = self.buffer.len();
        while unwritten > 0 && !self.buffer.is_empty() {
            let before = self.buffer.len();
            let (readings, failures) = self.write_next_batch()?;
            unwritten = unwritten.saturating_sub(before - self.buffer.len());
            report.readings_written += readings;
            report.failures_written += failures;
            self.drain();
        }
        report.minutes_rolled_up = self.roll_up_closed_minutes()?;
        report.retention_ran = self.run_retention_if_due()?;
        report.still_buffered = self.buffer.len();
        Ok(report)
    }

    /// Writes the oldest batch and removes it from the buffer when it is written or
    /// rejected for good. Returns the readings and failures inserted.
    fn write_next_batch(&mut self) -> Result<(u64, u64), StoreError> {
        let samples = self.buffer.front(MAX_BATCH);
        let count = samples.len();
        let batch = Batch::from_samples(samples);
        let started = Instant::now();

        let outcome = match self.write(&batch) {
            Ok(outcome) => outcome,
            Err(WriteFailure::Transient {
                detail,
                connection_kept,
            }) => return Err(self.write_failed(detail, connection_kept)),
            Err(WriteFailure::Rejected(detail)) => self.write_split(batch, &detail)?,
        };

        self.buffer.remove_front(count);
        self.record_write(&outcome, count, started);
        Ok((outcome.readings_inserted, outcome.failures_inserted))
    }

    fn write(&mut self, batch: &Batch) -> Result<WriteOutcome, WriteFailure> {
        let Some(client) = self.client.as_mut() else {
            return Err(WriteFailure::Transient {
                detail: "not connected".to_string(),
                connection_kept: false,
            });
        };
        write_batch(client, batch).map_err(|error| {
            if is_transient(&error) {
                let sqlstate = error.as_db_error().map(|db_error| db_error.code().code());
                WriteFailure::Transient {
                    detail: describe(&error),
                    connection_kept: keeps_connection(sqlstate) && !client.is_closed(),
                }
            } else {
                WriteFailure::Rejected(describe(&error))
            }
        })
    }

    /// Handles a failed batch write that a retry can fix. A lost connection is dropped
    /// and reconnected. When the server rejects the statement on a working connection
    /// (a full disk), the connection is kept and writes back off, so the log gets one
    /// warning instead of a reconnect and two lines every few hundred milliseconds.
    fn write_failed(&mut self, detail: String, connection_kept: bool) -> StoreError {
        let error = StoreError::Unavailable(format!("writing readings: {detail}"));
        if !connection_kept {
            self.lost_connection(detail);
            return error;
        }
        self.backoff.failed();
        self.write_retry_at = self.backoff.next_attempt;
        self.next_flush = self.next_flush.max(self.write_retry_at);
        if !self.writes_rejected {
            log::warn!(
                "PostgreSQL at {} rejected the readings: {detail}; keeping {} readings and \
                 failures buffered and retrying with backoff up to {BACKOFF_MAX:?}",
                self.target(),
                self.buffer.len()
            );
            self.writes_rejected = true;
        }
        error
    }

    /// Writes a batch that the database rejected, one thermostat at a time, so that
    /// only the thermostats with a bad row are skipped. A transient error stops it; the
    /// whole batch stays buffered and the rewrite adds no duplicates.
    fn write_split(&mut self, batch: Batch, batch_error: &str) -> Result<WriteOutcome, StoreError> {
        log::debug!("batch rejected ({batch_error}); retrying per thermostat");
        let mut total = WriteOutcome::default();
        for (id, part) in batch.split_by_thermostat() {
            match self.write(&part) {
                Ok(outcome) => {
                    total.readings_inserted += outcome.readings_inserted;
                    total.failures_inserted += outcome.failures_inserted;
                    total
                        .unknown_thermostats
                        .extend(outcome.unknown_thermostats);
                }
                Err(WriteFailure::Transient {
                    detail,
                    connection_kept,
                }) => return Err(self.write_failed(detail, connection_kept)),
                Err(WriteFailure::Rejected(detail)) => log::error!(
                    "skipping {} readings and failures of thermostat {id}: rejected by the database: {detail}",
                    part.len()
                ),
            }
        }
        Ok(total)
    }

    fn record_write(&mut self, outcome: &WriteOutcome, count: usize, started: Instant) {
        if self.writes_rejected {
            log::info!(
                "PostgreSQL at {} stores readings again; {} samples waiting",
                self.target(),
                self.buffer.len()
            );
            self.writes_rejected = false;
            self.backoff.succeeded();
        }
        self.readings_written += outcome.readings_inserted;
        self.failures_written += outcome.failures_inserted;
        self.health
            .record_database_write(self.clock.now().as_second());
        self.health
            .record_database_write_duration(started.elapsed());
        self.health.set_readings_buffered(self.buffer.len() as u64);
        if !outcome.unknown_thermostats.is_empty() {
            log::error!(
                "skipped readings of thermostats missing from the thermostats table: {}",
                outcome.unknown_thermostats.join(", ")
            );
        }
        log::debug!(
            "flushed {count} samples ({} readings, {} failures inserted) in {} ms",
            outcome.readings_inserted,
            outcome.failures_inserted,
            started.elapsed().as_millis()
        );
    }

    /// Rolls up every closed minute, in chunks, each in its own transaction with the
    /// checkpoint. Returns the number of minute rows written.
    ///
    /// NOTE: a sample that arrives more than `rollup_grace` late for a minute already
    /// rolled up is stored in raw_readings but does not change that minute's row.
    fn roll_up_closed_minutes(&mut self) -> Result<u64, StoreError> {
        let grace = self.options.rollup_grace;
        let oldest_unwritten = self.buffer.oldest_ts();
        let mut rows_written = 0;
        loop {
            let now = self.clock.now();
            let progress = self.with_client("reading the rollup checkpoint", |client| {
                queries::rollup_progress(client).map_err(|error| {
                    StoreError::from_postgres("reading the rollup checkpoint", &error)
                })
            })?;
            let Some(range) = minutes_ready(progress, now, grace, oldest_unwritten) else {
                return Ok(rows_written);
            };

            rows_written += self.roll_up_chunk(range)?;
            self.drain();
        }
    }

    fn roll_up_chunk(&mut self, range: MinuteRange) -> Result<u64, StoreError> {
        let chunk = range.take(ROLLUP_CHUNK_MINUTES);
        let (rows, checkpoint) = self.with_client("rolling up minutes", |client| {
            queries::roll_up(client, chunk, range.end).map_err(|error| {
                StoreError::from_postgres(
                    &format!("rolling up minutes from {}", chunk.first),
                    &error,
                )
            })
        })?;
        log::debug!(
            "rolled up {} minutes from {} into {rows} rows",
            chunk.len(),
            chunk.first
        );
        if checkpoint < chunk.first {
            // The checkpoint did not move: stop instead of looping on the same chunk.
            return Err(StoreError::Query(format!(
                "rollup checkpoint stuck at {checkpoint}"
            )));
        }
        Ok(rows as u64)
    }

    /// Runs the daily retention when due. Returns whether it ran.
    fn run_retention_if_due(&mut self) -> Result<bool, StoreError> {
        let last_run = self.with_client("reading the retention checkpoint", |client| {
            queries::last_retention_run(client).map_err(|error| {
                StoreError::from_postgres("reading the retention checkpoint", &error)
            })
        })?;
        let now = self.clock.now();
        let local_now = now.to_zoned_datetime(self.options.time_zone.clone());
        if !retention_due(last_run, local_now, self.options.retention_hour) {
            return Ok(false);
        }

        let raw_cutoff = days_before(now, self.options.raw_retention_days);
        let minute_cutoff = days_before(now, self.options.minute_retention_days);
        let mut deleted = 0;
        deleted += self.delete_older_than(RetentionTable::RawReadings, raw_cutoff)?;
        deleted += self.delete_older_than(RetentionTable::PollFailures, raw_cutoff)?;
        deleted += self.delete_older_than(RetentionTable::MinuteReadings, minute_cutoff)?;
        deleted += self.delete_older_than(RetentionTable::SyncOutbox, raw_cutoff)?;
        deleted += self.delete_older_than(RetentionTable::DesiredEvents, minute_cutoff)?;

        self.with_client("recording the retention run", |client| {
            queries::record_retention_run(client, now)
                .map_err(|error| StoreError::from_postgres("recording the retention run", &error))
        })?;
        log::info!(
            "retention deleted {deleted} rows (raw before {raw_cutoff}, minutes before {minute_cutoff})"
        );
        Ok(true)
    }

    /// Deletes rows older than `cutoff` in chunks, draining the channel between chunks.
    fn delete_older_than(
        &mut self,
        table: RetentionTable,
        cutoff: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self.with_client("deleting old rows", |client| {
                queries::delete_chunk(client, table, cutoff, RETENTION_CHUNK_ROWS).map_err(
                    |error| {
                        StoreError::from_postgres(
                            &format!("deleting old rows from {}", table.name()),
                            &error,
                        )
                    },
                )
            })?;
            total += deleted;
            self.drain();
            if deleted < RETENTION_CHUNK_ROWS.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    /// Flushes what it can before `deadline`, rolls up closed minutes and reports.
    fn stop(&mut self, deadline: Instant) -> ShutdownReport {
        self.drain();
        // A shutdown gets one connection attempt even while the backoff waits.
        self.backoff.next_attempt = Instant::now();
        self.ensure_connected();

        while self.client.is_some() && !self.buffer.is_empty() && Instant::now() < deadline {
            if let Err(error) = self.write_next_batch() {
                log::warn!("final flush stopped: {error}");
                break;
            }
            self.drain();
        }
        if self.client.is_some()
            && Instant::now() < deadline
            && let Err(error) = self.roll_up_closed_minutes()
        {
            log::warn!("final rollup stopped: {error}");
        }

        let unwritten = self.buffer.len();
        if unwritten > 0 {
            log::warn!("store stopping with {unwritten} readings and failures unwritten");
        }
        self.health.set_database_connected(false);
        ShutdownReport {
            readings_written: self.readings_written,
            failures_written: self.failures_written,
            unwritten,
            dropped: self.dropped_total,
            timed_out: false,
        }
    }
}

fn days_before(now: Timestamp, days: u32) -> Timestamp {
    let span = SignedDuration::from_hours(i64::from(days) * 24);
    now.checked_sub(span).unwrap_or(Timestamp::MIN)
}

/// Opens a connection with the daemon's settings (application name, keepalives, the
/// statement timeout) and no migration. Blocking: call it on the store thread or on a
/// command line's main thread, never on an executor.
pub(crate) fn open_client(options: &StoreOptions) -> Result<Client, StoreError> {
    let target = describe_target(&options.url);
    let mut config: Config = options.url.parse().map_err(|error| {
        StoreError::Unavailable(format!("invalid database URL for {target}: {error}"))
    })?;
    if let Some(password) = &options.password {
        config.password(password);
    }
    config
        .application_name("thermostat-server")
        .connect_timeout(options.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3)
        // Bounds how long sent data may stay unacknowledged before the kernel gives
        // up, so a server that vanished cannot hang a write.
        .tcp_user_timeout(STATEMENT_TIMEOUT + Duration::from_secs(5));

    let mut client = config
        .connect(NoTls)
        .map_err(|error| StoreError::from_postgres(&format!("connecting to {target}"), &error))?;
    let timeout = format!("SET statement_timeout = {}", STATEMENT_TIMEOUT.as_millis());
    client
        .batch_execute(&timeout)
        .map_err(|error| StoreError::from_postgres("setting statement_timeout", &error))?;
    Ok(client)
}

/// Returns `host:port/database` of a PostgreSQL URL, leaving out user and password.
pub(crate) fn describe_target(url: &str) -> String {
    let Ok(config) = url.parse::<Config>() else {
        return "the configured database (invalid URL)".to_string();
    };
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("postgres");
    format!("{host}:{port}/{database}")
}
