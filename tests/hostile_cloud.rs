//! The real daemon against a public server that misbehaves: a 50 MB response, malformed
//! JSON, a list of 100,000 commands, a redirect to another host, an expired certificate
//! and a certificate for another host. Each is refused with a clear log line, and no
//! command from it reaches the simulated thermostat.

mod support;

use support::daemon::RunningDaemon;
use support::log_capture::{self, lines_containing};

#[path = "support/fake_cloud.rs"]
mod fake_cloud;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use fake_cloud::{FakeCloud, Mode};
use thermostat_server::config::{Config, PublicServerConfig, Secret};
use thermostat_server::simulator::{self, Fleet, FleetOptions, ModelProfile};
use thermostat_server::thermostat::DeviceAddress;

const SITE: &str = "test_site";
const TOKEN: &str = "site-token-for-hostile-tests-42";

/// Installs the log capture and holds the returned guard for the whole test. The tests
/// of this file run one at a time, so every captured line belongs to the running one.
fn exclusive_log() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    log_capture::install(log::LevelFilter::Info);
    log_capture::clear();
    guard
}

fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; log: {:#?}",
            lines_containing("")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(url: &str, fleet: &Fleet, cloud: &FakeCloud) -> Config {
    let mut config = Config::new(SITE, url);
    config.thermostats.addresses = vec![DeviceAddress::new(fleet.devices()[0].address())];
    config.polling.interval = Duration::from_millis(500);
    config.polling.request_timeout = Duration::from_secs(2);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.database.flush_interval = Duration::from_millis(200);

    let mut public_server = PublicServerConfig::new(&cloud.base_url());
    public_server.ca_cert = Some(cloud.ca_file.clone());
    public_server.request_timeout = Duration::from_secs(5);
    public_server.command_interval = Duration::from_millis(300);
    public_server.results_interval = Duration::from_millis(300);
    public_server.max_backoff = Duration::from_secs(1);
    config.public_server = Some(public_server);
    config.secrets.site_token = Some(Secret::new(TOKEN));
    config
}

/// Returns the uuid of the one simulated thermostat (the fleet's default seed is 1), so the
/// hostile responses can carry commands for it.
fn the_uuid() -> String {
    simulator::device_uuid(1, 0)
}

/// Builds a valid command that writes to the thermostat when it runs.
fn set_state(command_id: &str, uuid: &str) -> Value {
    json!({"command_id": command_id, "command": "set_state", "thermostat_id": uuid,
        "params": {"tmode": 1, "t_heat": 66.0, "hold": 1},
        "issued_at": "2026-01-01T00:00:00Z"})
}

/// One public server fault. The daemon polls a server that replies with it until the
/// log shows `expected`, then a few more times, and the thermostat must see no write.
struct Scenario {
    name: &'static str,
    cloud: FakeCloud,
    expected: &'static str,
    /// Whether the server can be switched back to the protocol afterwards, to show
    /// that the same command then runs (the check above could not pass by accident).
    recovers: bool,
}

fn run(scenario: Scenario) {
    let url = support::fresh_database_url(scenario.name);
    let fleet = Fleet::start(FleetOptions {
        count: 1,
        models: vec![ModelProfile::Ct50],
        ..FleetOptions::default()
    })
    .expect("fleet starts on loopback");
    let uuid = fleet.devices()[0].uuid().to_string();
    assert_eq!(uuid, the_uuid());
    let cloud = scenario.cloud;
    let command_id = format!("{}-cmd", scenario.name);
    cloud.queue_command(set_state(&command_id, &uuid));

    let daemon = RunningDaemon::start(config(&url, &fleet, &cloud));
    wait_for(
        Duration::from_secs(30),
        &format!("the log line {:?}", scenario.expected),
        || !lines_containing(scenario.expected).is_empty(),
    );
    // Several more command polls meet the same fault.
    let polls_before = cloud.state().requests.len();
    wait_for(Duration::from_secs(20), "three more requests", || {
        cloud.state().requests.len() >= polls_before + 3 || !scenario.recovers
    });
    std::thread::sleep(Duration::from_secs(1));

    let writes = fleet.devices()[0].handle().stats().post_bodies;
    assert!(
        writes.is_empty(),
        "{}: the thermostat received writes: {writes:?}",
        scenario.name
    );
    assert!(cloud.results_for(&command_id).is_empty());
    let line = &lines_containing(scenario.expected)[0];
    assert!(
        !line.contains(TOKEN),
        "{}: the token is in the log: {line}",
        scenario.name
    );
    eprintln!("{}: refused with: {line}", scenario.name);

    if scenario.recovers {
        cloud.set_mode(Mode::Normal);
        wait_for(
            Duration::from_secs(30),
            "the command to run once the server behaves",
            || {
                cloud
                    .results_for(&command_id)
                    .iter()
                    .any(|entry| entry["status"] == "completed")
            },
        );
        let writes = fleet.devices()[0].handle().stats().post_bodies;
        assert!(!writes.is_empty(), "the recovered command wrote nothing");
    }
    daemon.stop();
    fleet.stop();
}

#[test]
fn response_of_50_mb_is_refused() {
    let _log = exclusive_log();
    let cloud = FakeCloud::start(SITE, TOKEN);
    let start = json!({"commands": [set_state("huge-inner", &the_uuid())]}).to_string();
    cloud.set_mode(Mode::Huge {
        start: start.trim_end_matches('}').to_string(),
        length: 50 * 1024 * 1024,
    });
    run(Scenario {
        name: "huge_response",
        cloud,
        expected: "response body is larger than the limit",
        recovers: true,
    });
}

#[test]
fn malformed_json_runs_nothing() {
    let _log = exclusive_log();
    let cloud = FakeCloud::start(SITE, TOKEN);
    // A valid command, then the list is cut: a lenient reader would run the command.
    let body = json!({"commands": [set_state("cut-inner", &the_uuid())]}).to_string();
    cloud.set_mode(Mode::Raw {
        status: 200,
        headers: String::new(),
        body: format!("{}, {{\"command_id\": ", &body[..body.len() - 2]),
    });
    run(Scenario {
        name: "malformed_json",
        cloud,
        expected: "the response is not JSON",
        recovers: true,
    });
}

#[test]
fn list_of_100000_commands_runs_none() {
    let _log = exclusive_log();
    let cloud = FakeCloud::start(SITE, TOKEN);
    // One valid command first, then 99,999 entries that fit under the body limit.
    let first = set_state("first-of-many", &the_uuid()).to_string();
    let mut body = format!("{{\"commands\":[{first}");
    body.push_str(&",{}".repeat(99_999));
    body.push_str("]}");
    cloud.set_mode(Mode::Raw {
        status: 200,
        headers: String::new(),
        body,
    });
    run(Scenario {
        name: "many_commands",
        cloud,
        expected: "the response lists 100000 commands",
        recovers: true,
    });
}

#[test]
fn redirect_to_another_host_is_not_followed() {
    let _log = exclusive_log();
    let cloud = FakeCloud::start(SITE, TOKEN);
    cloud.set_mode(Mode::Raw {
        status: 302,
        headers:
            "Location: https://other.invalid/api/v1/sites/test_site/commands/pending?key=x\r\n"
                .to_string(),
        body: String::new(),
    });
    run(Scenario {
        name: "redirect",
        cloud,
        expected: "redirected to https://other.invalid",
        recovers: true,
    });
    assert!(lines_containing("key=x").is_empty(), "query string logged");
}

#[test]
fn expired_certificate_is_refused() {
    let _log = exclusive_log();
    run(Scenario {
        name: "expired_certificate",
        cloud: FakeCloud::start_expired(SITE, TOKEN),
        expected: "has expired",
        recovers: false,
    });
}

#[test]
fn certificate_for_another_host_is_refused() {
    let _log = exclusive_log();
    run(Scenario {
        name: "wrong_host_certificate",
        cloud: FakeCloud::start_wrong_host(SITE, TOKEN),
        expected: "is for another host name",
        recovers: false,
    });
}
