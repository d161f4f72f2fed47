//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4): polls and
//! failures per thermostat, the poll duration and lateness histograms, store queue depths, buffered and
//! dropped readings, database write time, and build info. Rendering is pure.

use std::fmt::Write;

use super::ApiState;
use super::reply::{PROMETHEUS_TEXT, Reply};
use crate::desired::DesiredSnapshot;
use crate::health::HealthSnapshot;
use crate::poll::ThermostatStatus;
use crate::poll::status::Histogram;
use crate::thermostat::ThermostatId;

/// Everything one scrape shows.
#[derive(Debug, Clone)]
pub struct MetricsInput {
    pub version: &'static str,
    /// Unix seconds.
    pub now: i64,
    pub health: HealthSnapshot,
    pub statuses: Vec<(ThermostatId, ThermostatStatus)>,
    pub latency: Histogram,
    /// Time from each poll's grid tick to the start of its request.
    pub lateness: Histogram,
    /// Readings and failures waiting in the channel to the store thread.
    pub sample_queue: usize,
    /// Requests waiting for the store thread.
    pub request_queue: usize,
    /// The public server link, when the sync is configured.
    pub public_server: Option<crate::sync::LinkReport>,
    /// The rows waiting for the public server; `None` without sync or while the database is away.
    pub sync_backlog: Option<crate::store::SyncBacklog>,
    /// The desired state and drift counters of each polled thermostat.
    pub desired: Vec<(ThermostatId, DesiredSnapshot)>,
}

pub fn metrics(state: &ApiState) -> Reply {
    let (sample_queue, request_queue) = state.store.queue_depths();
    let input = MetricsInput {
        version: env!("CARGO_PKG_VERSION"),
        now: state.clock.now().as_second(),
        health: state.health.snapshot(),
        statuses: state.status.all(),
        latency: state.status.latency(),
        lateness: state.status.lateness(),
        sample_queue,
        request_queue,
        public_server: state.public_server.as_ref().map(|link| link.report()),
        sync_backlog: state
            .public_server
            .as_ref()
            .and_then(|_| async_io::block_on(state.store.sync_backlog()).ok()),
        desired: state
            .registry
            .controllers()
            .iter()
            .map(|controller| (controller.id().clone(), controller.snapshot()))
            .collect(),
    };
    Reply {
        status: 200,
        content_type: PROMETHEUS_TEXT,
        body: render(&input),
        headers: Vec::new(),
    }
}

/// Renders the metrics. Timestamps of events that never happened are left out.
pub fn render(input: &MetricsInput) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "thermostat_build_info",
        "gauge",
        "Version of the running daemon.",
    );
    let build = format!(
        "thermostat_build_info{{version=\"{}\"}}",
        escape(input.version)
    );
    sample(&mut out, &build, 1);

    per_thermostat(&mut out, input, PER_THERMOSTAT_POLLS);
    per_thermostat(&mut out, input, PER_THERMOSTAT_FAILURES);
    per_thermostat(&mut out, input, PER_THERMOSTAT_ONLINE);
    histogram(
        &mut out,
        "thermostat_poll_duration_seconds",
        "Duration of successful polls, request to parsed reply.",
        &input.latency,
    );
    histogram(
        &mut out,
        "thermostat_poll_lateness_seconds",
        "Time from each poll's grid tick to the start of its request.",
        &input.lateness,
    );
    desired_state(&mut out, &input.desired);

    for (name, kind, help, value) in unlabelled(input) {
        family(&mut out, name, kind, help);
        sample(&mut out, name, value);
    }
    out
}

