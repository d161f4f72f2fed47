//! End-to-end tests of the thermostat simulator over real loopback sockets, with
//! plain `std::net::TcpStream` clients.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use thermostat_server::simulator::{
    Fault, Fleet, FleetOptions, Latency, ModelProfile, PostOptions, Reply, ScriptedReply, run_cli,
};

/// Client timeout for replies that should arrive.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Client timeout when a reply should not arrive.
const SILENCE_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("body {:?} is not JSON: {error}", self.body))
    }
}

fn send_request(stream: &mut TcpStream, method: &str, path: &str, body: Option<&str>) {
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: thermostat\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("request written");
}

/// Reads until the device closes the connection and splits the response.
fn read_response(stream: &mut TcpStream) -> io::Result<Response> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("no HTTP response: {text:?}"),
        ));
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .expect("status code");
    Ok(Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

fn exchange(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&address, REPLY_TIMEOUT)?;
    stream.set_read_timeout(Some(timeout))?;
    send_request(&mut stream, method, path, body);
    read_response(&mut stream)
}

fn get(address: SocketAddr, path: &str) -> Response {
    exchange(address, "GET", path, None, REPLY_TIMEOUT)
        .unwrap_or_else(|error| panic!("GET {path} from {address} failed: {error}"))
}

fn post(address: SocketAddr, path: &str, body: &str) -> Response {
    exchange(address, "POST", path, Some(body), REPLY_TIMEOUT)
        .unwrap_or_else(|error| panic!("POST {path} {body} to {address} failed: {error}"))
}

/// True when no response arrives within `SILENCE_TIMEOUT`, or the connection ends
/// without one.
fn no_reply(address: SocketAddr, path: &str) -> bool {
    exchange(address, "GET", path, None, SILENCE_TIMEOUT).is_err()
}

fn fleet_of(models: Vec<ModelProfile>) -> Fleet {
    Fleet::start(FleetOptions {
        count: models.len(),
        models,
        ..FleetOptions::default()
    })
    .expect("fleet started")
}

fn single(model: ModelProfile) -> (Fleet, SocketAddr) {
    let fleet = fleet_of(vec![model]);
    let address = fleet.devices()[0].address();
    (fleet, address)
}

/// Lists the top-level keys of a JSON object body in the order they appear.
fn key_order(body: &str) -> Vec<String> {
    let inner = body.trim().trim_start_matches('{');
    let mut keys = Vec::new();
    let mut depth = 0;
    let mut rest = inner;
    while let Some(start) = rest.find('"') {
        let before = &rest[..start];
        depth += before.matches('{').count() as i32 - before.matches('}').count() as i32;
        let after = &rest[start + 1..];
        let end = after.find('"').expect("closing quote");
        let is_key = after[end + 1..].starts_with(':');
        if depth == 0 && is_key {
            keys.push(after[..end].to_string());
        }
        rest = &after[end + 1..];
    }
    keys
}

#[test]
fn tstat_shape_per_profile() {
    let fleet = fleet_of(vec![
        ModelProfile::Ct30,
        ModelProfile::Ct50,
        ModelProfile::Ct50V109,
        ModelProfile::Ct80RevB,
        ModelProfile::Ct80V234T,
        ModelProfile::Generic("CT55 V9.01".to_string()),
    ]);
    let expected_models = [
        "CT30 V1.94",
        "CT50 V1.94",
        "CT50 V1.09",
        "CT80 Rev B2 V1.09",
        "CT80 V2.34T",
        "CT55 V9.01",
    ];
    let with_program_mode = ["CT80 Rev B2 V1.09", "CT80 V2.34T"];

    for (device, model) in fleet.devices().iter().zip(expected_models) {
        let address = device.address();
        assert_eq!(get(address, "/tstat/model").json()["model"], model);

        let tstat = get(address, "/tstat");
        assert_eq!(tstat.status, 200);
        assert!(
            tstat.head.contains("Content-Type: application/json"),
            "{}",
            tstat.head
        );
        assert!(tstat.head.contains("Connection: close"), "{}", tstat.head);

        let mut expected_keys = vec!["temp", "tmode", "fmode", "override", "hold", "t_heat"];
        if with_program_mode.contains(&model) {
            expected_keys.push("program_mode");
        }
        expected_keys.extend(["tstate", "fstate", "time", "t_type_post"]);
        assert_eq!(
            key_order(&tstat.body),
            expected_keys,
            "{model}: {}",
            tstat.body
        );

        let temp_text = tstat
            .body
            .split("\"temp\":")
            .nth(1)
            .and_then(|rest| rest.split(',').next());
        let decimals = temp_text
            .and_then(|text| text.split('.').nth(1))
            .map(str::len);
        assert_eq!(decimals, Some(2), "{model}: temp in {}", tstat.body);
    }

    let rev_b = get(fleet.devices()[3].address(), "/tstat").json();
    assert_eq!(rev_b["program_mode"], 0);
    let v234 = get(fleet.devices()[4].address(), "/tstat").json();
    assert_eq!(v234["program_mode"], -1);
}

