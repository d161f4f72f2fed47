//! The public server sync end to end: the real daemon, simulated thermostats, a real
//! PostgreSQL and the fake public server over TLS with a CA made at test time.

mod support;

use support::daemon::RunningDaemon;
use support::log_capture;

#[path = "support/fake_cloud.rs"]
mod fake_cloud;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use fake_cloud::{FakeCloud, Mode};
use thermostat_server::config::{Config, PublicServerConfig, Secret};
use thermostat_server::simulator::{Fleet, FleetOptions, ModelProfile};
use thermostat_server::sync::command::DiscoveryRequest;
use thermostat_server::sync::{DiscoveryRunner, ProgressFn};
use thermostat_server::thermostat::DeviceAddress;

const SITE: &str = "test_site";
const TOKEN: &str = "site-token-for-tests-0123456789";

/// Starts the daemon with the log captured, so tests can look for the token in it.
fn start_daemon(config: Config, discovery: Option<Arc<dyn DiscoveryRunner>>) -> RunningDaemon {
    log_capture::install(log::LevelFilter::Info);
    RunningDaemon::start_with(config, discovery)
}

fn fleet(count: usize) -> Fleet {
    Fleet::start(FleetOptions {
        count,
        models: vec![ModelProfile::Ct50],
        ..FleetOptions::default()
    })
    .expect("fleet starts on loopback")
}

fn sync_config(url: &str, fleet: &Fleet, cloud: &FakeCloud) -> Config {
    let mut config = Config::new(SITE, url);
    config.thermostats.addresses = fleet
        .devices()
        .iter()
        .map(|device| DeviceAddress::new(device.address()))
        .collect();
    config.polling.interval = Duration::from_millis(500);
    config.polling.request_timeout = Duration::from_secs(2);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.database.flush_interval = Duration::from_millis(200);

    let mut public_server = PublicServerConfig::new(&cloud.base_url());
    public_server.ca_cert = Some(cloud.ca_file.clone());
    public_server.request_timeout = Duration::from_secs(3);
    public_server.state_change_wait = Duration::from_secs(2);
    public_server.snapshot_interval = Duration::from_secs(2);
    public_server.minute_interval = Duration::from_secs(10);
    public_server.command_interval = Duration::from_millis(500);
    public_server.results_interval = Duration::from_millis(300);
    public_server.max_backoff = Duration::from_secs(8);
    public_server.auth_retry = Duration::from_secs(2);
    config.public_server = Some(public_server);
    config.secrets.site_token = Some(Secret::new(TOKEN));
    config
}

/// Polls `condition` every 100 ms until it is true or `limit` passes.
fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_registration(cloud: &FakeCloud, count: usize) {
    wait_for(
        Duration::from_secs(20),
        "the thermostats to register",
        || {
            cloud.state().registrations.last().is_some_and(|body| {
                body["thermostats"]
                    .as_array()
                    .is_some_and(|list| list.len() == count)
            })
        },
    );
}

/// Waits for the first final (not `inprogress`) result of `command_id`.
fn final_result(cloud: &FakeCloud, command_id: &str) -> Value {
    let mut found = None;
    wait_for(Duration::from_secs(20), "a final command result", || {
        found = cloud
            .results_for(command_id)
            .into_iter()
            .find(|entry| entry["status"] != "inprogress");
        found.is_some()
    });
    found.unwrap_or(Value::Null)
}

fn post_count(fleet: &Fleet) -> usize {
    fleet.devices()[0].handle().stats().post_bodies.len()
}

#[test]
fn set_state_command_runs_once() {
    let url = support::fresh_database_url("sync_set_state");
    let cloud = FakeCloud::start(SITE, TOKEN);
    let fleet = fleet(1);
    let uuid = fleet.devices()[0].uuid().to_string();
    let daemon = start_daemon(sync_config(&url, &fleet, &cloud), None);
    wait_for_registration(&cloud, 1);

    let command = json!({"command_id": "cmd-set-1", "command": "set_state",
        "thermostat_id": uuid, "params": {"tmode": 1, "t_heat": 72.3, "hold": 1},
        "issued_at": "2026-01-01T00:00:00Z"});
    cloud.queue_command(command.clone());
    let result = final_result(&cloud, "cmd-set-1");

    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["result"]["state"]["t_heat"], json!(72.5));
    let snapshot = fleet.devices()[0].handle().snapshot();
    assert_eq!(snapshot.heat_target, 72.5);
    assert!(snapshot.hold);
    let posts_after_first = post_count(&fleet);

    // Delivered again: the stored result is resent and the thermostat is not written.
    cloud.queue_command(command);
    wait_for(Duration::from_secs(10), "the resent result", || {
        cloud.results_for("cmd-set-1").len() >= 2
    });
    let results = cloud.results_for("cmd-set-1");
    assert_eq!(results[1], results[0]);
    assert_eq!(post_count(&fleet), posts_after_first);

    let mut db = support::connect(&url);
    let logged: i64 = db
        .query_one(
            "SELECT count(*) FROM sync_commands WHERE command_id = 'cmd-set-1'",
            &[],
        )
        .expect("count the command log")
        .get(0);
    assert_eq!(logged, 1);
    let source: String = db
        .query_one(
            "SELECT source FROM device_config WHERE thermostat_id = $1",
            &[&uuid],
        )
        .expect("device_config row")
        .get(0);
    assert_eq!(source, "public_server");
    let (_, metrics) = support::daemon::http_get(daemon.api, "/metrics");
    assert!(
        metrics.contains("thermostat_public_server_up 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("thermostat_sync_outbox_backlog "),
        "{metrics}"
    );
    daemon.stop();
}

