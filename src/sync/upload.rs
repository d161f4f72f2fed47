//! The upload tasks: registration, state changes, the status snapshot and minute rows.
//! Each task owns one stream with its own backoff, so a minute backlog never delays a
//! state change. Data leaves PostgreSQL only after a 2xx response.

use std::time::Duration;

use serde_json::Value;

use super::SyncContext;
use super::client::{Sent, Stream};
use super::decide::{MINUTE_BATCH_MAX, STATE_BATCH_MAX, pick_batch_end, state_batch_due};
use super::protocol::{
    MINUTE_PATH, REGISTER_PATH, STATUS_PATH, StatusKind, minute_body, register_body, status_body,
};
use crate::store::{ParkEffects, Parked, StoreError};

/// Wait after a store request failed (the database is away); the data waits there.
const STORE_RETRY: Duration = Duration::from_secs(2);

fn store_failed(stream: &str, error: &StoreError) -> Duration {
    log::debug!("{stream}: waiting for the database: {error}");
    STORE_RETRY
}

/// Parks a rejected payload, logging it; returns the wait before the next step.
async fn park(
    context: &SyncContext,
    stream: &str,
    parked: Parked,
    effects: ParkEffects,
) -> Duration {
    log::error!(
        "{stream}: the public server rejected a payload to {} with status {}: {}; \
         parked it in sync_parked and going on with the rest",
        context.client.url(parked.endpoint),
        parked.status,
        parked.reason
    );
    match context.store.park(parked, effects).await {
        Ok(()) => Duration::ZERO,
        Err(error) => store_failed(stream, &error),
    }
}

/// Registration: sends the thermostat list whenever it differs from the last list the
/// server accepted (or parked). Checked every `register_interval`; the first check
/// after start-up always sends.
pub(super) struct Registration {
    stream: Stream,
    last_sent: Option<Value>,
}

impl Registration {
    pub(super) fn new(context: &SyncContext) -> Self {
        Self {
            stream: context.stream("registration"),
            last_sent: None,
        }
    }

    pub(super) async fn step(&mut self, context: &SyncContext) -> Duration {
        let interval = context.options.register_interval;
        let records = match context.store.load_thermostats().await {
            Ok(records) => records,
            Err(error) => return store_failed("registration", &error),
        };
        if records.is_empty() {
            // Nothing onboarded yet; look again soon, because the first list matters.
            return interval.min(Duration::from_secs(2));
        }
        let body = register_body(&records);
        if self.last_sent.as_ref() == Some(&body) {
            return interval;
        }

        match context.client.post(REGISTER_PATH, &body).await {
            Sent::Delivered(_) => {
                self.stream.delivered();
                log::info!(
                    "registered {} thermostat(s) with the public server",
                    records.len()
                );
                self.last_sent = Some(body);
                interval
            }
            Sent::Retry {
                detail,
                retry_after,
            } => self
                .stream
                .failed(&context.client.url(REGISTER_PATH), &detail, retry_after),
            Sent::Unauthorized { status } => context.client.auth_failed(status, REGISTER_PATH),
            Sent::Park { status, reason } => {
                self.last_sent = Some(body.clone());
                let parked = Parked {
                    endpoint: REGISTER_PATH,
                    payload: body,
                    status,
                    reason,
                };
                park(context, "registration", parked, ParkEffects::default()).await;
                interval
            }
        }
    }
}

/// State changes from the durable outbox, in batches of up to 10. A batch is sent when it
/// is full or when the oldest change has waited `state_change_wait`, and a backlog goes
/// out back to back.
pub(super) struct StateChanges {
    stream: Stream,
    /// Requests delivered so far, which alternate the ends of a backlog.
    turn: u64,
    last_pending: usize,
}

impl StateChanges {
    pub(super) fn new(context: &SyncContext) -> Self {
        Self {
            stream: context.stream("state changes"),
            turn: 0,
            last_pending: 0,
        }
    }

    pub(super) async fn step(&mut self, context: &SyncContext) -> Duration {
        let max_wait = context.options.state_change_wait;
        let tick = (max_wait / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));

        // The end is picked from the count the previous peek saw, so one query suffices.
        let end = pick_batch_end(self.last_pending, self.turn);
        let batch = match context.store.peek_state_changes(end, STATE_BATCH_MAX).await {
            Ok(batch) => batch,
            Err(error) => return store_failed("state changes", &error),
        };
        self.last_pending = batch.pending;

        let now = context.clock.now();
        let oldest_wait = batch
            .oldest_ts
            .map(|ts| Duration::try_from(now.duration_since(ts)).unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::ZERO);
        if !state_batch_due(batch.pending, oldest_wait, max_wait) || batch.rows.is_empty() {
            return tick;
        }

