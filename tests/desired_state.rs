//! The desired state against the real daemon, simulated thermostats and a PostgreSQL the
//! harness starts. A power cut that drops hold is undone, and a change at the wall is
//! kept and reported. A write the unit ignores is retried and then reported. A burst of
//! commands reaches the unit as at most two writes. A setpoint for the other mode is sent
//! as `it_cool` or rejected, by model. Poll intervals are short to keep the tests fast.

mod support;

#[path = "support/fake_cloud.rs"]
mod fake_cloud;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use fake_cloud::FakeCloud;

use support::daemon::{RunningDaemon, wait_for};
use thermostat_server::config::{Config, PublicServerConfig, Secret};
use thermostat_server::desired::Policy;
use thermostat_server::simulator::{Fleet, FleetOptions, Mode, ModelProfile, PostOptions};
use thermostat_server::thermostat::DeviceAddress;

/// Generous bound for anything that takes a few polls, for a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(30);

fn start_fleet(models: Vec<ModelProfile>) -> Fleet {
    let fleet = Fleet::start(FleetOptions {
        count: models.len(),
        models,
        ..FleetOptions::default()
    })
    .expect("simulated fleet starts on loopback");
    for device in fleet.devices() {
        device
            .handle()
            .apply_tstat_post(r#"{"tmode":1,"t_heat":68}"#)
            .expect("simulator accepts heat mode");
    }
    fleet
}

fn config(url: &str, fleet: &Fleet, interval: Duration, gap: Duration) -> Config {
    let mut config = Config::new("desired_site", url);
    config.thermostats.addresses = fleet
        .devices()
        .iter()
        .map(|device| DeviceAddress::new(device.address()))
        .collect();
    config.polling.interval = interval;
    config.polling.request_timeout = Duration::from_secs(3);
    config.polling.min_request_gap = gap;
    config.database.flush_interval = Duration::from_millis(200);
    config
}

/// Sends one request with a JSON body (or none) and returns the status and JSON body.
fn call(api: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream =
        TcpStream::connect_timeout(&api, Duration::from_secs(2)).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let body = body.map(Value::to_string).unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read response");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let json = raw
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn status(daemon: &RunningDaemon, uuid: &str) -> Value {
    let (code, body) = call(
        daemon.api,
        "GET",
        &format!("/api/thermostats/{uuid}/status"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    body
}

fn set_temperature(daemon: &RunningDaemon, uuid: &str, body: &Value) -> (u16, Value) {
    call(
        daemon.api,
        "POST",
        &format!("/api/thermostats/{uuid}/temperature"),
        Some(body),
    )
}

/// Waits until the thermostat has a state in the API, so it is polled.
fn wait_until_polled(daemon: &RunningDaemon, uuid: &str) {
    wait_for(LIMIT, "the first reading", || {
        let (code, body) = call(
            daemon.api,
            "GET",
            &format!("/api/thermostats/{uuid}/status"),
            None,
        );
        code == 200 && !body["state"].is_null()
    });
}

/// Counts the stored drift events of `kind`, and the state changes queued for the
/// public server with that `change_type`.
fn events(url: &str, uuid: &str, kind: &str) -> (i64, i64) {
    let mut db = support::connect(url);
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM desired_events WHERE thermostat_id = $1 AND kind = $2",
            &[&uuid, &kind],
        )
        .expect("count desired_events")
        .get(0);
    let queued: i64 = db
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE thermostat_id = $1 AND payload->>'change_type' = $2",
            &[&uuid, &kind],
        )
        .expect("count sync_outbox")
        .get(0);
    (stored, queued)
}

/// A test database, one simulated thermostat in heat mode, and the daemon polling it
/// every `interval` with a 50 ms gap between requests.
struct Site {
    url: String,
    fleet: Fleet,
    daemon: RunningDaemon,
}

fn start_site(name: &str, model: ModelProfile, interval: Duration) -> Site {
    let url = support::fresh_database_url(name);
    let fleet = start_fleet(vec![model]);
    let daemon = RunningDaemon::start(config(&url, &fleet, interval, Duration::from_millis(50)));
    wait_until_polled(&daemon, fleet.devices()[0].uuid());
    Site { url, fleet, daemon }
}

fn polls(daemon: &RunningDaemon, uuid: &str) -> u64 {
    status(daemon, uuid)["polling"]["polls"]
        .as_u64()
        .expect("poll count")
}

#[test]
fn power_cut_is_undone_within_two_polls() {
    let Site { url, fleet, daemon } = start_site(
        "desired_power_cut",
        ModelProfile::Ct50,
        Duration::from_secs(1),
    );
    let device = &fleet.devices()[0];
    let uuid = device.uuid();

    let (code, body) = set_temperature(&daemon, uuid, &json!({"t_heat": 71.5, "hold": true}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(device.handle().snapshot().heat_target, 71.5);

    device.handle().power_cycle(Duration::ZERO);
    let cut = device.handle().snapshot();
    assert!(!cut.hold, "the power cut drops hold");
    assert_ne!(cut.heat_target, 71.5, "the program setpoint is back");
    let polls_at_cut = polls(&daemon, uuid);

    let took = wait_for(LIMIT, "hold and setpoint back on the unit", || {
        let now = device.handle().snapshot();
        now.hold && now.heat_target == 71.5
    });
    let polls_taken = polls(&daemon, uuid) - polls_at_cut;
    println!("restored after {polls_taken} poll(s), {took:?}");
    // The poll in flight at the cut, the poll that finds it and one the waiting loop
    // may see: the re-apply itself runs right after the detecting poll.
    assert!(polls_taken <= 3, "restored only after {polls_taken} polls");

    let view = status(&daemon, uuid);
    assert_eq!(view["drift"]["device_resets"], 1, "{view}");
    assert_eq!(view["drift"]["reapplied"], 1, "{view}");
    assert_eq!(view["holding_settings"], true);
    assert_eq!(view["desired"]["t_heat"], 71.5);
    assert_eq!(view["desired"]["hold"], true);
    assert_eq!(view["desired"]["source"], "local_api");

    wait_for(LIMIT, "stored reset and re-apply events", || {
        events(&url, uuid, "device_reset") == (1, 1) && events(&url, uuid, "reapplied") == (1, 1)
    });
    daemon.stop();
}

#[test]
fn change_at_the_wall_is_kept_and_reported() {
    let Site { url, fleet, daemon } = start_site(
        "desired_wall_change",
        ModelProfile::Ct50,
        Duration::from_millis(500),
    );
    let device = &fleet.devices()[0];
    let uuid = device.uuid();

    let (code, body) = set_temperature(&daemon, uuid, &json!({"t_heat": 70, "hold": true}));
    assert_eq!(code, 200, "{body}");

    // A person raises the setpoint at the wall; hold stays on.
    device
        .handle()
        .apply_tstat_post(r#"{"t_heat":74}"#)
        .expect("wall change");
    wait_for(LIMIT, "the wall change noticed", || {
        status(&daemon, uuid)["drift"]["wall_changes"] == 1
    });
    let noticed = polls(&daemon, uuid);
    wait_for(LIMIT, "three more polls", || {
        polls(&daemon, uuid) >= noticed + 3
    });

    let snapshot = device.handle().snapshot();
    assert_eq!(snapshot.heat_target, 74.0, "the wall change is not undone");
    assert!(snapshot.hold);
    let view = status(&daemon, uuid);
    assert_eq!(view["desired"]["t_heat"], 74.0, "{view}");
    assert_eq!(view["desired"]["source"], "wall");
    assert_eq!(view["drift"]["reapplied"], 0);
    assert_eq!(view["drift"]["wall_changes"], 1, "reported once: {view}");

    wait_for(LIMIT, "the stored wall change", || {
        events(&url, uuid, "wall_change") == (1, 1)
    });
    let mut db = support::connect(&url);
    let row = db
        .query_one(
            "SELECT t_heat, source FROM device_config WHERE thermostat_id = $1",
            &[&uuid],
        )
        .expect("device_config row");
    assert_eq!(row.get::<_, Option<f64>>(0), Some(74.0));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("wall"));
    daemon.stop();
}

#[test]
fn ignored_write_is_retried_then_reported() {
    let Site { url, fleet, daemon } = start_site(
        "desired_ignored_write",
        ModelProfile::Ct50,
        Duration::from_millis(500),
    );
    let device = &fleet.devices()[0];
    let uuid = device.uuid();

    device.handle().set_post_options(PostOptions {
        ignore_writes: true,
        ..PostOptions::default()
    });
    device.handle().reset_stats();
    let (code, body) = set_temperature(&daemon, uuid, &json!({"t_heat": 72}));
    assert_eq!(code, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("t_heat"),
        "{body}"
    );

    wait_for(LIMIT, "the thermostat reported as not holding", || {
        status(&daemon, uuid)["holding_settings"] == false
    });
    let view = status(&daemon, uuid);
    assert_eq!(view["drift"]["dropped_writes"], 1, "{view}");
    assert_eq!(view["drift"]["reapply_failures"], 3, "{view}");
    assert_eq!(view["desired"]["t_heat"], 72.0, "the command stays desired");
    // The command and its resend, then three re-applies with one resend each.
    let posts = device.handle().stats().requests_to("/tstat");
    assert!(posts >= 8, "only {posts} requests to /tstat");
    assert_eq!(device.handle().snapshot().heat_target, 68.0);

    wait_for(
        LIMIT,
        "the stored dropped write and not-holding report",
        || {
            events(&url, uuid, "write_dropped") == (1, 1)
                && events(&url, uuid, "not_holding") == (1, 1)
        },
    );
    let mut stream = TcpStream::connect(daemon.api).expect("connect");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        daemon.api
    )
    .expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read metrics");
    assert!(
        text.contains(&format!(
            "thermostat_holding_settings{{thermostat_id=\"{uuid}\"}} 0"
        )),
        "{text}"
    );
    let (status, page) = support::daemon::http_get(daemon.api, "/");
    assert_eq!(status, 200);
    assert!(
        page.contains("not holding: 3 re-applies failed in a row"),
        "the status page does not say the unit drops its settings: {page}"
    );
    daemon.stop();
}

#[test]
fn command_burst_makes_two_writes() {
    let url = support::fresh_database_url("desired_burst");
    let fleet = start_fleet(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];
    let uuid = device.uuid().to_string();
    // The real devices' minimum gap between requests (FIELD-CASES F-1).
    let daemon = RunningDaemon::start(config(
        &url,
        &fleet,
        Duration::from_secs(3),
        Duration::from_secs(1),
    ));
    wait_until_polled(&daemon, &uuid);
    device.handle().reset_stats();

    let api = daemon.api;
    let senders: Vec<_> = [66.0, 67.0, 68.5, 69.0, 70.5]
        .into_iter()
        .enumerate()
        .map(|(index, setpoint)| {
            let uuid = uuid.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200) * index as u32);
                call(
                    api,
                    "POST",
                    &format!("/api/thermostats/{uuid}/temperature"),
                    Some(&json!({ "t_heat": setpoint })),
                )
            })
        })
        .collect();
    for sender in senders {
        let (code, body) = sender.join().expect("sender thread");
        assert_eq!(code, 200, "{body}");
    }

    let stats = device.handle().stats();
    let writes: Vec<_> = stats
        .post_bodies
        .iter()
        .map(|post| post.body.clone())
        .collect();
    println!("writes: {writes:?}");
    assert!(
        (1..=2).contains(&writes.len()),
        "{} writes: {writes:?}",
        writes.len()
    );
    assert_eq!(stats.overlapping_requests, 0);
    assert_eq!(stats.max_concurrent_connections, 1);
    assert!(
        stats
            .min_gap
            .is_some_and(|gap| gap >= Duration::from_millis(900)),
        "{:?}",
        stats.min_gap
    );
    assert_eq!(
        device.handle().snapshot().heat_target,
        70.5,
        "the last wins"
    );
    let view = status(&daemon, &uuid);
    assert!(
        view["drift"]["coalesced_commands"].as_u64() >= Some(3),
        "{view}"
    );
    daemon.stop();
}

