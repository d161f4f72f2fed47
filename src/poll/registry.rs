//! The set of thermostats being polled: one `DeviceLink` and one polling task per uuid.
//! Registering a known uuid at a new address moves its link instead of starting a
//! second poller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::task::{PollContext, poll_thermostat};
use crate::device::{DeviceLink, LinkOptions};
use crate::thermostat::{DeviceAddress, ThermostatId};

/// Fraction of the golden ratio used to spread first polls over one interval, so that
/// thermostats registered one after another never bunch up.
const SPREAD_STEP: f64 = 0.618_033_988_75;

/// The polled thermostats.
pub struct Registry {
    /// Weak, because the tasks on the executor hold the registry: a strong reference
    /// would keep the executor alive after shutdown.
    executor: Weak<smol::Executor<'static>>,
    context: Arc<PollContext>,
    link_options: LinkOptions,
    links: Mutex<HashMap<ThermostatId, Arc<DeviceLink>>>,
}

impl Registry {
    pub fn new(
        executor: Weak<smol::Executor<'static>>,
        context: Arc<PollContext>,
        link_options: LinkOptions,
    ) -> Self {
        Self {
            executor,
            context,
            link_options,
            links: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the link of `id`, if it is being polled.
    pub fn link(&self, id: &ThermostatId) -> Option<Arc<DeviceLink>> {
        self.lock().get(id).cloned()
    }

    /// Returns the id polled at `address`, if any.
    pub fn id_at(&self, address: DeviceAddress) -> Option<ThermostatId> {
        let links = self.lock();
        links
            .iter()
            .find(|(_, link)| link.address() == address)
            .map(|(id, _)| id.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts polling `id` at `address`, or moves its existing link there. Returns the
    /// link. `link` lets the caller hand over the link it probed with, so the minimum
    /// gap between requests carries over.
    pub fn ensure_polling(
        &self,
        id: &ThermostatId,
        address: DeviceAddress,
        link: Option<Arc<DeviceLink>>,
    ) -> Arc<DeviceLink> {
        let mut links = self.lock();
        if let Some(existing) = links.get(id) {
            if existing.address() != address {
                log::info!(
                    "thermostat {id}: address changed from {} to {address}",
                    existing.address()
                );
                existing.set_address(address);
            }
            return existing.clone();
        }

        let link = link.unwrap_or_else(|| Arc::new(DeviceLink::new(address, self.link_options)));
        link.set_address(address);
        let first_due = Instant::now() + self.spread_offset(links.len());
        links.insert(id.clone(), link.clone());
        self.context
            .health
            .set_thermostats_known(links.len() as u64);
        drop(links);

        log::info!(
            "thermostat {id} at {address}: polling every {} s",
            self.context.schedule.interval.as_secs_f32()
        );
        let task = poll_thermostat(id.clone(), link.clone(), first_due, self.context.clone());
        match self.executor.upgrade() {
            Some(executor) => executor.spawn(task).detach(),
            None => log::debug!("thermostat {id}: not polled, the daemon is stopping"),
        }
        link
    }

    /// Runs `task` on the daemon's executor; does nothing once the daemon is stopping.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(executor) = self.executor.upgrade() {
            executor.spawn(task).detach();
        }
    }

    fn spread_offset(&self, index: usize) -> Duration {
        let fraction = (index as f64 * SPREAD_STEP).fract();
        self.context.schedule.interval.mul_f64(fraction)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ThermostatId, Arc<DeviceLink>>> {
        self.links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
