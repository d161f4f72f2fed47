//! Discovery in the daemon: phase 1 at start-up (stored addresses, then UDP), phase 2
//! (a TCP scan) when phase 1 finds nothing, a run every `discovery.interval_seconds`,
//! and a targeted run when a thermostat goes offline. Every find is upserted by uuid
//! and polled at its address, so a moved thermostat keeps its database row.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_channel::Receiver;
use futures_lite::future;

use crate::api::DiscoveryHook;
use crate::config::DiscoveryConfig;
use crate::control::SettingsChange;
use crate::device::{DeviceLink, ModelProfile};
use crate::discovery::run::discover;
use crate::discovery::run::{database_phase, udp_phase};
use crate::discovery::setup::{ClockOutcome, sync_clock};
use crate::discovery::tcp::scan_batch;
use crate::discovery::{
    AddressRange, Discovered, DiscoveryOptions, Method, PhaseStatus, Progress, ProgressCallback,
    ProgressTracker, join_all, merge_found, plan_batches,
};
use crate::poll::Registry;
use crate::shutdown::Shutdown;
use crate::store::StoreHandle;
use crate::sync::command::{DiscoveryRequest, parse_discovery};
use crate::sync::{DiscoveryRunner, ProgressFn};
use crate::thermostat::ThermostatId;

/// Everything the discovery task needs. A clone shares the scan flag, so a background
/// scan and the task that started it agree on whether a scan is running.
#[derive(Clone)]
pub(super) struct DiscoveryService {
    pub store: StoreHandle,
    pub registry: Arc<Registry>,
    pub config: DiscoveryConfig,
    pub options: DiscoveryOptions,
    pub shutdown: Shutdown,
    /// Uuids of thermostats that just went offline, from the poll tasks.
    pub offline: Receiver<ThermostatId>,
    pub progress: Option<ProgressCallback>,
    /// True while a TCP scan runs, so that a second one does not start beside it.
    pub scanning: Arc<AtomicBool>,
    /// The `[defaults]` settings for newly registered thermostats.
    pub defaults: SettingsChange,
    /// `site.time_zone`: the clocks of new thermostats show the site's local time, as
    /// `tstat time-sync` sets them.
    pub time_zone: jiff::tz::TimeZone,
}

/// Progress of one TCP scan across batches.
struct TcpScan {
    tracker: ProgressTracker,
    total: usize,
    batch_count: usize,
    scanned: usize,
    found: usize,
}

/// The event that starts a discovery run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Periodic,
    Offline,
}

impl DiscoveryService {
    /// Runs start-up discovery, then periodic and targeted runs until shutdown.
    pub async fn run(self) {
        let found = self.phase_one().await;
        if found == 0 && self.config.methods.contains(&Method::Tcp) {
            log::info!(
                "discovery found no thermostat by stored address or UDP; scanning TCP ranges"
            );
            self.phase_two().await;
        }

        while let Some(trigger) = self.wait_for_trigger().await {
            match trigger {
                Trigger::Periodic => log::debug!("periodic discovery starting"),
                Trigger::Offline => {
                    log::info!("discovery starting for thermostats that went offline")
                }
            }
            let found = self.phase_one().await;
            if self.config.methods.contains(&Method::Tcp)
                && (trigger == Trigger::Periodic || found == 0)
            {
                self.phase_two().await;
            }
        }
    }

    /// Waits for the next interval or an offline report. Returns `None` at shutdown.
    async fn wait_for_trigger(&self) -> Option<Trigger> {
        let periodic = async {
            self.shutdown
                .sleep(self.config.interval)
                .await
                .then_some(Trigger::Periodic)
        };
        let offline = async {
            match self.offline.recv().await {
                Ok(id) => {
                    log::info!("thermostat {id} went offline; looking for it at a new address");
                    Some(Trigger::Offline)
                }
                // No poller can report any more, so only the interval remains.
                Err(_) => future::pending().await,
            }
        };
        let trigger = future::or(periodic, offline).await;

        // Thermostats that went offline together (a power cut) share one run.
        while self.offline.try_recv().is_ok() {}
        trigger.filter(|_| !self.shutdown.is_triggered())
    }

