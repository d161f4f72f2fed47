//! Statements other than the batch write: thermostat rows, the store's checkpoints, the
//! minute rollup and retention deletes. Runs only on the store thread.

use std::collections::BTreeMap;
use std::time::SystemTime;

use jiff::{SignedDuration, Timestamp};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient, Row, Transaction};

use super::{StoreError, from_sql_time, sql_time};
use crate::control::SettingsChange;
use crate::reading::{Tmode, Tstate};
use crate::rollup::{
    MinuteRange, MinuteRow, MinuteSample, RollupProgress, minute_start, summarize_minute,
};
use crate::thermostat::{DeviceAddress, ThermostatId, ThermostatRecord};

/// `maintenance_state` row with the start of the last rolled-up minute.
const ROLLUP_CHECKPOINT: &str = "rollup";
/// `maintenance_state` row with the time of the last finished retention run.
const RETENTION_CHECKPOINT: &str = "retention";

const THERMOSTAT_COLUMNS: &str = "thermostat_id, ip_address, name, model, api_version, fw_version, \
                                  capabilities::text, discovery_method, active, away_temp, last_seen, first_seen";

/// Inserts or updates a thermostat and returns the stored row. An existing row keeps its
/// `away_temp` (set by the public server) and `first_seen`; `last_seen` only moves forward.
pub fn upsert_thermostat(
    client: &mut Client,
    record: &ThermostatRecord,
    now: Timestamp,
) -> Result<ThermostatRecord, StoreError> {
    let capabilities = serde_json::to_string(&record.capabilities).map_err(|error| {
        StoreError::Query(format!("encoding capabilities of {}: {error}", record.id))
    })?;
    let first_seen = sql_time(record.first_seen.unwrap_or(now));
    let last_seen = record.last_seen.map(sql_time);
    let address = record.address.to_string();

    let sql = format!(
        "INSERT INTO thermostats (thermostat_id, ip_address, name, model, api_version, fw_version,
                                  capabilities, discovery_method, active, away_temp, last_seen,
                                  first_seen, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10, $11, $12, now())
         ON CONFLICT (thermostat_id) DO UPDATE SET
             ip_address = EXCLUDED.ip_address, name = EXCLUDED.name, model = EXCLUDED.model,
             api_version = EXCLUDED.api_version, fw_version = EXCLUDED.fw_version,
             capabilities = EXCLUDED.capabilities, discovery_method = EXCLUDED.discovery_method,
             active = EXCLUDED.active,
             last_seen = GREATEST(thermostats.last_seen, EXCLUDED.last_seen),
             updated_at = now()
         RETURNING {THERMOSTAT_COLUMNS}"
    );
    let row = client
        .query_one(
            &sql,
            &[
                &record.id.as_str(),
                &address,
                &record.name,
                &record.model,
                &record.api_version,
                &record.fw_version,
                &capabilities,
                &record.discovery_method,
                &record.active,
                &record.away_temp,
                &last_seen,
                &first_seen,
            ],
        )
        .map_err(|error| {
            StoreError::from_postgres(&format!("upserting thermostat {}", record.id), &error)
        })?;
    thermostat_from_row(&row)
}

/// Loads the active thermostats. A row whose id or address cannot be parsed is logged
/// and left out, so one bad row does not hide the others.
pub fn load_active_thermostats(client: &mut Client) -> Result<Vec<ThermostatRecord>, StoreError> {
    let sql =
        format!("SELECT {THERMOSTAT_COLUMNS} FROM thermostats WHERE active ORDER BY thermostat_id");
    let rows = client
        .query(&sql, &[])
        .map_err(|error| StoreError::from_postgres("loading active thermostats", &error))?;

    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        match thermostat_from_row(row) {
            Ok(record) => records.push(record),
            Err(error) => log::warn!("skipping a stored thermostat: {error}"),
        }
    }
    Ok(records)
}

