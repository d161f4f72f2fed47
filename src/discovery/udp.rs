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
    loop {
        let wake = repeat_at.map_or(deadline, |at| at.min(deadline));
        let received = future::or(async { Some(socket.recv_from(&mut buffer).await) }, async {
            Timer::at(wake).await;
            None
        })
        .await;

        match received {
            Some(Ok((length, peer))) => {
                for address in read_answer(&buffer[..length], peer) {
                    if seen.insert(address) {
                        addresses.push(address);
                        on_answer(addresses.len());
                    }
                }
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
