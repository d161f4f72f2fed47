//! A fake public server for tests: the server side of protocol version 1 over HTTPS with
//! a CA made at test time, recording what it receives and failing on request.
//!
//! It upserts as the real server does: status readings by (thermostat_id, ts), minute
//! rows by (thermostat_id, minute_ts), results by command_id. A queued command stays
//! pending until a final result (not `inprogress`) for it arrives.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the modes"
)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

static FILE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How the server responds to every request while the mode is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Serves the protocol.
    Normal,
    /// Responds to every request with this status and an error body.
    Status(u16),
    /// Responds with 429 and `Retry-After: seconds`.
    TooMany { retry_after_seconds: u64 },
    /// Reads the request and never answers, until the client closes the connection.
    Hang,
    /// Reads the request and closes the connection without an answer.
    Drop,
    /// Responds with this status, extra header lines (each ending in `\r\n`) and this
    /// exact body, valid JSON or not.
    Raw {
        status: u16,
        headers: String,
        body: String,
    },
    /// Responds 200 with a body of `length` bytes: `start` (such as a valid command
    /// list) followed by spaces, streamed so the server never holds it whole.
    Huge { start: String, length: usize },
}

/// Everything the server received and holds.
#[derive(Debug, Default)]
pub struct CloudState {
    pub mode: Option<Mode>,
    /// Paths (under the site) that answer the given 4xx status the next time.
    pub reject_once: HashMap<String, u16>,
    /// Every request: method, path under the site, answer status (0 when none was sent).
    pub requests: Vec<(String, String, u16)>,
    /// Bodies of `POST /thermostats/register`, in order.
    pub registrations: Vec<Value>,
    /// Bodies of `POST /status`, in order.
    pub status_posts: Vec<Value>,
    /// State-change readings by (thermostat_id, ts).
    pub state_changes: BTreeMap<(String, String), Value>,
    /// Snapshot readings by (thermostat_id, ts).
    pub snapshots: BTreeMap<(String, String), Value>,
    /// Minute rows by (thermostat_id, minute_ts).
    pub minutes: BTreeMap<(String, String), Value>,
    /// Sizes of the `readings` arrays of `POST /minute`, in order.
    pub minute_batch_sizes: Vec<usize>,
    /// Commands handed out by `GET /commands/pending` until they are answered.
    pub pending: Vec<Value>,
    /// The newest result entry of each command.
    pub results: HashMap<String, Value>,
    /// Every result entry received, in order.
    pub result_log: Vec<Value>,
}

/// A running fake server. The accept thread lives as long as the process.
pub struct FakeCloud {
    pub address: SocketAddr,
    /// A CA file that verifies this server's certificate (or, for an untrusted server,
    /// a CA file that does not).
    pub ca_file: PathBuf,
    state: Arc<Mutex<CloudState>>,
}

/// A CA and a server certificate for 127.0.0.1 and localhost that it signed.
struct TestPki {
    ca_pem: String,
    server_config: Arc<rustls::ServerConfig>,
}

impl FakeCloud {
    /// Starts a server for `site_id` that accepts `token`, with a certificate signed by
    /// the CA in `ca_file`.
    pub fn start(site_id: &str, token: &str) -> Self {
        let pki = make_pki();
        Self::start_with(site_id, token, pki.server_config, &pki.ca_pem)
    }

    /// Starts a server whose certificate, signed by the trusted CA, expired in 2021.
    pub fn start_expired(site_id: &str, token: &str) -> Self {
        let pki = make_pki_for(SERVER_NAMES, true);
        Self::start_with(site_id, token, pki.server_config, &pki.ca_pem)
    }

    /// Starts a server whose certificate, signed by the trusted CA, names only
    /// `other.invalid`, so a client that connects to 127.0.0.1 must refuse it.
    pub fn start_wrong_host(site_id: &str, token: &str) -> Self {
        let pki = make_pki_for(&["other.invalid"], false);
        Self::start_with(site_id, token, pki.server_config, &pki.ca_pem)
    }

