//! The public server sync's tables: the state-change outbox, the minute upload
//! checkpoint, parked payloads, the command log and the result outbox. Each method runs
//! its statements on the store thread; the ones that change state commit durably.

use std::time::SystemTime;

use jiff::Timestamp;
use postgres::{Client, Row};
use serde_json::Value;

use super::{StoreError, StoreHandle, from_sql_time, sql_time};
use crate::reading::{Fmode, ThermostatState, Tmode, Tstate};
use crate::sync::command::Envelope;
use crate::sync::decide::BatchEnd;
use crate::sync::protocol::{MinuteReading, StatusReading, format_ts};
use crate::thermostat::ThermostatId;

/// `sync_checkpoints` row of the minute upload.
const MINUTE_CHECKPOINT: &str = "minute";

/// Maximum length of the rejection reason kept with a parked payload, in characters.
const MAX_REASON_CHARS: usize = 1000;

/// Pending state changes: how many wait, when the oldest was read, and one batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxBatch {
    pub pending: usize,
    pub oldest_ts: Option<Timestamp>,
    /// Outbox ids with their reading elements, oldest reading first.
    pub rows: Vec<(i64, Value)>,
}

/// Position of a minute row in upload order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteKey {
    pub minute_ts: Timestamp,
    pub thermostat_id: String,
}

/// The next minute rows after the checkpoint, and the key of the last one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinuteBatch {
    pub rows: Vec<MinuteReading>,
    pub last: Option<MinuteKey>,
}

/// The command log's entry for a command id that arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// First delivery: logged as running, execute it now.
    New,
    /// Executed before; this is its stored final result entry.
    Finished(Value),
    /// Logged as running and not finished.
    Running,
}

/// A payload the server rejected for good.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    /// Path under the site, such as `/minute`.
    pub endpoint: &'static str,
    pub payload: Value,
    pub status: u16,
    pub reason: String,
}

/// Other changes made in the transaction that parks a payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParkEffects {
    /// State-change outbox rows that the parked payload carried; they are deleted.
    pub outbox_ids: Vec<i64>,
    /// New minute checkpoint, past the parked rows.
    pub minute_checkpoint: Option<MinuteKey>,
    /// Result outbox rows that the parked payload carried; they are deleted.
    pub result_ids: Vec<i64>,
}

fn query_error(step: &str) -> impl Fn(postgres::Error) -> StoreError + '_ {
    move |error| StoreError::from_postgres(step, &error)
}

fn parse_json(text: &str, what: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::InvalidRow(format!("{what} is not valid JSON: {error}")))
}

/// Rows of the sync tables that the public server has not acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncBacklog {
    pub state_changes: i64,
    pub command_results: i64,
    pub parked: i64,
}