/// Name, type, help text and value of each metric without labels.
fn unlabelled(input: &MetricsInput) -> Vec<(&'static str, &'static str, &'static str, String)> {
    let health = &input.health;
    let write_seconds = health.database_write_micros as f64 / 1e6;
    let mut metrics = vec![
        (
            "thermostat_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            (input.now - health.started_at).to_string(),
        ),
        (
            "thermostat_store_sample_queue_depth",
            "gauge",
            "Readings and failures waiting in the channel to the store thread.",
            input.sample_queue.to_string(),
        ),
        (
            "thermostat_store_request_queue_depth",
            "gauge",
            "Requests waiting for the store thread.",
            input.request_queue.to_string(),
        ),
        (
            "thermostat_readings_buffered",
            "gauge",
            "Readings and failures buffered in memory, not yet written.",
            health.readings_buffered.to_string(),
        ),
        (
            "thermostat_readings_dropped_total",
            "counter",
            "Readings and failures dropped because the buffer was full.",
            health.readings_dropped.to_string(),
        ),
        (
            "thermostat_database_connected",
            "gauge",
            "1 while the store is connected to PostgreSQL.",
            u8::from(health.database_connected).to_string(),
        ),
        (
            "thermostat_database_writes_total",
            "counter",
            "Batch transactions written.",
            health.database_writes.to_string(),
        ),
        (
            "thermostat_database_write_seconds_total",
            "counter",
            "Time spent writing batches.",
            format!("{write_seconds:.6}"),
        ),
    ];
    if let Some(link) = &input.public_server {
        metrics.push((
            "thermostat_public_server_up",
            "gauge",
            "1 unless the latest request to the public server failed.",
            u8::from(link.ok).to_string(),
        ));
        if let Some(at) = link.last_success {
            metrics.push((
                "thermostat_public_server_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last response from the public server (an upload's acknowledgement).",
                at.to_string(),
            ));
        }
    }
    if let Some(backlog) = &input.sync_backlog {
        metrics.push((
            "thermostat_sync_outbox_backlog",
            "gauge",
            "State changes stored but not yet acknowledged by the public server.",
            backlog.state_changes.to_string(),
        ));
        metrics.push((
            "thermostat_sync_results_backlog",
            "gauge",
            "Command results stored but not yet acknowledged by the public server.",
            backlog.command_results.to_string(),
        ));
        metrics.push((
            "thermostat_sync_parked",
            "gauge",
            "Payloads the public server rejected, kept with the reason in sync_parked.",
            backlog.parked.to_string(),
        ));
    }
    if health.last_database_write > 0 {
        metrics.push((
            "thermostat_database_last_write_timestamp_seconds",
            "gauge",
            "Unix time of the last batch write.",
            health.last_database_write.to_string(),
        ));
    }
    if health.last_poll_success > 0 {
        metrics.push((
            "thermostat_last_poll_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful poll of any thermostat.",
            health.last_poll_success.to_string(),
        ));
    }
    metrics
}

/// A metric with one series per thermostat: name, type, help text and value.
type PerThermostat = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ThermostatStatus) -> u64,
);

const PER_THERMOSTAT_POLLS: PerThermostat = (
    "thermostat_polls_total",
    "counter",
    "Polls since start, failed ones included.",
    |status| status.polls,
);
const PER_THERMOSTAT_FAILURES: PerThermostat = (
    "thermostat_poll_failures_total",
    "counter",
    "Failed polls since start.",
    |status| status.failures,
);
const PER_THERMOSTAT_ONLINE: PerThermostat = (
    "thermostat_online",
    "gauge",
    "1 while the thermostat answers polls, 0 once it counts as offline.",
    |status| u64::from(status.online),
);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, series: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{series} {value}");
}

fn per_thermostat(out: &mut String, input: &MetricsInput, metric: PerThermostat) {
    let (name, kind, help, value) = metric;
    family(out, name, kind, help);
    for (id, status) in &input.statuses {
        let series = format!("{name}{{thermostat_id=\"{}\"}}", escape(id.as_str()));
        sample(out, &series, value(status));
    }
}

/// A desired-state metric with one series per thermostat: name, type, help and value.
type PerDesired = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DesiredSnapshot) -> u64,
);