fn thermostat_from_row(row: &Row) -> Result<ThermostatRecord, StoreError> {
    let id_text: String = row.get(0);
    let id =
        ThermostatId::parse(&id_text).map_err(|error| StoreError::InvalidRow(error.to_string()))?;
    let address_text: String = row.get(1);
    let address: DeviceAddress = address_text
        .parse()
        .map_err(|error| StoreError::InvalidRow(format!("thermostat {id}: {error}")))?;
    let capabilities_text: String = row.get(6);
    let capabilities: Vec<String> = serde_json::from_str(&capabilities_text).map_err(|error| {
        StoreError::InvalidRow(format!(
            "thermostat {id}: invalid capabilities {capabilities_text:?}: {error}"
        ))
    })?;
    let last_seen: Option<SystemTime> = row.get(10);
    let first_seen: SystemTime = row.get(11);

    Ok(ThermostatRecord {
        id,
        address,
        name: row.get(2),
        model: row.get(3),
        api_version: row.get(4),
        fw_version: row.get(5),
        capabilities,
        discovery_method: row.get(7),
        active: row.get(8),
        away_temp: row.get(9),
        last_seen: last_seen.map(from_sql_time).transpose()?,
        first_seen: Some(from_sql_time(first_seen)?),
    })
}

/// Reads a `maintenance_state` checkpoint.
fn read_checkpoint(
    client: &mut impl GenericClient,
    name: &str,
) -> Result<Option<Timestamp>, postgres::Error> {
    let row = client.query_opt("SELECT ts FROM maintenance_state WHERE name = $1", &[&name])?;
    let ts: Option<SystemTime> = row.map(|row| row.get(0));
    Ok(ts.and_then(|ts| from_sql_time(ts).ok()))
}

fn write_checkpoint(
    client: &mut impl GenericClient,
    name: &str,
    ts: Timestamp,
) -> Result<u64, postgres::Error> {
    client.execute(
        "INSERT INTO maintenance_state (name, ts, updated_at) VALUES ($1, $2, now())
         ON CONFLICT (name) DO UPDATE SET ts = EXCLUDED.ts, updated_at = now()",
        &[&name, &sql_time(ts)],
    )
}

/// Reads how far the rollup has got. Without a checkpoint it finds the oldest stored
/// reading or failure, which scans the tables once, on the first start only.
pub fn rollup_progress(client: &mut Client) -> Result<RollupProgress, postgres::Error> {
    if let Some(last) = read_checkpoint(client, ROLLUP_CHECKPOINT)? {
        return Ok(RollupProgress::RolledThrough(last));
    }
    let oldest = oldest_data_since(client, None)?;
    Ok(RollupProgress::NotStarted {
        oldest_data: oldest,
    })
}

/// Returns the oldest reading or failure timestamp at or after `since` (any when `None`).
fn oldest_data_since(
    client: &mut impl GenericClient,
    since: Option<Timestamp>,
) -> Result<Option<Timestamp>, postgres::Error> {
    let since = sql_time(since.unwrap_or(Timestamp::UNIX_EPOCH));
    let row = client.query_one(
        "SELECT least((SELECT min(ts) FROM raw_readings WHERE ts >= $1),
                      (SELECT min(ts) FROM poll_failures WHERE ts >= $1))",
        &[&since],
    )?;
    let ts: Option<SystemTime> = row.get(0);
    Ok(ts.and_then(|ts| from_sql_time(ts).ok()))
}

/// Rolls up every minute of `chunk` in one transaction and advances the checkpoint in
/// the same transaction, so a crash leaves neither a gap nor a duplicate. Returns the
/// number of minute rows written and the new checkpoint.
///
/// When the chunk holds no data, the checkpoint jumps ahead to the minute before the
/// next stored data, but never past `closed_end` (the end of all closed minutes), so a
/// long idle stretch costs one query instead of one per hour.
pub fn roll_up(
    client: &mut Client,
    chunk: MinuteRange,
    closed_end: Timestamp,
) -> Result<(usize, Timestamp), postgres::Error> {
    let mut transaction = client.transaction()?;
    let first = sql_time(chunk.first);
    let end = sql_time(chunk.end);

    let mut groups = MinuteGroups::new();
    collect_readings(&mut transaction, first, end, &mut groups)?;
    collect_failures(&mut transaction, first, end, &mut groups)?;

    let rows = summarize_groups(groups);
    insert_minute_rows(&mut transaction, &rows)?;

    let mut next_first = chunk.end;
    if rows.is_empty() {
        let next_data = oldest_data_since(&mut transaction, Some(chunk.end))?.map(minute_start);
        next_first = next_data
            .unwrap_or(closed_end)
            .max(chunk.end)
            .min(closed_end);
    }
    let checkpoint = next_first
        .checked_sub(SignedDuration::from_secs(60))
        .unwrap_or(chunk.first);
    write_checkpoint(&mut transaction, ROLLUP_CHECKPOINT, checkpoint)?;
    transaction.commit()?;
    Ok((rows.len(), checkpoint))
}