#[test]
fn invalid_commands_rejected() {
    let url = support::fresh_database_url("sync_rejected");
    let cloud = FakeCloud::start(SITE, TOKEN);
    let fleet = fleet(1);
    let uuid = fleet.devices()[0].uuid().to_string();
    let daemon = start_daemon(sync_config(&url, &fleet, &cloud), None);
    wait_for_registration(&cloud, 1);

    cloud.queue_command(json!({"command_id": "bad-range", "command": "set_state",
        "thermostat_id": uuid, "params": {"t_heat": 150}}));
    cloud.queue_command(json!({"command_id": "bad-unit", "command": "set_state",
        "thermostat_id": "ffffffffffff", "params": {"tmode": 1}}));
    cloud.queue_command(json!({"command_id": "bad-name", "command": "reboot"}));
    cloud.queue_command(
        json!({"command_id": "bad-params", "command": "set_away_temp",
        "thermostat_id": uuid, "params": {"away_temp": "cold"}}),
    );

    let out_of_range = final_result(&cloud, "bad-range");
    let unknown_unit = final_result(&cloud, "bad-unit");
    let unknown_command = final_result(&cloud, "bad-name");
    let malformed = final_result(&cloud, "bad-params");
    daemon.stop();

    assert_eq!(out_of_range["status"], "rejected");
    assert!(
        out_of_range["error"]
            .as_str()
            .unwrap_or_default()
            .contains("t_heat"),
        "{out_of_range}"
    );
    assert_eq!(unknown_unit["status"], "rejected");
    assert!(
        unknown_unit["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown thermostat ffffffffffff"),
        "{unknown_unit}"
    );
    assert_eq!(unknown_command["status"], "rejected");
    assert!(
        unknown_command["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown command \"reboot\""),
        "{unknown_command}"
    );
    assert_eq!(malformed["status"], "rejected");
    assert!(
        malformed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("away_temp"),
        "{malformed}"
    );
    assert_eq!(post_count(&fleet), 0);
}

#[test]
fn away_temp_stored_and_registered() {
    let url = support::fresh_database_url("sync_away_temp");
    let cloud = FakeCloud::start(SITE, TOKEN);
    let fleet = fleet(1);
    let uuid = fleet.devices()[0].uuid().to_string();
    let daemon = start_daemon(sync_config(&url, &fleet, &cloud), None);
    wait_for_registration(&cloud, 1);

    cloud.queue_command(json!({"command_id": "away-1", "command": "set_away_temp",
        "thermostat_id": uuid, "params": {"away_temp": 61.2}}));
    let result = final_result(&cloud, "away-1");
    assert_eq!(result["status"], "completed", "{result}");

    // The changed list is registered again, with the new away temperature.
    wait_for(
        Duration::from_secs(30),
        "a registration with away_temp",
        || {
            cloud
                .state()
                .registrations
                .last()
                .is_some_and(|body| body["thermostats"][0]["away_temp"] == json!(61.0))
        },
    );
    daemon.stop();
}

/// A discovery runner that reports two phases and finds one device.
struct TwoPhaseDiscovery;

impl DiscoveryRunner for TwoPhaseDiscovery {
    fn discover(
        &self,
        request: DiscoveryRequest,
        progress: ProgressFn,
    ) -> futures_lite::future::Boxed<Result<Value, String>> {
        Box::pin(async move {
            let mut history = Vec::new();
            for method in &request.methods {
                async_io::Timer::after(Duration::from_millis(400)).await;
                history.push(json!({"phase": method, "status": "completed", "found": 1}));
                progress(json!({"phase_history": history}));
            }
            Ok(json!({
                "devices": [{"thermostat_id": "5cdad4a0a0a1", "ip_address": "127.0.0.9"}],
                "phase_history": history,
            }))
        })
    }
}

