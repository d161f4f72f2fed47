//! The local HTTP API on tiny_http, on its own threads: status and control of the
//! thermostats, the status page, metrics, health and the weather status. It reaches PostgreSQL only through
//! the store's request channel and a thermostat only through its `DeviceLink`.
//!
//! Every request passes the `Host` check, then the route table ([`routes`]), then the
//! bearer token check for requests that change something ([`access`]), then the body
//! checks ([`body`]). Every error is JSON `{"error": "..."}`, and no CORS header is sent,
//! so browsers keep other sites' pages from reading the responses.

pub mod access;
pub mod body;
mod device_routes;
mod handlers;
pub mod health;
mod listener;
pub mod metrics;
pub mod monitor;
pub mod page;
pub mod reply;
pub mod routes;
pub mod views;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response};

use crate::clock::Clock;
use crate::health::Health;
use crate::poll::{Registry, StatusBoard};
use crate::shutdown::Shutdown;
use crate::store::StoreHandle;
use crate::weather::WeatherStatus;
use access::AccessPolicy;
use health::{HealthReport, HealthThresholds, evaluate};
use listener::ServerSlot;
use reply::Reply;

/// How often a worker wakes to check for shutdown while no request comes.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(200);

/// Maximum wait for each write of a response, so a client that stops reading cannot hold
/// a worker for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a discovery scan with the request's JSON body and returns the status code and
/// JSON body of the response. The discovery module provides it, and without one the
/// route returns 503.
pub type DiscoveryHook = Arc<dyn Fn(&serde_json::Value) -> (u16, serde_json::Value) + Send + Sync>;

/// The state that request handlers read.
pub struct ApiState {
    pub health: Arc<Health>,
    pub clock: Arc<dyn Clock>,
    pub thresholds: HealthThresholds,
    pub weather: Arc<WeatherStatus>,
    pub store: StoreHandle,
    pub registry: Arc<Registry>,
    pub status: Arc<StatusBoard>,
    pub access: AccessPolicy,
    pub site_id: String,
    pub site_name: String,
    /// The site's zone, for times on the status page.
    pub time_zone: jiff::tz::TimeZone,
    /// `api.listen` from the config, which decides whether the API is LAN-bound.
    pub listen: SocketAddr,
    /// The configuration with every secret redacted, as `GET /api/system/config` shows it.
    pub config_view: serde_json::Value,
    pub discovery: Option<DiscoveryHook>,
    /// The link to the public server, when the sync is configured.
    pub public_server: Option<Arc<crate::sync::LinkStatus>>,
    /// Maximum time a settings change may occupy a worker, read-back included.
    pub control_deadline: Duration,
}

/// A running API server.
pub struct ApiServer {
    address: SocketAddr,
    workers: Vec<JoinHandle<()>>,
}

