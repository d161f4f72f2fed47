//! A fleet of simulated RadioThermostat units for tests, demos and load tests.
//!
//! Each device serves the thermostat HTTP API on its own TCP port, one connection at
//! a time, with a model profile, a room whose temperature moves, realistic or fixed
//! latency, and faults injected on request. The fleet runs on its own thread and
//! executor, so plain synchronous code can start it:
//!
//! ```no_run
//! use thermostat_server::simulator::{Fleet, FleetOptions};
//!
//! let fleet = Fleet::start(FleetOptions { count: 3, ..FleetOptions::default() })?;
//! for device in fleet.devices() {
//!     println!("{} {}", device.address(), device.uuid());
//! }
//! fleet.stop();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! With `FleetOptions::discovery` set, a UDP responder answers WM-DISCOVER with one
//! WM-NOTIFY per device, and `Fleet::move_device` moves a running device to a new
//! address, as DHCP does after a power cut.

mod cli;
mod device;
mod discovery;
mod fault;
mod http;
mod latency;
mod profile;
mod room;
mod server;
mod stats;
mod tstat;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_io::Async;

use crate::shutdown::Shutdown;

pub use cli::run_cli;
pub use device::{DeviceSnapshot, SimHandle};
pub use fault::{Fault, Hostile, Reply, ScriptedReply};
pub use latency::Latency;
pub use profile::{DEFAULT_MODEL_CYCLE, ModelProfile};
pub use room::Relay;
pub use stats::{PostRecord, RequestSpan, SimStats};
pub use tstat::{InvalidPost, Mode, PostOptions, PostOutcome};

use device::{DeviceShared, SimClock};
use tstat::Thermostat;

/// The MAC prefix (OUI) of simulated units, as on real ones.
const UUID_PREFIX: &str = "5cdad4";

/// Most devices one fleet can hold: one per possible uuid suffix.
const MAX_DEVICES: usize = 1 << 24;

/// Settings for `Fleet::start`.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Number of devices.
    pub count: usize,
    /// Address every device listens on.
    pub bind_ip: IpAddr,
    /// Port of the first device; device `i` listens on `base_port + i`. 0 gives each
    /// device an ephemeral port.
    pub base_port: u16,
    pub latency: Latency,
    /// Seed for uuids, starting temperatures, latency draws and fault decisions.
    pub seed: u64,
    /// Profiles assigned to devices in turn; empty means `DEFAULT_MODEL_CYCLE`.
    pub models: Vec<ModelProfile>,
    /// Initial faults as `(device index, fault)`.
    pub faults: Vec<(usize, Fault)>,
    /// POST behaviour switches for every device; each handle can change its own.
    pub post_options: PostOptions,
    /// Simulated seconds per wall-clock second for the room and the device clocks.
    pub time_speed: f64,
    /// How long a device waits for a complete request before closing the connection.
    pub read_timeout: Duration,
    /// Address of the WM-DISCOVER responder, such as `127.0.0.1:0`; `None` runs none.
    pub discovery: Option<SocketAddr>,
    /// Multicast group the responder joins on the `bind_ip` interface, such as
    /// 239.255.255.250. Only for a network namespace or a lab network.
    pub discovery_group: Option<Ipv4Addr>,
    /// When not empty, device `i` listens on `bind_ips[i]` instead of `bind_ip`, and
    /// every device uses the same port: `base_port`, or the first device's ephemeral
    /// port when `base_port` is 0. This lays a fleet out like a subnet for TCP scans.
    pub bind_ips: Vec<IpAddr>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            count: 1,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
            latency: Latency::Fast,
            seed: 1,
            models: Vec::new(),
            faults: Vec::new(),
            post_options: PostOptions::default(),
            time_speed: 1.0,
            read_timeout: Duration::from_secs(10),
            discovery: None,
            discovery_group: None,
            bind_ips: Vec::new(),
        }
    }
}

/// One running simulated thermostat.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// The current address, shared with the discovery responder and `move_device`.
    address: Arc<Mutex<SocketAddr>>,
    uuid: String,
    model: ModelProfile,
    handle: SimHandle,
}

