//! One HTTP/1.1 exchange with a thermostat on hyper over smol: connect, send one request
//! with `Connection: close`, read a bounded body, all under one deadline.
//!
//! A request in flight is a small future, not a thread, so a fleet of slow devices costs
//! little memory.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};
use bytes::Bytes;
use futures_lite::future;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};

use super::error::DeviceError;

/// Largest body accepted from a thermostat. The biggest real reply (`/sys/services`)
/// is under 1 KiB; the bound keeps a broken or hostile device from filling memory.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Size of each read from the socket. Replies are under 1 KiB, so hyper's default
/// buffer (8 KiB, growing) would waste memory for each request in flight. A longer body
/// is still read whole, one piece at a time.
const READ_BUFFER_BYTES: usize = 1024;

/// A complete reply from a device.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReply {
    pub status: u16,
    pub body: Bytes,
}

/// Sends one request and returns the reply, or an error once `deadline` has passed
/// since the call, whichever stage (connect, send, read) was still running.
pub async fn exchange(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    deadline: Duration,
) -> Result<HttpReply, DeviceError> {
    let work = exchange_without_deadline(address, method, path, body);
    let timeout = async {
        Timer::after(deadline).await;
        Err(DeviceError::Timeout(deadline))
    };
    future::or(work, timeout).await
}

async fn exchange_without_deadline(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<HttpReply, DeviceError> {
    let stream = Async::<TcpStream>::connect(address)
        .await
        .map_err(|error| DeviceError::Connect(error.to_string()))?;
    let io = smol_hyper::rt::FuturesIo::new(stream);

    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .read_buf_exact_size(Some(READ_BUFFER_BYTES))
        .handshake(io)
        .await
        .map_err(|error| protocol_error(&error))?;

    // The connection future moves the bytes; it has to run while the request is
    // awaited. It only finishes early on an error, and the request then fails too.
    let drive_connection = async {
        if let Err(error) = connection.await {
            return Err(protocol_error(&error));
        }
        future::pending().await
    };

    let request = build_request(address, method, path, body)?;
    let send_and_read = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| protocol_error(&error))?;
        let status = response.status().as_u16();
        let body = read_body(response.into_body()).await?;
        Ok(HttpReply { status, body })
    };

    future::or(send_and_read, drive_connection).await
}

fn build_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Request<Full<Bytes>>, DeviceError> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, address.to_string())
        .header(CONNECTION, "close")
        .header(
            USER_AGENT,
            concat!("thermostat-server/", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }

    // `Full` sets Content-Length: the device cannot read chunked bodies.
    let payload = Full::new(Bytes::from(body.unwrap_or_default()));
    builder
        .body(payload)
        .map_err(|error| DeviceError::Protocol(format!("cannot build request for {path}: {error}")))
}

/// Describes a hyper error with its causes, so a reset reads as a reset and not only as
/// hyper's "connection error".
fn protocol_error(error: &hyper::Error) -> DeviceError {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    DeviceError::Protocol(text)
}

async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, DeviceError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(DeviceError::BodyTooLarge(MAX_BODY_BYTES))
        }
        Err(error) => Err(DeviceError::Protocol(error.to_string())),
    }
}
