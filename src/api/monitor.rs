//! Background monitors on the executor: one log line of statistics every 5 minutes, and
//! a health monitor that logs once when a component turns unhealthy and once when it
//! recovers. They read only the health atomics and the status board, whose lock is held
//! just long enough to copy it, so they do no I/O on the executor. The decisions ([`stats_line`], [`transitions`]) are pure.
//!
//! A thermostat going offline and coming back is logged by its poll task, once each way,
//! so the health monitor watches the database and polling as a whole.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::health::{HealthThresholds, evaluate};
use crate::clock::Clock;
use crate::health::{Health, HealthSnapshot};
use crate::poll::{StatusBoard, ThermostatStatus};
use crate::shutdown::Shutdown;
use crate::thermostat::ThermostatId;

/// Time between two statistics lines.
pub const STATS_INTERVAL: Duration = Duration::from_secs(300);

/// Time between two health checks.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// Thermostats named in the statistics line as outliers, at most.
const MAX_OUTLIERS: usize = 3;

/// Shared state that the monitors read.
pub struct MonitorContext {
    pub health: Arc<Health>,
    pub status: Arc<StatusBoard>,
    pub clock: Arc<dyn Clock>,
    pub thresholds: HealthThresholds,
    /// The public server link, when the sync is configured.
    pub public_server: Option<Arc<crate::sync::LinkStatus>>,
    pub weather: Arc<crate::weather::WeatherStatus>,
    pub shutdown: Shutdown,
}

/// Counters at one moment, for the difference over a statistics interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub thermostats: Vec<(ThermostatId, ThermostatStatus)>,
    pub health: Option<HealthSnapshot>,
}

/// Runs both monitors until shutdown.
pub async fn run(context: MonitorContext) {
    let mut previous_totals = read_totals(&context);
    let mut problems: BTreeMap<&'static str, Option<String>> = BTreeMap::new();
    let mut next_stats = std::time::Instant::now() + STATS_INTERVAL;

    while context.shutdown.sleep(HEALTH_INTERVAL).await {
        let current = component_problems(&context);
        for line in transitions(&problems, &current) {
            log::log!(line.level, "{}", line.message);
        }
        problems = current;

        if std::time::Instant::now() >= next_stats {
            next_stats += STATS_INTERVAL;
            let totals = read_totals(&context);
            log::info!("{}", stats_line(&previous_totals, &totals, STATS_INTERVAL));
            previous_totals = totals;
        }
    }
}

fn read_totals(context: &MonitorContext) -> Totals {
    Totals {
        thermostats: context.status.all(),
        health: Some(context.health.snapshot()),
    }
}

/// Returns the problem of each watched component, `None` while it is healthy.
fn component_problems(context: &MonitorContext) -> BTreeMap<&'static str, Option<String>> {
    let now = context.clock.now().as_second();
    let report = evaluate(&context.health.snapshot(), now, &context.thresholds);
    let mut problems = BTreeMap::from([
        ("database", report.database.problem),
        ("polling", report.polling.problem),
    ]);

    // Thermostats going offline and coming back are logged by their poll tasks.
    if let Some(link) = &context.public_server {
        let link = link.report();
        let problem = (!link.ok).then(|| {
            link.last_error
                .unwrap_or_else(|| "requests are failing".to_string())
        });
        problems.insert("public server link", problem);
    }
    let weather = context.weather.report(context.clock.now());
    if weather.enabled {
        let problem = (!weather.current).then(|| {
            weather
                .last_error
                .unwrap_or_else(|| "no current outside temperature".to_string())
        });
        problems.insert("weather feed", problem);
    }
    problems
}

/// One log line about a change of health.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub level: log::Level,
    pub message: String,
}

/// Compares the problems of each component with the previous check and returns a warning
/// for each component that turned unhealthy and an info line for each that recovered.
/// A problem whose wording changes while it lasts is not logged again.
pub fn transitions(
    previous: &BTreeMap<&'static str, Option<String>>,
    current: &BTreeMap<&'static str, Option<String>>,
) -> Vec<Transition> {
    let mut lines = Vec::new();
    for (component, problem) in current {
        let was_unhealthy = previous.get(component).is_some_and(Option::is_some);
        match problem {
            Some(problem) if !was_unhealthy => lines.push(Transition {
                level: log::Level::Warn,
                message: format!("health: {component} unhealthy: {problem}"),
            }),
            None if was_unhealthy => lines.push(Transition {
                level: log::Level::Info,
                message: format!("health: {component} recovered"),
            }),
            _ => {}
        }
    }
    lines
}

