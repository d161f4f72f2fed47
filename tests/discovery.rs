//! Discovery against simulated thermostats on loopback: UDP WM-DISCOVER through the
//! `discover` command, the TCP scan of a loopback range, moved devices, slow setup
//! paths, and progress reports.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thermostat_server::device::LinkOptions;
use thermostat_server::discovery::{
    AddressRange, DiscoveryOptions, Method, NoLinks, PhaseStatus, Progress, ProgressCallback,
    ProgressTracker, TcpOptions, UdpOptions, discover,
};
use thermostat_server::simulator::{Fault, Fleet, FleetOptions};

/// Writes `text` to a fresh file under the system's temporary folder.
fn write_config(name: &str, text: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("discovery-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("create temporary folder");
    let path = folder.join("site.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn udp_fleet(count: usize) -> Fleet {
    Fleet::start(FleetOptions {
        count,
        discovery: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        ..FleetOptions::default()
    })
    .expect("fleet starts")
}

fn loopback_udp(fleet: &Fleet, window: Duration) -> UdpOptions {
    UdpOptions {
        group: fleet.discovery_address().expect("responder runs"),
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        window,
        repeat_gap: Duration::from_millis(300),
        ..UdpOptions::default()
    }
}

fn fast_link() -> LinkOptions {
    LinkOptions {
        request_timeout: Duration::from_secs(5),
        min_request_gap: Duration::ZERO,
        program_gap: Duration::ZERO,
    }
}

fn run(
    options: &DiscoveryOptions,
    methods: &[Method],
) -> Vec<thermostat_server::discovery::Discovered> {
    let mut tracker = ProgressTracker::new(None);
    smol::block_on(discover(options, methods, &[], &NoLinks, &mut tracker))
}

#[test]
fn discover_command_lists_udp_fleet() {
    let fleet = udp_fleet(30);
    let group = fleet.discovery_address().expect("responder runs");
    let window_seconds = 2;
    let config = write_config(
        "udp30",
        &format!(
            "[site]\nsite_id = \"test_site\"\n\
             [database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\n\
             [discovery]\nudp_group = \"{group}\"\nudp_bind = \"127.0.0.1:0\"\n\
             udp_window_seconds = {window_seconds}\n"
        ),
    );

    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_thermostat-server"))
        .args(["discover", "--config"])
        .arg(&config)
        .args(["--json", "--methods", "udp"])
        .output()
        .expect("discover runs");
    let elapsed = started.elapsed();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        elapsed < Duration::from_secs(window_seconds + 5),
        "discover took {elapsed:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let listed = json["thermostats"].as_array().expect("thermostats array");
    assert_eq!(listed.len(), 30);

    let by_uuid: HashMap<&str, &serde_json::Value> = listed
        .iter()
        .map(|entry| (entry["uuid"].as_str().expect("uuid"), entry))
        .collect();
    assert_eq!(by_uuid.len(), 30, "a uuid is listed twice");
    for device in fleet.devices() {
        let entry = by_uuid.get(device.uuid()).expect("device listed");
        assert_eq!(entry["address"], device.address().to_string());
        assert_eq!(entry["name"], device.handle().snapshot().name);
        assert_eq!(entry["model"], device.model().model_string());
        assert_eq!(entry["method"], "udp");
    }
    assert_eq!(json["phase_history"][0]["phase"], "udp");
    assert_eq!(json["phase_history"][0]["status"], "completed");
}

#[test]
fn discover_command_rejects_bad_methods() {
    let output = Command::new(env!("CARGO_BIN_EXE_thermostat-server"))
        .args(["discover", "--config", "unused.toml", "--methods", "dhcp"])
        .output()
        .expect("discover runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("dhcp"));
}

#[test]
fn udp_collects_each_device_once() {
    let fleet = udp_fleet(12);
    let options = DiscoveryOptions {
        udp: loopback_udp(&fleet, Duration::from_secs(1)),
        link: fast_link(),
        ..DiscoveryOptions::default()
    };

    // Every device replies to both requests, so 24 WM-NOTIFY datagrams arrive.
    let found = run(&options, &[Method::Udp]);

    let uuids: HashSet<String> = found
        .iter()
        .map(|device| device.identity.sys.uuid.to_string())
        .collect();
    let expected: HashSet<String> = fleet
        .devices()
        .iter()
        .map(|d| d.uuid().to_string())
        .collect();
    assert_eq!(found.len(), 12);
    assert_eq!(uuids, expected);
}

#[test]
fn udp_finds_moved_device_at_new_port() {
    let fleet = udp_fleet(3);
    let old = fleet.devices()[1].address();
    let new = fleet
        .move_device(1, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("device moves");
    let options = DiscoveryOptions {
        udp: loopback_udp(&fleet, Duration::from_millis(800)),
        link: fast_link(),
        ..DiscoveryOptions::default()
    };

    let found = run(&options, &[Method::Udp]);

    let moved = found
        .iter()
        .find(|device| device.identity.sys.uuid.as_str() == fleet.devices()[1].uuid())
        .expect("moved device found");
    assert_ne!(old, new);
    assert_eq!(moved.address.socket_addr(), new);
}

#[test]
fn moved_device_closes_old_port() {
    let fleet = udp_fleet(1);
    let old = fleet.devices()[0].address();
    fleet
        .move_device(0, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("device moves");
    // The fleet thread swaps the listener on its next turn.
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::net::TcpStream::connect(old).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(std::net::TcpStream::connect(old).is_err());
}

/// Ten devices spread over 127.0.7.1-127.0.7.64, all on one port.
fn subnet_fleet() -> (Fleet, Vec<IpAddr>) {
    let ips: Vec<IpAddr> = (0..10)
        .map(|index| IpAddr::V4(Ipv4Addr::new(127, 0, 7, 3 + 6 * index)))
        .collect();
    let fleet = Fleet::start(FleetOptions {
        count: ips.len(),
        bind_ips: ips.clone(),
        ..FleetOptions::default()
    })
    .expect("fleet starts");
    (fleet, ips)
}

fn tcp_options(port: u16, batch_size: usize) -> DiscoveryOptions {
    let range: AddressRange = "127.0.7.1-127.0.7.64".parse().expect("valid range");
    DiscoveryOptions {
        tcp: TcpOptions {
            ranges: vec![range],
            port,
            concurrency: 16,
            connect_timeout: Duration::from_millis(500),
            batch_size,
        },
        link: fast_link(),
        ..DiscoveryOptions::default()
    }
}

#[test]
fn tcp_scan_finds_exactly_ten() {
    let (fleet, _) = subnet_fleet();
    let port = fleet.devices()[0].address().port();

    let found = run(&tcp_options(port, 16), &[Method::Tcp]);

    let found_addresses: HashSet<SocketAddr> = found
        .iter()
        .map(|device| device.address.socket_addr())
        .collect();
    let expected: HashSet<SocketAddr> = fleet.devices().iter().map(|d| d.address()).collect();
    assert_eq!(found.len(), 10);
    assert_eq!(found_addresses, expected);
}

#[test]
fn tcp_scan_matches_uuid_to_address() {
    let (fleet, _) = subnet_fleet();
    let port = fleet.devices()[0].address().port();

    let found = run(&tcp_options(port, 64), &[Method::Tcp]);

    for device in fleet.devices() {
        let match_ = found
            .iter()
            .find(|found| found.identity.sys.uuid.as_str() == device.uuid())
            .expect("device found");
        assert_eq!(match_.address.socket_addr(), device.address());
        assert_eq!(match_.method, Method::Tcp);
    }
}

#[test]
fn tcp_progress_reports_each_batch() {
    let (fleet, _) = subnet_fleet();
    let port = fleet.devices()[0].address().port();
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let callback: ProgressCallback = Arc::new(move |progress: &Progress| {
        sink.lock().expect("not poisoned").push(progress.clone());
    });
    let mut tracker = ProgressTracker::new(Some(callback));

    smol::block_on(discover(
        &tcp_options(port, 16),
        &[Method::Tcp],
        &[],
        &NoLinks,
        &mut tracker,
    ));

    let updates = seen.lock().expect("not poisoned");
    let last = updates.last().expect("progress reported");
    // One start, one update per batch of 16, one finish.
    assert_eq!(updates.len(), 1 + 4 + 1);
    assert_eq!(last.phase_history[0].status, PhaseStatus::Completed);
    assert_eq!(last.phase_history[0].devices_found, 10);
}

/// BL-03: `/tstat/model` takes 6.5 s and `/sys/name` 5 s on a CT80 Rev B2; discovery
/// must identify it with the long polling deadline, not a short default.
#[test]
fn slow_setup_path_still_identified() {
    let fleet = Fleet::start(FleetOptions {
        count: 1,
        discovery: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        faults: vec![
            (
                0,
                Fault::SlowPath {
                    path: "/tstat/model".to_string(),
                    delay: Duration::from_millis(6500),
                },
            ),
            (
                0,
                Fault::SlowPath {
                    path: "/sys/name".to_string(),
                    delay: Duration::from_millis(5000),
                },
            ),
        ],
        ..FleetOptions::default()
    })
    .expect("fleet starts");
    let options = DiscoveryOptions {
        udp: loopback_udp(&fleet, Duration::from_millis(500)),
        link: LinkOptions {
            request_timeout: Duration::from_secs(25),
            min_request_gap: Duration::ZERO,
            program_gap: Duration::ZERO,
        },
        ..DiscoveryOptions::default()
    };

    let found = run(&options, &[Method::Udp]);

    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].identity.sys.uuid.as_str(),
        fleet.devices()[0].uuid()
    );
}

#[test]
fn udp_to_silent_group_finds_nothing() {
    // A bound socket that never replies plays a network without thermostats.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let options = DiscoveryOptions {
        udp: UdpOptions {
            group: silent.local_addr().expect("address"),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            window: Duration::from_millis(300),
            repeat_gap: Duration::from_millis(100),
            ..UdpOptions::default()
        },
        link: fast_link(),
        ..DiscoveryOptions::default()
    };

    assert!(run(&options, &[Method::Udp]).is_empty());
}

fn single_device(model: thermostat_server::simulator::ModelProfile) -> Fleet {
    Fleet::start(FleetOptions {
        count: 1,
        models: vec![model],
        ..FleetOptions::default()
    })
    .expect("fleet starts")
}

fn link_to(fleet: &Fleet) -> thermostat_server::device::DeviceLink {
    let address = thermostat_server::thermostat::DeviceAddress::new(fleet.devices()[0].address());
    thermostat_server::device::DeviceLink::new(address, fast_link())
}

/// BL-13: a CT50 that reports `override 1` keeps its temporary setpoint, because the
/// clock is not written at all.
#[test]
fn clock_sync_skipped_during_override() {
    use thermostat_server::discovery::setup::{ClockOutcome, sync_clock};
    let fleet = single_device(thermostat_server::simulator::ModelProfile::Ct50);
    let handle = fleet.devices()[0].handle();
    handle
        .apply_tstat_post(r#"{"t_heat":79.5}"#)
        .expect("temporary setpoint accepted");

    let outcome = smol::block_on(sync_clock(&link_to(&fleet), &jiff::ZonedDateTime::now()))
        .expect("device replies");

    assert!(matches!(outcome, ClockOutcome::Skipped(_)), "{outcome:?}");
    assert_eq!(handle.snapshot().heat_target, 79.5);
    assert!(handle.snapshot().temporary_override);
}

/// BL-13: a CT50 V1.09 always reports `override 0`, so the clock write clears the
/// temporary setpoint unseen; the setpoint is read back and restored.
#[test]
fn clock_sync_restores_hidden_override() {
    use thermostat_server::discovery::setup::{ClockOutcome, sync_clock};
    let fleet = single_device(thermostat_server::simulator::ModelProfile::Ct50V109);
    let handle = fleet.devices()[0].handle();
    handle
        .apply_tstat_post(r#"{"t_heat":79.5}"#)
        .expect("temporary setpoint accepted");

    let outcome = smol::block_on(sync_clock(&link_to(&fleet), &jiff::ZonedDateTime::now()))
        .expect("device replies");

    assert_eq!(outcome, ClockOutcome::Restored { target: 79.5 });
    assert_eq!(handle.snapshot().heat_target, 79.5);
    assert_eq!(handle.stats().forbidden_writes, 0);
}

#[test]
fn clock_sync_sets_device_clock() {
    use thermostat_server::discovery::setup::{ClockOutcome, sync_clock};
    let fleet = single_device(thermostat_server::simulator::ModelProfile::Ct50);
    let handle = fleet.devices()[0].handle();
    handle.set_clock(6, 23, 59);
    let now: jiff::ZonedDateTime = "2026-12-08T09:30:00[UTC]".parse().expect("valid time");

    let outcome = smol::block_on(sync_clock(&link_to(&fleet), &now)).expect("device replies");

    assert_eq!(outcome, ClockOutcome::Synced);
    // Tuesday 09:30, counted from Monday 00:00; the device clock may have ticked once.
    let minute = handle.snapshot().week_minute;
    assert!(
        (24 * 60 + 9 * 60 + 30..=24 * 60 + 9 * 60 + 31).contains(&minute),
        "{minute}"
    );
}
