//! Store tests against a real PostgreSQL (see `support`): migrations, thermostat rows,
//! batch writes, rollups on a manual clock, outages, the buffer bound and retention.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::block_on;
use jiff::Timestamp;
use thermostat_server::clock::ManualClock;
use thermostat_server::control::SettingsChange;
use thermostat_server::health::Health;
use thermostat_server::reading::{PollFailure, Reading, ThermostatState, Tmode, Tstate};
use thermostat_server::store::migrate::{MIGRATIONS, apply_migrations};
use thermostat_server::store::writer::{Batch, write_batch};
use thermostat_server::store::{self, Store, StoreError, StoreHandle, StoreOptions};
use thermostat_server::thermostat::{ThermostatId, ThermostatRecord};

fn at(text: &str) -> Timestamp {
    text.parse().expect("valid test timestamp")
}

fn id(text: &str) -> ThermostatId {
    ThermostatId::parse(text).expect("valid test id")
}

fn options(url: &str) -> StoreOptions {
    let mut options = StoreOptions::new(url);
    // Only explicit flushes: a periodic flush racing the test's own would make the
    // counts in its flush reports depend on timing.
    options.flush_interval = Duration::from_secs(3600);
    options.connect_timeout = Duration::from_secs(2);
    options.time_zone = jiff::tz::TimeZone::UTC;
    options
}

fn start_store(options: StoreOptions, now: Timestamp) -> (Store, Arc<ManualClock>, Arc<Health>) {
    let clock = Arc::new(ManualClock::new(now));
    let health = Arc::new(Health::new(0));
    let store = store::start(options, clock.clone(), health.clone());
    (store, clock, health)
}

fn record(uuid: &str) -> ThermostatRecord {
    ThermostatRecord {
        id: id(uuid),
        address: "127.0.0.2:8081".parse().expect("valid address"),
        name: format!("thermostat {uuid}"),
        model: "CT50 V1.94".to_string(),
        api_version: Some(113),
        fw_version: Some("1.04.84".to_string()),
        capabilities: vec!["auto_mode".to_string()],
        discovery_method: "static".to_string(),
        active: true,
        away_temp: None,
        last_seen: None,
        first_seen: None,
    }
}

fn reading(uuid: &str, ts: &str, temp: f64, tstate: Tstate) -> Reading {
    Reading {
        thermostat_id: id(uuid),
        ts: at(ts),
        state: ThermostatState {
            temp: Some(temp),
            t_heat: Some(68.0),
            tmode: Some(Tmode::Heat),
            tstate: Some(tstate),
            ..ThermostatState::default()
        },
        local_temp: Some(41.0),
        change: None,
    }
}

fn failure(uuid: &str, ts: &str) -> PollFailure {
    PollFailure {
        thermostat_id: id(uuid),
        ts: at(ts),
        kind: "timeout",
    }
}

fn register(handle: &StoreHandle, uuids: &[&str]) {
    block_on(handle.wait_until_migrated(Duration::from_secs(10))).expect("schema in place");
    for uuid in uuids {
        block_on(handle.upsert_thermostat(record(uuid))).expect("upsert thermostat");
    }
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).expect("count query").get(0)
}

#[test]
fn migrations_rerun_as_noop() {
    let url = support::fresh_database_url("migrations_rerun_as_noop");
    let mut client = support::connect(&url);

    let first = apply_migrations(&mut client).expect("first run");
    let second = apply_migrations(&mut client).expect("second run");

    let every_version: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(first, every_version);
    assert_eq!(second, Vec::<i32>::new());
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM schema_migrations"),
        MIGRATIONS.len() as i64
    );
}

#[test]
fn upsert_keeps_away_temp_and_first_seen() {
    let url = support::fresh_database_url("upsert_keeps_away_temp");
    let (store, clock, _) = start_store(options(&url), at("2024-05-01T12:00:00Z"));
    let handle = store.handle();
    register(&handle, &["aa01"]);
    support::connect(&url)
        .execute("UPDATE thermostats SET away_temp = 55.0", &[])
        .expect("set away_temp");

    clock.set(at("2024-05-02T12:00:00Z"));
    let mut changed = record("aa01");
    changed.address = "127.0.0.3:8082".parse().expect("valid address");
    changed.away_temp = Some(70.0);
    let stored = block_on(handle.upsert_thermostat(changed)).expect("second upsert");

    assert_eq!(stored.away_temp, Some(55.0));
    assert_eq!(stored.first_seen, Some(at("2024-05-01T12:00:00Z")));
    assert_eq!(stored.address.to_string(), "127.0.0.3:8082");
    let loaded = block_on(handle.load_thermostats()).expect("load");
    assert_eq!(loaded, vec![stored]);
    store.shutdown(Duration::from_secs(5));
}