/// The samples and the failure count of each thermostat and minute of a rollup chunk.
type MinuteGroups = BTreeMap<(String, Timestamp), (Vec<MinuteSample>, u32)>;

/// Adds the readings stored in `[first, end)` to `groups`. The rows are read one at a
/// time rather than all at once: a minute at 1,000 thermostats is 12,000 rows, and
/// holding them as `Row` values raised the daemon's resident size by about 5 MB.
fn collect_readings(
    transaction: &mut Transaction<'_>,
    first: SystemTime,
    end: SystemTime,
    groups: &mut MinuteGroups,
) -> Result<(), postgres::Error> {
    for_each_row(
        transaction,
        "SELECT thermostat_id, ts, temp, t_heat, t_cool, tmode, tstate, local_temp
         FROM raw_readings WHERE ts >= $1 AND ts < $2",
        first,
        end,
        |row| {
            if let Some(sample) = sample_from_row(row) {
                let key = (row.get::<_, String>(0), minute_start(sample.ts));
                groups.entry(key).or_default().0.push(sample);
            }
        },
    )
}

/// Adds the poll failures stored in `[first, end)` to the failure counts of `groups`.
fn collect_failures(
    transaction: &mut Transaction<'_>,
    first: SystemTime,
    end: SystemTime,
    groups: &mut MinuteGroups,
) -> Result<(), postgres::Error> {
    for_each_row(
        transaction,
        "SELECT thermostat_id, ts FROM poll_failures WHERE ts >= $1 AND ts < $2",
        first,
        end,
        |row| {
            if let Ok(ts) = from_sql_time(row.get(1)) {
                let key = (row.get::<_, String>(0), minute_start(ts));
                groups.entry(key).or_default().1 += 1;
            }
        },
    )
}

/// Runs `sql` with the time range `[first, end)` as its two parameters and passes each
/// row to `visit` as it arrives, without collecting the rows.
fn for_each_row(
    transaction: &mut Transaction<'_>,
    sql: &str,
    first: SystemTime,
    end: SystemTime,
    mut visit: impl FnMut(&Row),
) -> Result<(), postgres::Error> {
    let mut rows = transaction.query_raw(sql, [&first, &end])?;
    while let Some(row) = rows.next()? {
        visit(&row);
    }
    Ok(())
}

/// Summarizes each thermostat's minute.
fn summarize_groups(groups: MinuteGroups) -> Vec<(String, MinuteRow)> {
    groups
        .into_iter()
        .map(|((id, minute), (samples, failure_count))| {
            (id, summarize_minute(minute, &samples, failure_count))
        })
        .collect()
}

fn sample_from_row(row: &Row) -> Option<MinuteSample> {
    let tmode: Option<i16> = row.get(5);
    let tstate: Option<i16> = row.get(6);
    Some(MinuteSample {
        ts: from_sql_time(row.get(1)).ok()?,
        temp: row.get(2),
        t_heat: row.get(3),
        t_cool: row.get(4),
        tmode: tmode.and_then(|code| Tmode::from_code(i64::from(code))),
        tstate: tstate.and_then(|code| Tstate::from_code(i64::from(code))),
        local_temp: row.get(7),
    })
}