#[test]
fn discover_devices_reports_progress() {
    let url = support::fresh_database_url("sync_discovery");
    let cloud = FakeCloud::start(SITE, TOKEN);
    let fleet = fleet(1);
    let runner: Arc<dyn DiscoveryRunner> = Arc::new(TwoPhaseDiscovery);
    let daemon = start_daemon(sync_config(&url, &fleet, &cloud), Some(runner));
    wait_for_registration(&cloud, 1);

    cloud.queue_command(
        json!({"command_id": "disc-1", "command": "discover_devices",
        "params": {"methods": ["database", "udp"], "timeout_seconds": 5}}),
    );
    let last = final_result(&cloud, "disc-1");
    daemon.stop();

    let entries = cloud.results_for("disc-1");
    let progress: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["status"] == "inprogress")
        .collect();
    assert!(!progress.is_empty(), "{entries:?}");
    assert_eq!(
        progress[0]["result"]["phase_history"][0]["phase"],
        "database"
    );
    assert_eq!(last["status"], "completed");
    assert_eq!(
        last["result"]["devices"][0]["thermostat_id"],
        "5cdad4a0a0a1"
    );
    assert_eq!(
        last["result"]["phase_history"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn untrusted_certificate_refused_and_logged() {
    let url = support::fresh_database_url("sync_untrusted");
    let cloud = FakeCloud::start_untrusted(SITE, TOKEN);
    let fleet = fleet(1);
    let daemon = start_daemon(sync_config(&url, &fleet, &cloud), None);

    let port = cloud.address.port().to_string();
    wait_for(
        Duration::from_secs(20),
        "a log line about the certificate",
        || {
            log_capture::lines_containing("is not trusted")
                .iter()
                .any(|line| line.contains(&port))
        },
    );
    let (_, metrics) = support::daemon::http_get(daemon.api, "/metrics");
    assert!(
        metrics.contains("thermostat_public_server_up 0"),
        "{metrics}"
    );
    let (_, page) = support::daemon::http_get(daemon.api, "/");
    assert!(
        page.contains("not trusted"),
        "the status page shows no link failure"
    );
    daemon.stop();

    assert!(cloud.state().requests.is_empty());
    assert!(log_capture::lines_containing(TOKEN).is_empty());
}

#[test]
fn verify_off_accepts_any_certificate_with_warning() {
    let url = support::fresh_database_url("sync_verify_off");
    let cloud = FakeCloud::start_untrusted(SITE, TOKEN);
    let fleet = fleet(1);
    let mut config = sync_config(&url, &fleet, &cloud);
    if let Some(section) = config.public_server.as_mut() {
        section.ssl_verify = false;
        section.ca_cert = None;
    }
    let daemon = start_daemon(config, None);
    wait_for_registration(&cloud, 1);
    daemon.stop();

    assert!(!log_capture::lines_containing("ssl_verify is false").is_empty());
}

#[test]
fn rejected_payload_parked() {
    let url = support::fresh_database_url("sync_parked");
    let cloud = FakeCloud::start(SITE, TOKEN);
    cloud.reject_once("/thermostats/register", 422);
    let fleet = fleet(1);
    let daemon = start_daemon(sync_config(&url, &fleet, &cloud), None);

    let mut db = support::connect(&url);
    wait_for(Duration::from_secs(20), "a parked payload", || {
        db.query_one("SELECT count(*) FROM sync_parked", &[])
            .map(|row| row.get::<_, i64>(0) > 0)
            .unwrap_or(false)
    });
    // The rest goes on: snapshots arrive after the registration was rejected.
    let snapshots_before = cloud.state().status_posts.len();
    wait_for(
        Duration::from_secs(20),
        "a snapshot after the rejection",
        || cloud.state().status_posts.len() > snapshots_before,
    );
    daemon.stop();

    let row = db
        .query_one("SELECT endpoint, status, reason FROM sync_parked", &[])
        .expect("one parked payload");
    assert_eq!(row.get::<_, String>(0), "/thermostats/register");
    assert_eq!(row.get::<_, i32>(1), 422);
    assert!(row.get::<_, String>(2).contains("rejected on request"));
    // A parked list is not sent again while it stays the same.
    assert!(cloud.state().registrations.is_empty());
}

#[test]
fn throttle_and_hang_retried() {
    let url = support::fresh_database_url("sync_throttle");
    let cloud = FakeCloud::start(SITE, TOKEN);
    let fleet = fleet(1);
    let daemon = start_daemon(sync_config(&url, &fleet, &cloud), None);
    wait_for_registration(&cloud, 1);

    cloud.set_mode(Mode::TooMany {
        retry_after_seconds: 3,
    });
    let throttled_from = cloud.state().requests.len();
    std::thread::sleep(Duration::from_secs(7));
    cloud.set_mode(Mode::Hang);
    let polls_while_throttled = cloud.state().requests[throttled_from..]
        .iter()
        .filter(|(method, path, status)| {
            method == "GET" && path == "/commands/pending" && *status == 429
        })
        .count();
    std::thread::sleep(Duration::from_secs(4));

    cloud.set_mode(Mode::Normal);
    let posts_before = cloud.state().status_posts.len();
    wait_for(
        Duration::from_secs(30),
        "a status post after the hang",
        || cloud.state().status_posts.len() > posts_before,
    );
    daemon.stop();

    // Polled every 500 ms otherwise; Retry-After: 3 allows at most 3 polls in 7 s.
    assert!(polls_while_throttled >= 1);
    assert!(
        polls_while_throttled <= 3,
        "{polls_while_throttled} polls while throttled"
    );
}

#[test]
fn auth_failure_keeps_state_changes() {
    let url = support::fresh_database_url("sync_auth");
    let cloud = FakeCloud::start(SITE, TOKEN);
    let fleet = fleet(1);
    let uuid = fleet.devices()[0].uuid().to_string();
    let daemon = start_daemon(sync_config(&url, &fleet, &cloud), None);
    wait_for_registration(&cloud, 1);

    cloud.set_mode(Mode::Status(401));
    let started = Instant::now();
    fleet.devices()[0]
        .handle()
        .apply_tstat_post(r#"{"tmode":2,"t_cool":76}"#)
        .expect("the simulator takes the change");
    let mut db = support::connect(&url);
    wait_for(
        Duration::from_secs(10),
        "the mode change in the outbox",
        || {
            db.query_one(
            "SELECT count(*) FROM sync_outbox WHERE thermostat_id = $1 AND payload->>'change_type' = 'mode'",
            &[&uuid],
        )
        .map(|row| row.get::<_, i64>(0) > 0)
        .unwrap_or(false)
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let auth_lines = log_capture::lines_containing("rejected the site token").len();
    let elapsed = started.elapsed().as_secs();

    cloud.set_mode(Mode::Normal);
    wait_for(
        Duration::from_secs(20),
        "the mode change at the server",
        || {
            cloud
                .state()
                .state_changes
                .values()
                .any(|reading| reading["change_type"] == "mode")
        },
    );
    daemon.stop();

    // One line per 2 s auth retry interval, whichever streams failed.
    assert!(auth_lines >= 1);
    assert!(
        auth_lines as u64 <= elapsed / 2 + 1,
        "{auth_lines} lines in {elapsed} s"
    );
}

/// Reads every (thermostat_id, minute_ts, poll_count) of `minute_readings`, with the
/// minute formatted as the sync sends it.
fn stored_minutes(db: &mut postgres::Client) -> Vec<(String, String, i32)> {
    db.query(
        "SELECT thermostat_id,
                to_char(minute_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                poll_count
         FROM minute_readings ORDER BY minute_ts, thermostat_id",
        &[],
    )
    .expect("read minute rows")
    .iter()
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .collect()
}

/// Reads every (thermostat_id, ts, change_type) of the state-change outbox.
fn stored_changes(db: &mut postgres::Client) -> Vec<(String, String, String)> {
    db.query(
        "SELECT thermostat_id, payload->>'ts', payload->>'change_type' FROM sync_outbox ORDER BY id",
        &[],
    )
    .expect("read the outbox")
    .iter()
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .collect()
}

fn missing_at_cloud(cloud: &FakeCloud, db: &mut postgres::Client) -> (usize, usize) {
    let minutes = stored_minutes(db);
    let changes = stored_changes(db);
    let state = cloud.state();
    let missing_minutes = minutes
        .iter()
        .filter(|(id, minute, polls)| {
            state
                .minutes
                .get(&(id.clone(), minute.clone()))
                .is_none_or(|row| row["poll_count"] != json!(polls))
        })
        .count();
    let missing_changes = changes
        .iter()
        .filter(|(id, ts, change_type)| {
            state
                .state_changes
                .get(&(id.clone(), ts.clone()))
                .is_none_or(|row| row["change_type"] != json!(change_type))
        })
        .count();
    (missing_minutes, missing_changes)
}

/// Changes each thermostat's heat setpoint, which the poller reports as a state change.
fn change_setpoints(fleet: &Fleet, step: usize) {
    for (index, device) in fleet.devices().iter().enumerate() {
        let target = 66 + (step + index) % 8;
        let body = format!(r#"{{"tmode":1,"t_heat":{target}}}"#);
        device
            .handle()
            .apply_tstat_post(&body)
            .expect("the simulator takes the setpoint");
    }
}

/// The "nothing lost" run: three minutes and more of polling with setpoint changes every
/// 10 s, a 60 s outage of the server (connections dropped) and a daemon restart inside
/// it. Every minute row and every state change stored must reach the server.
#[test]
fn outage_and_restart_lose_nothing() {
    let url = support::fresh_database_url("sync_outage");
    let cloud = FakeCloud::start(SITE, TOKEN);
    let fleet = fleet(3);
    let config = sync_config(&url, &fleet, &cloud);
    let mut db = support::connect(&url);
    let started = Instant::now();
    let at = |seconds: u64| started + Duration::from_secs(seconds);

    let mut daemon = Some(start_daemon(config.clone(), None));
    let mut step = 0;
    let mut outage_started = None;
    let mut restarted = false;
    let mut outage_ended = false;
    while Instant::now() < at(200) {
        if Instant::now() >= at(10 + 10 * step as u64) {
            change_setpoints(&fleet, step);
            step += 1;
        }
        if outage_started.is_none() && Instant::now() >= at(50) {
            cloud.set_mode(Mode::Drop);
            outage_started = Some(cloud.state().requests.len());
        }
        if !restarted && Instant::now() >= at(80) {
            if let Some(running) = daemon.take() {
                running.stop();
            }
            daemon = Some(start_daemon(config.clone(), None));
            restarted = true;
        }
        if !outage_ended && Instant::now() >= at(110) {
            cloud.set_mode(Mode::Normal);
            outage_ended = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let drain_started = Instant::now();
    wait_for(Duration::from_secs(90), "every row at the server", || {
        missing_at_cloud(&cloud, &mut db) == (0, 0)
    });
    let drain_time = drain_started.elapsed();
    if let Some(running) = daemon.take() {
        running.stop();
    }

    let minutes = stored_minutes(&mut db);
    let changes = stored_changes(&mut db);
    let state = cloud.state();
    let dropped_requests = outage_started
        .map(|from| state.requests[from..].iter().filter(|r| r.2 == 0).count())
        .unwrap_or(0);
    let unacked: i64 = db
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE acked_at IS NULL",
            &[],
        )
        .expect("count unacknowledged changes")
        .get(0);
    let parked: i64 = db
        .query_one("SELECT count(*) FROM sync_parked", &[])
        .expect("count parked payloads")
        .get(0);

    eprintln!(
        "{} minute rows, {} state changes, {} requests dropped in the outage, \
         {} minute batches, {} ms from the end of the run until all had arrived",
        minutes.len(),
        changes.len(),
        dropped_requests,
        state.minute_batch_sizes.len(),
        drain_time.as_millis()
    );
    assert!(dropped_requests > 0, "the outage dropped no request");
    for device in fleet.devices() {
        let rows = minutes.iter().filter(|row| row.0 == device.uuid()).count();
        assert!(rows >= 3, "{} has {rows} minute rows", device.uuid());
        let changed = changes.iter().filter(|row| row.0 == device.uuid()).count();
        assert!(
            changed >= 15,
            "{} has {changed} state changes",
            device.uuid()
        );
    }
    assert_eq!(unacked, 0);
    assert_eq!(parked, 0);
    assert!(state.minute_batch_sizes.iter().all(|size| *size <= 100));
    assert_eq!(missing_minute_gaps(&minutes), Vec::<String>::new());
}

/// Returns "uuid minute" for each minute without a row between a thermostat's first
/// and last stored minute.
fn missing_minute_gaps(minutes: &[(String, String, i32)]) -> Vec<String> {
    let mut by_id: std::collections::BTreeMap<&str, Vec<jiff::Timestamp>> = Default::default();
    for (id, minute, _) in minutes {
        let ts: jiff::Timestamp = minute.parse().expect("RFC 3339 minute");
        by_id.entry(id).or_default().push(ts);
    }
    let mut gaps = Vec::new();
    for (id, list) in by_id {
        for pair in list.windows(2) {
            let step = pair[1].duration_since(pair[0]).as_secs();
            if step != 60 {
                gaps.push(format!("{id} after {}", pair[0]));
            }
        }
    }
    gaps
}