impl ApiServer {
    /// Serves on an already bound listener with `workers` threads until `shutdown`.
    pub fn start(
        listener: TcpListener,
        state: Arc<ApiState>,
        workers: usize,
        shutdown: Shutdown,
    ) -> io::Result<Self> {
        let address = listener.local_addr()?;
        limit_send_time(&listener, SEND_TIMEOUT)?;
        let slot = ServerSlot::new(listener).map_err(|error| {
            io::Error::other(format!("cannot serve the API on {address}: {error}"))
        })?;
        let slot = Arc::new(slot);

        let mut handles = Vec::new();
        for index in 0..workers.max(1) {
            let (slot, state, shutdown) = (slot.clone(), state.clone(), shutdown.clone());
            let handle = std::thread::Builder::new()
                .name(format!("api-{index}"))
                .spawn(move || serve(&slot, &state, &shutdown))?;
            handles.push(handle);
        }
        log::info!("local API listening on http://{address}");
        Ok(Self {
            address,
            workers: handles,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Waits for the workers to finish; call after triggering the shutdown.
    pub fn join(self) {
        for worker in self.workers {
            if worker.join().is_err() {
                log::error!("an API worker thread panicked");
            }
        }
    }
}

/// Sets a send timeout on the listener. Linux copies it to every accepted socket, which
/// is how it reaches tiny_http's connections, because tiny_http 0.12 sets none.
///
/// NOTE: a receive timeout cannot be set this way, because on the listener it also ends
/// every idle `accept`, which stops tiny_http's accept thread. So a client that stalls in the middle of a body over 1024 bytes (smaller ones are read
/// before a worker sees the request) holds a worker until it sends or closes.
fn limit_send_time(listener: &TcpListener, timeout: Duration) -> io::Result<()> {
    socket2::SockRef::from(listener).set_write_timeout(Some(timeout))
}

fn serve(slot: &ServerSlot, state: &ApiState, shutdown: &Shutdown) {
    while !shutdown.is_triggered() {
        if let Some(request) = slot.recv(SHUTDOWN_CHECK) {
            handle(request, state);
        }
    }
}

fn handle(mut request: Request, state: &ApiState) {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();

    let reply = match state.access.check_host(header(&request, "Host").as_deref()) {
        Ok(()) => route(&mut request, &method, &path, state),
        Err(reply) => reply,
    };
    let level = if reply.status >= 500 {
        log::Level::Warn
    } else {
        log::Level::Debug
    };
    log::log!(
        level,
        "local API: {method} {} -> {} in {} ms",
        routes::printable(&path),
        reply.status,
        started.elapsed().as_millis()
    );
    send(request, reply, &path);
}

/// Returns the value of the header `name`, if the request carries it.
pub(crate) fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|header| header.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|header| header.value.as_str().to_string())
}

fn send(request: Request, reply: Reply, path: &str) {
    let (length, body) = reply.body.into_reader();
    // A known length and no chunk threshold: tiny_http then sends a `Content-Length`
    // instead of chunked encoding, whatever the size.
    let mut response = Response::new(reply.status.into(), Vec::new(), body, Some(length), None)
        .with_chunked_threshold(usize::MAX);
    let fixed = [
        ("Content-Type", reply.content_type),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ];
    let extra = reply
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()));
    for (name, value) in fixed.into_iter().chain(extra) {
        if let Some(header) = make_header(name, value) {
            response.add_header(header);
        }
    }
    if let Err(error) = request.respond(response) {
        log::debug!("local API: cannot send the response to {path}: {error}");
    }
}

/// Returns the reply for a request that passed the `Host` check.
fn route(request: &mut Request, method: &Method, path: &str, state: &ApiState) -> Reply {
    match (method, path.trim_end_matches('/')) {
        (Method::Get | Method::Head, "/api/system/health") => system_health(state).into(),
        _ => handlers::dispatch(request, method.as_str(), path, state),
    }
}

/// Returns the health verdict now.
pub(crate) fn health_report(state: &ApiState) -> HealthReport {
    evaluate(
        &state.health.snapshot(),
        state.clock.now().as_second(),
        &state.thresholds,
    )
}

/// Reports the weather service from memory; this never waits on the network.
pub(super) fn weather_status(state: &ApiState) -> (u16, String) {
    let report = state.weather.report(state.clock.now());
    match serde_json::to_string(&report) {
        Ok(body) => (200, body),
        Err(error) => (
            500,
            serde_json::json!({ "error": format!("cannot encode the weather report: {error}") })
                .to_string(),
        ),
    }
}

fn system_health(state: &ApiState) -> (u16, String) {
    let report = health_report(state);
    let status = if report.is_healthy() { 200 } else { 503 };
    match serde_json::to_string(&report) {
        Ok(body) => (status, body),
        Err(error) => (
            500,
            serde_json::json!({ "error": format!("cannot encode the health report: {error}") })
                .to_string(),
        ),
    }
}

/// Builds a header. The names and values come from this module, so a failure is a bug:
/// it is logged and the header left out rather than failing the response.
fn make_header(name: &str, value: &str) -> Option<Header> {
    let header = Header::from_bytes(name, value).ok();
    if header.is_none() {
        log::error!("local API: invalid response header {name}: {value:?}");
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_get_send_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let timeout = Duration::from_millis(700);
        limit_send_time(&listener, timeout).expect("set the timeout");
        let address = listener.local_addr().expect("address");

        let _client = std::net::TcpStream::connect(address).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        assert_eq!(
            accepted.write_timeout().expect("write timeout"),
            Some(timeout)
        );
    }

    #[test]
    fn idle_accept_outlasts_send_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        limit_send_time(&listener, Duration::from_millis(100)).expect("set the timeout");
        let address = listener.local_addr().expect("address");

        let acceptor = std::thread::spawn(move || listener.accept().map(|_| ()));
        std::thread::sleep(Duration::from_millis(400));
        let _client = std::net::TcpStream::connect(address).expect("connect");
        let accepted = acceptor.join().expect("accept thread");
        assert!(accepted.is_ok(), "{accepted:?}");
    }
}