        let ids: Vec<i64> = batch.rows.iter().map(|(id, _)| *id).collect();
        let readings: Vec<Value> = batch.rows.into_iter().map(|(_, value)| value).collect();
        let body = status_body(StatusKind::StateChange, now, readings);

        match context.client.post(STATUS_PATH, &body).await {
            Sent::Delivered(_) => {
                self.stream.delivered();
                self.turn += 1;
                let sent = ids.len();
                if let Err(error) = context.store.ack_state_changes(ids).await {
                    // Not acknowledged locally: the rows go again, and the server upserts.
                    return store_failed("state changes", &error);
                }
                log::debug!(
                    "sent {sent} state change(s), {} were pending",
                    batch.pending
                );
                if batch.pending > sent {
                    Duration::ZERO
                } else {
                    tick
                }
            }
            Sent::Retry {
                detail,
                retry_after,
            } => self
                .stream
                .failed(&context.client.url(STATUS_PATH), &detail, retry_after),
            Sent::Unauthorized { status } => context.client.auth_failed(status, STATUS_PATH),
            Sent::Park { status, reason } => {
                let parked = Parked {
                    endpoint: STATUS_PATH,
                    payload: body,
                    status,
                    reason,
                };
                let effects = ParkEffects {
                    outbox_ids: ids,
                    ..ParkEffects::default()
                };
                park(context, "state changes", parked, effects).await
            }
        }
    }
}

/// The status snapshot: the current state of every active thermostat every
/// `snapshot_interval`. A snapshot that fails is not kept, because the next one
/// replaces it; a rejected one is only logged for the same reason.
pub(super) struct Snapshot {
    stream: Stream,
}

impl Snapshot {
    pub(super) fn new(context: &SyncContext) -> Self {
        Self {
            stream: context.stream("snapshot"),
        }
    }

    pub(super) async fn step(&mut self, context: &SyncContext) -> Duration {
        let interval = context.options.snapshot_interval;
        let readings = match context.store.snapshot().await {
            Ok(readings) => readings,
            Err(error) => return store_failed("snapshot", &error),
        };
        if readings.is_empty() {
            return interval;
        }
        let readings: Vec<Value> = readings
            .iter()
            .filter_map(|reading| serde_json::to_value(reading).ok())
            .collect();
        let body = status_body(StatusKind::Snapshot, context.clock.now(), readings);

        match context.client.post(STATUS_PATH, &body).await {
            Sent::Delivered(_) => {
                self.stream.delivered();
                interval
            }
            Sent::Retry {
                detail,
                retry_after,
            } => {
                let wait =
                    self.stream
                        .failed(&context.client.url(STATUS_PATH), &detail, retry_after);
                wait.max(interval)
            }
            Sent::Unauthorized { status } => context
                .client
                .auth_failed(status, STATUS_PATH)
                .max(interval),
            Sent::Park { status, reason } => {
                log::error!(
                    "snapshot: the public server rejected it with status {status}: {reason}; \
                     the next snapshot replaces it"
                );
                interval
            }
        }
    }
}

/// Minute rows after the upload checkpoint, oldest first, at most 100 per request,
/// every `minute_interval`; a backlog goes out back to back.
pub(super) struct Minutes {
    stream: Stream,
}

impl Minutes {
    pub(super) fn new(context: &SyncContext) -> Self {
        Self {
            stream: context.stream("minute rows"),
        }
    }

    pub(super) async fn step(&mut self, context: &SyncContext) -> Duration {
        let interval = context.options.minute_interval;
        let batch = match context.store.next_minute_batch(MINUTE_BATCH_MAX).await {
            Ok(batch) => batch,
            Err(error) => return store_failed("minute rows", &error),
        };
        let Some(last) = batch.last else {
            return interval;
        };
        let count = batch.rows.len();
        let body = minute_body(&batch.rows);

        match context.client.post(MINUTE_PATH, &body).await {
            Sent::Delivered(_) => {
                self.stream.delivered();
                if let Err(error) = context.store.advance_minute_checkpoint(last).await {
                    // The rows go again; the server upserts by (thermostat_id, minute_ts).
                    return store_failed("minute rows", &error);
                }
                log::debug!("sent {count} minute row(s)");
                if count == MINUTE_BATCH_MAX {
                    Duration::ZERO
                } else {
                    interval
                }
            }
            Sent::Retry {
                detail,
                retry_after,
            } => self
                .stream
                .failed(&context.client.url(MINUTE_PATH), &detail, retry_after),
            Sent::Unauthorized { status } => context.client.auth_failed(status, MINUTE_PATH),
            Sent::Park { status, reason } => {
                let parked = Parked {
                    endpoint: MINUTE_PATH,
                    payload: body,
                    status,
                    reason,
                };
                let effects = ParkEffects {
                    minute_checkpoint: Some(last),
                    ..ParkEffects::default()
                };
                park(context, "minute rows", parked, effects).await
            }
        }
    }
}
