//! The set of thermostats being polled: one `DeviceLink` and one polling task per uuid.
//! Registering a known uuid at a new address moves its link instead of starting a
//! second poller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::status::reserve_one;
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
    /// The controller of each polled thermostat, sorted by uuid. Each controller
    /// stores its uuid, so a sorted `Vec` needs 8 bytes per thermostat where a
    /// `HashMap` would need a second copy of the uuid and spare slots.
    links: Mutex<Vec<Arc<Controller>>>,
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
            links: Mutex::new(Vec::new()),
            policies: Mutex::new(Policies::default()),
            stored_desired: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the drift policies, for thermostats polled from now on and those polled now.
    pub fn set_policies(&self, policies: Policies) {
        for controller in self.lock().iter() {
            controller.set_policy(policies.for_id(controller.id()));
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
            match find(&links, &id) {
                Ok(index) => links[index].restore(&desired),
                Err(_) => {
                    waiting.insert(id, desired);
                }
            }
        }
    }

    /// Returns the controller of `id`, through which every settings write goes.
    pub fn controller(&self, id: &ThermostatId) -> Option<Arc<Controller>> {
        let links = self.lock();
        let index = find(&links, id).ok()?;
        Some(links[index].clone())
    }

    /// Returns every controller, sorted by uuid.
    pub fn controllers(&self) -> Vec<Arc<Controller>> {
        self.lock().clone()
    }

    /// Returns the link of `id`, if it is being polled.
    pub fn link(&self, id: &ThermostatId) -> Option<Arc<DeviceLink>> {
        self.controller(id)
            .map(|controller| controller.link().clone())
    }

    /// Returns the id polled at `address`, if any.
    pub fn id_at(&self, address: DeviceAddress) -> Option<ThermostatId> {
        let links = self.lock();
        links
            .iter()
            .find(|controller| controller.link().address() == address)
            .map(|controller| controller.id().clone())
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
        let index = match find(&links, id) {
            Ok(known) => {
                let existing = links[known].link();
                if existing.address() != address {
                    log::info!(
                        "thermostat {id}: address changed from {} to {address}",
                        existing.address()
                    );
                    existing.set_address(address);
                }
                return existing.clone();
            }
            Err(index) => index,
        };

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
        reserve_one(&mut links);
        links.insert(index, controller.clone());
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Controller>>> {
        lock(&self.links)
    }
}

/// Returns the index of `id` in the sorted `links`, or where to insert it.
fn find(links: &[Arc<Controller>], id: &ThermostatId) -> Result<usize, usize> {
    links.binary_search_by(|controller| controller.id().cmp(id))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
