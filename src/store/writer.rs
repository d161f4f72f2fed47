//! Writing a batch of readings and failures in one transaction.
//!
//! Every insert skips rows already stored (`ON CONFLICT DO NOTHING` on the primary key,
//! or a lookup before the COPY of raw readings), so writing the same batch again (after a commit
//! whose acknowledgement was lost) adds no duplicate. Rows
//! of thermostats missing from `thermostats` are skipped and their ids returned, because
//! the foreign key would otherwise fail the whole batch. Runs only on the store thread.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, Transaction};

use super::buffer::Sample;
use super::sql_time;
use crate::reading::{PollFailure, Reading};
use crate::sync::protocol::{StatusReading, is_outbox_change};
use crate::thermostat::ThermostatId;

/// Readings and failures to write together, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub readings: Vec<Reading>,
    pub failures: Vec<PollFailure>,
}

impl Batch {
    pub fn from_samples(samples: Vec<Sample>) -> Self {
        let mut batch = Self::default();
        for sample in samples {
            match sample {
                Sample::Reading(reading) => batch.readings.push(reading),
                Sample::Failure(failure) => batch.failures.push(failure),
            }
        }
        batch
    }

    pub fn len(&self) -> usize {
        self.readings.len() + self.failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Splits the batch into one batch per thermostat, to isolate a row that the
    /// database rejects.
    pub fn split_by_thermostat(self) -> BTreeMap<ThermostatId, Batch> {
        let mut parts: BTreeMap<ThermostatId, Batch> = BTreeMap::new();
        for reading in self.readings {
            parts
                .entry(reading.thermostat_id.clone())
                .or_default()
                .readings
                .push(reading);
        }
        for failure in self.failures {
            parts
                .entry(failure.thermostat_id.clone())
                .or_default()
                .failures
                .push(failure);
        }
        parts
    }
}

/// What one batch write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Readings inserted; fewer than submitted when some were already stored.
    pub readings_inserted: u64,
    /// Failures inserted.
    pub failures_inserted: u64,
    /// Thermostat ids that are not in `thermostats`; their rows were skipped.
    pub unknown_thermostats: Vec<String>,
}

/// Writes `batch` in one transaction: raw readings, poll failures, the state changes for
/// the public server, the newest state per thermostat into `current_state`, and
/// `thermostats.last_seen`.
pub fn write_batch(client: &mut Client, batch: &Batch) -> Result<WriteOutcome, postgres::Error> {
    let mut transaction = client.transaction()?;

    // Readings are replaceable telemetry, so this transaction skips the WAL flush at
    // commit to spare the SD card: a power cut can lose the last commits, bounded by
    // wal_writer_delay (200 ms by default) times three. Everything else commits durably.
    transaction.batch_execute("SET LOCAL synchronous_commit = off")?;

    let unknown_thermostats = find_unknown_thermostats(&mut transaction, batch)?;
    let readings_inserted =
        insert_readings(&mut transaction, &batch.readings, &unknown_thermostats)?;
    let failures_inserted = insert_failures(&mut transaction, &batch.failures)?;
    insert_state_changes(&mut transaction, &batch.readings)?;
    record_desired_events(&mut transaction, &batch.readings)?;

    let newest = newest_per_thermostat(&batch.readings);
    upsert_current_state(&mut transaction, &newest)?;
    update_last_seen(&mut transaction, &newest)?;

    transaction.commit()?;
    Ok(WriteOutcome {
        readings_inserted,
        failures_inserted,
        unknown_thermostats,
    })
}

