//! The fuzz targets' bodies, shared by the cargo-fuzz binaries in `fuzz_targets/` and by
//! `tests/fuzz_regressions.rs`, which replays the kept inputs in every `cargo test`.
//! Each feeds untrusted bytes to a parser and checks what a successful parse promises.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;
use thermostat_server::api::body::{MODE_FIELDS, TEMPERATURE_FIELDS, parse_change, parse_json};
use thermostat_server::control::{SETPOINT_RANGE, SettingsChange};
use thermostat_server::device::parse_tstat;
use thermostat_server::discovery::message::{MAX_NOTIFY_BYTES, parse_notify};
use thermostat_server::sync::command::{
    Command, DISCOVERY_METHODS, DISCOVERY_TIMEOUT_RANGE, MAX_PENDING_COMMANDS, MAX_SCAN_RANGES,
    parse_pending, validate,
};

/// The names of the targets, as the folders under `regressions/` are named.
pub const TARGETS: [&str; 4] = ["tstat", "notify", "command", "api_body"];

/// Runs the target called `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "tstat" => tstat(data),
        "notify" => notify(data),
        "command" => command(data),
        "api_body" => api_body(data),
        other => panic!("unknown fuzz target {other:?}; expected one of {TARGETS:?}"),
    }
}

/// Parses `data` as a `GET /tstat` body from a thermostat.
pub fn tstat(data: &[u8]) {
    if let Ok(reply) = parse_tstat(data) {
        // Only plausible values are kept: never -1, NaN or a wild number.
        if let Some(temp) = reply.state.temp {
            assert!((10.0..=120.0).contains(&temp), "temperature {temp} kept");
        }
        for setpoint in [reply.state.t_heat, reply.state.t_cool]
            .into_iter()
            .flatten()
        {
            assert!(
                (35.0..=99.0).contains(&setpoint),
                "setpoint {setpoint} kept"
            );
        }
    }
}

/// Parses `data` as a WM-NOTIFY datagram, cut to the size the daemon reads.
pub fn notify(data: &[u8]) {
    let datagram = &data[..data.len().min(MAX_NOTIFY_BYTES)];
    let Ok(addresses) = parse_notify(datagram) else {
        return;
    };
    assert!(!addresses.is_empty(), "a parsed WM-NOTIFY names an address");
    assert!(
        addresses.len() <= datagram.len(),
        "more addresses than bytes"
    );

    // The daemon connects to every address it keeps, so each must be one that a device
    // can have: no port 0, and no wildcard, multicast or broadcast address.
    for address in addresses {
        let socket = address.socket_addr();
        let ip = socket.ip();
        assert_ne!(socket.port(), 0, "{socket} kept");
        assert!(!ip.is_unspecified(), "{socket} kept");
        assert!(!ip.is_multicast(), "{socket} kept");
        assert_ne!(ip, IpAddr::V4(Ipv4Addr::BROADCAST), "{socket} kept");
    }
}

/// Parses `data` as a `GET /commands/pending` body and validates each command in it.
pub fn command(data: &[u8]) {
    let envelopes = parse_pending(data);
    assert!(envelopes.len() <= MAX_PENDING_COMMANDS);
    for envelope in &envelopes {
        assert!(!envelope.command_id.is_empty());
        match validate(envelope, &|_| true) {
            Ok(Command::SetState { change, .. }) => check_change(&change),
            Ok(Command::SetAwayTemp { away_temp, .. }) => check_setpoint(away_temp),
            Ok(Command::DiscoverDevices(request)) => {
                for method in &request.methods {
                    assert!(
                        DISCOVERY_METHODS.contains(&method.as_str()),
                        "{method} kept"
                    );
                }
                if let Some(timeout) = request.timeout {
                    assert!(DISCOVERY_TIMEOUT_RANGE.contains(&timeout.as_secs()));
                }
                assert!(request.ip_ranges.len() <= MAX_SCAN_RANGES);
            }
            Err(_) => {}
        }
    }
}

/// Parses `data` as a local API request body with the JSON reader, both settings routes
/// and the settings parser that the public server's commands share.
pub fn api_body(data: &[u8]) {
    for empty_is_object in [false, true] {
        let Ok(value) = parse_json(data, empty_is_object) else {
            continue;
        };
        for fields in [&MODE_FIELDS[..], &TEMPERATURE_FIELDS[..]] {
            if let Ok(change) = parse_change(&value, fields) {
                check_change(&change);
            }
        }
        if let Ok(change) = SettingsChange::from_json(&value) {
            check_change(&change);
        }
    }
    // The same parser on a value built from the bytes as a string, not only as JSON.
    let _ = SettingsChange::from_json(&Value::String(String::from_utf8_lossy(data).into()));
}

fn check_change(change: &SettingsChange) {
    assert!(!change.is_empty(), "an accepted change changes something");
    for setpoint in [change.t_heat, change.t_cool].into_iter().flatten() {
        check_setpoint(setpoint);
    }
    let _ = change.describe();
}

fn check_setpoint(setpoint: f64) {
    assert!(
        SETPOINT_RANGE.contains(&setpoint),
        "setpoint {setpoint} accepted"
    );
    assert_eq!(
        setpoint * 2.0,
        (setpoint * 2.0).round(),
        "{setpoint} not in 0.5 steps"
    );
}
