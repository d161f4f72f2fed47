//! The real daemon on a thread of the test, its API on an ephemeral loopback port, and
//! the small helpers tests use around it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thermostat_server::config::Config;
use thermostat_server::daemon::{self, RunOptions};
use thermostat_server::shutdown::Shutdown;
use thermostat_server::sync::DiscoveryRunner;

/// A running daemon; `stop` ends it and checks that it stopped cleanly.
pub struct RunningDaemon {
    pub api: SocketAddr,
    shutdown: Shutdown,
    thread: JoinHandle<Result<(), String>>,
}

impl RunningDaemon {
    pub fn start(config: Config) -> Self {
        Self::start_with(config, None)
    }

    /// Starts the daemon with `discovery` as the runner of `discover_devices` commands.
    pub fn start_with(config: Config, discovery: Option<Arc<dyn DiscoveryRunner>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral API port");
        let api = listener.local_addr().expect("API address");
        let shutdown = Shutdown::new();
        let options = RunOptions {
            api_listener: Some(listener),
            shutdown: shutdown.clone(),
            handle_signals: false,
            discovery,
        };
        let thread = std::thread::spawn(move || {
            daemon::run(&config, options).map_err(|error| error.to_string())
        });
        Self {
            api,
            shutdown,
            thread,
        }
    }

    /// Stops the daemon and returns how long the stop took.
    pub fn stop(self) -> Duration {
        let started = Instant::now();
        self.shutdown.trigger();
        let result = self.thread.join().expect("daemon thread");
        assert_eq!(result, Ok(()));
        started.elapsed()
    }
}

/// Returns a config that polls every device of `fleet` as static addresses, fast
/// enough for tests: every 500 ms, a 3 s request deadline, 50 ms between requests.
pub fn fleet_config(url: &str, fleet: &thermostat_server::simulator::Fleet) -> Config {
    let mut config = Config::new("test_site", url);
    config.thermostats.addresses = fleet
        .devices()
        .iter()
        .map(|device| thermostat_server::thermostat::DeviceAddress::new(device.address()))
        .collect();
    config.polling.interval = Duration::from_millis(500);
    config.polling.request_timeout = Duration::from_secs(3);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.database.flush_interval = Duration::from_millis(200);
    config
}

/// Polls `condition` every 200 ms until it is true or `limit` passes, and returns how
/// long that took.
pub fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

/// Sends `GET path` and returns the status code and body.
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect to the test database")
}