#[test]
fn applied_settings_recorded_field_by_field() {
    let url = support::fresh_database_url("applied_settings");
    let (store, clock, _) = start_store(options(&url), at("2024-05-01T12:00:00Z"));
    let handle = store.handle();
    register(&handle, &["aa01"]);

    let heat = SettingsChange {
        tmode: Some(Tmode::Heat),
        t_heat: Some(70.0),
        ..Default::default()
    };
    block_on(handle.record_settings(id("aa01"), heat, "local_api")).expect("first record");
    clock.set(at("2024-05-01T13:00:00Z"));
    let hold = SettingsChange {
        hold: Some(true),
        ..Default::default()
    };
    block_on(handle.record_settings(id("aa01"), hold, "public_server")).expect("second record");
    store.shutdown(Duration::from_secs(5));

    let row = support::connect(&url)
        .query_one(
            "SELECT tmode, t_heat, t_cool, hold, source,
                    extract(epoch FROM t_heat_applied_at)::bigint,
                    extract(epoch FROM hold_applied_at)::bigint
             FROM device_config WHERE thermostat_id = 'aa01'",
            &[],
        )
        .expect("device_config row");
    assert_eq!(row.get::<_, Option<i16>>(0), Some(1));
    assert_eq!(row.get::<_, Option<f64>>(1), Some(70.0));
    assert_eq!(row.get::<_, Option<f64>>(2), None);
    assert_eq!(row.get::<_, Option<bool>>(3), Some(true));
    assert_eq!(
        row.get::<_, Option<String>>(4).as_deref(),
        Some("public_server")
    );
    assert_eq!(
        row.get::<_, Option<i64>>(5),
        Some(at("2024-05-01T12:00:00Z").as_second())
    );
    assert_eq!(
        row.get::<_, Option<i64>>(6),
        Some(at("2024-05-01T13:00:00Z").as_second())
    );
}

#[test]
fn readings_update_state_and_last_seen() {
    let url = support::fresh_database_url("readings_update_state");
    let (store, _, health) = start_store(options(&url), at("2024-05-01T12:00:30Z"));
    let handle = store.handle();
    register(&handle, &["aa01", "bb02"]);

    handle.submit_reading(reading("aa01", "2024-05-01T12:00:05Z", 70.0, Tstate::Idle));
    handle.submit_reading(reading(
        "aa01",
        "2024-05-01T12:00:10Z",
        70.5,
        Tstate::Heating,
    ));
    handle.submit_reading(reading("bb02", "2024-05-01T12:00:06Z", 66.0, Tstate::Idle));
    handle.submit_failure(failure("bb02", "2024-05-01T12:00:11Z"));
    let report = block_on(handle.flush()).expect("flush");

    let mut client = support::connect(&url);
    assert_eq!(report.readings_written, 3);
    assert_eq!(report.failures_written, 1);
    assert_eq!(count(&mut client, "SELECT count(*) FROM raw_readings"), 3);
    assert_eq!(count(&mut client, "SELECT count(*) FROM poll_failures"), 1);
    let state = client
        .query_one(
            "SELECT temp, tstate FROM current_state WHERE thermostat_id = 'aa01'",
            &[],
        )
        .expect("current_state row");
    assert_eq!(state.get::<_, Option<f64>>(0), Some(70.5));
    assert_eq!(state.get::<_, Option<i16>>(1), Some(1));
    let last_seen: i64 = client
        .query_one(
            "SELECT extract(epoch FROM last_seen)::bigint FROM thermostats WHERE thermostat_id = 'aa01'",
            &[],
        )
        .expect("last_seen")
        .get(0);
    assert_eq!(last_seen, at("2024-05-01T12:00:10Z").as_second());
    assert!(health.snapshot().last_database_write > 0);
    store.shutdown(Duration::from_secs(5));
}

