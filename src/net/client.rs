//! [`HttpClient`]: one request per connection, plain or TLS, under one deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_io::Timer;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite, future};
use futures_rustls::TlsConnector;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use rustls::ClientConfig;
use smol::net::TcpStream;

use super::target::{Target, parse_target};
use super::tls::{build_client_config, describe_handshake_error, server_name};
use super::{HttpRequest, HttpResponse, NetError, TlsOptions, redact_url};

/// An HTTP/1.1 client for http and https URLs. Cheap to clone: clones share one TLS
/// configuration.
#[derive(Debug, Clone)]
pub struct HttpClient {
    tls: Arc<ClientConfig>,
}

impl HttpClient {
    /// Builds a client with the given trust settings. Reads `extra_ca_file` with
    /// blocking file I/O, so call it before the executor starts or on a blocking thread.
    pub fn new(tls: &TlsOptions) -> Result<Self, NetError> {
        let config = build_client_config(tls)?;
        Ok(Self { tls: config })
    }

    /// Sends one request and returns the response, whatever its status. Fails with
    /// [`NetError::Timeout`] once `request.deadline` has passed, whichever stage
    /// (resolve, connect, TLS, send, body) was still running.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, NetError> {
        let deadline = request.deadline;
        let work = self.send_without_deadline(request);
        let timeout = async {
            Timer::after(deadline).await;
            Err(NetError::Timeout(deadline))
        };
        future::or(work, timeout).await
    }

    async fn send_without_deadline(&self, request: HttpRequest) -> Result<HttpResponse, NetError> {
        let target = parse_target(&request.url)?;
        let redacted = redact_url(&request.url);

        let stream = connect(&target, &redacted).await?;

        let response = if target.tls {
            let name = server_name(&target.host)?;
            let connector = TlsConnector::from(self.tls.clone());
            let tls_stream = connector
                .connect(name, stream)
                .await
                .map_err(|error| describe_handshake_error(&target.host, &error))?;
            exchange(tls_stream, &target, request, &redacted).await?
        } else {
            exchange(stream, &target, request, &redacted).await?
        };

        log::debug!("{redacted} returned status {}", response.status);
        Ok(response)
    }
}

/// Opens a TCP connection to the first resolved address that accepts one.
async fn connect(target: &Target, redacted: &str) -> Result<TcpStream, NetError> {
    let addresses = resolve(target, redacted).await?;

    let mut failures = Vec::new();
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => failures.push(format!("{address}: {error}")),
        }
    }
    Err(NetError::Connect(format!(
        "{redacted} ({}); check that the server is up and reachable",
        failures.join(", ")
    )))
}

/// Resolves the host on smol's blocking pool (`getaddrinfo` blocks), so no executor
/// thread waits on DNS. IP literals skip resolution.
async fn resolve(target: &Target, redacted: &str) -> Result<Vec<SocketAddr>, NetError> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }

    let addresses = smol::net::resolve((target.host.as_str(), target.port))
        .await
        .map_err(|error| {
            NetError::Resolve(format!(
                "cannot resolve host {} of {redacted}: {error}",
                target.host
            ))
        })?;
    if addresses.is_empty() {
        return Err(NetError::Resolve(format!(
            "host {} of {redacted} has no address",
            target.host
        )));
    }
    Ok(addresses)
}

/// Runs one HTTP/1.1 request over an open stream and reads the bounded body.
async fn exchange<S>(
    stream: S,
    target: &Target,
    request: HttpRequest,
    redacted: &str,
) -> Result<HttpResponse, NetError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = smol_hyper::rt::FuturesIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| protocol_error(redacted, &error))?;

    // The connection future moves the bytes; it has to run while the request is
    // awaited. It only finishes early on an error, and the request then fails too.
    let drive_connection = async {
        if let Err(error) = connection.await {
            return Err(protocol_error(redacted, &error));
        }
        future::pending().await
    };

    let max_body = request.max_body;
    let hyper_request = build_request(target, request, redacted)?;
    let send_and_read = async {
        let response = sender
            .send_request(hyper_request)
            .await
            .map_err(|error| protocol_error(redacted, &error))?;
        let (parts, body) = response.into_parts();
        let body = read_body(body, max_body, redacted).await?;
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };

    future::or(send_and_read, drive_connection).await
}

fn build_request(
    target: &Target,
    request: HttpRequest,
    redacted: &str,
) -> Result<Request<Full<Bytes>>, NetError> {
    let mut builder = Request::builder()
        .method(request.method)
        .uri(target.path_and_query.as_str())
        .header(HOST, target.host_header.as_str())
        .header(CONNECTION, "close")
        .header(
            USER_AGENT,
            concat!("thermostat-server/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }

    // `Full` sets Content-Length, so the body is never sent chunked. The error names
    // no header value, because values may carry tokens.
    let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
    builder.body(body).map_err(|error| {
        NetError::Protocol(format!(
            "cannot build the request to {redacted}: {error}; check the header names and values"
        ))
    })
}

async fn read_body(
    body: hyper::body::Incoming,
    max_body: usize,
    redacted: &str,
) -> Result<Bytes, NetError> {
    match Limited::new(body, max_body).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(NetError::BodyTooLarge(max_body))
        }
        Err(error) => Err(NetError::Protocol(format!(
            "reading the body from {redacted} failed: {error}"
        ))),
    }
}

/// Formats a hyper error with its causes, which hold the useful detail.
fn protocol_error(redacted: &str, error: &hyper::Error) -> NetError {
    let mut message = format!("exchange with {redacted} failed: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    NetError::Protocol(message)
}
