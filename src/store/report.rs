//! Read-only reports for the operator's command line: the database check, minute rows,
//! and the gap report with the poll failures around each gap.
//!
//! These run on a command line's main thread with a client of their own, opened with
//! [`connect`]. They never migrate and never write. The schema knowledge stays here.

use std::time::SystemTime;

use jiff::{SignedDuration, Timestamp};
use postgres::Client;

use super::queries::{self, ThermostatOverview};
use super::{StoreError, StoreOptions, from_sql_time, migrate, sql_time, worker};
use crate::rollup::{MinuteRange, RollupProgress, failure_window, minute_start, missing_ranges};
use crate::thermostat::ThermostatId;

/// Tables whose rows `database_check` counts, in the order it reports them.
const COUNTED_TABLES: [&str; 11] = [
    "thermostats",
    "current_state",
    "raw_readings",
    "poll_failures",
    "minute_readings",
    "device_config",
    "desired_events",
    "sync_outbox",
    "sync_parked",
    "sync_commands",
    "sync_result_outbox",
];

/// Opens a client with the daemon's connection settings. Blocking.
pub fn connect(options: &StoreOptions) -> Result<Client, StoreError> {
    worker::open_client(options)
}

/// Returns `host:port/database` of the configured URL, for messages.
pub fn target(options: &StoreOptions) -> String {
    worker::describe_target(&options.url)
}

/// Loads every thermostat with its newest state, ordered by id, or only `id` when given.
pub fn thermostats(
    client: &mut Client,
    id: Option<&ThermostatId>,
) -> Result<Vec<ThermostatOverview>, StoreError> {
    queries::thermostat_overviews(client, id)
}

/// Summary of a thermostat's desired state for `tstat status`: the commanded settings,
/// who commanded them and when, the drift policy, whether the unit keeps them, and the
/// drift and re-apply events of the last 24 hours by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredSummary {
    pub settings: crate::control::SettingsChange,
    pub source: Option<String>,
    pub commanded_at: Option<Timestamp>,
    /// `enforce`, `report` or `off`; `None` until the daemon started with the thermostat.
    pub policy: Option<String>,
    pub holding_settings: bool,
    /// `(kind, count)` of `desired_events` in the last 24 hours, by kind.
    pub recent_events: Vec<(String, i64)>,
}

/// Loads the desired state summary of each thermostat that has a `device_config` row.
pub fn desired_summaries(
    client: &mut Client,
) -> Result<Vec<(ThermostatId, DesiredSummary)>, StoreError> {
    let stored = queries::load_desired(client)?;
    let rows = client
        .query(
            "SELECT d.thermostat_id, d.policy, d.holding_settings,
                    coalesce(array_agg(e.kind ORDER BY e.kind) FILTER (WHERE e.kind IS NOT NULL), '{}'),
                    coalesce(array_agg(e.n ORDER BY e.kind) FILTER (WHERE e.kind IS NOT NULL), '{}')
             FROM device_config d
             LEFT JOIN (SELECT thermostat_id, kind, count(*) AS n
                        FROM desired_events
                        WHERE ts > now() - interval '24 hours'
                        GROUP BY thermostat_id, kind) e USING (thermostat_id)
             GROUP BY d.thermostat_id, d.policy, d.holding_settings",
            &[],
        )
        .map_err(|error| StoreError::Query(format!("loading the drift summaries: {error}")))?;

    let mut summaries = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(id) = ThermostatId::parse(row.get::<_, &str>(0)) else {
            continue;
        };
        let kinds: Vec<String> = row.get(3);
        let counts: Vec<i64> = row.get(4);
        let mut summary = DesiredSummary {
            policy: row.get(1),
            holding_settings: row.get(2),
            recent_events: kinds.into_iter().zip(counts).collect(),
            ..DesiredSummary::default()
        };
        if let Some((_, desired)) = stored.iter().find(|(stored_id, _)| *stored_id == id) {
            summary.settings = desired.settings;
            summary.source = desired.source.clone();
            summary.commanded_at = desired.commanded_at;
        }
        summaries.push((id, summary));
    }
    Ok(summaries)
}

/// The findings of `db check`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseCheck {
    /// Highest applied migration, `None` before the daemon first connected.
    pub schema_version: Option<i32>,
    /// Highest migration version in this build.
    pub expected_version: i32,
    /// Rows per table; tables that do not exist are left out.
    pub row_counts: Vec<RowCount>,
    /// `(thermostat, time of its newest reading)`.
    pub newest_readings: Vec<(String, Option<Timestamp>)>,
    /// State changes not yet acknowledged by the public server.
    pub outbox_backlog: i64,
    /// Time of the oldest unacknowledged state change.
    pub oldest_unsent: Option<Timestamp>,
    /// `(table, bytes on disk with indexes and TOAST)`, largest first.
    pub table_sizes: Vec<(String, i64)>,
}