#[test]
fn retried_batch_adds_no_duplicates() {
    let url = support::fresh_database_url("retried_batch");
    let (store, _, _) = start_store(options(&url), at("2024-05-01T12:00:30Z"));
    register(&store.handle(), &["aa01"]);
    store.shutdown(Duration::from_secs(5));

    // A commit whose acknowledgement was lost looks like a failure to the writer, which
    // then writes the same batch again.
    let batch = Batch {
        readings: vec![
            reading("aa01", "2024-05-01T12:00:05Z", 70.0, Tstate::Idle),
            reading("aa01", "2024-05-01T12:00:10Z", 70.5, Tstate::Idle),
        ],
        failures: vec![failure("aa01", "2024-05-01T12:00:15Z")],
    };
    let mut client = support::connect(&url);
    let first = write_batch(&mut client, &batch).expect("first write");
    let retry = write_batch(&mut client, &batch).expect("retried write");

    assert_eq!(first.readings_inserted, 2);
    assert_eq!(retry.readings_inserted, 0);
    assert_eq!(retry.failures_inserted, 0);
    assert_eq!(count(&mut client, "SELECT count(*) FROM raw_readings"), 2);
    assert_eq!(count(&mut client, "SELECT count(*) FROM poll_failures"), 1);
}

#[test]
fn unknown_thermostat_rows_are_skipped() {
    let url = support::fresh_database_url("unknown_thermostat");
    let (store, _, _) = start_store(options(&url), at("2024-05-01T12:00:30Z"));
    let handle = store.handle();
    register(&handle, &["aa01"]);

    handle.submit_reading(reading("aa01", "2024-05-01T12:00:05Z", 70.0, Tstate::Idle));
    handle.submit_reading(reading("ff99", "2024-05-01T12:00:05Z", 70.0, Tstate::Idle));
    let report = block_on(handle.flush()).expect("flush");

    assert_eq!(report.readings_written, 1);
    assert_eq!(report.still_buffered, 0);
    store.shutdown(Duration::from_secs(5));
}

/// Minute rows as (thermostat, minute, poll_count, poll_failures, runtime percent).
type MinuteRowSummary = (String, i64, i32, i32, Option<f64>);

fn minute_rows(url: &str) -> Vec<MinuteRowSummary> {
    support::connect(url)
        .query(
            "SELECT thermostat_id, extract(epoch FROM minute_ts)::bigint, poll_count, poll_failures,
                    hvac_runtime_percent
             FROM minute_readings ORDER BY thermostat_id, minute_ts",
            &[],
        )
        .expect("minute rows")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect()
}

#[test]
fn rollup_writes_each_closed_minute_once() {
    let url = support::fresh_database_url("rollup_closed_minutes");
    let (store, clock, _) = start_store(options(&url), at("2024-05-01T12:00:30Z"));
    let handle = store.handle();
    register(&handle, &["aa01", "bb02"]);

    handle.submit_reading(reading(
        "aa01",
        "2024-05-01T12:00:05Z",
        70.0,
        Tstate::Heating,
    ));
    handle.submit_reading(reading("aa01", "2024-05-01T12:00:10Z", 70.0, Tstate::Idle));
    handle.submit_reading(reading("aa01", "2024-05-01T12:00:15Z", 70.0, Tstate::Idle));
    handle.submit_failure(failure("aa01", "2024-05-01T12:00:20Z"));
    handle.submit_failure(failure("bb02", "2024-05-01T12:00:20Z"));
    handle.submit_reading(reading(
        "aa01",
        "2024-05-01T12:01:05Z",
        70.0,
        Tstate::Heating,
    ));
    let open_minute = block_on(handle.flush()).expect("flush before minute end");

    clock.set(at("2024-05-01T12:01:04Z"));
    let within_grace = block_on(handle.flush()).expect("flush within grace");
    clock.set(at("2024-05-01T12:01:05Z"));
    let closed = block_on(handle.flush()).expect("flush after grace");
    let again = block_on(handle.flush()).expect("second flush after grace");

    assert_eq!(open_minute.minutes_rolled_up, 0);
    assert_eq!(within_grace.minutes_rolled_up, 0);
    assert_eq!(closed.minutes_rolled_up, 2);
    assert_eq!(again.minutes_rolled_up, 0);
    let noon = at("2024-05-01T12:00:00Z").as_second();
    assert_eq!(
        minute_rows(&url),
        vec![
            ("aa01".to_string(), noon, 3, 1, Some(33.3)),
            ("bb02".to_string(), noon, 0, 1, None),
        ]
    );
    store.shutdown(Duration::from_secs(5));
}

