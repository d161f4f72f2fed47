//! The local HTTP API on tiny_http. It runs on its own threads, reads only the shared
//! health and weather state, and never touches PostgreSQL, a thermostat or the network
//! directly.

pub mod health;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::clock::Clock;
use crate::health::Health;
use crate::shutdown::Shutdown;
use crate::weather::WeatherStatus;
use health::{HealthThresholds, evaluate};

/// How often a worker wakes to check for shutdown while no request comes.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(200);

/// The state that request handlers read.
pub struct ApiState {
    pub health: Arc<Health>,
    pub clock: Arc<dyn Clock>,
    pub thresholds: HealthThresholds,
    pub weather: Arc<WeatherStatus>,
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
        let server = Server::from_listener(listener, None).map_err(|error| {
            io::Error::other(format!("cannot serve the API on {address}: {error}"))
        })?;
        let server = Arc::new(server);

        let mut handles = Vec::new();
        for index in 0..workers.max(1) {
            let (server, state, shutdown) = (server.clone(), state.clone(), shutdown.clone());
            let handle = std::thread::Builder::new()
                .name(format!("api-{index}"))
                .spawn(move || serve(&server, &state, &shutdown))?;
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

fn serve(server: &Server, state: &ApiState, shutdown: &Shutdown) {
    while !shutdown.is_triggered() {
        match server.recv_timeout(SHUTDOWN_CHECK) {
            Ok(Some(request)) => handle(request, state),
            Ok(None) => {}
            Err(error) => log::warn!("local API: cannot receive a request: {error}"),
        }
    }
}

fn handle(request: Request, state: &ApiState) {
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let (status, body) = route(request.method(), &path, state);
    log::debug!("local API: {} {path} -> {status}", request.method());

    let response = Response::from_string(body)
        .with_status_code(status)
        .with_header(json_content_type());
    if let Err(error) = request.respond(response) {
        log::debug!("local API: cannot send the response to {path}: {error}");
    }
}

/// Returns the status code and JSON body for a request.
fn route(method: &Method, path: &str, state: &ApiState) -> (u16, String) {
    match (method, path.trim_end_matches('/')) {
        (Method::Get | Method::Head, "/api/system/health") => system_health(state),
        (_, "/api/system/health") => error_body(405, "method not allowed: use GET"),
        (Method::Get | Method::Head, "/api/weather/status") => weather_status(state),
        (_, "/api/weather/status") => error_body(405, "method not allowed: use GET"),
        _ => error_body(404, &format!("no such route: {path}")),
    }
}

fn system_health(state: &ApiState) -> (u16, String) {
    let report = evaluate(
        &state.health.snapshot(),
        state.clock.now().as_second(),
        &state.thresholds,
    );
    let status = if report.is_healthy() { 200 } else { 503 };
    match serde_json::to_string(&report) {
        Ok(body) => (status, body),
        Err(error) => error_body(500, &format!("cannot encode the health report: {error}")),
    }
}

/// Reports the weather service from memory; this never waits on the network.
fn weather_status(state: &ApiState) -> (u16, String) {
    let report = state.weather.report(state.clock.now());
    match serde_json::to_string(&report) {
        Ok(body) => (200, body),
        Err(error) => error_body(500, &format!("cannot encode the weather report: {error}")),
    }
}

fn error_body(status: u16, message: &str) -> (u16, String) {
    (status, serde_json::json!({ "error": message }).to_string())
}

fn json_content_type() -> Header {
    Header::from_bytes("Content-Type", "application/json").expect("constant ASCII header is valid")
}