#[test]
fn cool_setpoint_in_auto_depends_on_the_model() {
    let url = support::fresh_database_url("desired_it_cool");
    // A unit that takes auto mode but reports a CT50 model string, as in tests/control.rs.
    let ct50_in_auto = ModelProfile::Generic("CT50 V1.94".into());
    let fleet = start_fleet(vec![ct50_in_auto, ModelProfile::Ct80RevB]);
    for device in fleet.devices() {
        device
            .handle()
            .apply_tstat_post(r#"{"tmode":3}"#)
            .expect("auto mode");
    }
    let daemon = RunningDaemon::start(config(
        &url,
        &fleet,
        Duration::from_millis(500),
        Duration::from_millis(50),
    ));
    let (ct50, ct80) = (&fleet.devices()[0], &fleet.devices()[1]);
    wait_until_polled(&daemon, ct50.uuid());
    wait_until_polled(&daemon, ct80.uuid());

    ct50.handle().reset_stats();
    let (code, body) = set_temperature(&daemon, ct50.uuid(), &json!({"t_cool": 75}));
    assert_eq!(code, 409, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("t_cool") && message.contains("ct50"),
        "{message}"
    );
    assert!(ct50.handle().stats().post_bodies.is_empty());
    assert_eq!(ct50.handle().snapshot().mode, Mode::Auto);
    assert_eq!(
        status(&daemon, ct50.uuid())["desired"]["t_cool"],
        Value::Null
    );

    ct80.handle().reset_stats();
    let (code, body) = set_temperature(&daemon, ct80.uuid(), &json!({"t_cool": 75}));
    assert_eq!(code, 200, "{body}");
    let bodies: Vec<String> = ct80
        .handle()
        .stats()
        .post_bodies
        .iter()
        .map(|post| post.body.clone())
        .collect();
    assert_eq!(bodies, vec![r#"{"it_cool":75.0}"#.to_string()]);
    assert!(
        ct80.handle().stats().requests_to("/tstat/ttemp") >= 1,
        "verified"
    );
    let snapshot = ct80.handle().snapshot();
    assert_eq!(snapshot.mode, Mode::Auto);
    assert_eq!(snapshot.cool_target, 75.0);
    daemon.stop();
}

/// Returns the `change_type` values the fake public server received for `uuid`.
fn change_types_sent(cloud: &FakeCloud, uuid: &str) -> Vec<String> {
    cloud
        .state()
        .state_changes
        .iter()
        .filter(|((id, _), _)| id == uuid)
        .filter_map(|(_, reading)| reading["change_type"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn drift_reaches_the_public_server() {
    const SITE: &str = "desired_site";
    const TOKEN: &str = "site-token-desired-7f3a";
    let url = support::fresh_database_url("desired_upstream");
    let cloud = FakeCloud::start(SITE, TOKEN);
    let fleet = start_fleet(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];
    let uuid = device.uuid().to_string();
    let mut config = config(
        &url,
        &fleet,
        Duration::from_millis(500),
        Duration::from_millis(50),
    );
    let mut public_server = PublicServerConfig::new(&cloud.base_url());
    public_server.ca_cert = Some(cloud.ca_file.clone());
    public_server.request_timeout = Duration::from_secs(3);
    public_server.state_change_wait = Duration::from_secs(1);
    public_server.command_interval = Duration::from_millis(500);
    public_server.results_interval = Duration::from_millis(300);
    config.public_server = Some(public_server);
    config.secrets.site_token = Some(Secret::new(TOKEN));
    let daemon = RunningDaemon::start(config);
    wait_until_polled(&daemon, &uuid);

    // A command from the public server, then a power cut, then a change at the wall.
    cloud.queue_command(json!({"command_id": "desired-1", "command": "set_state",
        "thermostat_id": uuid, "params": {"t_heat": 71.5, "hold": 1},
        "issued_at": "2026-01-01T00:00:00Z"}));
    wait_for(LIMIT, "the command applied", || {
        status(&daemon, &uuid)["desired"]["source"] == "public_server"
    });
    device.handle().power_cycle(Duration::ZERO);
    wait_for(LIMIT, "the reset undone", || {
        status(&daemon, &uuid)["drift"]["reapplied"] == 1
    });
    device
        .handle()
        .apply_tstat_post(r#"{"t_heat":73}"#)
        .expect("wall change");

    wait_for(LIMIT, "every drift state change upstream", || {
        let sent = change_types_sent(&cloud, &uuid);
        ["device_reset", "reapplied", "wall_change"]
            .iter()
            .all(|kind| sent.iter().any(|sent| sent == kind))
    });
    let sent = change_types_sent(&cloud, &uuid);
    println!("change types sent: {sent:?}");
    assert_eq!(device.handle().snapshot().heat_target, 73.0);
    daemon.stop();
}

#[test]
fn report_policy_never_writes() {
    let url = support::fresh_database_url("desired_report_policy");
    let fleet = start_fleet(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];
    let uuid = device.uuid();
    let mut config = config(
        &url,
        &fleet,
        Duration::from_millis(500),
        Duration::from_millis(50),
    );
    config
        .thermostats
        .policies
        .overrides
        .insert(uuid.to_string(), Policy::Report);
    let daemon = RunningDaemon::start(config);
    wait_until_polled(&daemon, uuid);
    assert_eq!(status(&daemon, uuid)["policy"], "report");

    let (code, body) = set_temperature(&daemon, uuid, &json!({"t_heat": 71.5, "hold": true}));
    assert_eq!(code, 200, "{body}");
    device.handle().power_cycle(Duration::ZERO);
    device.handle().reset_stats();
    wait_for(LIMIT, "the reset reported", || {
        status(&daemon, uuid)["drift"]["device_resets"] == 1
    });
    let noticed = polls(&daemon, uuid);
    wait_for(LIMIT, "three more polls", || {
        polls(&daemon, uuid) >= noticed + 3
    });

    assert!(device.handle().stats().post_bodies.is_empty(), "no write");
    assert!(!device.handle().snapshot().hold);
    let view = status(&daemon, uuid);
    assert_eq!(view["drift"]["reapplied"], 0, "{view}");
    assert_eq!(view["drift"]["device_resets"], 1, "reported once: {view}");
    wait_for(LIMIT, "the stored reset", || {
        events(&url, uuid, "device_reset") == (1, 1)
    });
    let mut db = support::connect(&url);
    let policy: Option<String> = db
        .query_one(
            "SELECT policy FROM device_config WHERE thermostat_id = $1",
            &[&uuid],
        )
        .expect("device_config row")
        .get(0);
    assert_eq!(policy.as_deref(), Some("report"));
    daemon.stop();
}

#[test]
fn desired_state_survives_a_restart() {
    let Site { url, fleet, daemon } = start_site(
        "desired_restart",
        ModelProfile::Ct50,
        Duration::from_millis(500),
    );
    let device = &fleet.devices()[0];
    let uuid = device.uuid();
    let (code, body) = set_temperature(&daemon, uuid, &json!({"t_heat": 71.5, "hold": true}));
    assert_eq!(code, 200, "{body}");
    daemon.stop();

    // The power cut happens while the daemon is down.
    device.handle().power_cycle(Duration::ZERO);
    assert!(!device.handle().snapshot().hold);
    let daemon = RunningDaemon::start(config(
        &url,
        &fleet,
        Duration::from_millis(500),
        Duration::from_millis(50),
    ));

    wait_for(LIMIT, "hold and setpoint back after the restart", || {
        let now = device.handle().snapshot();
        now.hold && now.heat_target == 71.5
    });
    let view = status(&daemon, uuid);
    assert_eq!(view["desired"]["source"], "local_api", "{view}");
    assert_eq!(view["drift"]["device_resets"], 1, "{view}");
    daemon.stop();
}
