//! One discovery run over the chosen methods, in the fixed order database, UDP, TCP,
//! with a progress report for each phase. A uuid found by an earlier method is not
//! reported again by a later one.

use super::known::check_known;
use super::range::plan_batches;
use super::tcp::scan_batch;
use super::udp::collect_locations;
use super::{
    Discovered, DiscoveryOptions, LinkSource, Method, PhaseStatus, ProgressTracker, identify,
    join_all, link_for, merge_found,
};
use crate::thermostat::{DeviceAddress, ThermostatRecord};

/// Runs `methods` and returns every thermostat found, each uuid once. Requests to an
/// address that `links` polls go through its polling link.
pub async fn discover(
    options: &DiscoveryOptions,
    methods: &[Method],
    known: &[ThermostatRecord],
    links: &dyn LinkSource,
    tracker: &mut ProgressTracker,
) -> Vec<Discovered> {
    let mut devices = Vec::new();
    for method in Method::ALL {
        if !methods.contains(&method) {
            continue;
        }
        let found = match method {
            Method::Database => database_phase(options, known, links, tracker).await,
            Method::Udp => udp_phase(options, &devices, links, tracker).await,
            Method::Tcp => tcp_phase(options, links, tracker).await,
        };
        for device in found {
            merge_found(&mut devices, device);
        }
    }
    devices
}

/// Checks the stored addresses.
pub async fn database_phase(
    options: &DiscoveryOptions,
    known: &[ThermostatRecord],
    links: &dyn LinkSource,
    tracker: &mut ProgressTracker,
) -> Vec<Discovered> {
    tracker.start(Method::Database, "Testing known devices");
    let found = check_known(known, options.known_timeout, options.link, links).await;
    let action = format!("{} of {} known devices answered", found.len(), known.len());
    tracker.finish(PhaseStatus::Completed, &action, found.len());
    found
}

/// Sends WM-DISCOVER, collects the answers and identifies each new address. Addresses
/// of `already_found` are not asked again.
pub async fn udp_phase(
    options: &DiscoveryOptions,
    already_found: &[Discovered],
    links: &dyn LinkSource,
    tracker: &mut ProgressTracker,
) -> Vec<Discovered> {
    tracker.start(Method::Udp, "Waiting for UDP responses");
    let collected = collect_locations(&options.udp, |count| {
        tracker.update("Waiting for UDP responses", count);
    })
    .await;

    let addresses = match collected {
        Ok(addresses) => addresses,
        Err(error) => {
            log::warn!("UDP discovery failed: {error}");
            tracker.finish(
                PhaseStatus::Failed,
                &format!("UDP discovery failed: {error}"),
                0,
            );
            return Vec::new();
        }
    };

    let new: Vec<DeviceAddress> = addresses
        .into_iter()
        .filter(|address| {
            !already_found
                .iter()
                .any(|device| device.address == *address)
        })
        .collect();
    tracker.update(&format!("Identifying {} answering devices", new.len()), 0);
    let found = identify_all(&new, options, links, Method::Udp).await;
    let action = format!(
        "{} of {} answering devices identified",
        found.len(),
        new.len()
    );
    tracker.finish(PhaseStatus::Completed, &action, found.len());
    found
}

/// Scans every configured range, batch after batch.
pub async fn tcp_phase(
    options: &DiscoveryOptions,
    links: &dyn LinkSource,
    tracker: &mut ProgressTracker,
) -> Vec<Discovered> {
    let batches = plan_batches(
        &options.tcp.ranges,
        options.tcp.port,
        options.tcp.batch_size,
    );
    let total: usize = batches.iter().map(Vec::len).sum();
    tracker.start(Method::Tcp, &format!("Scanning {total} addresses"));

    let mut found = Vec::new();
    for (index, batch) in batches.iter().enumerate() {
        found.extend(scan_batch(batch, &options.tcp, options.link, links).await);
        let action = format!("Scanned batch {} of {}", index + 1, batches.len());
        tracker.update(&action, found.len());
    }
    let action = format!("Scanned {total} addresses");
    tracker.finish(PhaseStatus::Completed, &action, found.len());
    found
}

/// Identifies every address concurrently and keeps those that replied, each uuid once.
pub async fn identify_all(
    addresses: &[DeviceAddress],
    options: &DiscoveryOptions,
    links: &dyn LinkSource,
    method: Method,
) -> Vec<Discovered> {
    // A flood of announcements must not open more connections than a TCP scan does.
    let permits = async_lock::Semaphore::new(options.tcp.concurrency.max(1));
    let failures = std::sync::atomic::AtomicUsize::new(0);
    let attempts = addresses.iter().map(|address| {
        let (permits, failures) = (&permits, &failures);
        async move {
            let _permit = permits.acquire().await;
            let link = link_for(links, *address, options.link);
            let result = identify(link, method).await;
            if let Err(error) = &result {
                let earlier = failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let level = if earlier < IDENTIFY_FAILURES_LOGGED {
                    log::Level::Info
                } else {
                    log::Level::Debug
                };
                log::log!(
                    level,
                    "{method} discovery: {address} announced itself but did not identify: {error}"
                );
            }
            result.ok()
        }
    });

    let mut found = Vec::new();
    for device in join_all(attempts).await.into_iter().flatten() {
        merge_found(&mut found, device);
    }
    let failed = failures.into_inner();
    if failed > IDENTIFY_FAILURES_LOGGED {
        log::warn!(
            "{method} discovery: {failed} of {} announced addresses did not identify",
            addresses.len()
        );
    }
    found
}

/// Identification failures of one run logged at info level. The rest go to debug level
/// and a count, so a flood of false announcements cannot fill the log.
const IDENTIFY_FAILURES_LOGGED: usize = 10;