#[test]
fn restart_mid_minute_keeps_minutes_whole() {
    let url = support::fresh_database_url("restart_mid_minute");
    let (first, clock, _) = start_store(options(&url), at("2024-05-01T12:00:58Z"));
    register(&first.handle(), &["aa01"]);
    first
        .handle()
        .submit_reading(reading("aa01", "2024-05-01T12:00:05Z", 70.0, Tstate::Idle));
    first
        .handle()
        .submit_reading(reading("aa01", "2024-05-01T12:01:05Z", 70.0, Tstate::Idle));
    clock.set(at("2024-05-01T12:01:30Z"));
    let first_report = first.shutdown(Duration::from_secs(5));

    // The second run starts mid-minute 12:01 and gets more readings in it.
    let (second, clock, _) = start_store(options(&url), at("2024-05-01T12:01:40Z"));
    let handle = second.handle();
    block_on(handle.wait_until_migrated(Duration::from_secs(10))).expect("schema in place");
    handle.submit_reading(reading(
        "aa01",
        "2024-05-01T12:01:45Z",
        71.0,
        Tstate::Heating,
    ));
    block_on(handle.flush()).expect("flush mid-minute");
    clock.set(at("2024-05-01T12:02:10Z"));
    block_on(handle.flush()).expect("flush after minute end");
    second.shutdown(Duration::from_secs(5));

    let noon = at("2024-05-01T12:00:00Z").as_second();
    assert_eq!(first_report.unwritten, 0);
    assert_eq!(
        minute_rows(&url),
        vec![
            ("aa01".to_string(), noon, 1, 0, Some(0.0)),
            ("aa01".to_string(), noon + 60, 2, 0, Some(50.0)),
        ]
    );
}