#[test]
fn setpoint_keys_follow_mode() {
    let (_fleet, address) = single(ModelProfile::Ct80RevB);

    post(address, "/tstat", r#"{"tmode":2}"#);
    let cool = get(address, "/tstat").json();
    assert!(cool.get("t_cool").is_some(), "{cool}");
    assert!(cool.get("t_heat").is_none(), "{cool}");

    post(address, "/tstat", r#"{"tmode":0}"#);
    let off = get(address, "/tstat").json();
    assert!(off.get("t_heat").is_none(), "{off}");
    assert!(off.get("t_cool").is_none(), "{off}");

    post(address, "/tstat", r#"{"tmode":3}"#);
    let auto = get(address, "/tstat").json();
    assert_eq!(auto["tmode"], 3);
    assert!(auto.get("t_heat").is_none(), "{auto}");
    assert!(auto.get("t_cool").is_none(), "{auto}");

    let ttemp = get(address, "/tstat/ttemp").json();
    assert!(ttemp["t_heat"].is_f64(), "{ttemp}");
    assert!(ttemp["t_cool"].is_f64(), "{ttemp}");
}

#[test]
fn identity_and_other_endpoints() {
    let fleet = fleet_of(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];
    let address = device.address();

    let sys = get(address, "/sys").json();
    assert_eq!(sys["uuid"], device.uuid());
    assert_eq!(sys["api_version"], 113);
    assert_eq!(sys["fw_version"], "1.04.84");
    assert_eq!(sys["wlan_fw_version"], "v10.105576");

    let uuid = device.uuid();
    let tail = uuid[6..].to_ascii_uppercase();
    let expected_name = format!("thermostat-{}-{}-{}", &tail[0..2], &tail[2..4], &tail[4..6]);
    assert_eq!(
        get(address, "/sys/name").json()["name"],
        expected_name.as_str()
    );
    assert_eq!(
        post(address, "/sys/name", r#"{"name":"Hall"}"#).json()["success"],
        0
    );
    assert_eq!(get(address, "/sys/name").json()["name"], "Hall");

    assert!(get(address, "/sys/services").json()["httpd_handlers"]["/tstat"].is_array());
    assert_eq!(get(address, "/tstat/humidity").json()["humidity"], -1.0);
    let program = get(address, "/tstat/program/heat").json();
    assert_eq!(program["0"].as_array().map(Vec::len), Some(8));
    assert!(get(address, "/tstat/program/cool").json()["6"].is_array());

    let missing = get(address, "/no/such/page");
    assert_eq!(missing.status, 404);
    assert!(missing.head.contains("text/html"), "{}", missing.head);
    assert!(missing.body.contains("<html>"), "{}", missing.body);
}

#[test]
fn forbidden_write_is_counted() {
    let fleet = fleet_of(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];

    let reply = post(device.address(), "/sys/mode", r#"{"mode":0}"#);
    assert_eq!(reply.json()["success"], 0);
    assert_eq!(device.handle().stats().forbidden_writes, 1);
}

#[test]
fn invalid_post_body_errors() {
    let (_fleet, address) = single(ModelProfile::Ct50);
    assert_eq!(post(address, "/tstat", "tmode=1").json()["error"], -1);
    assert_eq!(
        post(address, "/tstat", r#"{"bogus":1}"#).json()["success"],
        0
    );
}

#[test]
fn plain_text_post_option() {
    let fleet = fleet_of(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];
    device.handle().set_post_options(PostOptions {
        plain_text_reply: true,
        ..PostOptions::default()
    });
    assert_eq!(
        post(device.address(), "/tstat", r#"{"fmode":2}"#).body,
        "Tstat Command Processed"
    );
    assert_eq!(get(device.address(), "/tstat").json()["fmode"], 2);
}

#[test]
fn mismatched_setpoint_switches_mode() {
    let (_fleet, address) = single(ModelProfile::Ct50);
    post(address, "/tstat", r#"{"tmode":2,"t_cool":78}"#);
    assert_eq!(get(address, "/tstat").json()["tmode"], 2);

    post(address, "/tstat", r#"{"t_heat":70.3}"#);
    let state = get(address, "/tstat").json();
    assert_eq!(state["tmode"], 1);
    assert_eq!(state["t_heat"], 70.5);
    assert_eq!(state["override"], 1);
}

#[test]
fn clock_write_clears_override() {
    let fleet = fleet_of(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];
    let address = device.address();

    // Monday 14:00 is in the default program's 62 °F daytime heat period.
    post(
        address,
        "/tstat",
        r#"{"time":{"day":0,"hour":14,"minute":0}}"#,
    );
    post(address, "/tstat", r#"{"tmode":1,"t_heat":72}"#);
    let before = get(address, "/tstat").json();
    assert_eq!(before["override"], 1);
    assert_eq!(before["t_heat"], 72.0);

    post(
        address,
        "/tstat",
        r#"{"time":{"day":1,"hour":14,"minute":2}}"#,
    );
    let after = get(address, "/tstat").json();
    assert_eq!(after["override"], 0);
    assert_eq!(after["t_heat"], 62.0);
    assert_eq!(after["time"]["day"], 1);
    assert_eq!(after["time"]["hour"], 14);
}

#[test]
fn interior_targets_only_on_ct80_rev_b() {
    let fleet = fleet_of(vec![ModelProfile::Ct50, ModelProfile::Ct80RevB]);
    let ct50 = fleet.devices()[0].address();
    let rev_b = fleet.devices()[1].address();

    let ct50_before = get(ct50, "/tstat/ttemp").json();
    assert_eq!(
        post(ct50, "/tstat", r#"{"it_cool":75}"#).json()["success"],
        0
    );
    assert_eq!(get(ct50, "/tstat/ttemp").json(), ct50_before);

    post(rev_b, "/tstat", r#"{"tmode":3}"#);
    post(rev_b, "/tstat", r#"{"it_heat":66,"it_cool":78}"#);
    let ttemp = get(rev_b, "/tstat/ttemp").json();
    assert_eq!(ttemp["t_heat"], 66.0);
    assert_eq!(ttemp["t_cool"], 78.0);
    assert_eq!(get(rev_b, "/tstat").json()["tmode"], 3);
}

#[test]
fn only_first_interior_target_applies() {
    let fleet = fleet_of(vec![ModelProfile::Ct80RevB]);
    let device = &fleet.devices()[0];
    let address = device.address();
    device.handle().set_post_options(PostOptions {
        only_first_interior_target: true,
        ..PostOptions::default()
    });

    let before = get(address, "/tstat/ttemp").json();
    post(address, "/tstat", r#"{"it_heat":66,"it_cool":79}"#);
    let after = get(address, "/tstat/ttemp").json();
    assert_eq!(after["t_heat"], 66.0);
    assert_eq!(after["t_cool"], before["t_cool"]);

    let logged = device.handle().stats().post_bodies;
    assert_eq!(
        logged.back().map(|record| record.body.as_str()),
        Some(r#"{"it_heat":66,"it_cool":79}"#)
    );
}

#[test]
fn one_connection_at_a_time() {
    let fleet = Fleet::start(FleetOptions {
        latency: Latency::Fixed(Duration::from_millis(200)),
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let device = &fleet.devices()[0];
    let address = device.address();

    let first = thread::spawn(move || {
        let reply = get(address, "/tstat");
        (reply, Instant::now())
    });
    thread::sleep(Duration::from_millis(50));
    let second_start = Instant::now();
    let second = get(address, "/sys");
    let second_done = Instant::now();
    let (first_reply, first_done) = first.join().expect("first client");

    assert_eq!(first_reply.status, 200);
    assert_eq!(second.status, 200);
    assert!(
        second_done >= first_done,
        "second answered before the first finished"
    );
    assert!(
        second_done.duration_since(second_start) >= Duration::from_millis(300),
        "second waited only {:?}",
        second_done.duration_since(second_start)
    );

    let stats = device.handle().stats();
    assert_eq!(stats.overlapping_requests, 1);
    assert_eq!(stats.max_concurrent_connections, 2);
}

#[test]
fn sequential_client_has_no_overlap() {
    let fleet = fleet_of(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];
    for _ in 0..3 {
        get(device.address(), "/tstat");
        thread::sleep(Duration::from_millis(20));
    }

    let stats = device.handle().stats();
    assert_eq!(stats.overlapping_requests, 0);
    assert_eq!(stats.max_concurrent_connections, 1);
    assert_eq!(stats.requests_to("/tstat"), 3);
    assert_eq!(stats.total_requests, 3);
    assert_eq!(stats.requests.len(), 3);
    let gap = stats.min_gap.expect("gap between requests");
    assert!(gap >= Duration::from_millis(15), "gap {gap:?}");
}

#[test]
fn slow_fault_delays_reply() {
    let fleet = Fleet::start(FleetOptions {
        faults: vec![(0, Fault::Slow(Duration::from_millis(150)))],
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let address = fleet.devices()[0].address();

    let start = Instant::now();
    get(address, "/tstat");
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn slow_path_fault_delays_one_path() {
    let fleet = Fleet::start(FleetOptions {
        faults: vec![(
            0,
            Fault::SlowPath {
                path: "/tstat/model".to_string(),
                delay: Duration::from_millis(150),
            },
        )],
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let address = fleet.devices()[0].address();

    let start = Instant::now();
    get(address, "/sys");
    assert!(
        start.elapsed() < Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    let start = Instant::now();
    get(address, "/tstat/model");
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn hang_then_recovery() {
    let fleet = Fleet::start(FleetOptions {
        faults: vec![(0, Fault::Hang)],
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let device = &fleet.devices()[0];
    let address = device.address();

    assert!(no_reply(address, "/tstat"));
    assert_eq!(device.handle().stats().silent_replies, 1);

    device.handle().clear_faults();
    let reply = get(address, "/tstat");
    assert_eq!(reply.status, 200);
}

#[test]
fn negative_one_fault() {
    let fleet = Fleet::start(FleetOptions {
        faults: vec![(0, Fault::NegativeOne { probability: 1.0 })],
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let address = fleet.devices()[0].address();

    let state = get(address, "/tstat").json();
    assert_eq!(state["temp"], -1);
    assert_eq!(get(address, "/sys").json()["api_version"], 113);
}

#[test]
fn truncated_json_fault() {
    let fleet = Fleet::start(FleetOptions {
        faults: vec![(0, Fault::TruncatedJson { probability: 1.0 })],
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let address = fleet.devices()[0].address();

    let reply = get(address, "/tstat");
    assert_eq!(reply.status, 200);
    assert!(
        serde_json::from_str::<Value>(&reply.body).is_err(),
        "{}",
        reply.body
    );
    let length = format!("Content-Length: {}", reply.body.len());
    assert!(
        reply.head.contains(&length),
        "{} vs body {:?}",
        reply.head,
        reply.body
    );
}

#[test]
fn flood_lockout_trips_and_recovers() {
    let fleet = Fleet::start(FleetOptions {
        faults: vec![(
            0,
            Fault::FloodLockout {
                max_requests: 3,
                window: Duration::from_secs(2),
                lockout: Duration::from_millis(700),
            },
        )],
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let device = &fleet.devices()[0];
    let address = device.address();

    for _ in 0..3 {
        assert_eq!(get(address, "/tstat").status, 200);
    }
    assert!(no_reply(address, "/tstat"), "fourth request was answered");
    assert!(
        no_reply(address, "/tstat"),
        "request during the lockout was answered"
    );
    assert_eq!(device.handle().stats().flood_lockout_trips, 1);

    thread::sleep(Duration::from_millis(500));
    assert_eq!(get(address, "/tstat").status, 200);
    assert_eq!(device.handle().stats().flood_lockout_trips, 1);
}

#[test]
fn refuse_concurrent_resets_second() {
    let fleet = Fleet::start(FleetOptions {
        latency: Latency::Fixed(Duration::from_millis(300)),
        faults: vec![(0, Fault::RefuseConcurrent)],
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let device = &fleet.devices()[0];
    let address = device.address();

    let first = thread::spawn(move || get(address, "/tstat"));
    thread::sleep(Duration::from_millis(50));
    let second = exchange(address, "GET", "/sys", None, REPLY_TIMEOUT);
    assert!(
        second.is_err(),
        "second connection was answered: {second:?}"
    );
    assert_eq!(first.join().expect("first client").status, 200);
    assert_eq!(device.handle().stats().refused_connections, 1);
}

#[test]
fn script_plays_in_order_then_repeats_last() {
    let fleet = fleet_of(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];
    let address = device.address();
    device.handle().set_faults(vec![Fault::Script {
        replies: vec![
            ScriptedReply {
                delay: Duration::ZERO,
                status: 200,
                body: Reply::Body(r#"{"temp":-1,"tmode":1}"#.to_string()),
            },
            ScriptedReply {
                delay: Duration::ZERO,
                status: 200,
                body: Reply::Silent,
            },
            ScriptedReply {
                delay: Duration::from_millis(100),
                status: 200,
                body: Reply::State,
            },
        ],
        cycle: false,
    }]);

    assert_eq!(get(address, "/tstat").body, r#"{"temp":-1,"tmode":1}"#);
    assert!(no_reply(address, "/tstat"));
    for _ in 0..2 {
        let start = Instant::now();
        let state = get(address, "/tstat").json();
        assert!(
            state["temp"].as_f64().is_some_and(|temp| temp > 0.0),
            "{state}"
        );
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
    assert_eq!(get(address, "/sys").status, 200);
}

#[test]
fn flaky_fault_hangs_or_sends_negative_one() {
    let fleet = fleet_of(vec![ModelProfile::Ct50, ModelProfile::Ct50]);
    let hanging = &fleet.devices()[0];
    let corrupting = &fleet.devices()[1];
    hanging.handle().set_faults(vec![Fault::Flaky {
        hang_probability: 1.0,
        negative_one_probability: 0.0,
    }]);
    corrupting.handle().set_faults(vec![Fault::Flaky {
        hang_probability: 0.0,
        negative_one_probability: 1.0,
    }]);

    assert!(no_reply(hanging.address(), "/tstat"));
    assert_eq!(get(corrupting.address(), "/tstat").json()["temp"], -1);
}

#[test]
fn power_cycle_drops_hold() {
    let fleet = fleet_of(vec![ModelProfile::Ct50]);
    let device = &fleet.devices()[0];
    let address = device.address();

    // Monday 14:00 is in the default program's 62 °F daytime heat period.
    device.handle().set_clock(0, 14, 0);
    post(address, "/tstat", r#"{"tmode":1,"t_heat":70,"hold":1}"#);
    assert_eq!(get(address, "/tstat").json()["hold"], 1);

    let powered_off = Instant::now();
    device.handle().power_cycle(Duration::from_millis(300));
    assert!(
        no_reply(address, "/tstat"),
        "device answered while powered off"
    );
    thread::sleep(Duration::from_millis(350).saturating_sub(powered_off.elapsed()));
    let state = get(address, "/tstat").json();
    assert_eq!(state["hold"], 0);
    assert_eq!(state["t_heat"], 62.0);
}

#[test]
fn slow_client_is_dropped() {
    let fleet = Fleet::start(FleetOptions {
        read_timeout: Duration::from_millis(100),
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let device = &fleet.devices()[0];
    let address = device.address();

    let mut stalled = TcpStream::connect(address).expect("connected");
    stalled
        .write_all(b"GET /tstat HTTP/1.1\r\n")
        .expect("partial request");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(get(address, "/tstat").status, 200);
    assert_eq!(device.handle().stats().bad_requests, 1);
}

#[test]
fn fast_time_heats_room() {
    let fleet = Fleet::start(FleetOptions {
        time_speed: 3600.0,
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let handle = fleet.devices()[0].handle().clone();
    handle.set_outside_temperature(30.0);
    handle.set_indoor_temperature(55.0);
    handle
        .apply_tstat_post(r#"{"tmode":1,"t_heat":80,"hold":1}"#)
        .expect("valid POST");

    thread::sleep(Duration::from_millis(300));
    let snapshot = handle.snapshot();
    assert!(snapshot.indoor_f > 56.0, "indoor {}", snapshot.indoor_f);
}

#[test]
fn stop_frees_ports() {
    let fleet = Fleet::start(FleetOptions {
        count: 3,
        ..FleetOptions::default()
    })
    .expect("fleet started");
    let addresses: Vec<SocketAddr> = fleet
        .devices()
        .iter()
        .map(|device| device.address())
        .collect();
    for address in &addresses {
        assert!(address.ip().is_loopback());
        assert_eq!(get(*address, "/sys").status, 200);
    }

    fleet.stop();
    for address in addresses {
        assert!(
            TcpStream::connect_timeout(&address, SILENCE_TIMEOUT).is_err(),
            "{address} still accepts"
        );
        TcpListener::bind(address).unwrap_or_else(|error| panic!("{address} not freed: {error}"));
    }
}

#[test]
fn base_port_numbers_devices() {
    let probe = TcpListener::bind("127.0.0.1:0").expect("probe port");
    let base_port = probe.local_addr().expect("probe address").port();
    drop(probe);

    let fleet = Fleet::start(FleetOptions {
        base_port,
        ..FleetOptions::default()
    })
    .expect("fleet started");
    assert_eq!(fleet.devices()[0].address().port(), base_port);
    drop(fleet);
    TcpListener::bind(("127.0.0.1", base_port)).expect("port freed by drop");
}

#[test]
fn cli_usage_errors_exit_2() {
    let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
    assert_eq!(run_cli(args(&["--count", "many"])), 2);
    assert_eq!(run_cli(args(&["--latency", "slow"])), 2);
    assert_eq!(run_cli(args(&["--fault", "0:explode"])), 2);
    assert_eq!(run_cli(args(&["--frobnicate"])), 2);
    assert_eq!(run_cli(args(&["--help"])), 0);
}

/// Set in the child process that `cli_serves_until_sigterm` starts.
const CLI_CHILD_ENV: &str = "SIMULATOR_CLI_CHILD";

/// Runs `run_cli` in a child copy of this test binary, so the SIGTERM it receives
/// cannot reach the other tests. Only `cli_serves_until_sigterm` runs it.
#[test]
#[ignore = "runs only as the child process of cli_serves_until_sigterm"]
fn cli_child_process() {
    assert_eq!(std::env::var(CLI_CHILD_ENV).as_deref(), Ok("1"));
    let args = [
        "--count",
        "2",
        "--model",
        "ct50",
        "--seed",
        "7",
        "--latency",
        "fast",
    ];
    let code = run_cli(args.iter().map(OsString::from).collect());
    assert_eq!(code, 0);
}

#[test]
fn cli_serves_until_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let test_binary = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(test_binary)
        .args([
            "--exact",
            "cli_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CLI_CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child started");
    let stdout = child.stdout.take().expect("child stdout");
    let (line_sender, line_receiver) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_sender.send(line).is_err() {
                break;
            }
        }
    });

    // libtest may print "test cli_child_process ... " on the same line as the
    // first device, so each line is searched for an address and the uuid after it.
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut devices = Vec::new();
    while devices.len() < 2 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = line_receiver.recv_timeout(remaining) else {
            let _ = child.kill();
            panic!(
                "the CLI printed {} device lines before the deadline",
                devices.len()
            );
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(position) = fields
            .iter()
            .position(|field| field.parse::<SocketAddr>().is_ok())
        else {
            continue;
        };
        let address: SocketAddr = fields[position].parse().expect("address");
        let uuid = fields
            .get(position + 1)
            .expect("uuid after the address")
            .to_string();
        devices.push((address, uuid, line.clone()));
    }

    for (address, uuid, line) in &devices {
        assert!(line.ends_with("CT50 V1.94"), "{line}");
        assert_eq!(get(*address, "/sys").json()["uuid"], uuid.as_str());
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill ran");
    assert!(status.success());
    let exit = child.wait().expect("child exited");
    assert!(exit.success(), "child exit {exit:?}");
    for (address, _, _) in devices {
        assert!(
            TcpStream::connect_timeout(&address, SILENCE_TIMEOUT).is_err(),
            "{address} still accepts"
        );
    }
}

#[test]
fn large_fleet_serves_every_device() {
    let fleet = Fleet::start(FleetOptions {
        count: 60,
        seed: 11,
        ..FleetOptions::default()
    })
    .expect("fleet started");

    let mut uuids: Vec<String> = Vec::new();
    for device in fleet.devices() {
        let sys = get(device.address(), "/sys").json();
        assert_eq!(sys["uuid"], device.uuid());
        let model = get(device.address(), "/tstat/model").json();
        assert_eq!(model["model"], device.model().model_string());
        uuids.push(device.uuid().to_string());
    }

    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), 60);
}
