//! Discovery: finding the site's thermostats by the addresses stored in the database,
//! by UDP WM-DISCOVER, and by a TCP scan of configured address ranges. Every candidate
//! is confirmed with `GET /sys` through a `DeviceLink` and identified by its uuid,
//! never by its address, because DHCP moves units after power cuts.
//!
//! The message formats ([`message`]), address ranges and batch plans ([`range`]) and
//! progress reports ([`progress`]) are pure and tested without sockets; [`udp`],
//! [`tcp`] and [`known`] are the async shell on the daemon's executor.

pub mod command;
pub mod known;
pub mod message;
pub mod progress;
pub mod range;
pub mod run;
pub mod setup;
pub mod tcp;
pub mod udp;

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::device::{DeviceError, DeviceIdentity, DeviceLink, LinkOptions};
use crate::poll::Registry;
use crate::thermostat::{DEFAULT_DEVICE_PORT, DeviceAddress, ThermostatRecord};

pub use progress::{PhaseReport, PhaseStatus, Progress, ProgressCallback, ProgressTracker};
pub use range::{AddressRange, InvalidRange, plan_batches};
pub use run::discover;

/// The multicast group and port that RadioThermostat units listen on for WM-DISCOVER.
pub const DISCOVERY_GROUP: SocketAddrV4 =
    SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);

/// A way of finding thermostats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The addresses stored in the database, checked with a short deadline.
    Database,
    /// WM-DISCOVER to the multicast group, answered by WM-NOTIFY.
    Udp,
    /// A TCP connect to every address of the configured ranges.
    Tcp,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Database, Method::Udp, Method::Tcp];

    pub fn name(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|method| method.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                format!("unknown discovery method {text:?}; expected database, udp or tcp")
            })
    }
}

/// Parses a comma-separated list such as `database,udp`, without repeats.
pub fn parse_methods(text: &str) -> Result<Vec<Method>, String> {
    let mut methods = Vec::new();
    for part in text.split(',').filter(|part| !part.trim().is_empty()) {
        let method: Method = part.parse()?;
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    if methods.is_empty() {
        return Err(format!(
            "no discovery method in {text:?}; expected a list such as database,udp,tcp"
        ));
    }
    Ok(methods)
}

/// Settings of UDP discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpOptions {
    /// Destination of WM-DISCOVER: the multicast group in production, a loopback
    /// responder in tests.
    pub group: SocketAddr,
    /// Local address of the socket; answers come back to it by unicast. Binding a
    /// specific address instead of 0.0.0.0 can hide answers on some networks.
    pub bind: SocketAddr,
    /// Interface address that multicast leaves by; `None` lets the routing table choose.
    pub interface: Option<Ipv4Addr>,
    /// How long answers are collected after the first request.
    pub window: Duration,
    /// Time between the two requests; answers to either are collected.
    pub repeat_gap: Duration,
    /// Multicast TTL: 1 stays on the local subnet; the vendor's tool uses 3.
    pub ttl: u32,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            group: SocketAddr::V4(DISCOVERY_GROUP),
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            interface: None,
            window: Duration::from_secs(10),
            repeat_gap: Duration::from_secs(1),
            ttl: 3,
        }
    }
}

/// Settings of the TCP scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpOptions {
    pub ranges: Vec<AddressRange>,
    /// Port probed on every address; real units serve port 80.
    pub port: u16,
    /// Most connection attempts in flight at once.
    pub concurrency: usize,
    /// Deadline of one connection attempt; a LAN host answers in milliseconds.
    pub connect_timeout: Duration,
    /// Addresses per batch. The finds of the first batch are registered before the
    /// rest of the scan runs.
    pub batch_size: usize,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            ranges: Vec::new(),
            port: DEFAULT_DEVICE_PORT,
            concurrency: 32,
            connect_timeout: Duration::from_millis(1500),
            batch_size: 64,
        }
    }
}

/// Settings of one discovery run.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryOptions {
    pub udp: UdpOptions,
    pub tcp: TcpOptions,
    /// Deadline of the `GET /sys` that checks a known address.
    pub known_timeout: Duration,
    /// Deadlines and gaps of the requests that identify a candidate. Identification
    /// uses the full polling deadline, because some units take 6 s for `/tstat/model`.
    pub link: LinkOptions,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            udp: UdpOptions::default(),
            tcp: TcpOptions::default(),
            known_timeout: Duration::from_secs(3),
            link: LinkOptions::default(),
        }
    }
}

/// A thermostat that discovery found and identified.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub address: DeviceAddress,
    pub identity: DeviceIdentity,
    pub method: Method,
    /// The link that identified it, handed to the poller so the request gap carries over.
    pub link: Arc<DeviceLink>,
}