/// Inserts minute rows. A row that exists already is replaced by the fresh summary,
/// which only happens when an operator resets the checkpoint to roll minutes up again.
fn insert_minute_rows(
    client: &mut impl GenericClient,
    rows: &[(String, MinuteRow)],
) -> Result<u64, postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    let minute: Vec<SystemTime> = rows
        .iter()
        .map(|(_, row)| sql_time(row.minute_start))
        .collect();
    let temp_avg: Vec<Option<f64>> = rows.iter().map(|(_, row)| row.temp_avg).collect();
    let t_heat: Vec<Option<f64>> = rows.iter().map(|(_, row)| row.t_heat_last).collect();
    let t_cool: Vec<Option<f64>> = rows.iter().map(|(_, row)| row.t_cool_last).collect();
    let local: Vec<Option<f64>> = rows.iter().map(|(_, row)| row.local_temp_avg).collect();
    let runtime: Vec<Option<f64>> = rows
        .iter()
        .map(|(_, row)| row.hvac_runtime_percent)
        .collect();
    let tmode: Vec<Option<i16>> = rows
        .iter()
        .map(|(_, row)| row.tmode_last.map(Tmode::code))
        .collect();
    let polls: Vec<i32> = rows
        .iter()
        .map(|(_, row)| saturating_i32(row.poll_count))
        .collect();
    let failures: Vec<i32> = rows
        .iter()
        .map(|(_, row)| saturating_i32(row.poll_failures))
        .collect();

    client.execute(
        "INSERT INTO minute_readings (thermostat_id, minute_ts, temp_avg, t_heat_last, t_cool_last,
                                      local_temp_avg, hvac_runtime_percent, tmode_last, poll_count,
                                      poll_failures)
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::float8[], $4::float8[], $5::float8[],
                              $6::float8[], $7::float8[], $8::int2[], $9::int4[], $10::int4[])
         ON CONFLICT (thermostat_id, minute_ts) DO UPDATE SET
             temp_avg = EXCLUDED.temp_avg, t_heat_last = EXCLUDED.t_heat_last,
             t_cool_last = EXCLUDED.t_cool_last, local_temp_avg = EXCLUDED.local_temp_avg,
             hvac_runtime_percent = EXCLUDED.hvac_runtime_percent, tmode_last = EXCLUDED.tmode_last,
             poll_count = EXCLUDED.poll_count, poll_failures = EXCLUDED.poll_failures",
        &[&ids, &minute, &temp_avg, &t_heat, &t_cool, &local, &runtime, &tmode, &polls, &failures],
    )
}

fn saturating_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Tables that retention prunes, with their time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionTable {
    RawReadings,
    PollFailures,
    MinuteReadings,
    /// State changes for the public server, sent or not, kept as long as raw readings.
    SyncOutbox,
    /// Drift and re-apply events, kept as long as minute rows.
    DesiredEvents,
}

impl RetentionTable {
    pub fn name(self) -> &'static str {
        match self {
            Self::RawReadings => "raw_readings",
            Self::PollFailures => "poll_failures",
            Self::MinuteReadings => "minute_readings",
            Self::SyncOutbox => "sync_outbox",
            Self::DesiredEvents => "desired_events",
        }
    }

    fn time_column(self) -> &'static str {
        match self {
            Self::RawReadings | Self::PollFailures | Self::SyncOutbox | Self::DesiredEvents => "ts",
            Self::MinuteReadings => "minute_ts",
        }
    }
}

/// Deletes at most `limit` rows of `table` older than `cutoff` in one statement, and
/// returns how many it deleted. Callers repeat it until it returns less than `limit`,
/// so no single transaction holds a day of deletes.
pub fn delete_chunk(
    client: &mut Client,
    table: RetentionTable,
    cutoff: Timestamp,
    limit: i64,
) -> Result<u64, postgres::Error> {
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))",
        table = table.name(),
        column = table.time_column(),
    );
    client.execute(&sql, &[&sql_time(cutoff), &limit])
}

pub fn last_retention_run(client: &mut Client) -> Result<Option<Timestamp>, postgres::Error> {
    read_checkpoint(client, RETENTION_CHECKPOINT)
}

