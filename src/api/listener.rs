//! The tiny_http server behind the workers, started again when its accept thread stops.
//! tiny_http 0.12 ends that thread at the first failed `accept` (for example at the open
//! file limit), after which no connection would ever be served.

use std::io;
use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tiny_http::{Request, Server};

/// Pause before serving again after a failed `accept`, so that a lasting cause such as
/// the open file limit does not turn into a busy loop.
const RESTART_PAUSE: Duration = Duration::from_millis(500);

/// The current server and the listener it was started from.
pub struct ServerSlot {
    /// Kept to start a new server on a copy of the same socket.
    listener: TcpListener,
    /// `None` after a new server could not be started; the next `recv` tries again.
    server: RwLock<Option<Arc<Server>>>,
}

impl ServerSlot {
    pub fn new(listener: TcpListener) -> io::Result<Self> {
        let server = serve_copy(&listener)?;
        Ok(Self {
            listener,
            server: RwLock::new(Some(Arc::new(server))),
        })
    }

    /// Returns the next request, or `None` when none came within `timeout` or the
    /// server had to be started again.
    pub fn recv(&self, timeout: Duration) -> Option<Request> {
        let Some(server) = self.current() else {
            self.restart(None);
            return None;
        };
        match server.recv_timeout(timeout) {
            Ok(request) => request,
            Err(error) => {
                log::error!(
                    "local API: accepting connections failed: {error}; serving again in {} ms",
                    RESTART_PAUSE.as_millis()
                );
                self.restart(Some(&server));
                None
            }
        }
    }

    fn current(&self) -> Option<Arc<Server>> {
        self.server
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces `failed` (`None`: no server) with a new server, unless another worker
    /// did already.
    fn restart(&self, failed: Option<&Arc<Server>>) {
        let mut slot = self
            .server
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let still_failed = match (slot.as_ref(), failed) {
            (Some(current), Some(failed)) => Arc::ptr_eq(current, failed),
            (None, None) => true,
            _ => false,
        };
        if !still_failed {
            return;
        }

        std::thread::sleep(RESTART_PAUSE);
        match serve_copy(&self.listener) {
            Ok(server) => {
                log::info!("local API: accepting connections again");
                *slot = Some(Arc::new(server));
            }
            Err(error) => {
                // Logged once per outage; the workers keep retrying every pause.
                if failed.is_some() {
                    log::error!("local API: cannot serve again: {error}; retrying");
                }
                *slot = None;
            }
        }
    }
}

/// Starts a tiny_http server on a copy of `listener`'s socket.
fn serve_copy(listener: &TcpListener) -> io::Result<Server> {
    let copy = listener.try_clone()?;
    Server::from_listener(copy, None)
        .map_err(|error| io::Error::other(format!("cannot start the HTTP server: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    /// Returns the first request that arrives within `limit`.
    fn receive(slot: &ServerSlot, limit: Duration) -> Option<Request> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(request) = slot.recv(Duration::from_millis(50)) {
                return Some(request);
            }
        }
        None
    }

    #[test]
    fn serves_again_after_failed_accept() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        // A receive timeout makes an idle accept fail, which stops tiny_http's thread.
        socket2::SockRef::from(&listener)
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set the receive timeout");
        let address = listener.local_addr().expect("address");
        let slot = ServerSlot::new(listener).expect("serve");
        assert!(receive(&slot, Duration::from_millis(300)).is_none());

        let mut client = std::net::TcpStream::connect(address).expect("connect");
        client
            .write_all(b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("send a request");
        let request = receive(&slot, Duration::from_secs(3)).expect("a request after the restart");
        assert_eq!(request.url(), "/after");

        request
            .respond(tiny_http::Response::from_string("ok"))
            .expect("respond");
        let mut answer = String::new();
        client
            .read_to_string(&mut answer)
            .expect("read the response");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