impl Discovered {
    /// Builds the row to upsert. The store keeps `away_temp` and `first_seen` of an
    /// existing row.
    pub fn to_record(&self) -> ThermostatRecord {
        ThermostatRecord {
            id: self.identity.sys.uuid.clone(),
            address: self.address,
            name: self.identity.name.clone(),
            model: self.identity.model.clone(),
            api_version: self.identity.sys.api_version,
            fw_version: self.identity.sys.fw_version.clone(),
            capabilities: self.identity.profile.capabilities(),
            discovery_method: self.method.name().to_string(),
            active: true,
            away_temp: None,
            last_seen: None,
            first_seen: None,
        }
    }

    /// Returns the JSON object that `discover --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "uuid": self.identity.sys.uuid.as_str(),
            "address": self.address.to_string(),
            "name": self.identity.name,
            "model": self.identity.model,
            "fw_version": self.identity.sys.fw_version,
            "api_version": self.identity.sys.api_version,
            "method": self.method.name(),
        })
    }
}

/// The links of thermostats already being polled. Discovery sends every request to a
/// polled address through that address's link, so that a thermostat never has two
/// requests in flight.
pub trait LinkSource: Send + Sync {
    /// Returns the link that polls `address`, if any.
    fn link_at(&self, address: DeviceAddress) -> Option<Arc<DeviceLink>>;
}

/// The link source of a process that polls nothing, such as the `discover` command.
pub struct NoLinks;

impl LinkSource for NoLinks {
    fn link_at(&self, _address: DeviceAddress) -> Option<Arc<DeviceLink>> {
        None
    }
}

impl LinkSource for Registry {
    fn link_at(&self, address: DeviceAddress) -> Option<Arc<DeviceLink>> {
        self.id_at(address).and_then(|id| self.link(&id))
    }
}

/// Returns the polling link of `address`, or a new link with `link_options`.
pub fn link_for(
    links: &dyn LinkSource,
    address: DeviceAddress,
    link_options: LinkOptions,
) -> Arc<DeviceLink> {
    links
        .link_at(address)
        .unwrap_or_else(|| Arc::new(DeviceLink::new(address, link_options)))
}

/// Identifies the thermostat at `link`'s address with `/sys`, `/sys/name` and
/// `/tstat/model`.
pub async fn identify(link: Arc<DeviceLink>, method: Method) -> Result<Discovered, DeviceError> {
    let address = link.address();
    let identity = link.identify().await?;
    Ok(Discovered {
        address,
        identity,
        method,
        link,
    })
}

/// Adds `found` to `devices` unless a device with the same uuid is already there, and
/// returns whether it was added.
pub fn merge_found(devices: &mut Vec<Discovered>, found: Discovered) -> bool {
    let known = devices
        .iter()
        .any(|device| device.identity.sys.uuid == found.identity.sys.uuid);
    if !known {
        devices.push(found);
    }
    !known
}

/// Runs `futures` concurrently inside the calling task and returns their outputs in
/// order. A private executor, driven only by the calling task, polls them, so they may
/// borrow from the caller and no other thread runs them.
pub(crate) async fn join_all<'a, T: Send + 'a, F>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: Future<Output = T> + Send + 'a,
{
    let executor = smol::Executor::new();
    let tasks: Vec<_> = futures
        .into_iter()
        .map(|future| executor.spawn(future))
        .collect();

    executor
        .run(async {
            let mut outputs = Vec::with_capacity(tasks.len());
            for task in tasks {
                outputs.push(task.await);
            }
            outputs
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_in_order() {
        assert_eq!(
            parse_methods("udp, database"),
            Ok(vec![Method::Udp, Method::Database])
        );
    }

    #[test]
    fn methods_drop_repeats() {
        assert_eq!(parse_methods("tcp,TCP"), Ok(vec![Method::Tcp]));
    }

    #[test]
    fn unknown_method_named_in_error() {
        let error = parse_methods("udp,mdns").expect_err("unknown method");
        assert!(error.contains("\"mdns\""), "{error}");
    }

    #[test]
    fn empty_method_list_rejected() {
        assert!(parse_methods(" , ").is_err());
    }

    #[test]
    fn default_group_is_the_vendor_group() {
        assert_eq!(
            UdpOptions::default().group,
            "239.255.255.250:1900".parse::<SocketAddr>().expect("valid")
        );
    }

    #[test]
    fn join_all_keeps_order() {
        let outputs = smol::block_on(join_all((0..5).map(|index| async move { index * 2 })));
        assert_eq!(outputs, [0, 2, 4, 6, 8]);
    }
}