impl SimDevice {
    /// Returns the address the device listens on now.
    pub fn address(&self) -> SocketAddr {
        *self
            .address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The 12-digit lowercase hex uuid that `GET /sys` returns.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    pub fn model(&self) -> &ModelProfile {
        &self.model
    }

    /// Returns the control handle. Clone it to keep it past the fleet's borrow.
    pub fn handle(&self) -> &SimHandle {
        &self.handle
    }
}

/// A running fleet. Dropping it, or calling `stop`, stops every device and closes
/// its port before returning. Both block until the fleet's thread has ended, so
/// call them from synchronous code or a blocking thread, not from an async task.
pub struct Fleet {
    devices: Vec<SimDevice>,
    /// One sender per device; a listener sent there replaces the device's listener.
    movers: Vec<async_channel::Sender<Async<TcpListener>>>,
    discovery: Option<SocketAddr>,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Fleet {
    /// Binds every device's port and starts serving on a new thread. Fails on
    /// invalid options or when a port cannot be bound.
    pub fn start(options: FleetOptions) -> io::Result<Fleet> {
        validate(&options)?;

        let started = Instant::now();
        let clock = SimClock {
            started,
            speed: options.time_speed,
        };
        let week_minute = local_week_minute();
        let mut devices = Vec::with_capacity(options.count);
        let mut servers = Vec::with_capacity(options.count);

        let mut movers = Vec::with_capacity(options.count);
        let mut shared_port = options.base_port;
        for index in 0..options.count {
            let (device, shared, listener) =
                start_device(&options, index, shared_port, clock, week_minute)?;
            if !options.bind_ips.is_empty() {
                shared_port = device.address().port();
            }
            let (mover, moves) = async_channel::bounded(1);
            movers.push(mover);
            devices.push(device);
            servers.push(DeviceServer {
                device: shared,
                listener,
                moves,
            });
        }

        let responder = match options.discovery {
            Some(address) => Some(bind_responder(address, &options)?),
            None => None,
        };
        let discovery = match &responder {
            Some(socket) => Some(socket.get_ref().local_addr()?),
            None => None,
        };
        let locations = devices
            .iter()
            .map(|device| device.address.clone())
            .collect();

        let shutdown = Shutdown::new();
        let thread = spawn_executor(
            servers,
            responder.map(|socket| (socket, locations)),
            options.read_timeout,
            shutdown.clone(),
        )?;
        log::info!("simulated fleet of {} thermostats started", devices.len());
        if let Some(address) = discovery {
            log::info!("simulated WM-DISCOVER responder listening on {address}");
        }

        Ok(Fleet {
            devices,
            movers,
            discovery,
            shutdown,
            thread: Some(thread),
        })
    }

    /// Returns the address of the WM-DISCOVER responder, if one runs.
    pub fn discovery_address(&self) -> Option<SocketAddr> {
        self.discovery
    }

    /// Moves device `index` to `address` (port 0 picks a free port) and returns the new
    /// address. The old port closes, and a request in flight there is dropped.
    pub fn move_device(&self, index: usize, address: SocketAddr) -> io::Result<SocketAddr> {
        let (Some(device), Some(mover)) = (self.devices.get(index), self.movers.get(index)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot move device {index}: the fleet has only {} devices",
                    self.devices.len()
                ),
            ));
        };

        let listener = TcpListener::bind(address).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("failed to bind simulated thermostat {index} to {address}: {error}"),
            )
        })?;
        let new_address = listener.local_addr()?;
        mover
            .send_blocking(Async::new(listener)?)
            .map_err(|_| io::Error::other("the simulated fleet has stopped"))?;

        *device
            .address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = new_address;
        log::info!(
            "simulated thermostat {} moved to {new_address}",
            device.uuid()
        );
        Ok(new_address)
    }

    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// Stops every device and waits until all ports are closed.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("simulated fleet thread panicked");
        }
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("devices", &self.devices)
            .finish()
    }
}

fn validate(options: &FleetOptions) -> io::Result<()> {
    let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));

    if options.count == 0 || options.count > MAX_DEVICES {
        return invalid(format!(
            "invalid device count {}: expected 1 to {MAX_DEVICES}",
            options.count
        ));
    }
    if options.base_port != 0 && usize::from(options.base_port) + options.count - 1 > 65535 {
        return invalid(format!(
            "base port {} with {} devices runs past port 65535",
            options.base_port, options.count
        ));
    }
    if !(options.time_speed.is_finite() && options.time_speed > 0.0) {
        return invalid(format!(
            "invalid time speed {}: expected a positive number",
            options.time_speed
        ));
    }
    if !options.bind_ips.is_empty() && options.bind_ips.len() < options.count {
        return invalid(format!(
            "{} bind addresses for {} devices; give one address per device",
            options.bind_ips.len(),
            options.count
        ));
    }
    if let Some((index, _)) = options
        .faults
        .iter()
        .find(|(index, _)| *index >= options.count)
    {
        return invalid(format!(
            "fault for device index {index}, but the fleet has only {} devices (0 to {})",
            options.count,
            options.count - 1
        ));
    }
    Ok(())
}

/// Binds device `index` and builds its model. With `bind_ips`, the device binds its own
/// address on `shared_port`.
fn start_device(
    options: &FleetOptions,
    index: usize,
    shared_port: u16,
    clock: SimClock,
    week_minute: u32,
) -> io::Result<(SimDevice, Arc<DeviceShared>, Async<TcpListener>)> {
    let requested = match options.bind_ips.get(index) {
        Some(ip) => SocketAddr::new(*ip, shared_port),
        None => {
            let port = match options.base_port {
                0 => 0,
                // `validate` checked that the last port fits, so this cannot overflow.
                base => base + index as u16,
            };
            SocketAddr::new(options.bind_ip, port)
        }
    };
    let listener = TcpListener::bind(requested).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("failed to bind simulated thermostat {index} to {requested}: {error}"),
        )
    })?;
    let address = listener.local_addr()?;
    let listener = Async::new(listener)?;

    let uuid = device_uuid(options.seed, index);
    let model = model_for(options, index);
    let device_seed = mix(options.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let indoor = 64.0 + (device_seed % 17) as f64 * 0.5;

    let mut thermostat = Thermostat::new(model.clone(), &uuid, week_minute, indoor);
    thermostat.post_options = options.post_options.clone();
    let faults = options
        .faults
        .iter()
        .filter(|(target, _)| *target == index)
        .map(|(_, fault)| fault.clone())
        .collect();

    let shared = Arc::new(DeviceShared::new(
        thermostat,
        faults,
        options.latency,
        device_seed,
        clock,
    ));
    let device = SimDevice {
        address: Arc::new(Mutex::new(address)),
        uuid,
        model,
        handle: SimHandle {
            device: shared.clone(),
        },
    };
    Ok((device, shared, listener))
}