/// Runs the checks of `db check`. Tables estimated at `exact_count_limit` rows or more
/// report the planner's estimate instead of an exact count.
pub fn database_check(
    client: &mut Client,
    exact_count_limit: f32,
) -> Result<DatabaseCheck, StoreError> {
    let existing = existing_tables(client)?;
    let has = |table: &str| existing.iter().any(|name| name == table);

    let schema_version = if has("schema_migrations") {
        let row = client
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .map_err(|error| StoreError::from_postgres("reading schema_migrations", &error))?;
        row.get(0)
    } else {
        None
    };

    let mut row_counts = Vec::new();
    for table in COUNTED_TABLES.iter().filter(|table| has(table)) {
        row_counts.push(count_rows(client, table, exact_count_limit)?);
    }

    let newest_readings = if has("current_state") {
        newest_readings(client)?
    } else {
        Vec::new()
    };
    let (outbox_backlog, oldest_unsent) = if has("sync_outbox") {
        outbox_backlog(client)?
    } else {
        (0, None)
    };

    Ok(DatabaseCheck {
        schema_version,
        expected_version: migrate::MIGRATIONS.last().map_or(0, |last| last.version),
        row_counts,
        newest_readings,
        outbox_backlog,
        oldest_unsent,
        table_sizes: table_sizes(client)?,
    })
}

/// The number of rows of one table.
#[derive(Debug, Clone, PartialEq)]
pub struct RowCount {
    pub table: String,
    pub rows: i64,
    /// True when `rows` is the planner's estimate from the last ANALYZE.
    pub estimated: bool,
}

/// Tables the planner estimates at this many rows or more are not counted exactly by
/// `db check`, because `count(*)` reads the whole table, which on an SD card can
/// outlast the 30 s statement timeout.
pub const EXACT_COUNT_LIMIT: f32 = 1_000_000.0;

fn count_rows(client: &mut Client, table: &str, limit: f32) -> Result<RowCount, StoreError> {
    let estimate: f32 = client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)",
            &[&table],
        )
        .map_err(|error| StoreError::from_postgres(&format!("estimating {table}"), &error))?
        .get(0);
    // reltuples is -1 before the first ANALYZE.
    if estimate >= limit {
        return Ok(RowCount {
            table: table.to_string(),
            rows: estimate as i64,
            estimated: true,
        });
    }
    // The name comes from `COUNTED_TABLES`, never from input.
    let row = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .map_err(|error| StoreError::from_postgres(&format!("counting {table}"), &error))?;
    Ok(RowCount {
        table: table.to_string(),
        rows: row.get(0),
        estimated: false,
    })
}

fn existing_tables(client: &mut Client) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .map_err(|error| StoreError::from_postgres("listing tables", &error))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

fn newest_readings(client: &mut Client) -> Result<Vec<(String, Option<Timestamp>)>, StoreError> {
    let rows = client
        .query(
            "SELECT t.thermostat_id, c.ts FROM thermostats t
             LEFT JOIN current_state c USING (thermostat_id) ORDER BY t.thermostat_id",
            &[],
        )
        .map_err(|error| StoreError::from_postgres("reading the newest readings", &error))?;
    rows.iter()
        .map(|row| Ok((row.get(0), optional_time(row.get(1))?)))
        .collect()
}

fn outbox_backlog(client: &mut Client) -> Result<(i64, Option<Timestamp>), StoreError> {
    let row = client
        .query_one(
            "SELECT count(*), min(ts) FROM sync_outbox WHERE acked_at IS NULL",
            &[],
        )
        .map_err(|error| StoreError::from_postgres("reading the outbox backlog", &error))?;
    Ok((row.get(0), optional_time(row.get(1))?))
}

fn table_sizes(client: &mut Client) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = client
        .query(
            "SELECT c.relname::text, pg_total_relation_size(c.oid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'
             ORDER BY 2 DESC, 1",
            &[],
        )
        .map_err(|error| StoreError::from_postgres("reading table sizes", &error))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

fn optional_time(ts: Option<SystemTime>) -> Result<Option<Timestamp>, StoreError> {
    ts.map(from_sql_time).transpose()
}

/// One row of `minute_readings`, as `db minutes` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteReport {
    pub minute: Timestamp,
    /// Mean indoor temperature, °F.
    pub temp_avg: Option<f64>,
    pub t_heat_last: Option<f64>,
    pub t_cool_last: Option<f64>,
    /// Mean outside temperature, °F.
    pub local_temp_avg: Option<f64>,
    /// Share of polls heating or cooling, percent.
    pub hvac_runtime_percent: Option<f64>,
    pub tmode_last: Option<i16>,
    pub poll_count: i32,
    pub poll_failures: i32,
}

