//! The socket side of a simulated thermostat: one listener per device, an accept
//! loop that notices concurrent connections, and a serve loop that handles exactly
//! one connection at a time, like the real single-threaded server.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};

use super::device::{DeviceShared, Prepared, Request};
use super::fault::HostileSend;
use super::http::{RequestError, parse_head};
use super::stats::RequestSpan;

/// Accepted connections waiting for the device. Further clients wait in the
/// kernel's listen backlog instead.
const ACCEPT_QUEUE: usize = 32;

/// How long a connection that is about to be reset may take to send its request.
/// Closing a socket with unread input makes Linux send a reset instead of a FIN.
const RESET_GRACE: Duration = Duration::from_millis(100);

/// Pause after a failed `accept`, so a persistent error does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

struct Connection {
    stream: Async<TcpStream>,
    accepted_at: Instant,
}

/// Runs one device's server until the future is dropped, switching to each listener
/// that arrives on `moves` and closing the previous one.
pub(crate) async fn serve_movable(
    device: Arc<DeviceShared>,
    mut listener: Async<TcpListener>,
    moves: async_channel::Receiver<Async<TcpListener>>,
    read_timeout: Duration,
) {
    loop {
        let serve = async {
            serve_device(device.clone(), listener, read_timeout).await;
            None
        };
        let moved = async { moves.recv().await.ok() };
        match future::or(moved, serve).await {
            Some(next) => listener = next,
            None => return,
        }
    }
}

/// Runs one device's server until the future is dropped.
pub(crate) async fn serve_device(
    device: Arc<DeviceShared>,
    listener: Async<TcpListener>,
    read_timeout: Duration,
) {
    let (sender, receiver) = async_channel::bounded(ACCEPT_QUEUE);
    let accept = accept_loop(&device, &listener, sender);
    let serve = async {
        while let Ok(connection) = receiver.recv().await {
            serve_connection(&device, connection, read_timeout).await;
        }
    };
    future::or(accept, serve).await;
}

/// Accepts connections and queues them for the serve loop. A connection that
/// arrives while another is open counts as an overlap, and is reset at once under
/// `Fault::RefuseConcurrent` or while the device is powered off.
async fn accept_loop(
    device: &DeviceShared,
    listener: &Async<TcpListener>,
    sender: async_channel::Sender<Connection>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                log::warn!(
                    "simulated thermostat {}: accept failed: {error}",
                    device.uuid()
                );
                Timer::after(ACCEPT_RETRY).await;
                continue;
            }
        };

        let accepted_at = Instant::now();
        let open_before = device.stats().connection_opened(accepted_at);
        log::debug!(
            "simulated thermostat {}: connection from {peer}",
            device.uuid()
        );

        let refused = open_before > 0 && device.refuses_concurrent();
        if refused || device.is_powered_off(accepted_at) {
            if refused {
                device.stats().stats.refused_connections += 1;
            }
            reset(stream).await;
            device.connection_closed(None);
            continue;
        }

        let connection = Connection {
            stream,
            accepted_at,
        };
        if sender.send(connection).await.is_err() {
            return;
        }
    }
}

async fn serve_connection(device: &DeviceShared, connection: Connection, read_timeout: Duration) {
    let Connection {
        mut stream,
        accepted_at,
    } = connection;

    let now = Instant::now();
    if device.is_powered_off(now) {
        reset(stream).await;
        device.connection_closed(None);
        return;
    }
    if let Some(until) = device.locked_until(now) {
        hold_silently(&mut stream, Some(until)).await;
        device.connection_closed(None);
        return;
    }

    let request = match read_with_timeout(&mut stream, read_timeout).await {
        Ok(request) => request,
        Err(error) => {
            log::debug!(
                "simulated thermostat {}: dropped a request: {error}",
                device.uuid()
            );
            device.stats().stats.bad_requests += 1;
            device.connection_closed(None);
            return;
        }
    };
    log::debug!(
        "simulated thermostat {}: {} {}",
        device.uuid(),
        request.method,
        request.path
    );

    let prepared = device.prepare(&request, Instant::now());
    let span = |end| RequestSpan {
        method: request.method.clone(),
        path: request.path.clone(),
        start: accepted_at,
        end,
    };

    match prepared {
        Prepared::Answer { delay, bytes } => {
            Timer::after(delay).await;
            // The end is recorded before the write, so a client that reconnects as
            // soon as it has the reply never looks like an overlap.
            device.connection_closed(Some(span(Instant::now())));
            send(&mut stream, &bytes).await;
        }
        Prepared::Silent { delay, until } => {
            Timer::after(delay).await;
            hold_silently(&mut stream, until).await;
            device.connection_closed(Some(span(Instant::now())));
        }
        Prepared::Hostile { delay, send: kind } => {
            Timer::after(delay).await;
            match kind {
                HostileSend::Bytes(bytes) => send(&mut stream, &bytes).await,
                HostileSend::Padded { head, padding } => pad(&mut stream, &head, padding).await,
                HostileSend::Drip { bytes, gap } => drip(&mut stream, &bytes, gap).await,
                HostileSend::Reset => reset_now(stream),
            }
            device.connection_closed(Some(span(Instant::now())));
        }
    }
}

