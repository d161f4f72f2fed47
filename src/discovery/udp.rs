//! UDP discovery: WM-DISCOVER sent twice, a configured gap apart, to the multicast
//! group, and every WM-NOTIFY answer collected until the window closes.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use async_io::{Async, Timer};
use futures_lite::future;
use socket2::{Domain, Protocol, Socket, Type};

use super::UdpOptions;
use super::message::{MAX_NOTIFY_BYTES, discover_request, parse_notify};
use crate::thermostat::DeviceAddress;

/// Sends WM-DISCOVER and returns the distinct device addresses announced before the
/// window closes, in the order they arrived. `on_answer` receives the count after each new
/// address. Fails when the socket cannot be opened or the first request cannot be sent.
pub async fn collect_locations(
    options: &UdpOptions,
    mut on_answer: impl FnMut(usize),
) -> io::Result<Vec<DeviceAddress>> {
    let socket = open_socket(options)?;
    let started = Instant::now();
    let deadline = started + options.window;

    socket
        .send_to(discover_request(), options.group)
        .await
        .map_err(|error| send_error(options.group, error))?;
    log::debug!("WM-DISCOVER sent to {}", options.group);
    let mut repeat_at = Some(started + options.repeat_gap).filter(|at| *at < deadline);

    let mut seen = HashSet::new();
    let mut addresses = Vec::new();
    let mut buffer = vec![0_u8; MAX_NOTIFY_BYTES];
    let mut gate = NotifyGate::new(started);
    loop {
        let wake = repeat_at.map_or(deadline, |at| at.min(deadline));
        // Over the rate, the datagrams wait in the kernel, which drops what does not
        // fit: a flood costs a bounded amount of work, and other tasks keep running.
        let received = match gate.next_read(Instant::now()) {
            Some(ready) if ready >= wake => {
                Timer::at(wake).await;
                None
            }
            Some(ready) => {
                Timer::at(ready).await;
                continue;
            }
            None => {
                future::or(async { Some(socket.recv_from(&mut buffer).await) }, async {
                    Timer::at(wake).await;
                    None
                })
                .await
            }
        };

        match received {
            Some(Ok((length, peer))) => {
                gate.record_read();
                for address in read_answer(&buffer[..length], peer) {
                    if seen.contains(&address) {
                        continue;
                    }
                    if addresses.len() >= MAX_ANSWERS {
                        if gate.first_overflow() {
                            log::warn!(
                                "UDP discovery: more than {MAX_ANSWERS} devices answered; \
                                 ignoring the rest of this window (last from {peer}), \
                                 which looks like a WM-NOTIFY flood"
                            );
                        }
                        break;
                    }
                    seen.insert(address);
                    addresses.push(address);
                    on_answer(addresses.len());
                }
                // A flood of ready datagrams must not keep this task from yielding.
                future::yield_now().await;
            }
            // Linux reports an ICMP "port unreachable" for an earlier datagram here.
            Some(Err(error)) => log::debug!("UDP discovery: receive failed: {error}"),
            None if Instant::now() >= deadline => break,
            None => {
                repeat_at = None;
                if let Err(error) = socket.send_to(discover_request(), options.group).await {
                    log::warn!("{}", send_error(options.group, error));
                }
            }
        }
    }
    Ok(addresses)
}

/// Most distinct device addresses one discovery window keeps. A site has far fewer
/// units; more means a flood, and each address would cost a connection to identify.
pub const MAX_ANSWERS: usize = 1024;

/// Most datagrams read per second of a discovery window, after a first burst.
pub const MAX_DATAGRAMS_PER_SECOND: u32 = 500;

/// Datagrams read at once before the rate applies.
const DATAGRAM_BURST: u32 = 500;

/// The pure rate limit on WM-NOTIFY datagrams: a token bucket of `DATAGRAM_BURST`
/// refilled at `MAX_DATAGRAMS_PER_SECOND`, and a flag so the overflow is logged once.
#[derive(Debug, Clone)]
pub struct NotifyGate {
    tokens: f64,
    refilled_at: Instant,
    overflow_logged: bool,
}

