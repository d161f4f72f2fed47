//! The sync's tables through the store, against a real PostgreSQL: the state-change
//! outbox written with its readings, minute rows in upload order behind the keyset
//! checkpoint, parking, and the command log that runs a command once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::block_on;
use jiff::Timestamp;
use serde_json::json;
use thermostat_server::clock::ManualClock;
use thermostat_server::health::Health;
use thermostat_server::reading::{ChangeType, Reading, StateChange, ThermostatState, Tmode};
use thermostat_server::store::{
    self, Claim, MinuteKey, ParkEffects, Parked, Store, StoreHandle, StoreOptions,
};
use thermostat_server::sync::command::Envelope;
use thermostat_server::sync::decide::BatchEnd;
use thermostat_server::thermostat::{ThermostatId, ThermostatRecord};

const UUID: &str = "5cdad4a0a0a1";

fn at(text: &str) -> Timestamp {
    text.parse().expect("valid test timestamp")
}

fn start(url: &str) -> (Store, StoreHandle) {
    let mut options = StoreOptions::new(url);
    options.flush_interval = Duration::from_millis(20);
    options.time_zone = jiff::tz::TimeZone::UTC;
    let clock = Arc::new(ManualClock::new(at("2026-03-01T12:00:00Z")));
    let store = store::start(options, clock, Arc::new(Health::new(0)));
    let handle = store.handle();
    block_on(handle.wait_until_migrated(Duration::from_secs(20))).expect("migrated");
    block_on(handle.upsert_thermostat(record(UUID))).expect("thermostat stored");
    (store, handle)
}

fn record(uuid: &str) -> ThermostatRecord {
    ThermostatRecord {
        id: ThermostatId::parse(uuid).expect("valid id"),
        address: "127.0.0.2:8081".parse().expect("valid address"),
        name: "hall".to_string(),
        model: "CT50 V1.94".to_string(),
        api_version: Some(113),
        fw_version: None,
        capabilities: Vec::new(),
        discovery_method: "static".to_string(),
        active: true,
        away_temp: None,
        last_seen: None,
        first_seen: None,
    }
}

fn reading(ts: &str, change: Option<ChangeType>) -> Reading {
    Reading {
        thermostat_id: ThermostatId::parse(UUID).expect("valid id"),
        ts: at(ts),
        state: ThermostatState {
            temp: Some(70.0),
            tmode: Some(Tmode::Heat),
            ..ThermostatState::default()
        },
        local_temp: None,
        change: change.map(|change_type| StateChange {
            change_type,
            fields: vec!["tmode"],
        }),
    }
}

fn envelope(id: &str) -> Envelope {
    Envelope {
        command_id: id.to_string(),
        command: "set_state".to_string(),
        thermostat_id: Some(UUID.to_string()),
        params: json!({"tmode": 1}),
        issued_at: None,
    }
}

#[test]
fn outbox_gets_changes_not_initial() {
    let url = support::fresh_database_url("sync_store_outbox");
    let (store, handle) = start(&url);
    handle.submit_reading(reading("2026-03-01T11:00:00Z", Some(ChangeType::Initial)));
    handle.submit_reading(reading("2026-03-01T11:00:05Z", None));
    handle.submit_reading(reading("2026-03-01T11:00:10Z", Some(ChangeType::Mode)));
    handle.submit_reading(reading("2026-03-01T11:00:15Z", Some(ChangeType::Setpoint)));
    block_on(handle.flush()).expect("flushed");

    let batch = block_on(handle.peek_state_changes(BatchEnd::Oldest, 10)).expect("peek");
    store.shutdown(Duration::from_secs(2));

    assert_eq!(batch.pending, 2);
    assert_eq!(batch.oldest_ts, Some(at("2026-03-01T11:00:10Z")));
    assert_eq!(batch.rows[0].1["change_type"], "mode");
    assert_eq!(batch.rows[1].1["change_type"], "setpoint");
}

#[test]
fn outbox_ends_and_acks() {
    let url = support::fresh_database_url("sync_store_ends");
    let (store, handle) = start(&url);
    for second in 0..30 {
        let ts = format!("2026-03-01T11:00:{second:02}Z");
        handle.submit_reading(reading(&ts, Some(ChangeType::Temperature)));
    }
    block_on(handle.flush()).expect("flushed");

    let oldest = block_on(handle.peek_state_changes(BatchEnd::Oldest, 10)).expect("peek");
    let newest = block_on(handle.peek_state_changes(BatchEnd::Newest, 10)).expect("peek");
    let ids: Vec<i64> = oldest.rows.iter().map(|(id, _)| *id).collect();
    block_on(handle.ack_state_changes(ids)).expect("acknowledged");
    let after = block_on(handle.peek_state_changes(BatchEnd::Oldest, 10)).expect("peek");
    store.shutdown(Duration::from_secs(2));

    assert_eq!(oldest.rows[0].1["ts"], "2026-03-01T11:00:00Z");
    assert_eq!(newest.rows[0].1["ts"], "2026-03-01T11:00:20Z");
    assert_eq!(newest.rows[9].1["ts"], "2026-03-01T11:00:29Z");
    assert_eq!(after.pending, 20);
    assert_eq!(after.rows[0].1["ts"], "2026-03-01T11:00:10Z");
}

/// Inserts `minutes` minute rows for each of `uuids`, from 10:00.
fn insert_minutes(url: &str, uuids: &[&str], minutes: i32) {
    let mut db = support::connect(url);
    for uuid in uuids {
        db.execute(
            "INSERT INTO minute_readings (thermostat_id, minute_ts, poll_count, poll_failures)
             SELECT $1, timestamptz '2026-03-01 10:00:00+00' + make_interval(mins => m), 12, 0
             FROM generate_series(0, $2 - 1) AS m",
            &[uuid, &minutes],
        )
        .expect("insert minute rows");
    }
}