    /// Checks the stored addresses and runs UDP discovery, registering each find.
    /// Returns the number of thermostats found.
    async fn phase_one(&self) -> usize {
        let known = match self.store.load_thermostats().await {
            Ok(records) => records,
            Err(error) => {
                log::warn!("discovery: cannot load the stored thermostats, checking none: {error}");
                Vec::new()
            }
        };

        let mut tracker = ProgressTracker::new(self.progress.clone());
        let mut found: Vec<Discovered> = Vec::new();
        let links = self.registry.as_ref();
        if self.config.methods.contains(&Method::Database) {
            let work = database_phase(&self.options, &known, links, &mut tracker);
            let Some(devices) = self.shutdown.or_stop(work).await else {
                return 0;
            };
            found.extend(devices);
        }
        if self.config.methods.contains(&Method::Udp) {
            let work = udp_phase(&self.options, &found, links, &mut tracker);
            let Some(devices) = self.shutdown.or_stop(work).await else {
                return 0;
            };
            for device in devices {
                merge_found(&mut found, device);
            }
        }

        let count = found.len();
        self.register_all(found).await;
        count
    }

    /// Scans the first batch of the TCP ranges and registers its finds, then scans the
    /// rest in a background task, registering each batch's finds as it completes.
    async fn phase_two(&self) {
        let batches = plan_batches(
            &self.options.tcp.ranges,
            self.options.tcp.port,
            self.options.tcp.batch_size,
        );
        if batches.is_empty() {
            log::debug!("discovery: no TCP ranges configured");
            return;
        }
        if self.scanning.swap(true, Ordering::SeqCst) {
            log::debug!("discovery: a TCP scan is still running; not starting another");
            return;
        }

        let mut scan = TcpScan {
            tracker: ProgressTracker::new(self.progress.clone()),
            total: batches.iter().map(Vec::len).sum(),
            batch_count: batches.len(),
            scanned: 0,
            found: 0,
        };
        scan.tracker
            .start(Method::Tcp, &format!("Scanning {} addresses", scan.total));
        let mut remaining = batches.into_iter();
        if let Some(first) = remaining.next()
            && !self.scan_batch(&first, &mut scan).await
        {
            return;
        }

        let background = self.clone();
        self.registry.spawn(async move {
            for batch in remaining {
                if !background.scan_batch(&batch, &mut scan).await {
                    return;
                }
            }
            let action = format!("Scanned {} addresses", scan.total);
            scan.tracker
                .finish(PhaseStatus::Completed, &action, scan.found);
            background.scanning.store(false, Ordering::SeqCst);
        });
    }

    /// Scans one batch and registers its finds. Returns false at shutdown.
    async fn scan_batch(&self, batch: &[SocketAddr], scan: &mut TcpScan) -> bool {
        let links = self.registry.as_ref();
        let work = scan_batch(batch, &self.options.tcp, self.options.link, links);
        let Some(devices) = self.shutdown.or_stop(work).await else {
            return false;
        };

        scan.found += devices.len();
        scan.scanned += 1;
        self.register_all(devices).await;
        let action = format!("Scanned batch {} of {}", scan.scanned, scan.batch_count);
        scan.tracker.update(&action, scan.found);
        true
    }