/// Minute rows of `id` from `since` on, oldest first.
pub fn minute_rows(
    client: &mut Client,
    id: &ThermostatId,
    since: Timestamp,
) -> Result<Vec<MinuteReport>, StoreError> {
    let rows = client
        .query(
            "SELECT minute_ts, temp_avg, t_heat_last, t_cool_last, local_temp_avg,
                    hvac_runtime_percent, tmode_last, poll_count, poll_failures
             FROM minute_readings WHERE thermostat_id = $1 AND minute_ts >= $2
             ORDER BY minute_ts",
            &[&id.as_str(), &sql_time(since)],
        )
        .map_err(|error| StoreError::from_postgres("reading minute rows", &error))?;
    rows.iter()
        .map(|row| {
            Ok(MinuteReport {
                minute: from_sql_time(row.get(0))?,
                temp_avg: row.get(1),
                t_heat_last: row.get(2),
                t_cool_last: row.get(3),
                local_temp_avg: row.get(4),
                hvac_runtime_percent: row.get(5),
                tmode_last: row.get(6),
                poll_count: row.get(7),
                poll_failures: row.get(8),
            })
        })
        .collect()
}

/// Poll failures of one kind in a gap's failure window.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureSummary {
    pub kind: String,
    pub count: i64,
    pub first: Timestamp,
    pub last: Timestamp,
}

/// One run of missing minutes of one thermostat.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub range: MinuteRange,
    /// Failures from `margin` before the gap to `margin` after it.
    pub failures: Vec<FailureSummary>,
}

/// The gaps of one thermostat.
#[derive(Debug, Clone, PartialEq)]
pub struct ThermostatGaps {
    pub id: String,
    pub name: String,
    /// The minutes examined: from `since` (or first seen) to the last rolled-up minute.
    pub window: MinuteRange,
    pub gaps: Vec<Gap>,
}

/// Finds the minutes without a row for every active thermostat, from `since` (or its
/// first-seen minute) up to the last minute the rollup closed, and the poll failures
/// within `margin` of each gap.
pub fn gap_report(
    client: &mut Client,
    since: Timestamp,
    margin: SignedDuration,
) -> Result<Vec<ThermostatGaps>, StoreError> {
    let end = match queries::rollup_progress(client)
        .map_err(|error| StoreError::from_postgres("reading the rollup checkpoint", &error))?
    {
        RollupProgress::RolledThrough(last) => last + SignedDuration::from_mins(1),
        // Nothing rolled up yet: no minute can be missing.
        RollupProgress::NotStarted { .. } => minute_start(since),
    };
    let since = minute_start(since);

    let thermostats = client
        .query(
            "SELECT thermostat_id, name, first_seen FROM thermostats WHERE active
             ORDER BY thermostat_id",
            &[],
        )
        .map_err(|error| StoreError::from_postgres("listing thermostats", &error))?;
    let mut report = Vec::with_capacity(thermostats.len());
    for row in &thermostats {
        let id: String = row.get(0);
        let first_seen = minute_start(from_sql_time(row.get(2))?);
        let window = MinuteRange {
            first: since.max(first_seen).min(end),
            end,
        };
        let minutes = present_minutes(client, &id, window)?;
        let mut gaps = Vec::new();
        for range in missing_ranges(&minutes, window) {
            let failures = failures_around(client, &id, failure_window(range, margin))?;
            gaps.push(Gap { range, failures });
        }
        report.push(ThermostatGaps {
            id,
            name: row.get(1),
            window,
            gaps,
        });
    }
    Ok(report)
}

/// Reads the minute starts of one thermostat in `window`, one thermostat at a time so
/// that a long window of a large site does not sit in memory at once.
fn present_minutes(
    client: &mut Client,
    id: &str,
    window: MinuteRange,
) -> Result<Vec<Timestamp>, StoreError> {
    let rows = client
        .query(
            "SELECT minute_ts FROM minute_readings
             WHERE thermostat_id = $1 AND minute_ts >= $2 AND minute_ts < $3",
            &[&id, &sql_time(window.first), &sql_time(window.end)],
        )
        .map_err(|error| StoreError::from_postgres("reading minute rows", &error))?;
    rows.iter().map(|row| from_sql_time(row.get(0))).collect()
}

fn failures_around(
    client: &mut Client,
    id: &str,
    window: MinuteRange,
) -> Result<Vec<FailureSummary>, StoreError> {
    let rows = client
        .query(
            "SELECT kind, count(*), min(ts), max(ts) FROM poll_failures
             WHERE thermostat_id = $1 AND ts >= $2 AND ts < $3
             GROUP BY kind ORDER BY count(*) DESC, kind",
            &[&id, &sql_time(window.first), &sql_time(window.end)],
        )
        .map_err(|error| StoreError::from_postgres("reading poll failures", &error))?;
    rows.iter()
        .map(|row| {
            Ok(FailureSummary {
                kind: row.get(0),
                count: row.get(1),
                first: from_sql_time(row.get(2))?,
                last: from_sql_time(row.get(3))?,
            })
        })
        .collect()
}
