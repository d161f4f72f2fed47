//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4): polls and
//! failures per thermostat, the poll duration and lateness histograms, store queue depths, buffered and
//! dropped readings, database write time, and build info. Rendering is pure.
//!
//! The page has about ten lines per thermostat, so it is sent in pieces of
//! [`ROWS_PER_PIECE`] thermostats, made while the response is written, from a copy of
//! the few counters it shows. So a scrape never keeps the whole page or a copy of every
//! status in memory.

use std::fmt::Write;

use super::ApiState;
use super::reply::{Body, PROMETHEUS_TEXT, Reply};
use crate::desired::DriftCounters;
use crate::health::HealthSnapshot;
use crate::poll::ThermostatStatus;
use crate::poll::status::Histogram;
use crate::thermostat::ThermostatId;

/// Thermostats per piece of the page. A piece is at most about 20 KB: the drift family
/// has four series of about 80 bytes per thermostat.
pub const ROWS_PER_PIECE: usize = 64;

/// The poll counters of one thermostat that the page shows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PollCounters {
    pub polls: u64,
    pub failures: u64,
    pub online: bool,
}

impl From<&ThermostatStatus> for PollCounters {
    fn from(status: &ThermostatStatus) -> Self {
        Self {
            polls: status.polls,
            failures: status.failures,
            online: status.online,
        }
    }
}

/// The desired-state counters of one thermostat that the page shows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DesiredCounters {
    pub counters: DriftCounters,
    pub holding_settings: bool,
}

/// Everything one scrape shows.
#[derive(Debug, Clone)]
pub struct MetricsInput {
    pub version: &'static str,
    /// Unix seconds.
    pub now: i64,
    pub health: HealthSnapshot,
    /// The poll counters of each polled thermostat, sorted by uuid.
    pub statuses: Vec<(ThermostatId, PollCounters)>,
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
    /// The drift counters of each polled thermostat, sorted by uuid.
    pub desired: Vec<(ThermostatId, DesiredCounters)>,
}

pub fn metrics(state: &ApiState) -> Reply {
    let (sample_queue, request_queue) = state.store.queue_depths();
    let input = MetricsInput {
        version: env!("CARGO_PKG_VERSION"),
        now: state.clock.now().as_second(),
        health: state.health.snapshot(),
        statuses: state.status.map_all(|status| PollCounters::from(status)),
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
            .map(|controller| {
                let (counters, holding_settings) = controller.counters();
                let counters = DesiredCounters {
                    counters,
                    holding_settings,
                };
                (controller.id().clone(), counters)
            })
            .collect(),
    };
    Reply {
        status: 200,
        content_type: PROMETHEUS_TEXT,
        body: body(input),
        headers: Vec::new(),
    }
}

/// Returns the page as a body sent in pieces.
pub fn body(input: MetricsInput) -> Body {
    let length = MetricsPieces::new(&input).map(|piece| piece.len()).sum();
    Body::Pieces {
        length,
        pieces: Box::new(MetricsPieces::new(input)),
    }
}

/// Renders the whole page. Timestamps of events that never happened are left out.
pub fn render(input: &MetricsInput) -> String {
    MetricsPieces::new(input).collect()
}