impl StoreHandle {
    /// Counts what waits for the public server, for `/metrics`.
    pub async fn sync_backlog(&self) -> Result<SyncBacklog, StoreError> {
        self.run_job("counting the sync backlog", |client, _| {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM sync_outbox WHERE acked_at IS NULL),
                            (SELECT count(*) FROM sync_result_outbox),
                            (SELECT count(*) FROM sync_parked)",
                    &[],
                )
                .map_err(query_error("counting the sync backlog"))?;
            Ok(SyncBacklog {
                state_changes: row.get(0),
                command_results: row.get(1),
                parked: row.get(2),
            })
        })
        .await
    }

    /// Returns up to `limit` pending state changes from `end` of the outbox, returned
    /// oldest first, with the count and time of all pending ones.
    pub async fn peek_state_changes(
        &self,
        end: BatchEnd,
        limit: usize,
    ) -> Result<OutboxBatch, StoreError> {
        self.run_job("reading the state-change outbox", move |client, _| {
            peek_state_changes(client, end, limit)
                .map_err(query_error("reading the state-change outbox"))
        })
        .await
    }

    /// Marks state changes as acknowledged by the server.
    pub async fn ack_state_changes(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.run_job("acknowledging state changes", move |client, now| {
            client
                .execute(
                    "UPDATE sync_outbox SET acked_at = $2 WHERE id = ANY($1) AND acked_at IS NULL",
                    &[&ids, &sql_time(now)],
                )
                .map(|_| ())
                .map_err(query_error("acknowledging state changes"))
        })
        .await
    }

    /// Returns the current state of every active thermostat, for the status snapshot.
    pub async fn snapshot(&self) -> Result<Vec<StatusReading>, StoreError> {
        self.run_job("reading the current state", |client, _| {
            load_snapshot(client)
        })
        .await
    }

    /// Returns up to `limit` minute rows after the upload checkpoint, oldest first.
    pub async fn next_minute_batch(&self, limit: usize) -> Result<MinuteBatch, StoreError> {
        self.run_job("reading minute rows to upload", move |client, _| {
            next_minute_batch(client, limit)
        })
        .await
    }

    /// Moves the minute upload checkpoint to `key`.
    pub async fn advance_minute_checkpoint(&self, key: MinuteKey) -> Result<(), StoreError> {
        self.run_job("advancing the minute checkpoint", move |client, _| {
            write_minute_checkpoint(client, &key)
                .map(|_| ())
                .map_err(query_error("advancing the minute checkpoint"))
        })
        .await
    }

    /// Stores a rejected payload with its reason and applies `effects`, in one
    /// transaction.
    pub async fn park(&self, parked: Parked, effects: ParkEffects) -> Result<(), StoreError> {
        self.run_job("parking a rejected payload", move |client, _| {
            park(client, &parked, &effects).map_err(query_error("parking a rejected payload"))
        })
        .await
    }

    /// Logs a command as running unless its id is known, and returns what the log held.
    pub async fn claim_command(&self, envelope: Envelope) -> Result<Claim, StoreError> {
        self.run_job("claiming a command", move |client, now| {
            claim_command(client, &envelope, now)
        })
        .await
    }

    /// Records the final result of a command and queues it for sending, in one
    /// transaction.
    pub async fn finish_command(
        &self,
        command_id: String,
        status: &'static str,
        entry: Value,
    ) -> Result<(), StoreError> {
        self.run_job("recording a command result", move |client, now| {
            finish_command(client, &command_id, status, &entry, now)
                .map_err(query_error("recording a command result"))
        })
        .await
    }

    /// Queues a result entry (a progress report or a resent result) for sending.
    pub async fn queue_result(&self, command_id: String, entry: Value) -> Result<(), StoreError> {
        self.run_job("queueing a command result", move |client, _| {
            client
                .execute(
                    "INSERT INTO sync_result_outbox (command_id, entry) VALUES ($1, $2::text::jsonb)",
                    &[&command_id, &entry.to_string()],
                )
                .map(|_| ())
                .map_err(query_error("queueing a command result"))
        })
        .await
    }

    /// Returns up to `limit` queued result entries, oldest first.
    pub async fn pending_results(&self, limit: usize) -> Result<Vec<(i64, Value)>, StoreError> {
        self.run_job("reading queued command results", move |client, _| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = client
                .query(
                    "SELECT id, entry::text FROM sync_result_outbox ORDER BY id LIMIT $1",
                    &[&limit],
                )
                .map_err(query_error("reading queued command results"))?;
            rows.iter()
                .map(|row| Ok((row.get(0), parse_json(row.get(1), "a queued result")?)))
                .collect()
        })
        .await
    }

    /// Deletes result entries that the server acknowledged.
    pub async fn ack_results(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.run_job("acknowledging command results", move |client, _| {
            client
                .execute("DELETE FROM sync_result_outbox WHERE id = ANY($1)", &[&ids])
                .map(|_| ())
                .map_err(query_error("acknowledging command results"))
        })
        .await
    }

    /// Stores `away_temp` on the thermostat row. Returns false when no such thermostat
    /// exists.
    pub async fn set_away_temp(
        &self,
        id: ThermostatId,
        away_temp: f64,
    ) -> Result<bool, StoreError> {
        self.run_job("storing an away temperature", move |client, _| {
            let updated = client
                .execute(
                    "UPDATE thermostats SET away_temp = $2, updated_at = now() WHERE thermostat_id = $1",
                    &[&id.as_str(), &away_temp],
                )
                .map_err(query_error("storing an away temperature"))?;
            Ok(updated > 0)
        })
        .await
    }
}

