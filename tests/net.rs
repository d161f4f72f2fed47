//! Tests of the HTTP/HTTPS client against local servers on 127.0.0.1: plain HTTP, TLS
//! with a CA generated at test time, deadlines, body bounds and URL redaction.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thermostat_server::net::{HttpClient, HttpRequest, NetError, TlsOptions, redact_url};

const DEADLINE: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 64 * 1024;

static FILE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// What the local server does with each connection.
#[derive(Clone)]
enum Behaviour {
    /// Reads the request and writes these bytes as the response.
    Respond(Vec<u8>),
    /// Reads the request and never responds, until the client closes the connection.
    Silent,
}

struct LocalServer {
    address: SocketAddr,
    /// The raw request head and body of each connection, in order.
    requests: mpsc::Receiver<String>,
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 that it signed.
struct TestPki {
    ca_file: PathBuf,
    server_config: Arc<rustls::ServerConfig>,
}

fn start_server(tls: Option<Arc<rustls::ServerConfig>>, behaviour: Behaviour) -> LocalServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let address = listener.local_addr().expect("local address");
    let (sender, requests) = mpsc::channel();

    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let sender = sender.clone();
            let behaviour = behaviour.clone();
            let tls = tls.clone();
            std::thread::spawn(move || match tls {
                Some(config) => {
                    let connection = rustls::ServerConnection::new(config).expect("TLS session");
                    let stream = rustls::StreamOwned::new(connection, stream);
                    serve_connection(stream, &behaviour, &sender);
                }
                None => serve_connection(stream, &behaviour, &sender),
            });
        }
    });

    LocalServer { address, requests }
}

fn serve_connection(
    mut stream: impl Read + Write,
    behaviour: &Behaviour,
    sender: &mpsc::Sender<String>,
) {
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let _ = sender.send(request);

    match behaviour {
        Behaviour::Respond(bytes) => {
            let _ = stream.write_all(bytes);
            let _ = stream.flush();
        }
        Behaviour::Silent => {
            let mut sink = [0u8; 256];
            while matches!(stream.read(&mut sink), Ok(count) if count > 0) {}
        }
    }
}