/// The drift and enforcement series of each thermostat.
fn desired_state(out: &mut String, desired: &[(ThermostatId, DesiredSnapshot)]) {
    let name = "thermostat_drift_events_total";
    family(
        out,
        name,
        "counter",
        "Differences from the desired state since start, by kind.",
    );
    for (id, snapshot) in desired {
        let counters = &snapshot.counters;
        let kinds = [
            ("wall_change", counters.wall_changes),
            ("device_reset", counters.resets),
            ("write_dropped", counters.dropped_writes),
            ("clock_jump", counters.clock_jumps),
        ];
        for (kind, value) in kinds {
            let series = format!(
                "{name}{{thermostat_id=\"{}\",kind=\"{kind}\"}}",
                escape(id.as_str())
            );
            sample(out, &series, value);
        }
    }
    let single: [PerDesired; 4] = [
        (
            "thermostat_reapplied_total",
            "counter",
            "Desired settings written again and read back as commanded.",
            |snapshot| snapshot.counters.reapplied,
        ),
        (
            "thermostat_reapply_failures_total",
            "counter",
            "Writes of the desired settings that failed.",
            |snapshot| snapshot.counters.reapply_failures,
        ),
        (
            "thermostat_commands_coalesced_total",
            "counter",
            "Commands merged into a change already waiting for the thermostat.",
            |snapshot| snapshot.counters.coalesced_commands,
        ),
        (
            "thermostat_holding_settings",
            "gauge",
            "1 while the thermostat holds its desired settings, 0 after the retry budget ran out.",
            |snapshot| u64::from(snapshot.holding_settings),
        ),
    ];
    for (name, kind, help, value) in single {
        family(out, name, kind, help);
        for (id, snapshot) in desired {
            let series = format!("{name}{{thermostat_id=\"{}\"}}", escape(id.as_str()));
            sample(out, &series, value(snapshot));
        }
    }
}

