//! Progress of one discovery run, phase by phase, in the shape the public server's
//! discovery progress protocol (version 2.0) expects: each phase has a status, a start
//! time, the elapsed seconds, the devices found so far and the current action.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::Method;

/// State of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseStatus {
    InProgress,
    Completed,
    Failed,
}

/// One phase's entry in `phase_history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    pub phase: Method,
    pub status: PhaseStatus,
    /// RFC 3339 UTC time the phase started, such as `2024-12-24T10:30:00Z`.
    pub start_time: String,
    /// Seconds since the phase started, with millisecond precision.
    pub elapsed_time: f64,
    pub devices_found: usize,
    pub current_action: String,
}

/// Every phase reported so far, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    pub phase_history: Vec<PhaseReport>,
}

/// Receiver of progress updates. It runs on the executor, so it must return at once.
pub type ProgressCallback = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Builds the progress of a run and hands each update to the callback.
pub struct ProgressTracker {
    progress: Progress,
    phase_started: Instant,
    callback: Option<ProgressCallback>,
}

impl ProgressTracker {
    pub fn new(callback: Option<ProgressCallback>) -> Self {
        Self {
            progress: Progress::default(),
            phase_started: Instant::now(),
            callback,
        }
    }

    /// Opens a new phase as in progress.
    pub fn start(&mut self, phase: Method, action: &str) {
        self.phase_started = Instant::now();
        self.progress.phase_history.push(PhaseReport {
            phase,
            status: PhaseStatus::InProgress,
            start_time: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_else(|_| jiff::Timestamp::now())
                .to_string(),
            elapsed_time: 0.0,
            devices_found: 0,
            current_action: action.to_string(),
        });
        self.publish();
    }

    /// Updates the current phase's action and count.
    pub fn update(&mut self, action: &str, devices_found: usize) {
        self.edit_current(|report| {
            report.current_action = action.to_string();
            report.devices_found = devices_found;
        });
    }

    /// Closes the current phase with `status`.
    pub fn finish(&mut self, status: PhaseStatus, action: &str, devices_found: usize) {
        self.edit_current(|report| {
            report.status = status;
            report.current_action = action.to_string();
            report.devices_found = devices_found;
        });
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    fn edit_current(&mut self, edit: impl FnOnce(&mut PhaseReport)) {
        let elapsed = round_millis(self.phase_started.elapsed().as_secs_f64());
        let Some(report) = self.progress.phase_history.last_mut() else {
            return;
        };
        report.elapsed_time = elapsed;
        edit(report);
        self.publish();
    }

    fn publish(&self) {
        if let Some(callback) = &self.callback {
            callback(&self.progress);
        }
    }
}

fn round_millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recording() -> (ProgressCallback, Arc<Mutex<Vec<Progress>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let callback: ProgressCallback = Arc::new(move |progress: &Progress| {
            sink.lock().expect("not poisoned").push(progress.clone());
        });
        (callback, seen)
    }

    #[test]
    fn every_step_reaches_callback() {
        let (callback, seen) = recording();
        let mut tracker = ProgressTracker::new(Some(callback));
        tracker.start(Method::Database, "Testing known devices");
        tracker.update("Testing known devices", 1);
        tracker.finish(PhaseStatus::Completed, "Done", 2);
        assert_eq!(seen.lock().expect("not poisoned").len(), 3);
    }

    #[test]
    fn phases_accumulate_in_history() {
        let mut tracker = ProgressTracker::new(None);
        tracker.start(Method::Database, "Testing known devices");
        tracker.finish(PhaseStatus::Completed, "Done", 3);
        tracker.start(Method::Udp, "Waiting for UDP responses");
        let history = &tracker.progress().phase_history;
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].status, PhaseStatus::Completed);
        assert_eq!(history[1].status, PhaseStatus::InProgress);
    }

    #[test]
    fn json_has_protocol_field_names() {
        let mut tracker = ProgressTracker::new(None);
        tracker.start(Method::Udp, "Waiting for UDP responses");
        tracker.update("Waiting for UDP responses", 2);
        let json = serde_json::to_value(tracker.progress()).expect("serializable");
        let phase = &json["phase_history"][0];
        assert_eq!(phase["phase"], "udp");
        assert_eq!(phase["status"], "inprogress");
        assert_eq!(phase["devices_found"], 2);
        assert_eq!(phase["current_action"], "Waiting for UDP responses");
        assert!(phase["elapsed_time"].is_f64());
        assert!(
            phase["start_time"]
                .as_str()
                .is_some_and(|time| time.ends_with('Z'))
        );
    }

    #[test]
    fn update_without_phase_is_ignored() {
        let mut tracker = ProgressTracker::new(None);
        tracker.update("nothing", 1);
        assert!(tracker.progress().phase_history.is_empty());
    }
}