/// Records a finished retention run. Autocommit, so it commits durably.
pub fn record_retention_run(client: &mut Client, at: Timestamp) -> Result<u64, postgres::Error> {
    write_checkpoint(client, RETENTION_CHECKPOINT, at)
}

/// Records the settings of `change` as applied to `id` at `at` by `source` in
/// `device_config`, leaving the other settings' values and times as they were.
pub fn record_settings(
    client: &mut Client,
    id: &ThermostatId,
    change: &SettingsChange,
    source: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    let at = sql_time(at);
    let when = |present: bool| present.then_some(at);
    let tmode = change.tmode.map(|mode| mode.code());
    let fmode = change.fmode.map(|mode| mode.code());
    client
        .execute(
            "INSERT INTO device_config (thermostat_id, tmode, tmode_applied_at, t_heat, t_heat_applied_at,
                                        t_cool, t_cool_applied_at, fmode, fmode_applied_at,
                                        hold, hold_applied_at, source, commanded_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now())
             ON CONFLICT (thermostat_id) DO UPDATE SET
                 tmode = COALESCE(EXCLUDED.tmode, device_config.tmode),
                 tmode_applied_at = COALESCE(EXCLUDED.tmode_applied_at, device_config.tmode_applied_at),
                 t_heat = COALESCE(EXCLUDED.t_heat, device_config.t_heat),
                 t_heat_applied_at = COALESCE(EXCLUDED.t_heat_applied_at, device_config.t_heat_applied_at),
                 t_cool = COALESCE(EXCLUDED.t_cool, device_config.t_cool),
                 t_cool_applied_at = COALESCE(EXCLUDED.t_cool_applied_at, device_config.t_cool_applied_at),
                 fmode = COALESCE(EXCLUDED.fmode, device_config.fmode),
                 fmode_applied_at = COALESCE(EXCLUDED.fmode_applied_at, device_config.fmode_applied_at),
                 hold = COALESCE(EXCLUDED.hold, device_config.hold),
                 hold_applied_at = COALESCE(EXCLUDED.hold_applied_at, device_config.hold_applied_at),
                 source = EXCLUDED.source,
                 commanded_at = EXCLUDED.commanded_at,
                 holding_settings = true,
                 reapply_failures = 0,
                 updated_at = now()",
            &[
                &id.as_str(),
                &tmode,
                &when(tmode.is_some()),
                &change.t_heat,
                &when(change.t_heat.is_some()),
                &change.t_cool,
                &when(change.t_cool.is_some()),
                &fmode,
                &when(fmode.is_some()),
                &change.hold,
                &when(change.hold.is_some()),
                &source,
                &at,
            ],
        )
        .map_err(|error| StoreError::Query(format!("recording the settings of {id}: {error}")))?;
    Ok(())
}

/// Loads the stored desired state of every thermostat that has one.
pub fn load_desired(
    client: &mut Client,
) -> Result<Vec<(ThermostatId, crate::desired::StoredDesired)>, StoreError> {
    let rows = client
        .query(
            "SELECT d.thermostat_id, d.tmode, d.t_heat, d.t_cool, d.fmode, d.hold, d.source,
                    d.commanded_at, t.model
             FROM device_config d JOIN thermostats t USING (thermostat_id)
             WHERE num_nonnulls(d.tmode, d.t_heat, d.t_cool, d.fmode, d.hold) > 0",
            &[],
        )
        .map_err(|error| StoreError::Query(format!("loading the desired states: {error}")))?;
    let mut loaded = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(id) = ThermostatId::parse(row.get::<_, &str>(0)) else {
            continue;
        };
        let settings = SettingsChange {
            tmode: row
                .get::<_, Option<i16>>(1)
                .and_then(|code| crate::reading::Tmode::from_code(code.into())),
            t_heat: row.get(2),
            t_cool: row.get(3),
            fmode: row
                .get::<_, Option<i16>>(4)
                .and_then(|code| crate::reading::Fmode::from_code(code.into())),
            hold: row.get(5),
        };
        let commanded_at = row
            .get::<_, Option<std::time::SystemTime>>(7)
            .and_then(|time| jiff::Timestamp::try_from(time).ok());
        loaded.push((
            id,
            crate::desired::StoredDesired {
                settings,
                source: row.get(6),
                commanded_at,
                model: row.get::<_, Option<String>>(8).unwrap_or_default(),
            },
        ));
    }
    Ok(loaded)
}

