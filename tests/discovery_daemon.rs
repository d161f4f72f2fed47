//! The daemon's discovery against a simulated fleet with a WM-DISCOVER responder on
//! loopback: thermostats found without configured addresses, a moved thermostat
//! followed to its new address on the same row, and no overlapping requests.

mod support;

use support::daemon::{RunningDaemon, connect, wait_for};

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use thermostat_server::config::Config;
use thermostat_server::discovery::Method;
use thermostat_server::simulator::{Fleet, FleetOptions};

const DISCOVERY_INTERVAL: Duration = Duration::from_secs(3);

fn udp_fleet(count: usize) -> Fleet {
    Fleet::start(FleetOptions {
        count,
        discovery: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        ..FleetOptions::default()
    })
    .expect("fleet starts")
}

/// Builds a daemon config with no configured addresses that discovers by stored
/// address and UDP.
fn discovering_config(url: &str, fleet: &Fleet) -> Config {
    let mut config = Config::new("test_site", url);
    config.polling.interval = Duration::from_millis(500);
    config.polling.request_timeout = Duration::from_secs(2);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.polling.offline_after_failures = 2;
    config.polling.max_backoff = Duration::from_secs(1);
    config.database.flush_interval = Duration::from_millis(200);
    config.discovery.methods = vec![Method::Database, Method::Udp];
    config.discovery.interval = DISCOVERY_INTERVAL;
    config.discovery.udp.group = fleet.discovery_address().expect("responder runs");
    config.discovery.udp.bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.discovery.udp.window = Duration::from_secs(1);
    config.discovery.udp.repeat_gap = Duration::from_millis(300);
    config
}

fn stored_address(client: &mut postgres::Client, uuid: &str) -> Option<String> {
    client
        .query_opt(
            "SELECT ip_address FROM thermostats WHERE thermostat_id = $1",
            &[&uuid],
        )
        .ok()
        .flatten()
        .map(|row| row.get(0))
}

fn thermostat_count(client: &mut postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM thermostats", &[])
        .map(|row| row.get(0))
        .unwrap_or(0)
}

#[test]
fn daemon_registers_udp_finds() {
    let url = support::fresh_database_url("daemon_registers_udp_finds");
    let fleet = udp_fleet(3);
    let daemon = RunningDaemon::start(discovering_config(&url, &fleet));
    let mut client = connect(&url);

    wait_for(Duration::from_secs(15), "3 registered thermostats", || {
        thermostat_count(&mut client) == 3
    });
    for device in fleet.devices() {
        let address = stored_address(&mut client, device.uuid());
        assert_eq!(address, Some(device.address().to_string()));
    }
    let method: String = client
        .query_one("SELECT discovery_method FROM thermostats LIMIT 1", &[])
        .expect("one row")
        .get(0);
    assert_eq!(method, "udp");
    daemon.stop();
}