    /// Starts a server whose certificate is signed by a CA other than the one in
    /// `ca_file`, so a verifying client must refuse it.
    pub fn start_untrusted(site_id: &str, token: &str) -> Self {
        let served = make_pki();
        let other = make_pki();
        Self::start_with(site_id, token, served.server_config, &other.ca_pem)
    }

    fn start_with(
        site_id: &str,
        token: &str,
        server_config: Arc<rustls::ServerConfig>,
        ca_pem: &str,
    ) -> Self {
        let ca_file = std::env::temp_dir().join(format!(
            "thermostat-fake-cloud-ca-{}-{}.pem",
            std::process::id(),
            FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&ca_file, ca_pem).expect("write the CA file");

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(CloudState::default()));
        let server = Server {
            prefix: format!("/api/v1/sites/{site_id}"),
            token: token.to_string(),
            state: state.clone(),
        };
        let server = Arc::new(server);

        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let server = server.clone();
                let config = server_config.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
                    let Ok(connection) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let tls = rustls::StreamOwned::new(connection, stream);
                    server.serve(tls);
                });
            }
        });

        Self {
            address,
            ca_file,
            state,
        }
    }

    /// Returns the base URL, `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.address)
    }

    pub fn state(&self) -> MutexGuard<'_, CloudState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state().mode = Some(mode);
    }

    /// Answers the next request to `path` (under the site) with `status`.
    pub fn reject_once(&self, path: &str, status: u16) {
        self.state().reject_once.insert(path.to_string(), status);
    }

    /// Queues a command for `GET /commands/pending`.
    pub fn queue_command(&self, command: Value) {
        self.state().pending.push(command);
    }

    /// Returns every result entry received for `command_id`, in order.
    pub fn results_for(&self, command_id: &str) -> Vec<Value> {
        self.state()
            .result_log
            .iter()
            .filter(|entry| entry["command_id"] == command_id)
            .cloned()
            .collect()
    }
}

struct Server {
    prefix: String,
    token: String,
    state: Arc<Mutex<CloudState>>,
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    token: Option<String>,
    body: Vec<u8>,
}

impl Server {
    fn lock(&self) -> MutexGuard<'_, CloudState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn serve(&self, mut stream: impl Read + Write) {
        let Some(request) = read_request(&mut stream) else {
            return;
        };
        let path = request
            .path
            .strip_prefix(&self.prefix)
            .unwrap_or(&request.path)
            .to_string();
        let mode = self.lock().mode.clone().unwrap_or(Mode::Normal);

        let (status, headers, body) = match mode {
            Mode::Hang => {
                self.record(&request.method, &path, 0);
                let mut sink = [0u8; 256];
                while matches!(stream.read(&mut sink), Ok(count) if count > 0) {}
                return;
            }
            Mode::Drop => {
                self.record(&request.method, &path, 0);
                return;
            }
            Mode::Status(status) => (
                status,
                String::new(),
                json!({"error": "failing on request"}),
            ),
            Mode::TooMany {
                retry_after_seconds,
            } => (
                429,
                format!("Retry-After: {retry_after_seconds}\r\n"),
                json!({"error": "slow down"}),
            ),
            Mode::Raw {
                status,
                headers,
                body,
            } => {
                self.record(&request.method, &path, status);
                let head = format!(
                    "HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
                let _ = stream.flush();
                return;
            }
            Mode::Huge { start, length } => {
                self.record(&request.method, &path, 200);
                let start = start.as_bytes();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(start);
                let padding = [b' '; 16 * 1024];
                let mut left = length.saturating_sub(start.len());
                while left > 0 {
                    let now = left.min(padding.len());
                    if stream.write_all(&padding[..now]).is_err() {
                        return;
                    }
                    left -= now;
                }
                let _ = stream.flush();
                return;
            }
            Mode::Normal => self.answer(&request, &path),
        };

        self.record(&request.method, &path, status);
        let body = body.to_string();
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Status",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body.as_bytes());
        let _ = stream.flush();
    }