/// Stores the drift policy of every known thermostat: `policies.default` unless it has
/// an override.
pub fn record_policies(
    client: &mut Client,
    policies: &crate::desired::Policies,
) -> Result<u64, StoreError> {
    let ids: Vec<&str> = policies.overrides.keys().map(String::as_str).collect();
    let names: Vec<&str> = policies.overrides.values().map(|p| p.name()).collect();
    client
        .execute(
            "INSERT INTO device_config (thermostat_id, policy)
             SELECT t.thermostat_id, COALESCE(o.policy, $1)
             FROM thermostats t
             LEFT JOIN unnest($2::text[], $3::text[]) AS o(thermostat_id, policy)
                 USING (thermostat_id)
             ON CONFLICT (thermostat_id) DO UPDATE SET policy = EXCLUDED.policy",
            &[&policies.default.name(), &ids, &names],
        )
        .map_err(|error| StoreError::Query(format!("storing the drift policies: {error}")))
}

/// The newest stored state of a thermostat, from `current_state`.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentState {
    pub ts: Timestamp,
    pub state: crate::reading::ThermostatState,
    pub local_temp: Option<f64>,
}

/// A thermostat row with its current state, as the local API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ThermostatOverview {
    pub record: ThermostatRecord,
    /// `None` until the first reading is written.
    pub current: Option<CurrentState>,
}

/// Loads every thermostat, active or not, with its current state, ordered by id; only
/// `id` when it is given. A row that cannot be parsed is logged and left out.
pub fn thermostat_overviews(
    client: &mut Client,
    id: Option<&ThermostatId>,
) -> Result<Vec<ThermostatOverview>, StoreError> {
    let columns = THERMOSTAT_COLUMNS
        .split(", ")
        .map(|column| format!("t.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns}, c.ts, c.temp, c.t_heat, c.t_cool, c.local_temp, c.tmode, c.fmode,
                c.tstate, c.fstate, c.hold, c.override
         FROM thermostats t LEFT JOIN current_state c USING (thermostat_id)
         WHERE $1::text IS NULL OR t.thermostat_id = $1
         ORDER BY t.thermostat_id"
    );
    let id_text = id.map(ThermostatId::as_str);
    let rows = client.query(&sql, &[&id_text]).map_err(|error| {
        StoreError::from_postgres("loading thermostats with their state", &error)
    })?;

    let mut overviews = Vec::with_capacity(rows.len());
    for row in &rows {
        match overview_from_row(row) {
            Ok(overview) => overviews.push(overview),
            Err(error) => log::warn!("skipping a stored thermostat: {error}"),
        }
    }
    Ok(overviews)
}

fn overview_from_row(row: &Row) -> Result<ThermostatOverview, StoreError> {
    use crate::reading::{Fmode, ThermostatState};

    let record = thermostat_from_row(row)?;
    let ts: Option<SystemTime> = row.get(12);
    let Some(ts) = ts else {
        return Ok(ThermostatOverview {
            record,
            current: None,
        });
    };

    let code = |index: usize| row.get::<_, Option<i16>>(index).map(i64::from);
    let state = ThermostatState {
        temp: row.get(13),
        t_heat: row.get(14),
        t_cool: row.get(15),
        tmode: code(17).and_then(Tmode::from_code),
        fmode: code(18).and_then(Fmode::from_code),
        tstate: code(19).and_then(Tstate::from_code),
        fstate: row.get(20),
        hold: row.get(21),
        override_active: row.get(22),
    };
    let current = CurrentState {
        ts: from_sql_time(ts)?,
        state,
        local_temp: row.get(16),
    };
    Ok(ThermostatOverview {
        record,
        current: Some(current),
    })
}