#[test]
fn moved_thermostat_followed_on_same_row() {
    let url = support::fresh_database_url("moved_thermostat_followed");
    let fleet = udp_fleet(3);
    let daemon = RunningDaemon::start(discovering_config(&url, &fleet));
    let mut client = connect(&url);
    let moved = &fleet.devices()[1];
    wait_for(Duration::from_secs(15), "3 registered thermostats", || {
        thermostat_count(&mut client) == 3
    });
    let first_seen_before: jiff::Timestamp = first_seen(&mut client, moved.uuid());

    let new_address = fleet
        .move_device(1, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("device moves");
    moved.handle().reset_stats();
    let waited = wait_for(
        DISCOVERY_INTERVAL * 2 + Duration::from_secs(3),
        "polls at the new address",
        || {
            moved
                .handle()
                .stats()
                .requests_by_path
                .get("/tstat")
                .copied()
                .unwrap_or(0)
                > 0
        },
    );
    eprintln!("moved thermostat polled at its new address after {waited:?}");

    assert_eq!(
        stored_address(&mut client, moved.uuid()),
        Some(new_address.to_string())
    );
    assert_eq!(thermostat_count(&mut client), 3);
    assert_eq!(first_seen(&mut client, moved.uuid()), first_seen_before);
    daemon.stop();
    for device in fleet.devices() {
        let stats = device.handle().stats();
        assert_eq!(
            stats.overlapping_requests,
            0,
            "thermostat {} had overlapping requests",
            device.uuid()
        );
        assert_eq!(
            stats.forbidden_writes,
            0,
            "POST /sys/mode to {}",
            device.uuid()
        );
    }
}

fn first_seen(client: &mut postgres::Client, uuid: &str) -> jiff::Timestamp {
    let row = client
        .query_one(
            "SELECT extract(epoch FROM first_seen)::float8 FROM thermostats WHERE thermostat_id = $1",
            &[&uuid],
        )
        .expect("row exists");
    let seconds: f64 = row.get(0);
    jiff::Timestamp::from_microsecond((seconds * 1e6).round() as i64).expect("valid time")
}

#[test]
fn tcp_scan_runs_when_udp_finds_nothing() {
    use std::net::IpAddr;
    use thermostat_server::discovery::AddressRange;

    let url = support::fresh_database_url("tcp_scan_when_udp_silent");
    let ips: Vec<IpAddr> = (0..4)
        .map(|index| IpAddr::V4(Ipv4Addr::new(127, 0, 8, 2 + 5 * index)))
        .collect();
    let fleet = Fleet::start(FleetOptions {
        count: ips.len(),
        bind_ips: ips,
        ..FleetOptions::default()
    })
    .expect("fleet starts");
    // A socket that never replies plays a network where multicast is dropped.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");

    let mut config = Config::new("test_site", &url);
    config.polling.interval = Duration::from_millis(500);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.database.flush_interval = Duration::from_millis(200);
    config.discovery.methods = vec![Method::Database, Method::Udp, Method::Tcp];
    config.discovery.udp.group = silent.local_addr().expect("address");
    config.discovery.udp.bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.discovery.udp.window = Duration::from_millis(500);
    let range: AddressRange = "127.0.8.1-127.0.8.32".parse().expect("valid range");
    config.discovery.tcp.ranges = vec![range];
    config.discovery.tcp.port = fleet.devices()[0].address().port();
    config.discovery.tcp.batch_size = 8;
    config.discovery.tcp.connect_timeout = Duration::from_millis(300);
    let daemon = RunningDaemon::start(config);
    let mut client = connect(&url);

    wait_for(
        Duration::from_secs(15),
        "4 thermostats found by TCP",
        || thermostat_count(&mut client) == 4,
    );
    let method: String = client
        .query_one("SELECT DISTINCT discovery_method FROM thermostats", &[])
        .expect("one method")
        .get(0);
    assert_eq!(method, "tcp");
    wait_for(Duration::from_secs(10), "clock writes", || {
        fleet.devices().iter().all(|device| {
            let stats = device.handle().stats();
            stats
                .post_bodies
                .iter()
                .any(|post| post.body.contains("\"time\""))
        })
    });
    daemon.stop();
    for device in fleet.devices() {
        assert_eq!(device.handle().stats().overlapping_requests, 0);
    }
}

#[test]
fn first_tcp_batch_registered_before_rest() {
    use std::net::IpAddr;
    use thermostat_server::discovery::AddressRange;
    use thermostat_server::simulator::Fault;

    let url = support::fresh_database_url("first_tcp_batch_first");
    let fleet = Fleet::start(FleetOptions {
        count: 2,
        bind_ips: vec![
            IpAddr::V4(Ipv4Addr::new(127, 0, 9, 2)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 9, 30)),
        ],
        // The unit in the last batch takes 3 s to return its name.
        faults: vec![(
            1,
            Fault::SlowPath {
                path: "/sys/name".to_string(),
                delay: Duration::from_secs(3),
            },
        )],
        ..FleetOptions::default()
    })
    .expect("fleet starts");

    let mut config = Config::new("test_site", &url);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.polling.interval = Duration::from_millis(500);
    config.database.flush_interval = Duration::from_millis(200);
    config.discovery.methods = vec![Method::Database, Method::Tcp];
    config.discovery.sync_clock = false;
    let range: AddressRange = "127.0.9.1-127.0.9.32".parse().expect("valid range");
    config.discovery.tcp.ranges = vec![range];
    config.discovery.tcp.port = fleet.devices()[0].address().port();
    config.discovery.tcp.batch_size = 8;
    let daemon = RunningDaemon::start(config);
    let mut client = connect(&url);
    let first = fleet.devices()[0].uuid();
    let last = fleet.devices()[1].uuid();

    wait_for(
        Duration::from_secs(10),
        "the first batch's thermostat",
        || stored_address(&mut client, first).is_some(),
    );
    assert_eq!(stored_address(&mut client, last), None);
    wait_for(
        Duration::from_secs(10),
        "the last batch's thermostat",
        || stored_address(&mut client, last).is_some(),
    );
    daemon.stop();
}

fn discover_command(config: &std::path::Path, methods: &str) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_thermostat-server"))
        .args(["discover", "--config"])
        .arg(config)
        .args(["--json", "--register", "--methods", methods])
        .output()
        .expect("discover runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("discovery "),
        "no progress line on stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

#[test]
fn register_keeps_away_temp_and_row() {
    let url = support::fresh_database_url("discover_register_keeps");
    let fleet = udp_fleet(2);
    let folder = std::env::temp_dir().join(format!("discover-register-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("create temporary folder");
    let config = folder.join("site.toml");
    let group = fleet.discovery_address().expect("responder runs");
    let text = format!(
        "[site]\nsite_id = \"test_site\"\n[database]\nurl = \"{url}\"\n\
         [polling]\nmin_request_gap_ms = 50\n\
         [discovery]\nudp_group = \"{group}\"\nudp_bind = \"127.0.0.1:0\"\n\
         udp_window_seconds = 1\n"
    );
    std::fs::write(&config, text).expect("write config");
    let uuid = fleet.devices()[0].uuid();

    let first = discover_command(&config, "udp");
    let mut client = connect(&url);
    client
        .execute(
            "UPDATE thermostats SET away_temp = 60.5 WHERE thermostat_id = $1",
            &[&uuid],
        )
        .expect("set away_temp");
    let first_seen_before = first_seen(&mut client, uuid);
    let second = discover_command(&config, "database,udp");

    assert_eq!(first["thermostats"].as_array().map(Vec::len), Some(2));
    assert_eq!(second["thermostats"].as_array().map(Vec::len), Some(2));
    assert_eq!(second["thermostats"][0]["method"], "database");
    assert_eq!(thermostat_count(&mut client), 2);
    let away: Option<f64> = client
        .query_one(
            "SELECT away_temp::float8 FROM thermostats WHERE thermostat_id = $1",
            &[&uuid],
        )
        .expect("row exists")
        .get(0);
    assert_eq!(away, Some(60.5));
    assert_eq!(first_seen(&mut client, uuid), first_seen_before);
}