/// The parts of the page, in order.
#[derive(Clone, Copy)]
enum Part {
    BuildInfo,
    PerThermostat(&'static RowFamily),
    Histograms,
    Unlabelled,
}

const PAGE: [Part; 11] = [
    Part::BuildInfo,
    Part::PerThermostat(&POLLS),
    Part::PerThermostat(&FAILURES),
    Part::PerThermostat(&ONLINE),
    Part::Histograms,
    Part::PerThermostat(&DRIFT_EVENTS),
    Part::PerThermostat(&REAPPLIED),
    Part::PerThermostat(&REAPPLY_FAILURES),
    Part::PerThermostat(&COALESCED),
    Part::PerThermostat(&HOLDING),
    Part::Unlabelled,
];

/// The pieces of the page: one piece per part without thermostat labels, and one per
/// [`ROWS_PER_PIECE`] thermostats of each family with a series per thermostat.
struct MetricsPieces<I> {
    input: I,
    /// Index in [`PAGE`] of the part the next piece starts.
    part: usize,
    /// The first thermostat of the next piece, in a family per thermostat.
    row: usize,
}

impl<I: std::borrow::Borrow<MetricsInput>> MetricsPieces<I> {
    fn new(input: I) -> Self {
        Self {
            input,
            part: 0,
            row: 0,
        }
    }
}

impl<I: std::borrow::Borrow<MetricsInput>> Iterator for MetricsPieces<I> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.part >= PAGE.len() {
            return None;
        }
        let input = self.input.borrow();
        let mut out = String::new();
        match PAGE[self.part] {
            Part::BuildInfo => {
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
            }
            Part::PerThermostat(rows) => {
                let total = rows.count(input);
                if self.row == 0 {
                    family(&mut out, rows.name, rows.kind, rows.help);
                }
                let end = total.min(self.row + ROWS_PER_PIECE);
                for index in self.row..end {
                    rows.write(&mut out, input, index);
                }
                if end < total {
                    self.row = end;
                    return Some(out);
                }
                self.row = 0;
            }
            Part::Histograms => {
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
            }
            Part::Unlabelled => {
                for (name, kind, help, value) in unlabelled(input) {
                    family(&mut out, name, kind, help);
                    sample(&mut out, name, value);
                }
            }
        }
        self.part += 1;
        Some(out)
    }
}

/// A family with series per thermostat: name, type, help text and the series.
struct RowFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    series: Series,
}

/// The series of a family per thermostat.
#[derive(Clone, Copy)]
enum Series {
    /// One series per polled thermostat.
    Poll(fn(&PollCounters) -> u64),
    /// One series per thermostat with a controller.
    Desired(fn(&DesiredCounters) -> u64),
    /// Four series per thermostat with a controller, one per kind of drift.
    DriftKinds,
}

impl RowFamily {
    /// Returns the number of thermostats that the family has series for.
    fn count(&self, input: &MetricsInput) -> usize {
        match self.series {
            Series::Poll(_) => input.statuses.len(),
            Series::Desired(_) | Series::DriftKinds => input.desired.len(),
        }
    }

    /// Writes the series of the thermostat at `index`.
    fn write(&self, out: &mut String, input: &MetricsInput, index: usize) {
        let name = self.name;
        match self.series {
            Series::Poll(value) => {
                let (id, counters) = &input.statuses[index];
                labelled(out, name, id, None, value(counters));
            }
            Series::Desired(value) => {
                let (id, desired) = &input.desired[index];
                labelled(out, name, id, None, value(desired));
            }
            Series::DriftKinds => {
                let (id, desired) = &input.desired[index];
                let counters = &desired.counters;
                let kinds = [
                    ("wall_change", counters.wall_changes),
                    ("device_reset", counters.resets),
                    ("write_dropped", counters.dropped_writes),
                    ("clock_jump", counters.clock_jumps),
                ];
                for (kind, value) in kinds {
                    labelled(out, name, id, Some(kind), value);
                }
            }
        }
    }
}

const POLLS: RowFamily = RowFamily {
    name: "thermostat_polls_total",
    kind: "counter",
    help: "Polls since start, failed ones included.",
    series: Series::Poll(|counters| counters.polls),
};

const FAILURES: RowFamily = RowFamily {
    name: "thermostat_poll_failures_total",
    kind: "counter",
    help: "Failed polls since start.",
    series: Series::Poll(|counters| counters.failures),
};

const ONLINE: RowFamily = RowFamily {
    name: "thermostat_online",
    kind: "gauge",
    help: "1 while the thermostat answers polls, 0 once it counts as offline.",
    series: Series::Poll(|counters| u64::from(counters.online)),
};

const DRIFT_EVENTS: RowFamily = RowFamily {
    name: "thermostat_drift_events_total",
    kind: "counter",
    help: "Differences from the desired state since start, by kind.",
    series: Series::DriftKinds,
};