fn peek_state_changes(
    client: &mut Client,
    end: BatchEnd,
    limit: usize,
) -> Result<OutboxBatch, postgres::Error> {
    let summary = client.query_one(
        "SELECT count(*), min(ts) FROM sync_outbox WHERE acked_at IS NULL",
        &[],
    )?;
    let pending: i64 = summary.get(0);
    let oldest: Option<SystemTime> = summary.get(1);

    let order = match end {
        BatchEnd::Oldest => "ASC",
        BatchEnd::Newest => "DESC",
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT id, payload::text FROM sync_outbox WHERE acked_at IS NULL
         ORDER BY ts {order}, id {order} LIMIT $1"
    );
    let mut rows: Vec<(i64, Value)> = client
        .query(&sql, &[&limit])?
        .iter()
        .filter_map(|row| {
            let text: String = row.get(1);
            let id: i64 = row.get(0);
            match serde_json::from_str(&text) {
                Ok(value) => Some((id, value)),
                Err(error) => {
                    log::error!(
                        "state-change outbox row {id} is not valid JSON: {error}; skipping it"
                    );
                    None
                }
            }
        })
        .collect();
    if end == BatchEnd::Newest {
        rows.reverse();
    }

    Ok(OutboxBatch {
        pending: usize::try_from(pending).unwrap_or(0),
        oldest_ts: oldest.and_then(|ts| from_sql_time(ts).ok()),
        rows,
    })
}

fn load_snapshot(client: &mut Client) -> Result<Vec<StatusReading>, StoreError> {
    let rows = client
        .query(
            "SELECT s.thermostat_id, s.ts, s.temp, s.t_heat, s.t_cool, s.tmode, s.fmode, s.tstate,
                    s.fstate, s.hold, s.override, s.local_temp
             FROM current_state s JOIN thermostats t USING (thermostat_id)
             WHERE t.active ORDER BY s.thermostat_id",
            &[],
        )
        .map_err(query_error("reading the current state"))?;
    rows.iter().map(snapshot_from_row).collect()
}

fn snapshot_from_row(row: &Row) -> Result<StatusReading, StoreError> {
    let id: String = row.get(0);
    let ts = from_sql_time(row.get(1))?;
    let code = |index: usize| row.get::<_, Option<i16>>(index).map(i64::from);
    let state = ThermostatState {
        temp: row.get(2),
        t_heat: row.get(3),
        t_cool: row.get(4),
        tmode: code(5).and_then(Tmode::from_code),
        fmode: code(6).and_then(Fmode::from_code),
        tstate: code(7).and_then(Tstate::from_code),
        fstate: row.get(8),
        hold: row.get(9),
        override_active: row.get(10),
    };
    Ok(StatusReading::from_state(&id, ts, &state, row.get(11)))
}

fn read_minute_checkpoint(client: &mut Client) -> Result<Option<MinuteKey>, StoreError> {
    let row = client
        .query_opt(
            "SELECT ts, last_key FROM sync_checkpoints WHERE name = $1",
            &[&MINUTE_CHECKPOINT],
        )
        .map_err(query_error("reading the minute checkpoint"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(MinuteKey {
        minute_ts: from_sql_time(row.get(0))?,
        thermostat_id: row.get(1),
    }))
}

fn write_minute_checkpoint(
    client: &mut impl postgres::GenericClient,
    key: &MinuteKey,
) -> Result<u64, postgres::Error> {
    client.execute(
        "INSERT INTO sync_checkpoints (name, ts, last_key, updated_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (name) DO UPDATE SET ts = EXCLUDED.ts, last_key = EXCLUDED.last_key,
                                          updated_at = now()",
        &[
            &MINUTE_CHECKPOINT,
            &sql_time(key.minute_ts),
            &key.thermostat_id,
        ],
    )
}

/// Reads minute rows in (minute_ts, thermostat_id) order after the checkpoint. The
/// rollup writes all rows of a minute in one transaction and minutes in order, so no
/// row can appear behind the checkpoint later.
fn next_minute_batch(client: &mut Client, limit: usize) -> Result<MinuteBatch, StoreError> {
    let after = read_minute_checkpoint(client)?.unwrap_or(MinuteKey {
        minute_ts: Timestamp::UNIX_EPOCH,
        thermostat_id: String::new(),
    });
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT thermostat_id, minute_ts, temp_avg, t_heat_last, t_cool_last, tmode_last,
                    hvac_runtime_percent, poll_count, poll_failures, local_temp_avg
             FROM minute_readings
             WHERE (minute_ts, thermostat_id) > ($1, $2)
             ORDER BY minute_ts, thermostat_id LIMIT $3",
            &[&sql_time(after.minute_ts), &after.thermostat_id, &limit],
        )
        .map_err(query_error("reading minute rows to upload"))?;

    let mut batch = MinuteBatch::default();
    for row in &rows {
        let thermostat_id: String = row.get(0);
        let minute_ts = from_sql_time(row.get(1))?;
        batch.rows.push(MinuteReading {
            thermostat_id: thermostat_id.clone(),
            minute_ts: format_ts(minute_ts),
            temp_avg: row.get(2),
            t_heat_last: row.get(3),
            t_cool_last: row.get(4),
            tmode_last: row.get(5),
            hvac_runtime_percent: row.get(6),
            poll_count: row.get(7),
            poll_failures: row.get(8),
            local_temp_avg: row.get(9),
        });
        batch.last = Some(MinuteKey {
            minute_ts,
            thermostat_id,
        });
    }
    Ok(batch)
}

