//! The set of thermostats being polled: one `DeviceLink` and one polling task per uuid.
//! Registering a known uuid at a new address moves its link instead of starting a
//! second poller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::task::{PollContext, poll_with_controller};
use crate::desired::{Controller, Policies, StoredDesired};
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
    links: Mutex<HashMap<ThermostatId, Arc<Controller>>>,
    policies: Mutex<Policies>,
    /// Desired states loaded from the database, taken by each controller as it starts.
    stored_desired: Mutex<HashMap<ThermostatId, StoredDesired>>,
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
            policies: Mutex::new(Policies::default()),
            stored_desired: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the drift policies, for thermostats polled from now on and those polled now.
    pub fn set_policies(&self, policies: Policies) {
        for (id, controller) in self.lock().iter() {
            controller.set_policy(policies.for_id(id));
        }
        *lock(&self.policies) = policies;
    }

    pub fn policies(&self) -> Policies {
        lock(&self.policies).clone()
    }

    /// Hands the desired states stored in the database to the controllers, now for
    /// those polled and at start for the others.
    pub fn restore_desired(&self, stored: Vec<(ThermostatId, StoredDesired)>) {
        let links = self.lock();
        let mut waiting = lock(&self.stored_desired);
        for (id, desired) in stored {
            match links.get(&id) {
                Some(controller) => controller.restore(&desired),
                None => {
                    waiting.insert(id, desired);
                }
            }
        }
    }

    /// Returns the controller of `id`, through which every settings write goes.
    pub fn controller(&self, id: &ThermostatId) -> Option<Arc<Controller>> {
        self.lock().get(id).cloned()
    }

    /// Returns every controller, sorted by uuid.
    pub fn controllers(&self) -> Vec<Arc<Controller>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        all
    }

    /// Returns the link of `id`, if it is being polled.
    pub fn link(&self, id: &ThermostatId) -> Option<Arc<DeviceLink>> {
        self.lock()
            .get(id)
            .map(|controller| controller.link().clone())
    }

    /// Returns the id polled at `address`, if any.
    pub fn id_at(&self, address: DeviceAddress) -> Option<ThermostatId> {
        let links = self.lock();
        links
            .iter()
            .find(|(_, controller)| controller.link().address() == address)
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
            let existing = existing.link();
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
        let policy = lock(&self.policies).for_id(id);
        let controller = Arc::new(Controller::new(
            id.clone(),
            link.clone(),
            self.context.clock.clone(),
            policy,
        ));
        if let Some(stored) = lock(&self.stored_desired).remove(id) {
            controller.restore(&stored);
        }
        links.insert(id.clone(), controller.clone());
        self.context
            .health
            .set_thermostats_known(links.len() as u64);
        drop(links);

        log::info!(
            "thermostat {id} at {address}: polling every {} s",
            self.context.schedule.interval.as_secs_f32()
        );
        let task = poll_with_controller(controller, first_due, self.context.clone());
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ThermostatId, Arc<Controller>>> {
        lock(&self.links)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
