//! The choice of which poll failures reach the log at info level. Each kind of failure is
//! logged once per spell, so a unit that fails the same way on every poll (a hung,
//! hostile or broken device) leaves one line with its uuid, not one per poll.

/// Remembers the failure kind last logged for one thermostat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureLog {
    announced: Option<&'static str>,
}

impl FailureLog {
    /// Records a failure of `kind` (see `DeviceError::kind`) and returns true when it is
    /// news: the first failure, or a different kind from the one last logged.
    pub fn on_failure(&mut self, kind: &'static str) -> bool {
        if self.announced == Some(kind) {
            return false;
        }
        self.announced = Some(kind);
        true
    }

    /// Forgets the last failure because the thermostat is back online, so its next
    /// failure is news again.
    pub fn on_back_online(&mut self) {
        self.announced = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_log_same_kind_once() {
        let mut log = FailureLog::default();
        assert!(log.on_failure("timeout"));
        for _ in 0..100 {
            assert!(!log.on_failure("timeout"));
        }
    }

    #[test]
    fn failure_log_new_kind_logged() {
        let mut log = FailureLog::default();
        assert!(log.on_failure("timeout"));
        assert!(log.on_failure("body_too_large"));
        assert!(!log.on_failure("body_too_large"));
        assert!(log.on_failure("timeout"));
    }

    #[test]
    fn failure_log_recovery_resets() {
        let mut log = FailureLog::default();
        assert!(log.on_failure("protocol"));
        assert!(!log.on_failure("protocol"));
        log.on_back_online();
        assert!(log.on_failure("protocol"));
    }
}