    /// Upserts each thermostat by uuid and polls it at its address; a known uuid at a
    /// new address has its link moved there.
    async fn register_all(&self, devices: Vec<Discovered>) {
        let mut new_links = Vec::new();
        for device in devices {
            let record = device.to_record();
            let id = record.id.clone();
            let stored = match self.store.upsert_thermostat(record).await {
                Ok(stored) => stored,
                Err(error) => {
                    log::warn!(
                        "thermostat {id} at {}: found by {} discovery but cannot be registered: {error}",
                        device.address,
                        device.method
                    );
                    continue;
                }
            };

            let is_new = self.registry.link(&stored.id).is_none();
            // The link of another uuid at this address must not be shared: hand over
            // only a link that no poller uses yet.
            // NOTE: a poller does not check the uuid it reads, so until the old uuid is
            // found elsewhere, its poller also reads the new unit at this address.
            let link = match self.registry.id_at(device.address) {
                Some(_) => None,
                None => Some(device.link),
            };
            let link = self
                .registry
                .ensure_polling(&stored.id, device.address, link);
            if is_new {
                new_links.push((stored.id, link, stored.model));
            }
        }

        // Each setup takes three or more requests, so the units are set up in parallel.
        let setups = new_links
            .iter()
            .map(|(id, link, model)| self.set_up(id, link, model));
        join_all(setups).await;
    }

    /// Sets the clock (when configured) and the configured defaults of a newly
    /// registered thermostat.
    async fn set_up(&self, id: &ThermostatId, link: &DeviceLink, model: &str) {
        if self.config.sync_clock {
            self.sync_clock(id, link).await;
        }
        apply_defaults(
            id,
            &self.registry,
            model,
            &self.defaults,
            &self.store,
            &self.shutdown,
        )
        .await;
    }

    /// Sets the clock of a newly registered thermostat, through its polling link.
    async fn sync_clock(&self, id: &ThermostatId, link: &DeviceLink) {
        let now = jiff::Timestamp::now().to_zoned_datetime(self.time_zone.clone());
        let Some(result) = self.shutdown.or_stop(sync_clock(link, &now)).await else {
            return;
        };
        match result {
            Ok(ClockOutcome::Synced) => log::info!("thermostat {id}: clock set"),
            Ok(ClockOutcome::Skipped(reason)) => {
                log::info!("thermostat {id}: clock not set: {reason}")
            }
            Ok(ClockOutcome::Restored { target }) => log::warn!(
                "thermostat {id}: the clock write cleared the temporary setpoint {target:.1}; \
                 it was restored"
            ),
            Err(error) => log::warn!("thermostat {id}: cannot set the clock: {error}"),
        }
    }
}

/// Runs discovery for the public server's `discover_devices` command: the requested
/// methods and ranges (the configured ones when the command names none), each phase's
/// progress passed on, and every find registered like any other.
pub(super) struct CommandDiscovery {
    pub service: DiscoveryService,
}

impl DiscoveryRunner for CommandDiscovery {
    fn discover(
        &self,
        request: DiscoveryRequest,
        progress: ProgressFn,
    ) -> future::Boxed<Result<serde_json::Value, String>> {
        let mut service = self.service.clone();
        let plan = command_plan(&service, &request);
        Box::pin(async move {
            let (methods, ranges) = plan?;
            service.options.tcp.ranges = ranges;
            let progress: ProgressCallback = Arc::new(move |report: &Progress| {
                progress(serde_json::to_value(report).unwrap_or_default());
            });

            let known = service.store.load_thermostats().await.unwrap_or_default();
            let mut tracker = ProgressTracker::new(Some(progress));
            let work = discover(
                &service.options,
                &methods,
                &known,
                service.registry.as_ref(),
                &mut tracker,
            );
            let run = match request.timeout {
                Some(limit) => {
                    future::or(work, async move {
                        async_io::Timer::after(limit).await;
                        Vec::new()
                    })
                    .await
                }
                None => work.await,
            };

            let devices: Vec<serde_json::Value> = run.iter().map(describe_found).collect();
            let phase_history =
                serde_json::to_value(&tracker.progress().phase_history).unwrap_or_default();
            drop(tracker);
            service.register_all(run).await;
            Ok(serde_json::json!({ "devices": devices, "phase_history": phase_history }))
        })
    }
}