fn model_for(options: &FleetOptions, index: usize) -> ModelProfile {
    if options.models.is_empty() {
        DEFAULT_MODEL_CYCLE[index % DEFAULT_MODEL_CYCLE.len()].clone()
    } else {
        options.models[index % options.models.len()].clone()
    }
}

/// Derives the uuid of device `index`: the OUI prefix and a 24-bit suffix. Suffixes start at
/// a seed-derived value and count up, so they are unique within a fleet.
pub fn device_uuid(seed: u64, index: usize) -> String {
    let suffix = (mix(seed) as usize).wrapping_add(index) % MAX_DEVICES;
    format!("{UUID_PREFIX}{suffix:06x}")
}

/// SplitMix64, a small well-mixing hash for deriving per-device values from a seed.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Returns the local wall-clock time as minutes since Monday 00:00, the devices' start time.
fn local_week_minute() -> u32 {
    let now = jiff::ZonedDateTime::now();
    let day = u32::try_from(now.weekday().to_monday_zero_offset()).unwrap_or(0);
    let hour = u32::try_from(now.hour()).unwrap_or(0);
    let minute = u32::try_from(now.minute()).unwrap_or(0);
    day * 24 * 60 + hour * 60 + minute
}

/// One device's server: its model, its listener, and where its moves arrive.
struct DeviceServer {
    device: Arc<DeviceShared>,
    listener: Async<TcpListener>,
    moves: async_channel::Receiver<Async<TcpListener>>,
}

fn bind_responder(address: SocketAddr, options: &FleetOptions) -> io::Result<Async<UdpSocket>> {
    let socket = UdpSocket::bind(address).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("failed to bind the simulated WM-DISCOVER responder to {address}: {error}"),
        )
    })?;

    if let Some(group) = options.discovery_group {
        let interface = match options.bind_ip {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        socket
            .join_multicast_v4(&group, &interface)
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("failed to join multicast group {group} on {interface}: {error}"),
                )
            })?;
    }
    Async::new(socket)
}

type Responder = (Async<UdpSocket>, Vec<Arc<Mutex<SocketAddr>>>);

fn spawn_executor(
    servers: Vec<DeviceServer>,
    responder: Option<Responder>,
    read_timeout: Duration,
    shutdown: Shutdown,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("simulator-fleet".to_string())
        .spawn(move || {
            let executor = smol::LocalExecutor::new();
            let mut tasks: Vec<_> = servers
                .into_iter()
                .map(|server| {
                    executor.spawn(server::serve_movable(
                        server.device,
                        server.listener,
                        server.moves,
                        read_timeout,
                    ))
                })
                .collect();
            if let Some((socket, locations)) = responder {
                tasks.push(executor.spawn(discovery::answer_discover(socket, locations)));
            }

            smol::block_on(executor.run(shutdown.wait()));

            // Dropping the tasks and then the executor drops every listener and
            // connection, which frees the ports before `Fleet::stop` returns.
            drop(tasks);
            drop(executor);
            log::info!("simulated fleet stopped");
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_unique_and_well_formed() {
        let uuids: Vec<String> = (0..1000).map(|index| device_uuid(99, index)).collect();
        let mut sorted = uuids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), uuids.len());
        for uuid in &uuids {
            assert_eq!(uuid.len(), 12, "{uuid}");
            assert!(uuid.starts_with("5cdad4"), "{uuid}");
            assert!(
                uuid.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{uuid}"
            );
        }
    }

    #[test]
    fn uuid_depends_on_seed() {
        assert_ne!(device_uuid(1, 0), device_uuid(2, 0));
        assert_eq!(device_uuid(1, 3), device_uuid(1, 3));
    }

    #[test]
    fn validate_rejects_bad_options() {
        let zero = FleetOptions {
            count: 0,
            ..FleetOptions::default()
        };
        assert!(validate(&zero).is_err());
        let past_end = FleetOptions {
            count: 10,
            base_port: 65530,
            ..FleetOptions::default()
        };
        assert!(validate(&past_end).is_err());
        let bad_fault = FleetOptions {
            count: 2,
            faults: vec![(2, Fault::Hang)],
            ..FleetOptions::default()
        };
        let error = validate(&bad_fault).expect_err("fault index out of range");
        assert!(error.to_string().contains("index 2"), "{error}");
    }
}
