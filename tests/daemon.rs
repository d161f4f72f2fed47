//! The real daemon against simulated thermostats and a PostgreSQL the harness starts:
//! registration by uuid, readings and current state in the database, `-1` never
//! stored as a temperature, the health endpoint, and a clean stop.

mod support;

use support::daemon::{RunningDaemon, connect, http_get, wait_for};

use std::net::TcpListener;
use std::time::Duration;

use thermostat_server::config::Config;
use thermostat_server::control::SettingsChange;
use thermostat_server::reading::Tmode;
use thermostat_server::simulator::{self, Fault, Fleet, FleetOptions, Reply, ScriptedReply};
use thermostat_server::thermostat::DeviceAddress;

fn test_config(url: &str, fleet: &Fleet) -> Config {
    let mut config = Config::new("test_site", url);
    config.thermostats.addresses = fleet
        .devices()
        .iter()
        .map(|device| DeviceAddress::new(device.address()))
        .collect();
    config.polling.interval = Duration::from_millis(500);
    config.polling.request_timeout = Duration::from_secs(2);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.database.flush_interval = Duration::from_millis(200);
    config
}

fn count(client: &mut postgres::Client, sql: &str, uuid: &str) -> i64 {
    client.query_one(sql, &[&uuid]).expect("count query").get(0)
}

/// Like `count`, but 0 while the daemon has not created the tables yet.
fn count_so_far(client: &mut postgres::Client, sql: &str, uuid: &str) -> i64 {
    client
        .query_one(sql, &[&uuid])
        .map(|row| row.get(0))
        .unwrap_or(0)
}

fn negative_one_script() -> Fault {
    let reading = |temp: &str| {
        format!(
            r#"{{"temp":{temp},"tmode":1,"fmode":0,"override":0,"hold":0,"t_heat":70.00,"tstate":1,"fstate":1,"time":{{"day":1,"hour":8,"minute":0}},"t_type_post":0}}"#
        )
    };
    let replies = ["71.00", "-1", "71.50", "-1"]
        .iter()
        .map(|temp| ScriptedReply {
            delay: Duration::ZERO,
            status: 200,
            body: Reply::Body(reading(temp)),
        })
        .collect();
    Fault::Script {
        replies,
        cycle: true,
    }
}

