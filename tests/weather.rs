//! Tests of the weather service against a local server that responds like OpenWeatherMap,
//! fails, hangs and returns malformed bodies: first the service alone, then the real
//! daemon with simulated thermostats storing `local_temp` in PostgreSQL.
//!
//! A capturing logger records every log line of this test binary, so each test can check
//! that its API key never reached the log.

mod support;

use support::daemon::{RunningDaemon, connect, http_get};

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thermostat_server::clock::{Clock, ManualClock, SystemClock};
use thermostat_server::config::{Config, Secret, WeatherConfig};
use thermostat_server::shutdown::Shutdown;
use thermostat_server::simulator::{Fleet, FleetOptions};
use thermostat_server::thermostat::DeviceAddress;
use thermostat_server::weather::{TemperatureSource, Weather, WeatherReport};

// ---------------------------------------------------------------------------------------
// Captured log

static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {} {}", record.level(), record.target(), record.args());
        CAPTURED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    fn flush(&self) {}
}

static LOGGER: CaptureLogger = CaptureLogger;

fn capture_log() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&LOGGER).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn captured_lines() -> Vec<String> {
    CAPTURED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn assert_key_not_logged(key: &str) {
    let lines = captured_lines();
    assert!(
        lines.iter().any(|line| line.contains("weather")),
        "the capture holds no weather line, so the check below would prove nothing"
    );
    let leaks: Vec<&String> = lines.iter().filter(|line| line.contains(key)).collect();
    assert!(leaks.is_empty(), "API key in the log: {leaks:?}");
}

// ---------------------------------------------------------------------------------------
// A local server that responds like OpenWeatherMap

/// What the server does with one request.
#[derive(Debug, Clone)]
enum Answer {
    /// 200 with a realistic body whose `main.temp` is this value.
    Temperature(f64),
    /// This status with a small JSON error body.
    Status(u16),
    /// 200 with this body.
    Body(String),
    /// Reads the request and never responds, until the client closes the connection.
    Hang,
}

struct Script {
    queue: VecDeque<Answer>,
    then: Answer,
}

struct WeatherServer {
    address: SocketAddr,
    /// The request line of each request, in order.
    requests: Arc<Mutex<Vec<String>>>,
}

impl WeatherServer {
    /// Serves `queue` in order, then `then` for every later request.
    fn start(queue: Vec<Answer>, then: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let address = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script {
            queue: queue.into(),
            then,
        }));

        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (seen, script) = (seen.clone(), script.clone());
                std::thread::spawn(move || serve(stream, &seen, &script));
            }
        });
        Self { address, requests }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn request_count(&self) -> usize {
        self.requests.lock().expect("requests lock").len()
    }

    fn first_request(&self) -> String {
        self.requests.lock().expect("requests lock")[0].clone()
    }
}

