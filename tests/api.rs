//! The local API of the real daemon against simulated thermostats and a PostgreSQL the
//! harness starts. The tests cover every route with good and bad input, control that
//! reaches the simulated unit and `device_config`, and the token and `Host` rules of a
//! LAN-configured API, which is still bound to loopback. They also check the metrics, the
//! status page and the OpenAPI file.

mod support;

use support::daemon::RunningDaemon;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use thermostat_server::api::routes::ROUTE_TABLE;
use thermostat_server::config::{Config, Secret};
use thermostat_server::simulator::{Fleet, FleetOptions, Mode};
use thermostat_server::thermostat::DeviceAddress;

const TOKEN: &str = "test-token-5d41402abc4b2a76";

/// One HTTP request as the test sends it.
struct Call {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Call {
    fn get(path: &str) -> Self {
        Self {
            method: "GET",
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn post(path: &str, body: &str) -> Self {
        Self {
            method: "POST",
            path: path.to_string(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A response: status, headers (names in lower case) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Sends `call` with `Host: <address>` unless it sets its own, and `Connection: close`.
fn send(address: SocketAddr, call: &Call) -> Answer {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut head = format!("{} {} HTTP/1.1\r\n", call.method, call.path);
    if !call
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {address}\r\n"));
    }
    for (name, value) in &call.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        call.body.len()
    ));
    stream.write_all(head.as_bytes()).expect("send the head");
    // The server may respond 413 before the body is sent, so a failed write is not fatal.
    let _ = stream.write_all(&call.body);

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    parse_answer(&String::from_utf8_lossy(&raw))
}

fn parse_answer(raw: &str) -> Answer {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

fn start_fleet(count: usize) -> Fleet {
    let fleet = Fleet::start(FleetOptions {
        count,
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

fn test_config(url: &str, fleet: &Fleet) -> Config {
    let mut config = Config::new("test_site", url);
    config.site.name = "Test House".to_string();
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

/// Returns the config of an API that other hosts could reach: `api.listen` is a LAN
/// address and a token is set. The address is never bound, because the tests inject a
/// loopback listener.
fn lan_config(url: &str, fleet: &Fleet) -> Config {
    let mut config = test_config(url, fleet);
    config.api.listen = "192.168.50.10:8000".parse().expect("address");
    config.api.allowed_hosts = vec!["thermostat.local".to_string()];
    config.secrets.api_token = Some(Secret::new(TOKEN));
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

/// Waits until `GET /api/thermostats` lists every device of `fleet` with a state.
fn wait_until_listed(daemon: &RunningDaemon, fleet: &Fleet) -> Value {
    let mut list = Value::Null;
    wait_for(
        Duration::from_secs(20),
        "every thermostat with a state",
        || {
            let answer = get(daemon, "/api/thermostats");
            if answer.status != 200 {
                return false;
            }
            list = answer.json();
            let entries = list["thermostats"].as_array().cloned().unwrap_or_default();
            entries.len() == fleet.devices().len()
                && entries.iter().all(|entry| !entry["state"].is_null())
        },
    );
    list
}

fn status_path(uuid: &str, route: &str) -> String {
    format!("/api/thermostats/{uuid}/{route}")
}

fn get(daemon: &RunningDaemon, path: &str) -> Answer {
    send(daemon.api, &Call::get(path))
}

fn post_json(daemon: &RunningDaemon, path: &str, body: &Value) -> Answer {
    send(daemon.api, &Call::post(path, &body.to_string()))
}

#[test]
fn list_and_status_show_thermostats() {
    let url = support::fresh_database_url("api_list_status");
    let fleet = start_fleet(2);
    let daemon = RunningDaemon::start(test_config(&url, &fleet));
    let list = wait_until_listed(&daemon, &fleet);

    assert_eq!(list["count"], 2);
    let uuid = fleet.devices()[0].uuid();
    let answer = get(&daemon, &status_path(uuid, "status"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let status = answer.json();
    assert_eq!(status["thermostat_id"], uuid);
    assert_eq!(status["state"]["tmode_name"], "heat");
    assert_eq!(status["polling"]["online"], true);
    assert!(status["state"]["temp"].is_f64(), "{status}");

    let unknown = get(&daemon, &status_path("5cdad4ffffff", "status"));
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().contains("5cdad4ffffff"), "{}", unknown.body);
    let invalid = get(&daemon, "/api/thermostats/no%20such/status");
    assert_eq!(invalid.status, 404);
    daemon.stop();
}

#[test]
fn temperature_post_reaches_thermostat() {
    let url = support::fresh_database_url("api_temperature");
    let fleet = start_fleet(1);
    let device = &fleet.devices()[0];
    let daemon = RunningDaemon::start(test_config(&url, &fleet));
    wait_until_listed(&daemon, &fleet);

    let path = status_path(device.uuid(), "temperature");
    let answer = post_json(&daemon, &path, &json!({"t_heat": 71.3, "hold": true}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["recorded"], true);

    let snapshot = device.handle().snapshot();
    assert_eq!(snapshot.heat_target, 71.5);
    assert!(snapshot.hold);

    let status = get(&daemon, &status_path(device.uuid(), "status")).json();
    assert_eq!(status["state"]["t_heat"], 71.5);
    assert_eq!(status["state"]["hold"], true);

    let mut db = support::connect(&url);
    let row = db
        .query_one(
            "SELECT t_heat, hold, source FROM device_config WHERE thermostat_id = $1",
            &[&device.uuid()],
        )
        .expect("device_config row");
    assert_eq!(row.get::<_, Option<f64>>(0), Some(71.5));
    assert_eq!(row.get::<_, Option<bool>>(1), Some(true));
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("local_api")
    );
    daemon.stop();
}

#[test]
fn mode_post_reaches_thermostat() {
    let url = support::fresh_database_url("api_mode");
    let fleet = start_fleet(1);
    let device = &fleet.devices()[0];
    let daemon = RunningDaemon::start(test_config(&url, &fleet));
    wait_until_listed(&daemon, &fleet);

    let path = status_path(device.uuid(), "mode");
    let answer = post_json(&daemon, &path, &json!({"tmode": 2, "fmode": 2}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(device.handle().snapshot().mode, Mode::Cool);

    let status = get(&daemon, &status_path(device.uuid(), "status")).json();
    assert_eq!(status["state"]["tmode_name"], "cool");
    assert_eq!(status["state"]["fmode"], 2);
    daemon.stop();
}

#[test]
fn bad_requests_rejected_before_device() {
    let url = support::fresh_database_url("api_bad_requests");
    let fleet = start_fleet(1);
    let device = &fleet.devices()[0];
    let daemon = RunningDaemon::start(test_config(&url, &fleet));
    wait_until_listed(&daemon, &fleet);
    device.handle().reset_stats();
    let temperature = status_path(device.uuid(), "temperature");

    let hot = post_json(&daemon, &temperature, &json!({"t_heat": 200}));
    assert_eq!(hot.status, 400);
    assert!(hot.error().contains("t_heat"), "{}", hot.body);

    let malformed = send(daemon.api, &Call::post(&temperature, r#"{"t_heat": 70"#));
    assert_eq!(malformed.status, 400);
    assert!(
        malformed.error().contains("malformed JSON"),
        "{}",
        malformed.body
    );

    let huge_body = format!(
        r#"{{"t_heat": 70, "pad": "{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let huge = send(daemon.api, &Call::post(&temperature, &huge_body));
    assert_eq!(huge.status, 413);

    let form = Call::post(&temperature, "t_heat=70")
        .header("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(send(daemon.api, &form).status, 415);

    let wrong_field = post_json(&daemon, &temperature, &json!({"tmode": 1}));
    assert_eq!(wrong_field.status, 400);
    assert!(
        wrong_field.error().contains("tmode"),
        "{}",
        wrong_field.body
    );

    let get_on_post = get(&daemon, &temperature);
    assert_eq!(get_on_post.status, 405);
    assert_eq!(get_on_post.header("allow"), Some("POST"));

    let unknown_route = get(&daemon, "/api/nothing/here");
    assert_eq!(unknown_route.status, 404);
    assert!(!unknown_route.error().is_empty());

    let unknown_id = post_json(
        &daemon,
        &status_path("5cdad4ffffff", "temperature"),
        &json!({"t_heat": 70}),
    );
    assert_eq!(unknown_id.status, 404);

    assert!(device.handle().stats().post_bodies.is_empty());
    // The workers survived every bad request.
    assert_eq!(get(&daemon, "/api/system/info").status, 200);
    daemon.stop();
}

#[test]
fn lan_api_requires_token_for_changes() {
    let url = support::fresh_database_url("api_lan_token");
    let fleet = start_fleet(1);
    let device = &fleet.devices()[0];
    let daemon = RunningDaemon::start(lan_config(&url, &fleet));
    wait_until_listed(&daemon, &fleet);
    let path = status_path(device.uuid(), "temperature");
    let body = r#"{"t_heat": 69}"#;

    let without = send(daemon.api, &Call::post(&path, body));
    assert_eq!(without.status, 401);
    assert_eq!(without.header("www-authenticate"), Some("Bearer"));

    let wrong = send(
        daemon.api,
        &Call::post(&path, body).header("Authorization", "Bearer nope"),
    );
    assert_eq!(wrong.status, 401);
    assert!(device.handle().stats().post_bodies.is_empty());

    let bearer = format!("Bearer {TOKEN}");
    let with = send(
        daemon.api,
        &Call::post(&path, body).header("Authorization", &bearer),
    );
    assert_eq!(with.status, 200, "{}", with.body);
    assert_eq!(device.handle().snapshot().heat_target, 69.0);

    let read = get(&daemon, "/api/thermostats");
    assert_eq!(read.status, 200);
    assert_eq!(read.header("access-control-allow-origin"), None);

    let preflight = Call {
        method: "OPTIONS",
        ..Call::get("/api/thermostats")
    }
    .header("Origin", "http://evil.example")
    .header("Access-Control-Request-Method", "POST");
    let preflight = send(daemon.api, &preflight);
    assert_eq!(preflight.status, 405);
    assert_eq!(preflight.header("access-control-allow-origin"), None);

    let named = send(
        daemon.api,
        &Call::get("/api/system/info").header("Host", "thermostat.local:8000"),
    );
    assert_eq!(named.status, 200);
    let rebinding = send(
        daemon.api,
        &Call::get("/api/system/info").header("Host", "evil.example"),
    );
    assert_eq!(rebinding.status, 403);
    daemon.stop();
}

#[test]
fn site_system_and_discovery_routes() {
    let url = support::fresh_database_url("api_site_system");
    let fleet = start_fleet(2);
    let mut config = test_config(&url, &fleet);
    config.secrets.site_token = Some(Secret::new("site-token-value-77"));
    config.secrets.database_password = Some(Secret::new("db-password-value-88"));
    let daemon = RunningDaemon::start(config);
    wait_until_listed(&daemon, &fleet);

    let site = get(&daemon, "/api/site/status");
    assert_eq!(site.status, 200);
    assert_eq!(site.json()["site_id"], "test_site");
    assert_eq!(site.json()["thermostats"]["online"], 2);

    let info = get(&daemon, "/api/system/info");
    assert_eq!(info.json()["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info.json()["thermostats_polled"], 2);

    let config = get(&daemon, "/api/system/config");
    assert_eq!(config.status, 200);
    assert!(
        !config.body.contains("site-token-value-77"),
        "{}",
        config.body
    );
    assert!(
        !config.body.contains("db-password-value-88"),
        "{}",
        config.body
    );
    assert_eq!(config.json()["secrets"]["site_token"], "set");

    let health = get(&daemon, "/api/system/health");
    assert_eq!(health.status, 200, "{}", health.body);

    let bad_scan = send(
        daemon.api,
        &Call::post("/api/discovery/scan", r#"{"methods":["smoke"]}"#),
    );
    assert_eq!(bad_scan.status, 400, "{}", bad_scan.body);
    assert!(bad_scan.error().contains("smoke"), "{}", bad_scan.body);
    let scan = send(daemon.api, &Call::post("/api/discovery/scan", ""));
    assert_eq!(scan.status, 202, "{}", scan.body);
    assert_eq!(scan.json()["status"], "started");
    daemon.stop();
}

#[test]
fn database_down_gives_503() {
    let unused = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address");
    let url = format!("postgresql://postgres@127.0.0.1:{}/nothing", unused.port());
    let fleet = start_fleet(1);
    let daemon = RunningDaemon::start(test_config(&url, &fleet));

    let list = get(&daemon, "/api/thermostats");
    assert_eq!(list.status, 503);
    assert!(list.error().contains("database"), "{}", list.body);
    let status = get(&daemon, &status_path(fleet.devices()[0].uuid(), "status"));
    assert_eq!(status.status, 503);
    let page = get(&daemon, "/");
    assert_eq!(page.status, 200);
    daemon.stop();
}

/// Parses the Prometheus text format: `# HELP`/`# TYPE` lines and `series value` lines.
/// Returns the value of every series, panicking on a line of any other form.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.push((series.to_string(), value));
    }
    samples
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let url = support::fresh_database_url("api_metrics");
    let fleet = start_fleet(2);
    let daemon = RunningDaemon::start(test_config(&url, &fleet));
    wait_until_listed(&daemon, &fleet);

    let answer = get(&daemon, "/metrics");
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain"))
    );
    let samples = parse_prometheus(&answer.body);
    let value = |series: &str| {
        samples
            .iter()
            .find(|(name, _)| name == series)
            .map(|(_, value)| *value)
    };

    let uuid = fleet.devices()[0].uuid();
    let polls = value(&format!(
        "thermostat_polls_total{{thermostat_id=\"{uuid}\"}}"
    ));
    assert!(polls.is_some_and(|polls| polls >= 1.0), "{polls:?}");
    let count = value("thermostat_poll_duration_seconds_count");
    assert!(count.is_some_and(|count| count >= 2.0), "{count:?}");
    assert_eq!(value("thermostat_database_connected"), Some(1.0));
    let version = format!(
        "thermostat_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&version), Some(1.0));
    daemon.stop();
}

#[test]
fn status_page_lists_every_thermostat() {
    let url = support::fresh_database_url("api_status_page");
    let fleet = start_fleet(3);
    let daemon = RunningDaemon::start(test_config(&url, &fleet));
    let list = wait_until_listed(&daemon, &fleet);

    let page = get(&daemon, "/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|value| value.starts_with("text/html"))
    );
    assert!(page.body.contains("http-equiv=\"refresh\""));
    assert!(page.body.contains("Test House"));
    for entry in list["thermostats"].as_array().expect("thermostat list") {
        let id = entry["thermostat_id"].as_str().expect("id");
        assert!(
            page.body.contains(&format!("id=\"t-{id}\"")),
            "{id} missing"
        );
        let name = entry["name"].as_str().expect("name");
        assert!(page.body.contains(name), "{name} missing");
    }
    daemon.stop();
}

#[test]
fn openapi_matches_route_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json is readable");
    let document: Value = serde_json::from_str(&text).expect("docs/openapi.json is JSON");

    let mut described: Vec<(String, String)> = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths object") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                described.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    described.sort();
    let mut served: Vec<(String, String)> = ROUTE_TABLE
        .iter()
        .map(|row| (row.method.to_string(), row.path.to_string()))
        .collect();
    served.sort();
    assert_eq!(described, served);
}

/// Returns the Chromium binary on PATH, if one is installed.
fn find_chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|folder| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| folder.join(name))
        })
        .find(|candidate| candidate.is_file())
}

/// Runs headless Chromium with `arguments` and returns its stdout, killing it after 60 s.
fn run_chromium(
    binary: &std::path::Path,
    profile: &std::path::Path,
    arguments: &[String],
) -> String {
    let mut child = std::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(arguments)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("poll chromium").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut output)
            .expect("read chromium output");
    }
    output
}

#[test]
fn status_page_renders_in_chromium() {
    let Some(chromium) = find_chromium() else {
        eprintln!(
            "skipped: no chromium on PATH; install it (apt-get install chromium) to run this check"
        );
        return;
    };
    let url = support::fresh_database_url("api_chromium");
    let fleet = start_fleet(2);
    let daemon = RunningDaemon::start(test_config(&url, &fleet));
    let list = wait_until_listed(&daemon, &fleet);
    let page_url = format!("http://{}/", daemon.api);
    let folder = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&folder).expect("screenshot folder");
    let screenshot = folder.join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);

    let dom = run_chromium(
        &chromium,
        &folder.join("profile"),
        &["--dump-dom".into(), page_url.clone()],
    );
    for entry in list["thermostats"].as_array().expect("thermostat list") {
        let id = entry["thermostat_id"].as_str().expect("id");
        assert!(
            dom.contains(&format!("id=\"t-{id}\"")),
            "{id} missing from the rendered page"
        );
    }

    let shot = format!("--screenshot={}", screenshot.display());
    run_chromium(
        &chromium,
        &folder.join("profile"),
        &["--window-size=412,915".into(), shot, page_url],
    );
    let image = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(image.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        image.len() > 10_000,
        "screenshot of {} bytes looks blank",
        image.len()
    );
    eprintln!("status page screenshot: {}", screenshot.display());
    daemon.stop();
}

#[test]
fn unreachable_thermostat_gives_502() {
    let url = support::fresh_database_url("api_unreachable");
    let fleet = start_fleet(1);
    let uuid = fleet.devices()[0].uuid().to_string();
    let daemon = RunningDaemon::start(test_config(&url, &fleet));
    wait_until_listed(&daemon, &fleet);
    fleet.stop();

    let answer = post_json(&daemon, &status_path(&uuid, "mode"), &json!({"tmode": 2}));
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(answer.error().contains(&uuid), "{}", answer.body);

    // The command stays the desired state, so the poll task writes it once the unit
    // answers again.
    let mut db = support::connect(&url);
    let row = db
        .query_one(
            "SELECT tmode, source FROM device_config WHERE thermostat_id = $1",
            &[&uuid],
        )
        .expect("device_config row");
    assert_eq!(row.get::<_, Option<i16>>(0), Some(2));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("local_api")
    );
    daemon.stop();
}