#[test]
fn daemon_polls_fleet_into_postgres() {
    let url = support::fresh_database_url("daemon_polls_fleet");
    let fleet = Fleet::start(FleetOptions {
        count: 3,
        models: vec![
            simulator::ModelProfile::Ct50,
            simulator::ModelProfile::Generic("CT55 V9.01".into()),
            simulator::ModelProfile::Ct30,
        ],
        faults: vec![(2, negative_one_script())],
        ..FleetOptions::default()
    })
    .expect("fleet starts");
    let uuids: Vec<String> = fleet
        .devices()
        .iter()
        .map(|device| device.uuid().to_string())
        .collect();
    let daemon = RunningDaemon::start(test_config(&url, &fleet));
    let mut db = connect(&url);

    let readings_sql = "SELECT count(*) FROM raw_readings WHERE thermostat_id = $1";
    wait_for(
        Duration::from_secs(20),
        "5 readings from each thermostat",
        || {
            uuids
                .iter()
                .all(|uuid| count_so_far(&mut db, readings_sql, uuid) >= 5)
        },
    );

    let (status, body) = http_get(daemon.api, "/api/system/health");
    assert_eq!(status, 200, "{body}");

    let registered: Vec<String> = db
        .query(
            "SELECT thermostat_id FROM thermostats ORDER BY thermostat_id",
            &[],
        )
        .expect("thermostats")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut expected = uuids.clone();
    expected.sort();
    assert_eq!(registered, expected);

    // BL-19: the unknown model is registered with the generic profile.
    let generic = db
        .query_one(
            "SELECT model, capabilities::text FROM thermostats WHERE thermostat_id = $1",
            &[&uuids[1]],
        )
        .expect("generic thermostat row");
    assert_eq!(generic.get::<_, String>(0), "CT55 V9.01");
    assert_eq!(generic.get::<_, String>(1), r#"["heat", "cool"]"#);

    // BL-09: -1 is never stored as a temperature; it is stored as missing.
    let negative = count(
        &mut db,
        "SELECT count(*) FROM raw_readings WHERE thermostat_id = $1 AND temp < 0",
        &uuids[2],
    );
    assert_eq!(negative, 0);
    let missing = count(
        &mut db,
        "SELECT count(*) FROM raw_readings WHERE thermostat_id = $1 AND temp IS NULL",
        &uuids[2],
    );
    assert!(missing >= 2, "expected NULL temperatures, found {missing}");

    let states = count(
        &mut db,
        "SELECT count(*) FROM current_state WHERE thermostat_id <> $1",
        "",
    );
    assert_eq!(states, 3);
    let unseen = count(
        &mut db,
        "SELECT count(*) FROM thermostats WHERE last_seen IS NULL AND thermostat_id <> $1",
        "",
    );
    assert_eq!(unseen, 0);

    let stop_time = daemon.stop();
    assert!(
        stop_time < Duration::from_secs(5),
        "stop took {stop_time:?}"
    );
}

#[test]
fn daemon_restart_resumes_known_thermostats() {
    let url = support::fresh_database_url("daemon_restart");
    let fleet = Fleet::start(FleetOptions {
        count: 2,
        ..FleetOptions::default()
    })
    .expect("fleet starts");
    let uuid = fleet.devices()[0].uuid().to_string();
    let readings_sql = "SELECT count(*) FROM raw_readings WHERE thermostat_id = $1";
    let mut db = connect(&url);

    let first = RunningDaemon::start(test_config(&url, &fleet));
    wait_for(Duration::from_secs(20), "first readings", || {
        count_so_far(&mut db, readings_sql, &uuid) >= 3
    });
    first.stop();
    let after_first = count(&mut db, readings_sql, &uuid);

    // Without static addresses, the second run polls the thermostats stored in the database.
    let mut config = test_config(&url, &fleet);
    config.thermostats.addresses.clear();
    let second = RunningDaemon::start(config);
    wait_for(
        Duration::from_secs(20),
        "readings after the restart",
        || count(&mut db, readings_sql, &uuid) >= after_first + 3,
    );
    second.stop();

    let rows = count(
        &mut db,
        "SELECT count(*) FROM thermostats WHERE thermostat_id <> $1",
        "",
    );
    assert_eq!(rows, 2);
}

#[test]
fn health_unhealthy_when_database_unreachable() {
    // A port nothing listens on: the store cannot connect.
    let unused = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address");
    let url = format!("postgresql://postgres@127.0.0.1:{}/nothing", unused.port());
    let fleet = Fleet::start(FleetOptions {
        count: 1,
        ..FleetOptions::default()
    })
    .expect("fleet starts");
    let daemon = RunningDaemon::start(test_config(&url, &fleet));

    wait_for(
        Duration::from_secs(10),
        "a 503 from the health endpoint",
        || http_get(daemon.api, "/api/system/health").0 == 503,
    );
    let (_, body) = http_get(daemon.api, "/api/system/health");
    assert!(body.contains("not connected to PostgreSQL"), "{body}");

    let stop_time = daemon.stop();
    assert!(
        stop_time < Duration::from_secs(5),
        "stop took {stop_time:?}"
    );
}

#[test]
fn unknown_api_route_is_json_404() {
    let url = support::fresh_database_url("api_404");
    let fleet = Fleet::start(FleetOptions {
        count: 1,
        ..FleetOptions::default()
    })
    .expect("fleet starts");
    let daemon = RunningDaemon::start(test_config(&url, &fleet));

    let (status, body) = http_get(daemon.api, "/api/nothing/here");
    assert_eq!(status, 404);
    assert!(body.contains(r#""error""#), "{body}");
    daemon.stop();
}

#[test]
fn new_thermostat_gets_configured_defaults() {
    let url = support::fresh_database_url("daemon_defaults");
    let fleet = Fleet::start(FleetOptions {
        count: 1,
        models: vec![simulator::ModelProfile::Ct50],
        ..FleetOptions::default()
    })
    .expect("fleet starts");
    let device = &fleet.devices()[0];
    device
        .handle()
        .apply_tstat_post(r#"{"tmode":2,"t_cool":78}"#)
        .expect("simulator starts in cool");
    let mut config = test_config(&url, &fleet);
    config.defaults = SettingsChange {
        tmode: Some(Tmode::Heat),
        t_heat: Some(66.0),
        hold: Some(true),
        ..SettingsChange::default()
    };
    let daemon = RunningDaemon::start(config);
    let mut db = connect(&url);

    let source_sql =
        "SELECT count(*) FROM device_config WHERE thermostat_id = $1 AND source = 'defaults'";
    wait_for(
        Duration::from_secs(20),
        "the defaults in device_config",
        || count_so_far(&mut db, source_sql, device.uuid()) == 1,
    );
    daemon.stop();

    let snapshot = device.handle().snapshot();
    assert_eq!(snapshot.mode, simulator::Mode::Heat);
    assert_eq!(snapshot.heat_target, 66.0);
    assert!(snapshot.hold);
    assert_eq!(device.handle().stats().forbidden_writes, 0);
}