#[test]
fn postgres_restart_loses_no_readings() {
    let cluster = support::start_test_cluster();
    let url = cluster.create_database("restart").expect("create database");
    let (store, _, health) = start_store(options(&url), at("2024-05-01T12:00:00Z"));
    let handle = store.handle();
    register(&handle, &["aa01"]);

    for second in 0..10 {
        handle.submit_reading(reading(
            "aa01",
            &format!("2024-05-01T12:00:{second:02}Z"),
            70.0,
            Tstate::Idle,
        ));
    }
    block_on(handle.flush()).expect("flush before outage");
    cluster.stop_server().expect("stop server");
    for second in 10..30 {
        handle.submit_reading(reading(
            "aa01",
            &format!("2024-05-01T12:00:{second:02}Z"),
            70.0,
            Tstate::Idle,
        ));
    }
    let during_outage = block_on(handle.flush());
    let connected_during_outage = health.snapshot().database_connected;
    cluster.start_server().expect("start server");

    let mut recovered = None;
    for _ in 0..200 {
        if let Ok(report) = block_on(handle.flush()) {
            recovered = Some(report);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = store.shutdown(Duration::from_secs(5));

    assert!(matches!(during_outage, Err(StoreError::Unavailable(_))));
    assert!(!connected_during_outage);
    assert_eq!(recovered.map(|flush| flush.still_buffered), Some(0));
    assert_eq!(report.readings_written, 30);
    assert_eq!(
        count(
            &mut support::connect(&url),
            "SELECT count(*) FROM raw_readings"
        ),
        30
    );
}

#[test]
fn buffer_bound_drops_oldest() {
    let cluster = support::start_test_cluster();
    let url = cluster
        .create_database("buffer_bound")
        .expect("create database");
    let mut bounded = options(&url);
    bounded.buffer_limit = 5;
    let (store, _, health) = start_store(bounded, at("2024-05-01T12:00:00Z"));
    let handle = store.handle();
    register(&handle, &["aa01"]);
    cluster.stop_server().expect("stop server");

    for second in 0..8 {
        handle.submit_reading(reading(
            "aa01",
            &format!("2024-05-01T12:00:{second:02}Z"),
            70.0,
            Tstate::Idle,
        ));
    }
    let during_outage = block_on(handle.flush());
    cluster.start_server().expect("start server");
    // The store's own periodic flush may write the backlog before this one, so the
    // rows in PostgreSQL are counted rather than this flush's report.
    let mut flushed = false;
    for _ in 0..200 {
        if block_on(handle.flush()).is_ok() {
            flushed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    store.shutdown(Duration::from_secs(5));

    let mut client = support::connect(&url);
    let stored: i64 = client
        .query_one("SELECT count(*) FROM raw_readings", &[])
        .expect("count stored readings")
        .get(0);
    let oldest: i64 = client
        .query_one(
            "SELECT extract(epoch FROM min(ts))::bigint FROM raw_readings",
            &[],
        )
        .expect("oldest stored reading")
        .get(0);
    assert!(during_outage.is_err());
    assert!(flushed, "no flush succeeded after the server restarted");
    assert_eq!(health.snapshot().readings_dropped, 3);
    assert_eq!(stored, 5);
    assert_eq!(oldest, at("2024-05-01T12:00:03Z").as_second());
}

#[test]
fn retention_deletes_old_rows_daily() {
    let url = support::fresh_database_url("retention");
    let mut retention = options(&url);
    retention.raw_retention_days = 14;
    retention.minute_retention_days = 365;
    retention.retention_hour = 2;
    let (store, clock, _) = start_store(retention, at("2024-05-20T01:00:00Z"));
    let handle = store.handle();
    register(&handle, &["aa01"]);

    handle.submit_reading(reading("aa01", "2024-05-01T12:00:00Z", 70.0, Tstate::Idle));
    handle.submit_failure(failure("aa01", "2024-05-01T12:00:05Z"));
    handle.submit_reading(reading("aa01", "2024-05-19T12:00:00Z", 70.0, Tstate::Idle));
    let before_hour = block_on(handle.flush()).expect("flush before retention hour");
    let mut client = support::connect(&url);
    client
        .execute(
            "INSERT INTO minute_readings (thermostat_id, minute_ts, poll_count, poll_failures)
             VALUES ('aa01', '2023-01-01T00:00:00Z', 1, 0)",
            &[],
        )
        .expect("insert a year-old minute row");
    client
        .execute(
            "INSERT INTO desired_events (thermostat_id, ts, kind, fields, reported)
             VALUES ('aa01', '2023-01-01T00:00:00Z', 'device_reset', '{hold}', '{}'),
                    ('aa01', '2024-05-01T00:00:00Z', 'reapplied', '{hold}', '{}')",
            &[],
        )
        .expect("insert a year-old and a recent drift event");

    clock.set(at("2024-05-20T02:00:01Z"));
    let after_hour = block_on(handle.flush()).expect("flush after retention hour");
    let same_day = block_on(handle.flush()).expect("second flush the same day");
    store.shutdown(Duration::from_secs(5));

    assert!(!before_hour.retention_ran);
    assert!(after_hour.retention_ran);
    assert!(!same_day.retention_ran);
    assert_eq!(count(&mut client, "SELECT count(*) FROM raw_readings"), 1);
    assert_eq!(count(&mut client, "SELECT count(*) FROM poll_failures"), 0);
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM minute_readings WHERE minute_ts < '2024-01-01'"
        ),
        0
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM minute_readings WHERE minute_ts >= '2024-05-01'"
        ),
        2
    );
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM desired_events"),
        1,
        "drift events are kept as long as minute rows"
    );
}

/// Measures WAL bytes per reading for one batch of 1,000 readings on a durable cluster
/// (PostgreSQL defaults), and checks it stays below 1 KiB per reading.
#[test]
fn wal_per_reading_stays_small() {
    let cluster = thermostat_server::pgtemp::TempPostgres::start().expect("durable cluster");
    let url = cluster.create_database("wal").expect("create database");
    let mut client = support::connect(&url);
    apply_migrations(&mut client).expect("migrations");
    let ids: Vec<String> = (0..10).map(|n| format!("5cdad4a0a0{n:02}")).collect();
    let mut batch = Batch::default();
    for uuid in &ids {
        insert_thermostat(&mut client, uuid);
        for n in 0..100 {
            let ts = format!("2024-05-01T12:{:02}:{:02}Z", n * 5 / 60, n * 5 % 60);
            batch.readings.push(reading(uuid, &ts, 70.0, Tstate::Idle));
        }
    }
    client.batch_execute("CHECKPOINT").expect("checkpoint");

    let bytes = wal_bytes_of(&mut client, &batch);

    let per_reading = bytes / 1000;
    eprintln!(
        "WAL for 1,000 readings in one batch: {bytes} bytes, {per_reading} bytes per reading"
    );
    assert!(per_reading < 1024, "{per_reading} bytes of WAL per reading");
}