fn park(
    client: &mut Client,
    parked: &Parked,
    effects: &ParkEffects,
) -> Result<(), postgres::Error> {
    let mut transaction = client.transaction()?;
    let reason: String = parked.reason.chars().take(MAX_REASON_CHARS).collect();
    transaction.execute(
        "INSERT INTO sync_parked (endpoint, payload, status, reason) VALUES ($1, $2::text::jsonb, $3, $4)",
        &[
            &parked.endpoint,
            &parked.payload.to_string(),
            &i32::from(parked.status),
            &reason,
        ],
    )?;
    if !effects.outbox_ids.is_empty() {
        transaction.execute(
            "DELETE FROM sync_outbox WHERE id = ANY($1)",
            &[&effects.outbox_ids],
        )?;
    }
    if !effects.result_ids.is_empty() {
        transaction.execute(
            "DELETE FROM sync_result_outbox WHERE id = ANY($1)",
            &[&effects.result_ids],
        )?;
    }
    if let Some(key) = &effects.minute_checkpoint {
        write_minute_checkpoint(&mut transaction, key)?;
    }
    transaction.commit()
}

fn claim_command(
    client: &mut Client,
    envelope: &Envelope,
    now: Timestamp,
) -> Result<Claim, StoreError> {
    let inserted = client
        .execute(
            "INSERT INTO sync_commands (command_id, command, thermostat_id, params, issued_at,
                                        received_at, status)
             VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, 'running')
             ON CONFLICT (command_id) DO NOTHING",
            &[
                &envelope.command_id,
                &envelope.command,
                &envelope.thermostat_id,
                &envelope.params.to_string(),
                &envelope.issued_at,
                &sql_time(now),
            ],
        )
        .map_err(query_error("claiming a command"))?;
    if inserted == 1 {
        return Ok(Claim::New);
    }

    let row = client
        .query_one(
            "SELECT status, result::text FROM sync_commands WHERE command_id = $1",
            &[&envelope.command_id],
        )
        .map_err(query_error("reading a logged command"))?;
    let status: String = row.get(0);
    let result: Option<String> = row.get(1);
    match (status.as_str(), result) {
        ("running", _) | (_, None) => Ok(Claim::Running),
        (_, Some(text)) => Ok(Claim::Finished(parse_json(
            &text,
            "a stored command result",
        )?)),
    }
}

fn finish_command(
    client: &mut Client,
    command_id: &str,
    status: &str,
    entry: &Value,
    now: Timestamp,
) -> Result<(), postgres::Error> {
    let mut transaction = client.transaction()?;
    let entry_text = entry.to_string();
    transaction.execute(
        "UPDATE sync_commands SET status = $2, result = $3::text::jsonb, finished_at = $4
         WHERE command_id = $1",
        &[&command_id, &status, &entry_text, &sql_time(now)],
    )?;
    transaction.execute(
        "INSERT INTO sync_result_outbox (command_id, entry) VALUES ($1, $2::text::jsonb)",
        &[&command_id, &entry_text],
    )?;
    transaction.commit()
}