impl NotifyGate {
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: f64::from(DATAGRAM_BURST),
            refilled_at: now,
            overflow_logged: false,
        }
    }

    /// Returns `None` when a datagram may be read at `now`, or when the next one may.
    pub fn next_read(&mut self, now: Instant) -> Option<Instant> {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let rate = f64::from(MAX_DATAGRAMS_PER_SECOND);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(DATAGRAM_BURST));
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            return None;
        }
        let wait = (1.0 - self.tokens) / rate;
        Some(now + std::time::Duration::from_secs_f64(wait))
    }

    /// Spends one token for a datagram read.
    pub fn record_read(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    /// True the first time the address cap is reached in this window.
    pub fn first_overflow(&mut self) -> bool {
        !std::mem::replace(&mut self.overflow_logged, true)
    }
}

/// Parses one datagram, logging and skipping one that is not a WM-NOTIFY.
fn read_answer(datagram: &[u8], peer: SocketAddr) -> Vec<DeviceAddress> {
    match parse_notify(datagram) {
        Ok(addresses) => {
            log::debug!("WM-NOTIFY from {peer}: {addresses:?}");
            addresses
        }
        Err(error) => {
            log::debug!("UDP discovery: ignored a datagram from {peer}: {error}");
            Vec::new()
        }
    }
}

/// Opens the discovery socket: bound to `options.bind`, with the multicast TTL and
/// outgoing interface set when the target is a multicast group.
fn open_socket(options: &UdpOptions) -> io::Result<Async<UdpSocket>> {
    let domain = Domain::for_address(options.bind);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|error| context("cannot open a UDP socket", error))?;

    if options.group.ip().is_multicast() && options.group.is_ipv4() {
        socket
            .set_multicast_ttl_v4(options.ttl)
            .map_err(|error| context("cannot set the multicast TTL", error))?;
        if let Some(interface) = options.interface {
            socket.set_multicast_if_v4(&interface).map_err(|error| {
                context(
                    &format!("cannot send multicast by interface {interface}"),
                    error,
                )
            })?;
        }
    }
    socket.bind(&options.bind.into()).map_err(|error| {
        context(
            &format!(
                "cannot bind UDP discovery to {}; set discovery.udp_bind",
                options.bind
            ),
            error,
        )
    })?;
    Async::new(UdpSocket::from(socket))
}

fn send_error(group: SocketAddr, error: io::Error) -> io::Error {
    context(
        &format!("cannot send WM-DISCOVER to {group}; check discovery.udp_group and the route"),
        error,
    )
}

fn context(failed_step: &str, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{failed_step}: {error}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn gate_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut gate = NotifyGate::new(start);
        for _ in 0..DATAGRAM_BURST {
            assert_eq!(gate.next_read(start), None);
            gate.record_read();
        }
        let wait = gate.next_read(start).expect("the burst is spent");
        let per_datagram = Duration::from_secs(1) / MAX_DATAGRAMS_PER_SECOND;
        assert!(wait > start);
        assert!(wait <= start + per_datagram + Duration::from_micros(1));

        // One second later the bucket contains one second of datagrams, no more.
        let later = start + Duration::from_secs(1);
        let mut read = 0;
        while gate.next_read(later).is_none() {
            gate.record_read();
            read += 1;
        }
        assert_eq!(read, MAX_DATAGRAMS_PER_SECOND);
        // A long quiet spell refills only up to the burst.
        let much_later = start + Duration::from_secs(3600);
        let mut read = 0;
        while gate.next_read(much_later).is_none() {
            gate.record_read();
            read += 1;
        }
        assert_eq!(read, DATAGRAM_BURST);
    }

    #[test]
    fn overflow_is_reported_once() {
        let mut gate = NotifyGate::new(Instant::now());
        assert!(gate.first_overflow());
        assert!(!gate.first_overflow());
        assert!(!gate.first_overflow());
    }
}
