//! The latest polling status of each thermostat (online, failures in a row, last
//! success, last error), written by the poll tasks and read by the API and tests.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::thermostat::ThermostatId;

/// Polling status of one thermostat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThermostatStatus {
    pub online: bool,
    pub consecutive_failures: u32,
    pub polls: u64,
    pub failures: u64,
    /// Times the thermostat went from online to offline.
    pub offline_transitions: u64,
    pub last_success: Option<jiff::Timestamp>,
    pub last_error: Option<String>,
}

/// Status of every polled thermostat.
#[derive(Debug, Default)]
pub struct StatusBoard(Mutex<HashMap<ThermostatId, ThermostatStatus>>);

impl StatusBoard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns a copy of the status of `id`, if it has been polled.
    pub fn get(&self, id: &ThermostatId) -> Option<ThermostatStatus> {
        self.lock().get(id).cloned()
    }

    /// Returns a copy of every status.
    pub fn all(&self) -> Vec<(ThermostatId, ThermostatStatus)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(id, status)| (id.clone(), status.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub(crate) fn update(&self, id: &ThermostatId, change: impl FnOnce(&mut ThermostatStatus)) {
        let mut board = self.lock();
        let status = board.entry(id.clone()).or_insert_with(|| ThermostatStatus {
            online: true,
            ..Default::default()
        });
        change(status);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ThermostatId, ThermostatStatus>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
