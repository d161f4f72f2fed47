//! TCP scan: a connection attempt to every address of the configured ranges, with
//! bounded concurrency and a connect deadline, then `GET /sys`, `/sys/name` and
//! `/tstat/model` on each address that accepted.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};
use async_lock::Semaphore;
use futures_lite::future;

use super::{Discovered, LinkSource, Method, TcpOptions, identify, join_all};
use crate::device::{DeviceLink, LinkOptions};
use crate::thermostat::DeviceAddress;

/// Scans one batch and returns the thermostats identified in it, in address order.
/// Addresses that `links` already polls are skipped: their thermostat is known, and a
/// probe beside the poller would put a second request in flight.
pub async fn scan_batch(
    batch: &[SocketAddr],
    options: &TcpOptions,
    link_options: LinkOptions,
    links: &dyn LinkSource,
) -> Vec<Discovered> {
    let permits = Semaphore::new(options.concurrency.max(1));
    let probes = batch
        .iter()
        .filter(|target| links.link_at(DeviceAddress::new(**target)).is_none())
        .map(|target| probe(*target, &permits, options.connect_timeout, link_options));
    join_all(probes).await.into_iter().flatten().collect()
}

/// Connects to `target` under a permit; on success identifies the thermostat there.
async fn probe(
    target: SocketAddr,
    permits: &Semaphore,
    connect_timeout: Duration,
    link_options: LinkOptions,
) -> Option<Discovered> {
    let accepted = {
        let _permit = permits.acquire().await;
        connect_within(target, connect_timeout).await
    };
    if let Err(error) = accepted {
        log::trace!("TCP scan: {target}: {error}");
        return None;
    }

    // The probe was a connection to a single-threaded server: leave it the same quiet
    // time as between two requests, so it has closed the probe before `/sys` arrives.
    Timer::after(link_options.min_request_gap).await;
    let link = std::sync::Arc::new(DeviceLink::new(DeviceAddress::new(target), link_options));
    match identify(link, Method::Tcp).await {
        Ok(found) => Some(found),
        Err(error) => {
            log::debug!("TCP scan: {target} accepted a connection but is no thermostat: {error}");
            None
        }
    }
}

/// Opens and closes a TCP connection to `target`, failing after `timeout`.
async fn connect_within(target: SocketAddr, timeout: Duration) -> io::Result<()> {
    let connect = async {
        let stream = Async::<TcpStream>::connect(target).await?;
        drop(stream);
        Ok(())
    };
    let deadline = async {
        Timer::after(timeout).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {} ms", timeout.as_millis()),
        ))
    };
    future::or(connect, deadline).await
}