/// Writes `head` and then `padding` spaces, until done or the client leaves.
async fn pad(stream: &mut Async<TcpStream>, head: &[u8], padding: usize) {
    const CHUNK: [u8; 16 * 1024] = [b' '; 16 * 1024];
    let written = async {
        stream.write_all(head).await?;
        let mut left = padding;
        while left > 0 {
            let now = left.min(CHUNK.len());
            stream.write_all(&CHUNK[..now]).await?;
            left -= now;
        }
        stream.get_ref().shutdown(Shutdown::Write)
    };
    if let Err(error) = written.await {
        log::debug!("simulated thermostat: the padded reply stopped: {error}");
    }
}

/// Writes `bytes` one at a time, `gap` apart, until done or the client leaves.
async fn drip(stream: &mut Async<TcpStream>, bytes: &[u8], gap: Duration) {
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            return;
        }
        Timer::after(gap).await;
    }
    let _ = stream.get_ref().shutdown(Shutdown::Write);
}

/// Closes the connection at once with a TCP reset (SO_LINGER of zero).
fn reset_now(stream: Async<TcpStream>) {
    let socket = socket2::SockRef::from(stream.get_ref());
    if let Err(error) = socket.set_linger(Some(Duration::ZERO)) {
        log::debug!("simulated thermostat: cannot set SO_LINGER for a reset: {error}");
    }
    drop(stream);
}

async fn send(stream: &mut Async<TcpStream>, bytes: &[u8]) {
    let written = async {
        stream.write_all(bytes).await?;
        stream.flush().await?;
        stream.get_ref().shutdown(Shutdown::Write)
    };
    if let Err(error) = written.await {
        log::debug!("simulated thermostat: writing the reply failed: {error}");
    }
}

/// Failure to read a request.
#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    Request(RequestError),
    ClosedEarly,
    TimedOut(Duration),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => write!(f, "read failed: {error}"),
            Self::Request(error) => write!(f, "{error}"),
            Self::ClosedEarly => f.write_str("client closed the connection before a full request"),
            Self::TimedOut(limit) => write!(f, "no full request within {limit:?}"),
        }
    }
}

async fn read_with_timeout(
    stream: &mut Async<TcpStream>,
    limit: Duration,
) -> Result<Request, ReadError> {
    let read = read_request(stream);
    let timeout = async {
        Timer::after(limit).await;
        Err(ReadError::TimedOut(limit))
    };
    future::or(read, timeout).await
}

async fn read_request(stream: &mut Async<TcpStream>) -> Result<Request, ReadError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 2048];

    let head = loop {
        if let Some(head) = parse_head(&buffer).map_err(ReadError::Request)? {
            break head;
        }
        read_more(stream, &mut buffer, &mut chunk).await?;
    };

    let total = head.head_len + head.content_length;
    while buffer.len() < total {
        read_more(stream, &mut buffer, &mut chunk).await?;
    }

    let body = String::from_utf8_lossy(&buffer[head.head_len..total]).into_owned();
    Ok(Request {
        method: head.method,
        path: head.path,
        body,
    })
}

async fn read_more(
    stream: &mut Async<TcpStream>,
    buffer: &mut Vec<u8>,
    chunk: &mut [u8],
) -> Result<(), ReadError> {
    let count = stream.read(chunk).await.map_err(ReadError::Io)?;
    if count == 0 {
        return Err(ReadError::ClosedEarly);
    }
    buffer.extend_from_slice(&chunk[..count]);
    Ok(())
}

/// Keeps the connection open without replying until the client closes it, or
/// until `until` when given. Input is read and discarded.
async fn hold_silently(stream: &mut Async<TcpStream>, until: Option<Instant>) {
    let drain = async {
        let mut scratch = [0_u8; 512];
        while let Ok(count) = stream.read(&mut scratch).await {
            if count == 0 {
                break;
            }
        }
    };
    match until {
        Some(until) => {
            future::or(drain, async {
                Timer::at(until).await;
            })
            .await
        }
        None => drain.await,
    }
}

/// Closes the connection so the client sees a reset: waits briefly for its
/// request, then drops the socket with the input unread.
async fn reset(stream: Async<TcpStream>) {
    let readable = async {
        let _ = stream.readable().await;
    };
    future::or(readable, async {
        Timer::after(RESET_GRACE).await;
    })
    .await;
    drop(stream);
}