/// Returns the methods and TCP ranges of a `discover_devices` command, or why they are
/// invalid.
fn command_plan(
    service: &DiscoveryService,
    request: &DiscoveryRequest,
) -> Result<(Vec<Method>, Vec<AddressRange>), String> {
    let methods = if request.methods.is_empty() {
        service.config.methods.clone()
    } else {
        request
            .methods
            .iter()
            .map(|name| name.parse::<Method>())
            .collect::<Result<Vec<_>, _>>()?
    };
    let ranges = if request.ip_ranges.is_empty() {
        service.options.tcp.ranges.clone()
    } else {
        request
            .ip_ranges
            .iter()
            .map(|text| {
                text.parse::<AddressRange>()
                    .map_err(|error| error.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok((methods, ranges))
}

fn describe_found(device: &Discovered) -> serde_json::Value {
    serde_json::json!({
        "thermostat_id": device.identity.sys.uuid.as_str(),
        "ip_address": device.address.to_string(),
        "name": device.identity.name,
        "model": device.identity.model,
        "fw_version": device.identity.sys.fw_version,
        "discovery_method": device.method.name(),
    })
}

/// Returns the hook behind `POST /api/discovery/scan`: it checks the body (the
/// `discover_devices` parameters), starts the scan on a thread of its own and returns
/// 202 at once, because a TCP scan can take minutes. One scan runs at a time.
pub(super) fn api_scan_hook(runner: Arc<CommandDiscovery>) -> DiscoveryHook {
    let running = Arc::new(AtomicBool::new(false));
    Arc::new(move |body: &serde_json::Value| {
        let request = match parse_discovery(body) {
            Ok(request) => request,
            Err(error) => return (400, serde_json::json!({ "error": error })),
        };
        if running.swap(true, Ordering::SeqCst) {
            let error = "a discovery scan is already running; try again when it has finished";
            return (409, serde_json::json!({ "error": error }));
        }

        let (runner, running_flag) = (runner.clone(), running.clone());
        let spawned = std::thread::Builder::new()
            .name("discovery-scan".into())
            .spawn(move || {
                let result = async_io::block_on(runner.discover(request, Box::new(|_| {})));
                match result {
                    Ok(found) => log::info!(
                        "discovery scan from the local API found {} thermostat(s)",
                        found["devices"].as_array().map_or(0, Vec::len)
                    ),
                    Err(error) => log::warn!("discovery scan from the local API failed: {error}"),
                }
                running_flag.store(false, Ordering::SeqCst);
            });
        match spawned {
            Ok(_) => (202, serde_json::json!({ "status": "started" })),
            Err(error) => {
                running.store(false, Ordering::SeqCst);
                let message = format!("cannot start the discovery scan: {error}");
                (503, serde_json::json!({ "error": message }))
            }
        }
    })
}

/// Stores the drift policy of a newly registered thermostat, then applies the configured
/// `[defaults]` to it through its controller and records them in `device_config`.
pub(super) async fn apply_defaults(
    id: &ThermostatId,
    registry: &Registry,
    model: &str,
    defaults: &SettingsChange,
    store: &StoreHandle,
    shutdown: &Shutdown,
) {
    if let Err(error) = store.record_policies(registry.policies()).await {
        log::warn!("thermostat {id}: drift policy not stored in device_config: {error}");
    }
    if defaults.is_empty() {
        return;
    }
    let Some(controller) = registry.controller(id) else {
        log::debug!("thermostat {id}: not polled, so the configured defaults wait");
        return;
    };
    let profile = ModelProfile::from_model(model);
    match shutdown
        .or_stop(controller.submit(*defaults, profile, "defaults"))
        .await
    {
        None => {}
        Some(Ok(_)) => {
            log::info!(
                "thermostat {id}: configured defaults applied ({})",
                defaults.describe()
            );
            if let Err(error) = store
                .record_settings(id.clone(), *defaults, "defaults")
                .await
            {
                log::warn!("thermostat {id}: defaults applied but not recorded: {error}");
            }
        }
        Some(Err(error)) => log::warn!("thermostat {id}: configured defaults not applied: {error}"),
    }
}