#[test]
fn minute_batches_oldest_first_in_hundreds() {
    let url = support::fresh_database_url("sync_store_minutes");
    let (store, handle) = start(&url);
    block_on(handle.upsert_thermostat(record("5cdad4a0a0a2"))).expect("second thermostat");
    block_on(handle.upsert_thermostat(record("5cdad4a0a0a3"))).expect("third thermostat");
    insert_minutes(&url, &[UUID, "5cdad4a0a0a2", "5cdad4a0a0a3"], 40);

    let mut sizes = Vec::new();
    let mut keys = Vec::new();
    loop {
        let batch = block_on(handle.next_minute_batch(100)).expect("batch");
        let Some(last) = batch.last.clone() else {
            break;
        };
        sizes.push(batch.rows.len());
        keys.extend(
            batch
                .rows
                .iter()
                .map(|row| (row.minute_ts.clone(), row.thermostat_id.clone())),
        );
        block_on(handle.advance_minute_checkpoint(last)).expect("checkpoint");
    }
    store.shutdown(Duration::from_secs(2));

    assert_eq!(sizes, vec![100, 20]);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // Row 100 is the first of minute 10:33; the next batch starts at its second row.
    assert_eq!(
        keys[99],
        ("2026-03-01T10:33:00Z".to_string(), UUID.to_string())
    );
    assert_eq!(
        keys[100],
        (
            "2026-03-01T10:33:00Z".to_string(),
            "5cdad4a0a0a2".to_string()
        )
    );
}

#[test]
fn minute_checkpoint_moves_only_when_told() {
    let url = support::fresh_database_url("sync_store_checkpoint");
    let (store, handle) = start(&url);
    insert_minutes(&url, &[UUID], 3);

    let first = block_on(handle.next_minute_batch(2)).expect("batch");
    let again = block_on(handle.next_minute_batch(2)).expect("batch");
    block_on(handle.advance_minute_checkpoint(MinuteKey {
        minute_ts: at("2026-03-01T10:01:00Z"),
        thermostat_id: UUID.to_string(),
    }))
    .expect("checkpoint");
    let rest = block_on(handle.next_minute_batch(2)).expect("batch");
    store.shutdown(Duration::from_secs(2));

    assert_eq!(first, again);
    assert_eq!(rest.rows.len(), 1);
    assert_eq!(rest.rows[0].minute_ts, "2026-03-01T10:02:00Z");
}

#[test]
fn parking_removes_outbox_rows() {
    let url = support::fresh_database_url("sync_store_park");
    let (store, handle) = start(&url);
    handle.submit_reading(reading("2026-03-01T11:00:10Z", Some(ChangeType::Mode)));
    block_on(handle.flush()).expect("flushed");
    let batch = block_on(handle.peek_state_changes(BatchEnd::Oldest, 10)).expect("peek");
    let ids: Vec<i64> = batch.rows.iter().map(|(id, _)| *id).collect();

    let parked = Parked {
        endpoint: "/status",
        payload: json!({"readings": []}),
        status: 422,
        reason: "bad reading".to_string(),
    };
    let effects = ParkEffects {
        outbox_ids: ids,
        ..ParkEffects::default()
    };
    block_on(handle.park(parked, effects)).expect("parked");
    let after = block_on(handle.peek_state_changes(BatchEnd::Oldest, 10)).expect("peek");
    store.shutdown(Duration::from_secs(2));

    assert_eq!(after.pending, 0);
    let mut db = support::connect(&url);
    let reason: String = db
        .query_one("SELECT reason FROM sync_parked WHERE status = 422", &[])
        .expect("parked row")
        .get(0);
    assert_eq!(reason, "bad reading");
}

#[test]
fn command_claimed_once() {
    let url = support::fresh_database_url("sync_store_claim");
    let (store, handle) = start(&url);

    let first = block_on(handle.claim_command(envelope("c1"))).expect("claim");
    let while_running = block_on(handle.claim_command(envelope("c1"))).expect("claim");
    let entry = json!({"command_id": "c1", "status": "completed"});
    block_on(handle.finish_command("c1".to_string(), "completed", entry.clone()))
        .expect("finished");
    let repeat = block_on(handle.claim_command(envelope("c1"))).expect("claim");
    let queued = block_on(handle.pending_results(10)).expect("results");
    let ids: Vec<i64> = queued.iter().map(|(id, _)| *id).collect();
    block_on(handle.ack_results(ids)).expect("acknowledged");
    let after_ack = block_on(handle.pending_results(10)).expect("results");
    store.shutdown(Duration::from_secs(2));

    assert_eq!(first, Claim::New);
    assert_eq!(while_running, Claim::Running);
    assert_eq!(repeat, Claim::Finished(entry.clone()));
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].1, entry);
    assert!(after_ack.is_empty());
}

#[test]
fn away_temp_needs_known_thermostat() {
    let url = support::fresh_database_url("sync_store_away");
    let (store, handle) = start(&url);
    let known = ThermostatId::parse(UUID).expect("valid id");
    let unknown = ThermostatId::parse("ffffffffffff").expect("valid id");

    let stored = block_on(handle.set_away_temp(known, 60.5)).expect("stored");
    let missing = block_on(handle.set_away_temp(unknown, 60.5)).expect("no row");
    let records = block_on(handle.load_thermostats()).expect("loaded");
    store.shutdown(Duration::from_secs(2));

    assert!(stored);
    assert!(!missing);
    assert_eq!(records[0].away_temp, Some(60.5));
}