/// Renders `histogram` as the family `name`, followed by the gauge `{name}_max`, the
/// longest duration recorded.
fn histogram(out: &mut String, name: &str, help: &str, histogram: &Histogram) {
    family(out, name, "histogram", help);
    let mut cumulative = 0;
    for (bound, count) in histogram.bounds.iter().zip(&histogram.buckets) {
        cumulative += count;
        sample(out, &format!("{name}_bucket{{le=\"{bound}\"}}"), cumulative);
    }
    sample(
        out,
        &format!("{name}_bucket{{le=\"+Inf\"}}"),
        histogram.count,
    );
    sample(
        out,
        &format!("{name}_sum"),
        format!("{:.6}", histogram.sum_seconds),
    );
    sample(out, &format!("{name}_count"), histogram.count);
    let max = format!("{name}_max");
    family(
        out,
        &max,
        "gauge",
        "The longest duration recorded since start.",
    );
    sample(out, &max, format!("{:.6}", histogram.max_seconds));
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::status::{LATENCY_BUCKETS, LATENESS_BUCKETS};
    use std::time::Duration;

    fn input() -> MetricsInput {
        let mut latency = Histogram::new(&LATENCY_BUCKETS);
        latency.record(Duration::from_millis(80));
        latency.record(Duration::from_millis(2400));
        let mut lateness = Histogram::new(&LATENESS_BUCKETS);
        lateness.record(Duration::from_micros(700));
        lateness.record(Duration::from_millis(30));
        let status = ThermostatStatus {
            online: true,
            polls: 12,
            failures: 2,
            ..ThermostatStatus::default()
        };
        let id = ThermostatId::parse("5cdad4000001").expect("id");
        MetricsInput {
            version: "0.1.0",
            now: 1_000_100,
            health: HealthSnapshot {
                database_connected: true,
                last_database_write: 1_000_099,
                last_poll_success: 1_000_098,
                poll_heartbeat: 1_000_098,
                store_heartbeat: 1_000_099,
                started_at: 1_000_000,
                thermostats_known: 1,
                readings_dropped: 0,
                readings_buffered: 3,
                database_writes: 40,
                database_write_micros: 120_000,
            },
            statuses: vec![(id.clone(), status)],
            latency,
            lateness,
            sample_queue: 0,
            request_queue: 0,
            public_server: Some(crate::sync::LinkReport {
                ok: false,
                last_success: Some(1_000_050),
                last_error: Some("the server returned status 503".into()),
            }),
            sync_backlog: Some(crate::store::SyncBacklog {
                state_changes: 12,
                command_results: 1,
                parked: 0,
            }),
            desired: vec![(
                id,
                DesiredSnapshot {
                    settings: crate::control::SettingsChange::default(),
                    source: Some("local_api".into()),
                    commanded_at: None,
                    policy: crate::desired::Policy::Enforce,
                    holding_settings: false,
                    failed_reapplies: 3,
                    drift_fields: vec!["hold"],
                    counters: crate::desired::DriftCounters {
                        resets: 2,
                        reapplied: 1,
                        ..Default::default()
                    },
                },
            )],
        }
    }

    #[test]
    fn drift_counters_and_holding_flag_are_exported() {
        let text = render(&input());
        let id = "thermostat_id=\"5cdad4000001\"";
        assert_eq!(
            value_of(
                &text,
                &format!("thermostat_drift_events_total{{{id},kind=\"device_reset\"}}")
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            value_of(&text, &format!("thermostat_reapplied_total{{{id}}}")).as_deref(),
            Some("1")
        );
        assert_eq!(
            value_of(&text, &format!("thermostat_holding_settings{{{id}}}")).as_deref(),
            Some("0")
        );
    }

    fn value_of(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')
                .map(str::to_string)
        })
    }

    #[test]
    fn every_sample_line_is_name_and_number() {
        let text = render(&input());
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("series and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn per_thermostat_counters_labelled() {
        let text = render(&input());
        let failures = value_of(
            &text,
            r#"thermostat_poll_failures_total{thermostat_id="5cdad4000001"}"#,
        );
        assert_eq!(failures.as_deref(), Some("2"));
    }

    #[test]
    fn histogram_buckets_cumulative() {
        let text = render(&input());
        assert_eq!(
            value_of(
                &text,
                r#"thermostat_poll_duration_seconds_bucket{le="0.1"}"#
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value_of(
                &text,
                r#"thermostat_poll_duration_seconds_bucket{le="2.5"}"#
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            value_of(
                &text,
                r#"thermostat_poll_duration_seconds_bucket{le="+Inf"}"#
            )
            .as_deref(),
            Some("2")
        );
    }

    #[test]
    fn lateness_histogram_and_max_exported() {
        let text = render(&input());
        let bucket = |bound: &str| {
            value_of(
                &text,
                &format!("thermostat_poll_lateness_seconds_bucket{{le=\"{bound}\"}}"),
            )
        };
        assert_eq!(bucket("0.001").as_deref(), Some("1"));
        assert_eq!(bucket("0.02").as_deref(), Some("1"));
        assert_eq!(bucket("0.05").as_deref(), Some("2"));
        assert_eq!(
            value_of(&text, "thermostat_poll_lateness_seconds_max").as_deref(),
            Some("0.030000")
        );
        assert_eq!(
            value_of(&text, "thermostat_poll_duration_seconds_max").as_deref(),
            Some("2.400000")
        );
    }

    #[test]
    fn label_values_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn public_server_link_exported() {
        let text = render(&input());
        assert_eq!(
            value_of(&text, "thermostat_public_server_up").as_deref(),
            Some("0")
        );
        assert_eq!(
            value_of(
                &text,
                "thermostat_public_server_last_success_timestamp_seconds"
            )
            .as_deref(),
            Some("1000050")
        );
        assert_eq!(
            value_of(&text, "thermostat_sync_outbox_backlog").as_deref(),
            Some("12")
        );
        assert_eq!(
            value_of(&text, "thermostat_sync_results_backlog").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn public_server_absent_without_sync() {
        let text = render(&MetricsInput {
            public_server: None,
            sync_backlog: None,
            ..input()
        });
        assert!(!text.contains("thermostat_public_server"), "{text}");
        assert!(!text.contains("thermostat_sync_"), "{text}");
    }
}