/// Measures WAL bytes per reading in the daemon's steady state at 1,000 thermostats:
/// one reading of each per flush, after a first flush has created their rows. The
/// bound is 400 bytes, and this flush takes 270. The test expects under 300, so that
/// either of two regressions fails it. An `INSERT` in place of the COPY logs a record
/// per row, about 49 bytes more per reading (319 in all). A foreign key from
/// `raw_readings` to `thermostats` locks each thermostat's row once per flush, about 54
/// more.
#[test]
fn wal_per_reading_across_a_large_fleet() {
    let cluster = thermostat_server::pgtemp::TempPostgres::start().expect("durable cluster");
    let url = cluster
        .create_database("wal_fleet")
        .expect("create database");
    let mut client = support::connect(&url);
    apply_migrations(&mut client).expect("migrations");
    let ids: Vec<String> = (0..1000).map(|n| format!("5cdad4b0{n:04}")).collect();
    for uuid in &ids {
        insert_thermostat(&mut client, uuid);
    }
    let flush_at = |ts: &str| Batch {
        readings: ids
            .iter()
            .map(|uuid| reading(uuid, ts, 70.0, Tstate::Idle))
            .collect(),
        failures: Vec::new(),
    };
    client.batch_execute("CHECKPOINT").expect("checkpoint");
    write_batch(&mut client, &flush_at("2024-05-01T12:00:00Z")).expect("first flush");
    write_batch(&mut client, &flush_at("2024-05-01T12:00:05Z")).expect("second flush");

    let bytes = wal_bytes_of(&mut client, &flush_at("2024-05-01T12:00:10Z"));

    let per_reading = bytes / 1000;
    eprintln!("WAL for one flush of 1,000 thermostats: {bytes} bytes, {per_reading} per reading");
    assert!(per_reading < 300, "{per_reading} bytes of WAL per reading");
}

fn insert_thermostat(client: &mut postgres::Client, uuid: &str) {
    client
        .execute(
            "INSERT INTO thermostats (thermostat_id, ip_address) VALUES ($1, '127.0.0.2')",
            &[&uuid],
        )
        .expect("insert thermostat");
}

/// Writes `batch` and returns the WAL bytes that took.
fn wal_bytes_of(client: &mut postgres::Client, batch: &Batch) -> i64 {
    let before: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .expect("lsn")
        .get(0);
    write_batch(client, batch).expect("write batch");
    client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
            &[&before],
        )
        .expect("lsn diff")
        .get(0)
}

/// `current_state` takes every newer reading and ignores an older one. `last_seen`
/// moves only once it is a minute behind, which spares a row update per reading.
#[test]
fn current_state_and_last_seen_move_forward_only() {
    let url = support::fresh_database_url("state_forward_only");
    let mut client = support::connect(&url);
    apply_migrations(&mut client).expect("migrations");
    client
        .execute(
            "INSERT INTO thermostats (thermostat_id, ip_address) VALUES ('aa01', '127.0.0.2')",
            &[],
        )
        .expect("insert thermostat");
    let mut write = |ts: &str, temp: f64| {
        let batch = Batch {
            readings: vec![reading("aa01", ts, temp, Tstate::Idle)],
            failures: Vec::new(),
        };
        write_batch(&mut client, &batch).expect("write batch");
    };
    write("2024-05-01T12:00:00Z", 70.0);
    write("2024-05-01T12:00:30Z", 71.0);
    write("2024-05-01T11:59:00Z", 60.0);

    let mut client = support::connect(&url);
    let state = |client: &mut postgres::Client| -> (f64, i64, i64) {
        let row = client
            .query_one(
                "SELECT s.temp, extract(epoch FROM s.ts)::bigint,
                        extract(epoch FROM t.last_seen)::bigint
                 FROM current_state s JOIN thermostats t USING (thermostat_id)",
                &[],
            )
            .expect("state row");
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(
        state(&mut client),
        (
            71.0,
            at("2024-05-01T12:00:30Z").as_second(),
            at("2024-05-01T12:00:00Z").as_second()
        )
    );

    let batch = Batch {
        readings: vec![reading("aa01", "2024-05-01T12:01:05Z", 72.0, Tstate::Idle)],
        failures: Vec::new(),
    };
    write_batch(&mut client, &batch).expect("write batch");
    let newest = at("2024-05-01T12:01:05Z").as_second();
    assert_eq!(state(&mut client), (72.0, newest, newest));
}
