//! Start-up onboarding: poll every active thermostat stored in the database, and probe
//! each static address from the config that no known thermostat has. A thermostat that
//! replies is registered by its uuid.

use std::sync::Arc;
use std::time::Duration;

use async_lock::Semaphore;

use super::discover::apply_defaults;
use crate::control::SettingsChange;
use crate::device::{DeviceIdentity, DeviceLink, LinkOptions};
use crate::poll::Registry;
use crate::shutdown::Shutdown;
use crate::store::StoreHandle;
use crate::thermostat::{DeviceAddress, ThermostatRecord};

/// Wait between attempts to load the thermostat list while PostgreSQL is away.
const DATABASE_RETRY: Duration = Duration::from_secs(2);

/// First and maximum wait between probes of a static address that does not reply.
const PROBE_RETRY_FIRST: Duration = Duration::from_secs(10);
const PROBE_RETRY_MAX: Duration = Duration::from_secs(300);

/// Maximum static addresses identified at once. Each identification in flight keeps a
/// connection and its buffers, and probing 1,000 units at once left the heap at its
/// start-up peak for good.
const MAX_CONCURRENT_PROBES: usize = 64;

/// Starts polling the known thermostats, then onboards the static addresses.
pub async fn start_polling(
    store: StoreHandle,
    registry: Arc<Registry>,
    addresses: Vec<DeviceAddress>,
    link_options: LinkOptions,
    defaults: SettingsChange,
    shutdown: Shutdown,
) {
    let Some(known) = load_known(&store, &shutdown).await else {
        return;
    };
    log::info!("{} active thermostat(s) in the database", known.len());
    restore_desired(&store, &registry).await;
    for record in &known {
        registry.ensure_polling(&record.id, record.address, None);
    }

    let probes = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
    for address in addresses {
        if registry.id_at(address).is_some() {
            continue;
        }
        let task = onboard_address(
            address,
            probes.clone(),
            store.clone(),
            registry.clone(),
            link_options,
            defaults,
            shutdown.clone(),
        );
        registry.spawn(task);
    }
}

/// Stores the configured drift policies and hands the stored desired states to the
/// registry before polling starts. A failure is logged: polling starts without them.
async fn restore_desired(store: &StoreHandle, registry: &Registry) {
    if let Err(error) = store.record_policies(registry.policies()).await {
        log::warn!("drift policies not stored in device_config: {error}");
    }
    match store.load_desired().await {
        Ok(stored) => {
            log::info!("{} stored desired state(s) loaded", stored.len());
            registry.restore_desired(stored);
        }
        Err(error) => log::warn!(
            "stored desired states not loaded, so drift is judged from new commands only: {error}"
        ),
    }
}

/// Loads the active thermostats, retrying until PostgreSQL responds. Returns `None`
/// when the daemon stops first.
async fn load_known(store: &StoreHandle, shutdown: &Shutdown) -> Option<Vec<ThermostatRecord>> {
    let mut attempts = 0u32;
    loop {
        match store.load_thermostats().await {
            Ok(records) => return Some(records),
            Err(error) => {
                attempts += 1;
                if attempts == 1 {
                    log::warn!(
                        "cannot load the thermostat list, retrying every {} s: {error}",
                        DATABASE_RETRY.as_secs()
                    );
                } else {
                    log::debug!("cannot load the thermostat list (attempt {attempts}): {error}");
                }
            }
        }
        if !shutdown.sleep(DATABASE_RETRY).await {
            return None;
        }
    }
}

/// Probes `address` until a thermostat replies, then registers and polls it.
async fn onboard_address(
    address: DeviceAddress,
    probes: Arc<Semaphore>,
    store: StoreHandle,
    registry: Arc<Registry>,
    link_options: LinkOptions,
    defaults: SettingsChange,
    shutdown: Shutdown,
) {
    let link = Arc::new(DeviceLink::new(address, link_options));
    let mut delay = PROBE_RETRY_FIRST;
    let mut attempts = 0u32;

    loop {
        attempts += 1;
        let identify = async {
            let _permit = probes.acquire().await;
            link.identify().await
        };
        match shutdown.or_stop(identify).await {
            Some(Ok(identity)) => {
                let record = static_record(address, identity);
                match store.upsert_thermostat(record).await {
                    Ok(stored) => {
                        log::info!(
                            "registered thermostat {} ({}, \"{}\") at {address}",
                            stored.id,
                            stored.model,
                            stored.name
                        );
                        let is_new = registry.link(&stored.id).is_none();
                        registry.ensure_polling(&stored.id, address, Some(link));
                        if is_new {
                            let model = stored.model.as_str();
                            apply_defaults(
                                &stored.id, &registry, model, &defaults, &store, &shutdown,
                            )
                            .await;
                        }
                        return;
                    }
                    Err(error) => {
                        log::warn!("thermostat at {address}: cannot register it: {error}")
                    }
                }
            }
            Some(Err(error)) => {
                let level = if attempts == 1 {
                    log::Level::Warn
                } else {
                    log::Level::Debug
                };
                log::log!(
                    level,
                    "address {address}: no thermostat identified ({error}); retrying in {} s",
                    delay.as_secs()
                );
            }
            None => return,
        }

        if !shutdown.sleep(delay).await {
            return;
        }
        delay = (delay * 2).min(PROBE_RETRY_MAX);
    }
}

fn static_record(address: DeviceAddress, identity: DeviceIdentity) -> ThermostatRecord {
    ThermostatRecord {
        id: identity.sys.uuid,
        address,
        name: identity.name,
        model: identity.model,
        api_version: identity.sys.api_version,
        fw_version: identity.sys.fw_version,
        capabilities: identity.profile.capabilities(),
        discovery_method: "static".to_string(),
        active: true,
        away_temp: None,
        last_seen: None,
        first_seen: None,
    }
}