const REAPPLIED: RowFamily = RowFamily {
    name: "thermostat_reapplied_total",
    kind: "counter",
    help: "Desired settings written again and read back as commanded.",
    series: Series::Desired(|desired| desired.counters.reapplied),
};

const REAPPLY_FAILURES: RowFamily = RowFamily {
    name: "thermostat_reapply_failures_total",
    kind: "counter",
    help: "Writes of the desired settings that failed.",
    series: Series::Desired(|desired| desired.counters.reapply_failures),
};

const COALESCED: RowFamily = RowFamily {
    name: "thermostat_commands_coalesced_total",
    kind: "counter",
    help: "Commands merged into a change already waiting for the thermostat.",
    series: Series::Desired(|desired| desired.counters.coalesced_commands),
};

const HOLDING: RowFamily = RowFamily {
    name: "thermostat_holding_settings",
    kind: "gauge",
    help: "1 while the thermostat keeps its desired settings, 0 after the retry budget ran out.",
    series: Series::Desired(|desired| u64::from(desired.holding_settings)),
};

/// Writes `name{thermostat_id="id"} value`, with `kind="kind"` after the uuid if given.
fn labelled(out: &mut String, name: &str, id: &ThermostatId, kind: Option<&str>, value: u64) {
    let id = escape(id.as_str());
    let _ = match kind {
        Some(kind) => writeln!(
            out,
            "{name}{{thermostat_id=\"{id}\",kind=\"{kind}\"}} {value}"
        ),
        None => writeln!(out, "{name}{{thermostat_id=\"{id}\"}} {value}"),
    };
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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, series: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{series} {value}");
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
            statuses: vec![(id.clone(), PollCounters::from(&status))],
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
                DesiredCounters {
                    holding_settings: false,
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

    /// Builds an input whose fleet spans several pieces of every family per thermostat.
    fn fleet_input(size: usize) -> MetricsInput {
        let mut input = input();
        let (_, status) = input.statuses[0];
        let (_, desired) = input.desired[0];
        let ids = (0..size).map(|n| ThermostatId::parse(&format!("5cdad4{n:06}")).expect("id"));
        input.statuses = ids.clone().map(|id| (id, status)).collect();
        input.desired = ids.map(|id| (id, desired)).collect();
        input
    }

    #[test]
    fn pieces_make_the_whole_page_and_its_length() {
        let input = fleet_input(ROWS_PER_PIECE * 2 + 5);
        let whole = render(&input);
        let Body::Pieces { length, pieces } = body(input.clone()) else {
            panic!("the page is not sent in pieces");
        };
        let pieces: Vec<String> = pieces.collect();
        assert_eq!(length, whole.len());
        assert_eq!(pieces.concat(), whole);
        assert!(pieces.iter().all(|piece| piece.ends_with('\n')));
        // Eight families of three pieces each, then build info, histograms and the rest.
        assert_eq!(pieces.len(), 8 * 3 + 3);
        let max_lines = 4 * ROWS_PER_PIECE + 2;
        assert!(
            pieces
                .iter()
                .all(|piece| piece.lines().count() <= max_lines),
            "a piece holds more than {ROWS_PER_PIECE} thermostats"
        );
        let last = "thermostat_holding_settings{thermostat_id=\"5cdad4000132\"} 0";
        assert_eq!(whole.lines().filter(|line| *line == last).count(), 1);
        for name in ["thermostat_polls_total", "thermostat_drift_events_total"] {
            let headers = format!("# TYPE {name} ");
            assert_eq!(whole.matches(&headers).count(), 1, "{name}");
        }
        let drift = whole
            .lines()
            .filter(|line| line.starts_with("thermostat_drift_events_total{"))
            .count();
        assert_eq!(drift, 4 * input.desired.len());
    }

    #[test]
    fn body_reader_returns_every_piece() {
        use std::io::Read;
        let input = fleet_input(ROWS_PER_PIECE + 1);
        let whole = render(&input);
        let (length, mut reader) = body(input).into_reader();
        let mut text = String::new();
        reader.read_to_string(&mut text).expect("read the body");
        assert_eq!(length, text.len());
        assert_eq!(text, whole);
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
