//! The health verdict behind `GET /api/system/health`: healthy while the database takes
//! writes and thermostats reply to polls. Pure: the caller passes the time.

use std::time::Duration;

use serde::Serialize;

use crate::health::HealthSnapshot;

/// The maximum ages of health facts before they count as failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthThresholds {
    /// Maximum time without a single successful poll while thermostats are known.
    pub poll_stale: Duration,
    /// Maximum time without a database write while readings wait in the buffer.
    pub write_stale: Duration,
    /// Time after start during which missing polls or writes are not failures yet.
    pub startup_grace: Duration,
}

impl HealthThresholds {
    /// Thresholds for a poll interval and request deadline: a poll may take the whole
    /// deadline, and a few ticks may be skipped before anything is wrong.
    pub fn for_polling(interval: Duration, request_timeout: Duration) -> Self {
        let poll_stale = (interval * 3 + request_timeout).max(Duration::from_secs(30));
        Self {
            poll_stale,
            write_stale: Duration::from_secs(30),
            startup_grace: poll_stale * 2,
        }
    }
}

/// The verdict and the facts behind it, serialised as the endpoint's body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub status: &'static str,
    pub uptime_seconds: i64,
    pub database: DatabaseHealth,
    pub polling: PollingHealth,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseHealth {
    pub ok: bool,
    pub connected: bool,
    pub last_write_age_seconds: Option<i64>,
    pub buffered_readings: u64,
    pub dropped_readings: u64,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PollingHealth {
    pub ok: bool,
    pub thermostats: u64,
    pub last_success_age_seconds: Option<i64>,
    pub problem: Option<String>,
}

impl HealthReport {
    pub fn is_healthy(&self) -> bool {
        self.database.ok && self.polling.ok
    }
}

/// Judges the snapshot at `now` (Unix seconds).
pub fn evaluate(
    snapshot: &HealthSnapshot,
    now: i64,
    thresholds: &HealthThresholds,
) -> HealthReport {
    let uptime = now - snapshot.started_at;
    let starting = uptime <= thresholds.startup_grace.as_secs() as i64;
    let database = judge_database(snapshot, now, thresholds, starting);
    let polling = judge_polling(snapshot, now, thresholds, starting);
    let status = if database.ok && polling.ok {
        "healthy"
    } else {
        "unhealthy"
    };
    HealthReport {
        status,
        uptime_seconds: uptime,
        database,
        polling,
    }
}

fn age(now: i64, at: i64) -> Option<i64> {
    (at > 0).then(|| (now - at).max(0))
}

fn judge_database(
    snapshot: &HealthSnapshot,
    now: i64,
    thresholds: &HealthThresholds,
    starting: bool,
) -> DatabaseHealth {
    let last_write_age = age(now, snapshot.last_database_write);
    let stale_limit = thresholds.write_stale.as_secs() as i64;
    let writes_stuck = snapshot.readings_buffered > 0
        && !starting
        && last_write_age.is_none_or(|age| age > stale_limit);

    let problem = if !snapshot.database_connected {
        Some("not connected to PostgreSQL".to_string())
    } else if writes_stuck {
        Some(format!(
            "{} readings waiting and no write for over {stale_limit} s",
            snapshot.readings_buffered
        ))
    } else {
        None
    };

    DatabaseHealth {
        ok: problem.is_none(),
        connected: snapshot.database_connected,
        last_write_age_seconds: last_write_age,
        buffered_readings: snapshot.readings_buffered,
        dropped_readings: snapshot.readings_dropped,
        problem,
    }
}

fn judge_polling(
    snapshot: &HealthSnapshot,
    now: i64,
    thresholds: &HealthThresholds,
    starting: bool,
) -> PollingHealth {
    let last_success_age = age(now, snapshot.last_poll_success);
    let stale_limit = thresholds.poll_stale.as_secs() as i64;

    let problem = if starting {
        None
    } else if snapshot.thermostats_known == 0 {
        Some("no thermostat registered".to_string())
    } else if last_success_age.is_none_or(|age| age > stale_limit) {
        Some(format!(
            "no thermostat answered a poll in the last {stale_limit} s"
        ))
    } else {
        None
    };

    PollingHealth {
        ok: problem.is_none(),
        thermostats: snapshot.thermostats_known,
        last_success_age_seconds: last_success_age,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STARTED: i64 = 1_000_000;

    fn thresholds() -> HealthThresholds {
        HealthThresholds::for_polling(Duration::from_secs(5), Duration::from_secs(25))
    }

    fn running() -> HealthSnapshot {
        HealthSnapshot {
            database_connected: true,
            last_database_write: STARTED + 500,
            last_poll_success: STARTED + 500,
            poll_heartbeat: STARTED + 500,
            store_heartbeat: STARTED + 500,
            started_at: STARTED,
            thermostats_known: 20,
            readings_dropped: 0,
            readings_buffered: 3,
            database_writes: 0,
            database_write_micros: 0,
        }
    }

    #[test]
    fn healthy_when_polls_and_writes_are_recent() {
        let report = evaluate(&running(), STARTED + 502, &thresholds());
        assert!(report.is_healthy(), "{report:?}");
        assert_eq!(report.status, "healthy");
    }

    #[test]
    fn unhealthy_when_database_disconnected() {
        let snapshot = HealthSnapshot {
            database_connected: false,
            ..running()
        };
        let report = evaluate(&snapshot, STARTED + 502, &thresholds());
        assert!(!report.database.ok);
        assert!(report.polling.ok);
    }

    #[test]
    fn unhealthy_when_writes_stall_with_readings_waiting() {
        let report = evaluate(
            &running(),
            STARTED + 540,
            &HealthThresholds {
                poll_stale: Duration::from_secs(600),
                ..thresholds()
            },
        );
        assert!(!report.database.ok, "{report:?}");
    }

    #[test]
    fn idle_buffer_is_not_a_stall() {
        let snapshot = HealthSnapshot {
            readings_buffered: 0,
            ..running()
        };
        let thresholds = HealthThresholds {
            poll_stale: Duration::from_secs(600),
            ..thresholds()
        };
        let report = evaluate(&snapshot, STARTED + 540, &thresholds);
        assert!(report.database.ok, "{report:?}");
    }

    #[test]
    fn unhealthy_when_no_poll_succeeds() {
        let report = evaluate(&running(), STARTED + 700, &thresholds());
        assert!(!report.polling.ok);
    }

    #[test]
    fn no_thermostats_fails_only_after_start_up() {
        let snapshot = HealthSnapshot {
            thermostats_known: 0,
            last_poll_success: 0,
            ..running()
        };
        assert!(evaluate(&snapshot, STARTED + 10, &thresholds()).polling.ok);
        assert!(!evaluate(&snapshot, STARTED + 500, &thresholds()).polling.ok);
    }
}