fn serve(mut stream: TcpStream, seen: &Mutex<Vec<String>>, script: &Mutex<Script>) {
    let Some(request_line) = read_head(&mut stream) else {
        return;
    };
    let answer = {
        let mut script = script.lock().expect("script lock");
        script
            .queue
            .pop_front()
            .unwrap_or_else(|| script.then.clone())
    };
    seen.lock().expect("requests lock").push(request_line);

    let (status, body) = match answer {
        Answer::Temperature(temp) => (200, owm_body(temp)),
        Answer::Status(status) => (status, format!(r#"{{"cod":{status},"message":"failed"}}"#)),
        Answer::Body(body) => (200, body),
        Answer::Hang => {
            let mut sink = [0u8; 256];
            while matches!(stream.read(&mut sink), Ok(count) if count > 0) {}
            return;
        }
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Reads the request head and returns its first line.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    text.lines().next().map(str::to_string)
}

/// A body shaped like a real `/data/2.5/weather` response with `units=imperial`.
fn owm_body(temp: f64) -> String {
    format!(
        r#"{{"coord":{{"lon":-70.28,"lat":41.65}},"weather":[{{"id":800,"main":"Clear","description":"clear sky","icon":"01d"}}],"base":"stations","main":{{"temp":{temp},"feels_like":{temp},"temp_min":{temp},"temp_max":{temp},"pressure":1021,"humidity":60}},"visibility":10000,"wind":{{"speed":5.75,"deg":250}},"clouds":{{"all":0}},"dt":1733340000,"sys":{{"type":2,"id":2000,"country":"US"}},"timezone":-18000,"id":0,"name":"Hyannis","cod":200}}"#
    )
}

// ---------------------------------------------------------------------------------------
// The service alone

fn weather_config(server: &WeatherServer) -> WeatherConfig {
    WeatherConfig {
        zip: Some("02601".to_string()),
        base_url: server.base_url(),
        refresh: Duration::from_secs(60),
        max_age: Duration::from_secs(120),
        fallback_temp: None,
        retries: 3,
        request_timeout: Duration::from_secs(2),
        retry_delay: Duration::from_millis(10),
    }
}

/// The weather service running on its own executor thread.
struct RunningService {
    weather: Weather,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl RunningService {
    fn start(config: &WeatherConfig, key: &str, clock: Arc<dyn Clock>) -> Self {
        capture_log();
        let mut weather = Weather::from_config(config, Some(&Secret::new(key)), clock.clone());
        let service = weather.service.take().expect("the service is on");
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || smol::block_on(service.run(stop)));
        Self {
            weather,
            clock,
            shutdown,
            thread: Some(thread),
        }
    }

    fn report(&self) -> WeatherReport {
        self.weather.status.report(self.clock.now())
    }

    /// Waits until a refresh has failed or a value is stored.
    fn wait_for_outcome(&self) {
        wait_for(Duration::from_secs(10), "a refresh outcome", || {
            let report = self.report();
            report.failed_refreshes_in_a_row > 0 || report.temperature_f.is_some()
        });
    }

    /// Stops the service and returns how long the stop took.
    fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("service thread");
        }
        started.elapsed()
    }
}

/// Polls `condition` every 20 ms until it is true or `limit` passes.
fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[test]
fn service_stores_live_value() {
    let key = "key-live-5f1e2d";
    let server = WeatherServer::start(Vec::new(), Answer::Temperature(41.5));
    let service = RunningService::start(&weather_config(&server), key, system_clock());

    service.wait_for_outcome();
    let latest = service.weather.cell.latest().expect("a value");
    let report = service.report();
    service.stop();

    assert_eq!(latest.fahrenheit, 41.5);
    assert_eq!(latest.source, TemperatureSource::Live);
    assert_eq!(report.source, Some("live"));
    assert_eq!(report.error_count, 0);
    assert_key_not_logged(key);
}

#[test]
fn service_sends_zip_key_and_units() {
    let key = "key-query-9a8b7c";
    let server = WeatherServer::start(Vec::new(), Answer::Temperature(41.5));
    let service = RunningService::start(&weather_config(&server), key, system_clock());

    service.wait_for_outcome();
    service.stop();

    assert_eq!(
        server.first_request(),
        format!("GET /data/2.5/weather?zip=02601,US&appid={key}&units=imperial HTTP/1.1")
    );
}

#[test]
fn service_falls_back_after_retries() {
    let key = "key-fallback-3c2b1a";
    let server = WeatherServer::start(Vec::new(), Answer::Status(500));
    let mut config = weather_config(&server);
    config.fallback_temp = Some(33.5);
    let service = RunningService::start(&config, key, system_clock());

    service.wait_for_outcome();
    let latest = service.weather.cell.latest().expect("the fallback");
    let report = service.report();
    service.stop();

    assert_eq!(latest.fahrenheit, 33.5);
    assert_eq!(latest.source, TemperatureSource::Fallback);
    assert_eq!(server.request_count(), 4, "one attempt and 3 retries");
    assert_eq!(report.error_count, 4);
    assert_eq!(report.source, Some("fallback"));
    assert!(
        report
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{report:?}"
    );
    assert_key_not_logged(key);
}

#[test]
fn service_without_fallback_stores_nothing() {
    let server = WeatherServer::start(Vec::new(), Answer::Status(503));
    let mut config = weather_config(&server);
    config.retries = 1;
    let service = RunningService::start(&config, "key-none-77aa", system_clock());

    service.wait_for_outcome();
    let latest = service.weather.cell.latest();
    service.stop();

    assert_eq!(latest, None);
    assert_eq!(server.request_count(), 2);
}

#[test]
fn service_recovers_within_retries() {
    let server = WeatherServer::start(
        vec![Answer::Status(500), Answer::Status(502)],
        Answer::Temperature(50.0),
    );
    let mut config = weather_config(&server);
    config.fallback_temp = Some(33.5);
    let service = RunningService::start(&config, "key-recover-1b2c", system_clock());

    service.wait_for_outcome();
    let latest = service.weather.cell.latest().expect("a value");
    let report = service.report();
    service.stop();

    assert_eq!(latest.fahrenheit, 50.0);
    assert_eq!(latest.source, TemperatureSource::Live);
    assert_eq!(server.request_count(), 3);
    assert_eq!(report.error_count, 2);
}

#[test]
fn service_rejects_malformed_bodies() {
    let cases = [
        ("not json at all", "not a JSON object"),
        (r#"{"main":{"temp":4"#, "not a JSON object"),
        ("[41.5]", "not a JSON object"),
        (r#"{"cod":200,"name":"Hyannis"}"#, "no numeric main.temp"),
        (r#"{"main":{"temp":"warm"}}"#, "no numeric main.temp"),
        (r#"{"main":{"temp":null}}"#, "no numeric main.temp"),
        (r#"{"main":{"temp":278.65}}"#, "outside the plausible range"),
    ];

    for (body, expected) in cases {
        let server = WeatherServer::start(Vec::new(), Answer::Body(body.to_string()));
        let mut config = weather_config(&server);
        config.retries = 0;
        let service = RunningService::start(&config, "key-malformed-4d5e", system_clock());

        service.wait_for_outcome();
        let latest = service.weather.cell.latest();
        let report = service.report();
        service.stop();

        assert_eq!(latest, None, "{body}");
        let last_error = report.last_error.unwrap_or_default();
        assert!(last_error.contains(expected), "{body}: {last_error}");
    }
}

#[test]
fn service_times_out_on_hanging_server() {
    let key = "key-hang-6f7a";
    let server = WeatherServer::start(Vec::new(), Answer::Hang);
    let mut config = weather_config(&server);
    config.retries = 1;
    config.request_timeout = Duration::from_millis(200);
    let service = RunningService::start(&config, key, system_clock());

    service.wait_for_outcome();
    let report = service.report();
    service.stop();

    assert_eq!(report.error_count, 2);
    let last_error = report.last_error.unwrap_or_default();
    assert!(last_error.contains("timed out"), "{last_error}");
    assert_key_not_logged(key);
}

#[test]
fn service_stops_during_hanging_request() {
    let server = WeatherServer::start(Vec::new(), Answer::Hang);
    let mut config = weather_config(&server);
    config.request_timeout = Duration::from_secs(60);
    let service = RunningService::start(&config, "key-stop-8b9c", system_clock());
    wait_for(Duration::from_secs(5), "the request to arrive", || {
        server.request_count() == 1
    });

    let stop_time = service.stop();

    assert!(
        stop_time < Duration::from_secs(1),
        "stop took {stop_time:?}"
    );
}

#[test]
fn rejected_key_is_not_retried() {
    let key = "key-rejected-0d1e";
    let server = WeatherServer::start(Vec::new(), Answer::Status(401));
    let service = RunningService::start(&weather_config(&server), key, system_clock());

    service.wait_for_outcome();
    let report = service.report();
    service.stop();

    assert_eq!(server.request_count(), 1);
    let last_error = report.last_error.unwrap_or_default();
    assert!(
        last_error.contains("THERMOSTAT_WEATHER_API_KEY"),
        "{last_error}"
    );
    assert_key_not_logged(key);
}

#[test]
fn echoed_key_stays_out_of_report() {
    let key = "key-echoed-2f3a";
    let body = format!(r#"{{"message":"bad request for appid={key}"}}"#);
    let server = WeatherServer::start(Vec::new(), Answer::Body(body));
    let mut config = weather_config(&server);
    config.retries = 0;
    let service = RunningService::start(&config, key, system_clock());

    service.wait_for_outcome();
    let report = service.report();
    service.stop();

    let encoded = serde_json::to_string(&report).expect("report encodes");
    assert!(!encoded.contains(key), "{encoded}");
    assert_key_not_logged(key);
}

#[test]
fn value_goes_stale_after_max_age() {
    let start = jiff::Timestamp::from_second(1_800_000_000).expect("valid timestamp");
    let clock = Arc::new(ManualClock::new(start));
    let server = WeatherServer::start(Vec::new(), Answer::Temperature(41.5));
    let mut config = weather_config(&server);
    config.max_age = Duration::from_secs(30 * 60);
    let service = RunningService::start(&config, "key-stale-4b5c", clock.clone());
    service.wait_for_outcome();

    clock.advance(Duration::from_secs(30 * 60));
    let at_max_age = service.weather.cell.current(clock.now());
    clock.advance(Duration::from_secs(1));
    let past_max_age = service.weather.cell.current(clock.now());
    let report = service.report();
    service.stop();

    assert_eq!(at_max_age, Some(41.5));
    assert_eq!(past_max_age, None);
    assert!(!report.current);
    assert_eq!(report.age_seconds, Some(30 * 60 + 1));
}

#[test]
fn missing_key_turns_service_off() {
    capture_log();
    let server = WeatherServer::start(Vec::new(), Answer::Temperature(41.5));

    let weather = Weather::from_config(&weather_config(&server), None, system_clock());
    let report = weather.status.report(jiff::Timestamp::now());

    assert!(weather.service.is_none());
    assert!(!report.enabled);
    let reason = report.off_reason.unwrap_or_default();
    assert!(reason.contains("THERMOSTAT_WEATHER_API_KEY"), "{reason}");
    assert!(
        captured_lines()
            .iter()
            .any(|line| line.contains("weather service off")),
        "no start-up line about the service being off"
    );
}

// ---------------------------------------------------------------------------------------
// Through the daemon

/// Starts the daemon with the log captured, so tests can look for the API key in it.
fn start_daemon(config: Config) -> RunningDaemon {
    capture_log();
    RunningDaemon::start(config)
}

fn weather_report(daemon: &RunningDaemon) -> serde_json::Value {
    let (status, body) = http_get(daemon.api, "/api/weather/status");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("weather status is JSON")
}

fn daemon_config(database_url: &str, fleet: &Fleet, weather: WeatherConfig, key: &str) -> Config {
    let mut config = Config::new("weather_site", database_url);
    config.thermostats.addresses = fleet
        .devices()
        .iter()
        .map(|device| DeviceAddress::new(device.address()))
        .collect();
    config.polling.interval = Duration::from_millis(500);
    config.polling.request_timeout = Duration::from_secs(2);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.database.flush_interval = Duration::from_millis(200);
    config.weather = weather;
    config.secrets.weather_api_key = Some(Secret::new(key));
    config
}

fn start_fleet() -> Fleet {
    Fleet::start(FleetOptions {
        count: 2,
        ..FleetOptions::default()
    })
    .expect("fleet starts")
}

/// Runs a `SELECT count(*)` query; 0 while the daemon has not created the tables yet.
fn count_so_far(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).map(|row| row.get(0)).unwrap_or(0)
}

#[test]
fn daemon_stores_live_outside_temperature() {
    let key = "key-daemon-live-a1b2";
    let url = support::fresh_database_url("weather_live");
    let fleet = start_fleet();
    let server = WeatherServer::start(Vec::new(), Answer::Temperature(52.5));
    let daemon = start_daemon(daemon_config(&url, &fleet, weather_config(&server), key));
    let mut db = connect(&url);

    wait_for(
        Duration::from_secs(20),
        "readings with the outside temperature",
        || {
            count_so_far(
                &mut db,
                "SELECT count(*) FROM raw_readings WHERE local_temp = 52.5",
            ) >= 4
        },
    );
    let states = count_so_far(
        &mut db,
        "SELECT count(*) FROM current_state WHERE local_temp = 52.5",
    );
    let report = weather_report(&daemon);

    // The rollup writes a minute once it has closed, so this waits for a real minute
    // boundary plus the store's grace period.
    wait_for(
        Duration::from_secs(80),
        "a minute row with the outside temperature",
        || {
            count_so_far(
                &mut db,
                "SELECT count(*) FROM minute_readings WHERE local_temp_avg = 52.5",
            ) >= 1
        },
    );
    let other_minutes = count_so_far(
        &mut db,
        "SELECT count(*) FROM minute_readings WHERE local_temp_avg IS DISTINCT FROM 52.5 \
         AND poll_count > 0 AND minute_ts > (SELECT min(ts) FROM raw_readings WHERE local_temp = 52.5)",
    );
    daemon.stop();

    assert_eq!(states, 2);
    assert_eq!(report["source"], "live");
    assert_eq!(report["temperature_f"], 52.5);
    assert_eq!(report["current"], true);
    assert!(!report.to_string().contains(key), "{report}");
    assert_eq!(other_minutes, 0);
    assert_key_not_logged(key);
}

#[test]
fn daemon_stores_fallback_after_failures() {
    let key = "key-daemon-fallback-c3d4";
    let url = support::fresh_database_url("weather_fallback");
    let fleet = start_fleet();
    let server = WeatherServer::start(Vec::new(), Answer::Status(500));
    let mut weather = weather_config(&server);
    weather.fallback_temp = Some(33.5);
    let daemon = start_daemon(daemon_config(&url, &fleet, weather, key));
    let mut db = connect(&url);

    wait_for(
        Duration::from_secs(20),
        "readings with the fallback",
        || {
            count_so_far(
                &mut db,
                "SELECT count(*) FROM raw_readings WHERE local_temp = 33.5",
            ) >= 2
        },
    );
    let report = weather_report(&daemon);
    daemon.stop();

    assert_eq!(server.request_count(), 4, "one attempt and 3 retries");
    assert_eq!(report["source"], "fallback");
    assert_eq!(report["error_count"], 4);
    assert_key_not_logged(key);
}

#[test]
fn daemon_stores_null_once_value_is_stale() {
    let key = "key-daemon-stale-e5f6";
    let url = support::fresh_database_url("weather_stale");
    let fleet = start_fleet();
    let server = WeatherServer::start(vec![Answer::Temperature(61.0)], Answer::Status(500));
    let mut weather = weather_config(&server);
    weather.refresh = Duration::from_millis(300);
    weather.max_age = Duration::from_secs(1);
    weather.retries = 0;
    let daemon = start_daemon(daemon_config(&url, &fleet, weather, key));
    let mut db = connect(&url);

    wait_for(
        Duration::from_secs(20),
        "a reading with the live value",
        || {
            count_so_far(
                &mut db,
                "SELECT count(*) FROM raw_readings WHERE local_temp = 61.0",
            ) >= 1
        },
    );
    wait_for(
        Duration::from_secs(20),
        "a NULL reading after the value went stale",
        || {
            count_so_far(
                &mut db,
                "SELECT count(*) FROM raw_readings WHERE local_temp IS NULL AND ts > \
             (SELECT min(ts) FROM raw_readings WHERE local_temp = 61.0) + interval '1 second'",
            ) >= 1
        },
    );
    let live_after_stale = count_so_far(
        &mut db,
        "SELECT count(*) FROM raw_readings WHERE local_temp = 61.0 AND ts > \
         (SELECT min(ts) FROM raw_readings WHERE local_temp = 61.0) + interval '1.5 seconds'",
    );
    let report = weather_report(&daemon);
    daemon.stop();

    assert_eq!(live_after_stale, 0);
    assert_eq!(report["source"], "cached");
    assert_eq!(report["current"], false);
    assert_eq!(report["temperature_f"], 61.0);
}

#[test]
fn daemon_polls_while_weather_hangs() {
    let key = "key-daemon-hang-a7b8";
    let url = support::fresh_database_url("weather_hang");
    let fleet = start_fleet();
    let server = WeatherServer::start(Vec::new(), Answer::Hang);
    let mut weather = weather_config(&server);
    weather.request_timeout = Duration::from_secs(60);
    let daemon = start_daemon(daemon_config(&url, &fleet, weather, key));
    let mut db = connect(&url);

    wait_for(
        Duration::from_secs(5),
        "the weather request to arrive",
        || server.request_count() == 1,
    );
    wait_for(
        Duration::from_secs(20),
        "readings while the weather request hangs",
        || count_so_far(&mut db, "SELECT count(*) FROM raw_readings") >= 8,
    );
    let with_outside = count_so_far(
        &mut db,
        "SELECT count(*) FROM raw_readings WHERE local_temp IS NOT NULL",
    );
    let (health, body) = http_get(daemon.api, "/api/system/health");
    let report = weather_report(&daemon);
    let stop_time = daemon.stop();

    assert_eq!(server.request_count(), 1, "the request is still in flight");
    assert_eq!(with_outside, 0);
    assert_eq!(health, 200, "{body}");
    assert_eq!(report["source"], serde_json::Value::Null);
    assert!(
        stop_time < Duration::from_secs(5),
        "stop took {stop_time:?}"
    );
    assert_key_not_logged(key);
}

#[test]
fn daemon_reports_weather_off_without_key() {
    let url = support::fresh_database_url("weather_off");
    let fleet = start_fleet();
    let server = WeatherServer::start(Vec::new(), Answer::Temperature(41.5));
    let mut config = daemon_config(&url, &fleet, weather_config(&server), "unused");
    config.secrets.weather_api_key = None;
    let daemon = start_daemon(config);

    let report = weather_report(&daemon);
    daemon.stop();

    assert_eq!(report["enabled"], false);
    assert_eq!(server.request_count(), 0);
}