    fn record(&self, method: &str, path: &str, status: u16) {
        self.lock()
            .requests
            .push((method.to_string(), path.to_string(), status));
    }

    fn answer(&self, request: &Request, path: &str) -> (u16, String, Value) {
        if request.token.as_deref() != Some(self.token.as_str()) {
            return (401, String::new(), json!({"error": "invalid site token"}));
        }
        if let Some(status) = self.lock().reject_once.remove(path) {
            return (
                status,
                String::new(),
                json!({"error": "rejected on request"}),
            );
        }

        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let mut state = self.lock();
        match (request.method.as_str(), path) {
            ("POST", "/thermostats/register") => {
                state.registrations.push(body);
                (200, String::new(), json!({"ok": true}))
            }
            ("POST", "/status") => {
                let kind = body["kind"].as_str().unwrap_or_default().to_string();
                for reading in body["readings"].as_array().cloned().unwrap_or_default() {
                    let key = (text(&reading["thermostat_id"]), text(&reading["ts"]));
                    match kind.as_str() {
                        "state_change" => state.state_changes.insert(key, reading),
                        _ => state.snapshots.insert(key, reading),
                    };
                }
                state.status_posts.push(body);
                (200, String::new(), json!({"ok": true}))
            }
            ("POST", "/minute") => {
                let readings = body["readings"].as_array().cloned().unwrap_or_default();
                state.minute_batch_sizes.push(readings.len());
                for reading in readings {
                    let key = (text(&reading["thermostat_id"]), text(&reading["minute_ts"]));
                    state.minutes.insert(key, reading);
                }
                (200, String::new(), json!({"ok": true}))
            }
            ("GET", "/commands/pending") => (
                200,
                String::new(),
                json!({"commands": state.pending.clone()}),
            ),
            ("POST", "/commands/results") => {
                for entry in body["results"].as_array().cloned().unwrap_or_default() {
                    let id = text(&entry["command_id"]);
                    if entry["status"] != "inprogress" {
                        state
                            .pending
                            .retain(|command| command["command_id"] != id.as_str());
                    }
                    state.results.insert(id, entry.clone());
                    state.result_log.push(entry);
                }
                (200, String::new(), json!({"ok": true}))
            }
            _ => (404, String::new(), json!({"error": "no such route"})),
        }
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// Reads one request head and its Content-Length body; `None` when the client went away.
fn read_request(stream: &mut impl Read) -> Option<Request> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head_end) = find(&buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
            let length = header(&head, "content-length")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            if buffer.len() >= head_end + 4 + length {
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or_default().to_string();
                let path = words.next().unwrap_or_default().to_string();
                return Some(Request {
                    method,
                    path,
                    token: header(&head, "x-site-token"),
                    body: buffer[head_end + 4..head_end + 4 + length].to_vec(),
                });
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(count) => buffer.extend_from_slice(&chunk[..count]),
        }
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim().to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The names of a certificate that fits the server's address.
const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

fn make_pki() -> TestPki {
    make_pki_for(SERVER_NAMES, false)
}

/// Makes a CA and a server certificate for `names`, valid now or, when `expired`, only
/// during 2020.
fn make_pki_for(names: &[&str], expired: bool) -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "thermostat-server fake cloud CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let mut server_params = CertificateParams::new(names).expect("server parameters");
    if expired {
        server_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        server_params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let server_key = KeyPair::generate().expect("server key");
    let server_certificate = server_params
        .signed_by(&server_key, &ca)
        .expect("server certificate");

    let chain: Vec<CertificateDer<'static>> = vec![server_certificate.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server TLS configuration");

    TestPki {
        ca_pem: ca.pem(),
        server_config: Arc::new(server_config),
    }
}