fn find_unknown_thermostats(
    transaction: &mut Transaction<'_>,
    batch: &Batch,
) -> Result<Vec<String>, postgres::Error> {
    let ids: BTreeSet<&str> = batch
        .readings
        .iter()
        .map(|reading| reading.thermostat_id.as_str())
        .chain(
            batch
                .failures
                .iter()
                .map(|failure| failure.thermostat_id.as_str()),
        )
        .collect();
    let ids: Vec<&str> = ids.into_iter().collect();

    let rows = transaction.query(
        "SELECT u.id FROM unnest($1::text[]) AS u(id)
         WHERE NOT EXISTS (SELECT 1 FROM thermostats t WHERE t.thermostat_id = u.id)",
        &[&ids],
    )?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Column arrays of readings, for `unnest` so that one statement inserts many rows.
struct ReadingColumns<'a> {
    ts: Vec<SystemTime>,
    thermostat_id: Vec<&'a str>,
    temp: Vec<Option<f64>>,
    t_heat: Vec<Option<f64>>,
    t_cool: Vec<Option<f64>>,
    local_temp: Vec<Option<f64>>,
    tmode: Vec<Option<i16>>,
    fmode: Vec<Option<i16>>,
    tstate: Vec<Option<i16>>,
    fstate: Vec<Option<bool>>,
    hold: Vec<Option<bool>>,
    override_active: Vec<Option<bool>>,
}