/// Builds the statistics line for the interval between `before` and `after`: polls,
/// failures and state changes, database writes, buffered and dropped readings, how many
/// thermostats are online, and the thermostats with the most failed polls.
pub fn stats_line(before: &Totals, after: &Totals, interval: Duration) -> String {
    let earlier = |id: &ThermostatId| {
        before
            .thermostats
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, status)| status.clone())
            .unwrap_or_default()
    };

    let mut polls = 0;
    let mut failures = 0;
    let mut changes = 0;
    let mut failing: Vec<(u64, &ThermostatId)> = Vec::new();
    for (id, status) in &after.thermostats {
        let start = earlier(id);
        let failed = status.failures.saturating_sub(start.failures);
        polls += status.polls.saturating_sub(start.polls);
        failures += failed;
        changes += status.state_changes.saturating_sub(start.state_changes);
        if failed > 0 {
            failing.push((failed, id));
        }
    }
    failing.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));

    let online = after
        .thermostats
        .iter()
        .filter(|(_, status)| status.online)
        .count();
    let health = after.health.unwrap_or_default();
    let writes = health
        .database_writes
        .saturating_sub(before.health.map_or(0, |snapshot| snapshot.database_writes));

    let mut line = format!(
        "stats for the last {} s: {polls} polls, {failures} failed, {changes} state changes, \
         {writes} database writes, {} readings buffered, {} dropped since start, {online}/{} thermostats online",
        interval.as_secs(),
        health.readings_buffered,
        health.readings_dropped,
        after.thermostats.len()
    );
    if !failing.is_empty() {
        let outliers: Vec<String> = failing
            .iter()
            .take(MAX_OUTLIERS)
            .map(|(failed, id)| format!("{id} ({failed} failed)"))
            .collect();
        line.push_str(&format!("; most failures: {}", outliers.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(database: Option<&str>) -> BTreeMap<&'static str, Option<String>> {
        BTreeMap::from([
            ("database", database.map(str::to_string)),
            ("polling", None),
        ])
    }

    #[test]
    fn unhealthy_logged_once_as_warning() {
        let lines = transitions(&problems(None), &problems(Some("not connected")));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].level, log::Level::Warn);
        assert_eq!(
            lines[0].message,
            "health: database unhealthy: not connected"
        );
    }

    #[test]
    fn lasting_problem_not_repeated() {
        let lines = transitions(
            &problems(Some("not connected")),
            &problems(Some("other text")),
        );
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn recovery_logged_once_as_info() {
        let lines = transitions(&problems(Some("not connected")), &problems(None));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].level, log::Level::Info);
        assert_eq!(lines[0].message, "health: database recovered");
    }

    #[test]
    fn problem_at_first_check_logged() {
        let lines = transitions(&BTreeMap::new(), &problems(Some("not connected")));
        assert_eq!(lines.len(), 1);
    }

    fn thermostat(
        index: u8,
        polls: u64,
        failures: u64,
        changes: u64,
    ) -> (ThermostatId, ThermostatStatus) {
        let id = ThermostatId::parse(&format!("5cdad400000{index}")).expect("id");
        let status = ThermostatStatus {
            online: failures < 3,
            polls,
            failures,
            state_changes: changes,
            ..ThermostatStatus::default()
        };
        (id, status)
    }

    #[test]
    fn stats_count_the_interval_only() {
        let before = Totals {
            thermostats: vec![thermostat(1, 100, 1, 2), thermostat(2, 100, 0, 0)],
            health: None,
        };
        let after = Totals {
            thermostats: vec![thermostat(1, 160, 1, 5), thermostat(2, 150, 4, 0)],
            health: None,
        };
        let line = stats_line(&before, &after, STATS_INTERVAL);
        assert!(
            line.contains("110 polls, 4 failed, 3 state changes"),
            "{line}"
        );
        assert!(line.contains("1/2 thermostats online"), "{line}");
    }

    #[test]
    fn stats_name_failing_thermostats() {
        let after = Totals {
            thermostats: vec![thermostat(1, 10, 1, 0), thermostat(2, 10, 4, 0)],
            health: None,
        };
        let line = stats_line(&Totals::default(), &after, STATS_INTERVAL);
        assert!(
            line.ends_with("most failures: 5cdad4000002 (4 failed), 5cdad4000001 (1 failed)"),
            "{line}"
        );
    }
}