/// Reads one request head and its Content-Length body; None when the client went away.
fn read_request(stream: &mut impl Read) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(head_end) = find(&buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
            let length = content_length(&head);
            if buffer.len() >= head_end + 4 + length {
                return Some(String::from_utf8_lossy(&buffer).to_string());
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(count) => buffer.extend_from_slice(&chunk[..count]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn response(status_line: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn make_pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "thermostat-server test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server parameters");
    let server_key = KeyPair::generate().expect("server key");
    let server_certificate = server_params
        .signed_by(&server_key, &ca)
        .expect("server certificate");

    let ca_file = std::env::temp_dir().join(format!(
        "thermostat-net-test-ca-{}-{}.pem",
        std::process::id(),
        FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&ca_file, ca.pem()).expect("write the CA file");

    let chain: Vec<CertificateDer<'static>> = vec![server_certificate.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server TLS configuration");

    TestPki {
        ca_file,
        server_config: Arc::new(server_config),
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

fn verifying_client(ca_file: Option<PathBuf>) -> HttpClient {
    HttpClient::new(&TlsOptions {
        extra_ca_file: ca_file,
        verify: true,
    })
    .expect("client")
}

fn send(
    client: &HttpClient,
    request: HttpRequest,
) -> Result<thermostat_server::net::HttpResponse, NetError> {
    smol::block_on(client.send(request))
}

fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    listener.local_addr().expect("local address")
}

#[test]
fn plain_http_returns_response() {
    let body = b"{\"ok\":true}";
    let server = start_server(
        None,
        Behaviour::Respond(response("200 OK", "X-Test: yes\r\n", body)),
    );
    let client = verifying_client(None);
    let url = format!("http://{}/data/2.5/weather?zip=02134,US", server.address);

    let answer = send(&client, HttpRequest::get(url, DEADLINE, MAX_BODY)).expect("response");

    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.as_ref(), body);
    assert_eq!(
        answer.headers.get("x-test").map(|value| value.as_bytes()),
        Some(&b"yes"[..])
    );
}

#[test]
fn plain_http_sends_origin_form_and_host() {
    let server = start_server(
        None,
        Behaviour::Respond(response("204 No Content", "", b"")),
    );
    let client = verifying_client(None);
    let url = format!("http://{}/data/2.5/weather?zip=02134,US", server.address);

    send(&client, HttpRequest::get(url, DEADLINE, MAX_BODY)).expect("response");
    let request = server.requests.recv().expect("request received");

    assert!(
        request.starts_with("GET /data/2.5/weather?zip=02134,US HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains(&format!("host: {}\r\n", server.address)),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("connection: close\r\n"),
        "{request}"
    );
}

#[test]
fn post_sends_headers_and_body() {
    let server = start_server(None, Behaviour::Respond(response("200 OK", "", b"")));
    let client = verifying_client(None);
    let request = HttpRequest {
        method: http::Method::POST,
        url: format!("http://{}/api/v1/sites/a/status", server.address),
        headers: vec![
            (http::header::CONTENT_TYPE, "application/json".to_string()),
            (
                http::HeaderName::from_static("x-site-token"),
                "token-1".to_string(),
            ),
        ],
        body: Some(b"{\"kind\":\"snapshot\"}".to_vec()),
        deadline: DEADLINE,
        max_body: MAX_BODY,
    };

    send(&client, request).expect("response");
    let received = server.requests.recv().expect("request received");
    let lowered = received.to_ascii_lowercase();

    assert!(
        received.starts_with("POST /api/v1/sites/a/status HTTP/1.1\r\n"),
        "{received}"
    );
    assert!(lowered.contains("x-site-token: token-1\r\n"), "{received}");
    assert!(lowered.contains("content-length: 19\r\n"), "{received}");
    assert!(
        received.ends_with("\r\n\r\n{\"kind\":\"snapshot\"}"),
        "{received}"
    );
}

#[test]
fn redirect_is_returned_not_followed() {
    let server = start_server(
        None,
        Behaviour::Respond(response(
            "302 Found",
            "Location: http://127.0.0.1:1/\r\n",
            b"",
        )),
    );
    let client = verifying_client(None);
    let url = format!("http://{}/old", server.address);

    let answer = send(&client, HttpRequest::get(url, DEADLINE, MAX_BODY)).expect("response");

    assert_eq!(answer.status, 302);
}

#[test]
fn https_with_extra_ca_succeeds() {
    let pki = make_pki();
    let server = start_server(
        Some(pki.server_config.clone()),
        Behaviour::Respond(response("200 OK", "", b"secure")),
    );
    let client = verifying_client(Some(pki.ca_file.clone()));
    let url = format!("https://localhost:{}/x", server.address.port());

    let answer = send(&client, HttpRequest::get(url, DEADLINE, MAX_BODY)).expect("response");

    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.as_ref(), b"secure");
}

#[test]
fn https_to_ip_literal_with_extra_ca_succeeds() {
    let pki = make_pki();
    let server = start_server(
        Some(pki.server_config.clone()),
        Behaviour::Respond(response("200 OK", "", b"secure")),
    );
    let client = verifying_client(Some(pki.ca_file.clone()));
    let url = format!("https://{}/x", server.address);

    let answer = send(&client, HttpRequest::get(url, DEADLINE, MAX_BODY)).expect("response");

    assert_eq!(answer.status, 200);
}

#[test]
fn https_without_ca_is_not_trusted() {
    let pki = make_pki();
    let server = start_server(
        Some(pki.server_config.clone()),
        Behaviour::Respond(response("200 OK", "", b"")),
    );
    let client = verifying_client(None);
    let url = format!("https://localhost:{}/x", server.address.port());

    let error = send(&client, HttpRequest::get(url, DEADLINE, MAX_BODY))
        .expect_err("untrusted certificate");

    assert!(matches!(error, NetError::Tls(_)), "{error:?}");
    assert!(error.to_string().contains("not trusted"), "{error}");
}

#[test]
fn https_without_verification_succeeds() {
    let pki = make_pki();
    let server = start_server(
        Some(pki.server_config.clone()),
        Behaviour::Respond(response("200 OK", "", b"open")),
    );
    let client = HttpClient::new(&TlsOptions {
        extra_ca_file: None,
        verify: false,
    })
    .expect("client");
    let url = format!("https://localhost:{}/x", server.address.port());

    let answer = send(&client, HttpRequest::get(url, DEADLINE, MAX_BODY)).expect("response");

    assert_eq!(answer.body.as_ref(), b"open");
}

#[test]
fn missing_ca_file_is_named() {
    let path = std::env::temp_dir().join("thermostat-net-test-no-such-ca.pem");

    let error = HttpClient::new(&TlsOptions {
        extra_ca_file: Some(path.clone()),
        verify: true,
    })
    .expect_err("missing CA file");

    assert!(matches!(error, NetError::Tls(_)), "{error:?}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn ca_file_without_certificate_is_rejected() {
    let path = std::env::temp_dir().join(format!(
        "thermostat-net-test-empty-{}.pem",
        std::process::id()
    ));
    std::fs::write(&path, "not a certificate\n").expect("write the file");

    let error = HttpClient::new(&TlsOptions {
        extra_ca_file: Some(path.clone()),
        verify: true,
    })
    .expect_err("no certificate in the file");
    let _ = std::fs::remove_file(&path);

    assert!(error.to_string().contains("no PEM certificate"), "{error}");
}

#[test]
fn silent_server_times_out_at_deadline() {
    let server = start_server(None, Behaviour::Silent);
    let client = verifying_client(None);
    let deadline = Duration::from_millis(300);
    let url = format!("http://{}/hang", server.address);
    let started = Instant::now();

    let error = send(&client, HttpRequest::get(url, deadline, MAX_BODY)).expect_err("no answer");
    let elapsed = started.elapsed();

    assert_eq!(error, NetError::Timeout(deadline));
    assert!(elapsed >= deadline, "returned after {elapsed:?}");
    assert!(
        elapsed < deadline + Duration::from_secs(2),
        "returned after {elapsed:?}"
    );
}

#[test]
fn silent_tls_server_times_out_at_deadline() {
    let pki = make_pki();
    let server = start_server(Some(pki.server_config.clone()), Behaviour::Silent);
    let client = verifying_client(Some(pki.ca_file.clone()));
    let deadline = Duration::from_millis(300);
    let url = format!("https://localhost:{}/hang", server.address.port());

    let error = send(&client, HttpRequest::get(url, deadline, MAX_BODY)).expect_err("no answer");

    assert_eq!(error, NetError::Timeout(deadline));
}

#[test]
fn body_over_limit_is_rejected() {
    let body = vec![b'x'; 2048];
    let server = start_server(None, Behaviour::Respond(response("200 OK", "", &body)));
    let client = verifying_client(None);
    let url = format!("http://{}/big", server.address);

    let error = send(&client, HttpRequest::get(url, DEADLINE, 1024)).expect_err("body too large");

    assert_eq!(error, NetError::BodyTooLarge(1024));
}

#[test]
fn connect_error_omits_query_secret() {
    let client = verifying_client(None);
    let url = format!("http://{}/data?zip=02134,US&appid=SECRET", closed_port());

    let error = send(&client, HttpRequest::get(url, DEADLINE, MAX_BODY)).expect_err("closed port");

    assert!(matches!(error, NetError::Connect(_)), "{error:?}");
    assert!(!error.to_string().contains("SECRET"), "{error}");
    assert!(!format!("{error:?}").contains("SECRET"), "{error:?}");
}

#[test]
fn protocol_error_omits_query_secret() {
    let server = start_server(
        None,
        Behaviour::Respond(b"this is not HTTP\r\n\r\n".to_vec()),
    );
    let client = verifying_client(None);
    let url = format!("http://{}/data?appid=SECRET", server.address);

    let error =
        send(&client, HttpRequest::get(url, DEADLINE, MAX_BODY)).expect_err("garbage answer");

    assert!(matches!(error, NetError::Protocol(_)), "{error:?}");
    assert!(!error.to_string().contains("SECRET"), "{error}");
}

#[test]
fn invalid_url_error_omits_query_secret() {
    let client = verifying_client(None);

    let error = send(
        &client,
        HttpRequest::get("ftp://host/x?appid=SECRET", DEADLINE, MAX_BODY),
    )
    .expect_err("unsupported scheme");

    assert!(matches!(error, NetError::InvalidUrl(_)), "{error:?}");
    assert!(!error.to_string().contains("SECRET"), "{error}");
}

#[test]
fn request_debug_omits_secrets() {
    let request = HttpRequest {
        method: http::Method::GET,
        url: "https://api.example/data?appid=SECRET".to_string(),
        headers: vec![(
            http::HeaderName::from_static("x-site-token"),
            "TOKEN".to_string(),
        )],
        body: None,
        deadline: DEADLINE,
        max_body: MAX_BODY,
    };

    let debug = format!("{request:?}");

    assert!(!debug.contains("SECRET"), "{debug}");
    assert!(!debug.contains("TOKEN"), "{debug}");
    assert!(debug.contains("x-site-token"), "{debug}");
}

#[test]
fn redact_url_drops_key() {
    let redacted =
        redact_url("https://api.example/data/2.5/weather?zip=02134,US&appid=SECRET&units=imperial");

    assert_eq!(redacted, "https://api.example/data/2.5/weather");
}