impl<'a> ReadingColumns<'a> {
    fn new(readings: &[&'a Reading]) -> Self {
        Self {
            ts: readings.iter().map(|r| sql_time(r.ts)).collect(),
            thermostat_id: readings.iter().map(|r| r.thermostat_id.as_str()).collect(),
            temp: readings.iter().map(|r| r.state.temp).collect(),
            t_heat: readings.iter().map(|r| r.state.t_heat).collect(),
            t_cool: readings.iter().map(|r| r.state.t_cool).collect(),
            local_temp: readings.iter().map(|r| r.local_temp).collect(),
            tmode: readings
                .iter()
                .map(|r| r.state.tmode.map(|m| m.code()))
                .collect(),
            fmode: readings
                .iter()
                .map(|r| r.state.fmode.map(|m| m.code()))
                .collect(),
            tstate: readings
                .iter()
                .map(|r| r.state.tstate.map(|s| s.code()))
                .collect(),
            fstate: readings.iter().map(|r| r.state.fstate).collect(),
            hold: readings.iter().map(|r| r.state.hold).collect(),
            override_active: readings.iter().map(|r| r.state.override_active).collect(),
        }
    }

    fn execute(
        &self,
        transaction: &mut Transaction<'_>,
        sql: &str,
    ) -> Result<u64, postgres::Error> {
        transaction.execute(
            sql,
            &[
                &self.ts,
                &self.thermostat_id,
                &self.temp,
                &self.t_heat,
                &self.t_cool,
                &self.local_temp,
                &self.tmode,
                &self.fmode,
                &self.tstate,
                &self.fstate,
                &self.hold,
                &self.override_active,
            ],
        )
    }
}

/// The `unnest` source shared by the raw insert and the state upsert. It keeps only rows
/// of known thermostats.
const READING_SOURCE: &str = "
    FROM unnest($1::timestamptz[], $2::text[], $3::float8[], $4::float8[], $5::float8[],
                $6::float8[], $7::int2[], $8::int2[], $9::int2[], $10::bool[], $11::bool[],
                $12::bool[])
      AS u(ts, thermostat_id, temp, t_heat, t_cool, local_temp, tmode, fmode, tstate,
           fstate, hold, override)
    WHERE EXISTS (SELECT 1 FROM thermostats t WHERE t.thermostat_id = u.thermostat_id)";

const READING_COLUMNS: &str = "ts, thermostat_id, temp, t_heat, t_cool, local_temp, tmode, \
                               fmode, tstate, fstate, hold, override";

/// Copies the readings that are new into `raw_readings`, newest first, and returns how
/// many it wrote.
///
/// COPY lets PostgreSQL log one WAL record per page instead of one per row, about 45
/// bytes less per reading. COPY cannot skip a row, so this leaves out the readings of
/// unknown thermostats and those already stored (a batch written again after a lost
/// acknowledgement). The lookup stays true until the COPY because this thread is the
/// table's only writer. Rows go newest first: the first row of a batch then widens the
/// BRIN summary of its page range, and the older rows fall inside it.
fn insert_readings(
    transaction: &mut Transaction<'_>,
    readings: &[Reading],
    unknown_thermostats: &[String],
) -> Result<u64, postgres::Error> {
    let mut seen = BTreeSet::new();
    let mut candidates: Vec<&Reading> = readings
        .iter()
        .filter(|reading| {
            !unknown_thermostats
                .iter()
                .any(|id| id == reading.thermostat_id.as_str())
        })
        .filter(|reading| seen.insert((reading.thermostat_id.as_str(), reading.ts)))
        .collect();
    if candidates.is_empty() {
        return Ok(0);
    }

    let stored = already_stored(transaction, &candidates)?;
    let mut position = 0;
    candidates.retain(|_| {
        position += 1;
        !stored.contains(&position)
    });
    candidates.sort_by_key(|reading| std::cmp::Reverse(reading.ts));
    copy_readings(transaction, &candidates)
}

/// Returns the 1-based positions in `readings` of those already in `raw_readings`.
fn already_stored(
    transaction: &mut Transaction<'_>,
    readings: &[&Reading],
) -> Result<BTreeSet<i64>, postgres::Error> {
    let ids: Vec<&str> = readings.iter().map(|r| r.thermostat_id.as_str()).collect();
    let ts: Vec<SystemTime> = readings.iter().map(|r| sql_time(r.ts)).collect();
    let rows = transaction.query(
        "SELECT u.position FROM unnest($1::text[], $2::timestamptz[])
                WITH ORDINALITY AS u(thermostat_id, ts, position)
         WHERE EXISTS (SELECT 1 FROM raw_readings r
                       WHERE r.thermostat_id = u.thermostat_id AND r.ts = u.ts)",
        &[&ids, &ts],
    )?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

fn copy_readings(
    transaction: &mut Transaction<'_>,
    readings: &[&Reading],
) -> Result<u64, postgres::Error> {
    if readings.is_empty() {
        return Ok(0);
    }
    let sink = transaction.copy_in(&format!(
        "COPY raw_readings ({READING_COLUMNS}) FROM STDIN (FORMAT binary)"
    ))?;
    let mut writer = BinaryCopyInWriter::new(sink, &READING_TYPES);
    for reading in readings {
        let state = &reading.state;
        writer.write(&[
            &sql_time(reading.ts),
            &reading.thermostat_id.as_str(),
            &state.temp,
            &state.t_heat,
            &state.t_cool,
            &reading.local_temp,
            &state.tmode.map(|mode| mode.code()),
            &state.fmode.map(|mode| mode.code()),
            &state.tstate.map(|tstate| tstate.code()),
            &state.fstate,
            &state.hold,
            &state.override_active,
        ])?;
    }
    writer.finish()
}

/// The types of [`READING_COLUMNS`], in order, for the binary COPY.
const READING_TYPES: [Type; 12] = [
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::BOOL,
    Type::BOOL,
    Type::BOOL,
];

fn insert_failures(
    transaction: &mut Transaction<'_>,
    failures: &[PollFailure],
) -> Result<u64, postgres::Error> {
    if failures.is_empty() {
        return Ok(0);
    }
    let ts: Vec<SystemTime> = failures.iter().map(|f| sql_time(f.ts)).collect();
    let ids: Vec<&str> = failures.iter().map(|f| f.thermostat_id.as_str()).collect();
    let kinds: Vec<&str> = failures.iter().map(|f| f.kind).collect();
    transaction.execute(
        "INSERT INTO poll_failures (ts, thermostat_id, kind)
         SELECT u.* FROM unnest($1::timestamptz[], $2::text[], $3::text[]) AS u(ts, thermostat_id, kind)
         WHERE EXISTS (SELECT 1 FROM thermostats t WHERE t.thermostat_id = u.thermostat_id)
         ON CONFLICT (thermostat_id, ts) DO NOTHING",
        &[&ts, &ids, &kinds],
    )
}

/// Queues the readings that carry a state change for the public server, in the same
/// transaction as the readings, so a change is queued exactly when it is stored.
fn insert_state_changes(
    transaction: &mut Transaction<'_>,
    readings: &[Reading],
) -> Result<u64, postgres::Error> {
    let changes: Vec<&Reading> = readings
        .iter()
        .filter(|reading| is_outbox_change(reading))
        .collect();
    if changes.is_empty() {
        return Ok(0);
    }

    let ids: Vec<&str> = changes.iter().map(|r| r.thermostat_id.as_str()).collect();
    let ts: Vec<SystemTime> = changes.iter().map(|r| sql_time(r.ts)).collect();
    let payloads: Vec<String> = changes
        .iter()
        .map(|reading| {
            serde_json::to_string(&StatusReading::from_reading(reading)).unwrap_or_default()
        })
        .collect();
    transaction.execute(
        "INSERT INTO sync_outbox (thermostat_id, ts, payload)
         SELECT u.id, u.ts, u.payload::jsonb
         FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS u(id, ts, payload)
         WHERE EXISTS (SELECT 1 FROM thermostats t WHERE t.thermostat_id = u.id)
         ORDER BY u.ts
         ON CONFLICT (thermostat_id, ts) DO NOTHING",
        &[&ids, &ts, &payloads],
    )
}

/// Returns the newest reading of each thermostat in the batch.
fn newest_per_thermostat(readings: &[Reading]) -> Vec<&Reading> {
    let mut newest: BTreeMap<&str, &Reading> = BTreeMap::new();
    for reading in readings {
        let entry = newest
            .entry(reading.thermostat_id.as_str())
            .or_insert(reading);
        if reading.ts > entry.ts {
            *entry = reading;
        }
    }
    newest.into_values().collect()
}

/// Stores the drift and re-apply events among `readings` in `desired_events` and brings
/// `device_config` up to date: the reported settings, a change at the wall as the new
/// desired state, and whether the unit keeps its settings.
fn record_desired_events(
    transaction: &mut Transaction<'_>,
    readings: &[Reading],
) -> Result<(), postgres::Error> {
    for reading in readings {
        let Some(change) = reading
            .change
            .as_ref()
            .filter(|change| change.change_type.is_desired_state())
        else {
            continue;
        };
        let state = &reading.state;
        let reported = serde_json::json!({
            "tmode": state.tmode.map(|mode| mode.code()),
            "t_heat": state.t_heat,
            "t_cool": state.t_cool,
            "fmode": state.fmode.map(|mode| mode.code()),
            "hold": state.hold,
        })
        .to_string();
        let id = reading.thermostat_id.as_str();
        let ts = sql_time(reading.ts);
        let kind = change.change_type.as_str();
        let fields: Vec<&str> = change.fields.clone();
        let known = transaction.execute(
            "INSERT INTO desired_events (thermostat_id, ts, kind, fields, reported)
             SELECT $1, $2, $3, $4, $5::text::jsonb
             WHERE EXISTS (SELECT 1 FROM thermostats WHERE thermostat_id = $1)
             ON CONFLICT (thermostat_id, ts, kind) DO NOTHING",
            &[&id, &ts, &kind, &fields, &reported],
        )?;
        if known == 0 {
            continue;
        }

        let wall = change.change_type == crate::reading::ChangeType::WallChange;
        let named = |field: &str| wall && change.fields.contains(&field);
        let holding = match change.change_type {
            crate::reading::ChangeType::NotHolding => Some(false),
            crate::reading::ChangeType::Reapplied => Some(true),
            _ => None,
        };
        transaction.execute(
            "INSERT INTO device_config (thermostat_id, reported, reported_at)
             VALUES ($1, $2::text::jsonb, $3)
             ON CONFLICT (thermostat_id) DO UPDATE SET
                 reported = EXCLUDED.reported,
                 reported_at = EXCLUDED.reported_at,
                 tmode = CASE WHEN $4 THEN $5 ELSE device_config.tmode END,
                 t_heat = CASE WHEN $6 THEN $7 ELSE device_config.t_heat END,
                 t_cool = CASE WHEN $8 THEN $9 ELSE device_config.t_cool END,
                 fmode = CASE WHEN $10 THEN $11 ELSE device_config.fmode END,
                 hold = CASE WHEN $12 THEN $13 ELSE device_config.hold END,
                 source = CASE WHEN $14 THEN 'wall' ELSE device_config.source END,
                 commanded_at = CASE WHEN $14 THEN $3 ELSE device_config.commanded_at END,
                 holding_settings = COALESCE($15, device_config.holding_settings),
                 reapply_failures = CASE WHEN $15 THEN 0 WHEN NOT $15 THEN $16
                                         ELSE device_config.reapply_failures END,
                 updated_at = now()",
            &[
                &id,
                &reported,
                &ts,
                &named("tmode"),
                &state.tmode.map(|mode| mode.code()),
                &named("t_heat"),
                &state.t_heat,
                &named("t_cool"),
                &state.t_cool,
                &named("fmode"),
                &state.fmode.map(|mode| mode.code()),
                &named("hold"),
                &state.hold,
                &wall,
                &holding,
                &(crate::desired::REAPPLY_BUDGET as i32),
            ],
        )?;
    }
    Ok(())
}

/// Stores the newest state, unless the stored row is newer (a backlog written late).
/// A plain UPDATE, then an INSERT of the thermostats without a row: an
/// `INSERT ... ON CONFLICT DO UPDATE` also logs a row lock, 54 WAL bytes per reading.
fn upsert_current_state(
    transaction: &mut Transaction<'_>,
    newest: &[&Reading],
) -> Result<u64, postgres::Error> {
    if newest.is_empty() {
        return Ok(0);
    }
    let columns = ReadingColumns::new(newest);
    let updated = columns.execute(
        transaction,
        "UPDATE current_state c SET
             ts = u.ts, temp = u.temp, t_heat = u.t_heat, t_cool = u.t_cool,
             local_temp = u.local_temp, tmode = u.tmode, fmode = u.fmode, tstate = u.tstate,
             fstate = u.fstate, hold = u.hold, override = u.override
         FROM unnest($1::timestamptz[], $2::text[], $3::float8[], $4::float8[], $5::float8[],
                     $6::float8[], $7::int2[], $8::int2[], $9::int2[], $10::bool[], $11::bool[],
                     $12::bool[])
           AS u(ts, thermostat_id, temp, t_heat, t_cool, local_temp, tmode, fmode, tstate,
                fstate, hold, override)
         WHERE c.thermostat_id = u.thermostat_id AND c.ts < u.ts",
    )?;
    let sql = format!(
        "INSERT INTO current_state ({READING_COLUMNS}) SELECT u.* {READING_SOURCE}
           AND NOT EXISTS (SELECT 1 FROM current_state c WHERE c.thermostat_id = u.thermostat_id)
         ON CONFLICT (thermostat_id) DO NOTHING"
    );
    Ok(updated + columns.execute(transaction, &sql)?)
}

/// Moves `thermostats.last_seen` forward once it is a minute behind: an update per
/// reading would cost about 80 WAL bytes each, and `current_state.ts` stores the exact
/// time of the newest reading.
fn update_last_seen(
    transaction: &mut Transaction<'_>,
    newest: &[&Reading],
) -> Result<u64, postgres::Error> {
    if newest.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = newest.iter().map(|r| r.thermostat_id.as_str()).collect();
    let ts: Vec<SystemTime> = newest.iter().map(|r| sql_time(r.ts)).collect();
    transaction.execute(
        "UPDATE thermostats t SET last_seen = u.ts
         FROM unnest($1::text[], $2::timestamptz[]) AS u(thermostat_id, ts)
         WHERE t.thermostat_id = u.thermostat_id
           AND (t.last_seen IS NULL OR t.last_seen < u.ts - interval '1 minute')",
        &[&ids, &ts],
    )
}
