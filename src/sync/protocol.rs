//! The JSON bodies of the public server protocol, version 1. Pure: building a body does
//! no I/O.
//!
//! Timestamps are RFC 3339 in UTC with microsecond precision, which is what PostgreSQL
//! stores, so a resent reading carries the same `ts`. Mode codes are the device
//! protocol's integers, and `fstate`, `hold` and `override` are 0 or 1 as on the device.
//! A field the thermostat did not report is `null`.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::reading::{Reading, ThermostatState};
use crate::thermostat::ThermostatRecord;

/// Paths under `/api/v1/sites/{site_id}`.
pub const REGISTER_PATH: &str = "/thermostats/register";
pub const STATUS_PATH: &str = "/status";
pub const MINUTE_PATH: &str = "/minute";
pub const PENDING_COMMANDS_PATH: &str = "/commands/pending";
pub const RESULTS_PATH: &str = "/commands/results";

/// Formats `ts` as RFC 3339 UTC, cut to whole microseconds.
pub fn format_ts(ts: Timestamp) -> String {
    let micros = ts.as_microsecond();
    Timestamp::from_microsecond(micros)
        .unwrap_or(ts)
        .to_string()
}

fn flag(value: Option<bool>) -> Option<u8> {
    value.map(u8::from)
}

/// One element of the `readings` array of `POST /status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReading {
    pub thermostat_id: String,
    pub ts: String,
    pub temp: Option<f64>,
    pub t_heat: Option<f64>,
    pub t_cool: Option<f64>,
    pub tmode: Option<i16>,
    pub fmode: Option<i16>,
    pub tstate: Option<i16>,
    pub fstate: Option<u8>,
    pub hold: Option<u8>,
    #[serde(rename = "override")]
    pub override_active: Option<u8>,
    pub local_temp: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_fields: Option<Vec<String>>,
}

impl StatusReading {
    /// Builds the element for a stored state, without change fields (snapshots).
    pub fn from_state(
        thermostat_id: &str,
        ts: Timestamp,
        state: &ThermostatState,
        local_temp: Option<f64>,
    ) -> Self {
        Self {
            thermostat_id: thermostat_id.to_string(),
            ts: format_ts(ts),
            temp: state.temp,
            t_heat: state.t_heat,
            t_cool: state.t_cool,
            tmode: state.tmode.map(|mode| mode.code()),
            fmode: state.fmode.map(|mode| mode.code()),
            tstate: state.tstate.map(|mode| mode.code()),
            fstate: flag(state.fstate),
            hold: flag(state.hold),
            override_active: flag(state.override_active),
            local_temp,
            change_type: None,
            changed_fields: None,
        }
    }

    /// Builds the element for a reading, with its change when it carries one.
    pub fn from_reading(reading: &Reading) -> Self {
        let mut element = Self::from_state(
            reading.thermostat_id.as_str(),
            reading.ts,
            &reading.state,
            reading.local_temp,
        );
        if let Some(change) = &reading.change {
            element.change_type = Some(change.change_type.as_str().to_string());
            element.changed_fields = Some(
                change
                    .fields
                    .iter()
                    .map(|field| field.to_string())
                    .collect(),
            );
        }
        element
    }
}

/// Returns whether a reading goes to the state-change outbox: it carries a change other
/// than the first reading after start-up. The next snapshot reports that first state
/// within 30 s, and queueing it would resend every thermostat after each restart.
pub fn is_outbox_change(reading: &Reading) -> bool {
    reading
        .change
        .as_ref()
        .is_some_and(|change| change.change_type != crate::reading::ChangeType::Initial)
}

/// The kind of a `POST /status` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    StateChange,
    Snapshot,
}

impl StatusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StateChange => "state_change",
            Self::Snapshot => "snapshot",
        }
    }
}

/// Builds the body of `POST /status` from reading elements already in JSON form.
pub fn status_body(kind: StatusKind, sent_at: Timestamp, readings: Vec<Value>) -> Value {
    json!({
        "kind": kind.as_str(),
        "sent_at": format_ts(sent_at),
        "readings": readings,
    })
}

/// One element of the `readings` array of `POST /minute`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteReading {
    pub thermostat_id: String,
    pub minute_ts: String,
    pub temp_avg: Option<f64>,
    pub t_heat_last: Option<f64>,
    pub t_cool_last: Option<f64>,
    pub tmode_last: Option<i16>,
    pub hvac_runtime_percent: Option<f64>,
    pub poll_count: i32,
    pub poll_failures: i32,
    pub local_temp_avg: Option<f64>,
}

/// Builds the body of `POST /minute`. The batch id names the first and last row, so a
/// resent batch carries the same id.
pub fn minute_body(readings: &[MinuteReading]) -> Value {
    let batch_id = match (readings.first(), readings.last()) {
        (Some(first), Some(last)) => format!(
            "{}/{}..{}/{}",
            first.minute_ts, first.thermostat_id, last.minute_ts, last.thermostat_id
        ),
        _ => String::new(),
    };
    json!({ "batch_id": batch_id, "readings": readings })
}

/// Builds the body of `POST /thermostats/register`.
pub fn register_body(records: &[ThermostatRecord]) -> Value {
    let thermostats: Vec<Value> = records
        .iter()
        .map(|record| {
            json!({
                "thermostat_id": record.id.as_str(),
                "name": record.name,
                "model": record.model,
                "ip_address": record.address.to_string(),
                "api_version": record.api_version,
                "fw_version": record.fw_version,
                "capabilities": record.capabilities,
                "discovery_method": record.discovery_method,
                "away_temp": record.away_temp,
                "active": record.active,
            })
        })
        .collect();
    json!({ "thermostats": thermostats })
}

/// Final or progress state of a command, as `POST /commands/results` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    InProgress,
    Completed,
    Failed,
    Rejected,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "inprogress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }
}

/// Builds one element of the `results` array of `POST /commands/results`.
pub fn result_entry(
    command_id: &str,
    status: ResultStatus,
    executed_at: Timestamp,
    result: Value,
    error: Option<&str>,
) -> Value {
    json!({
        "command_id": command_id,
        "status": status.as_str(),
        "executed_at": format_ts(executed_at),
        "result": result,
        "error": error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{ChangeType, StateChange, Tmode};
    use crate::thermostat::ThermostatId;

    fn reading(change: Option<StateChange>) -> Reading {
        Reading {
            thermostat_id: ThermostatId::parse("5cdad4a0a0a1").expect("valid id"),
            ts: "2026-01-02T03:04:05.123456789Z".parse().expect("valid ts"),
            state: ThermostatState {
                temp: Some(70.5),
                tmode: Some(Tmode::Heat),
                hold: Some(true),
                ..ThermostatState::default()
            },
            local_temp: None,
            change,
        }
    }

    #[test]
    fn ts_cut_to_microseconds() {
        let ts: Timestamp = "2026-01-02T03:04:05.123456789Z".parse().expect("valid ts");
        assert_eq!(format_ts(ts), "2026-01-02T03:04:05.123456Z");
    }

    #[test]
    fn reading_element_has_flags_as_integers() {
        let element =
            serde_json::to_value(StatusReading::from_reading(&reading(None))).expect("serializes");
        assert_eq!(element["hold"], json!(1));
        assert_eq!(element["tmode"], json!(1));
        assert_eq!(element["t_cool"], Value::Null);
    }

    #[test]
    fn reading_element_without_change_has_no_change_type() {
        let element =
            serde_json::to_value(StatusReading::from_reading(&reading(None))).expect("serializes");
        assert!(element.get("change_type").is_none());
    }

    #[test]
    fn reading_element_carries_change() {
        let change = StateChange {
            change_type: ChangeType::Setpoint,
            fields: vec!["t_heat"],
        };
        let element = serde_json::to_value(StatusReading::from_reading(&reading(Some(change))))
            .expect("serializes");
        assert_eq!(element["change_type"], json!("setpoint"));
        assert_eq!(element["changed_fields"], json!(["t_heat"]));
    }

    #[test]
    fn initial_reading_not_in_outbox() {
        let change = StateChange {
            change_type: ChangeType::Initial,
            fields: vec![],
        };
        assert!(!is_outbox_change(&reading(Some(change))));
    }

    #[test]
    fn mode_change_in_outbox() {
        let change = StateChange {
            change_type: ChangeType::Mode,
            fields: vec!["tmode"],
        };
        assert!(is_outbox_change(&reading(Some(change))));
    }

    #[test]
    fn minute_batch_id_names_first_and_last_row() {
        let row = |minute: &str, id: &str| MinuteReading {
            thermostat_id: id.to_string(),
            minute_ts: minute.to_string(),
            temp_avg: None,
            t_heat_last: None,
            t_cool_last: None,
            tmode_last: None,
            hvac_runtime_percent: None,
            poll_count: 12,
            poll_failures: 0,
            local_temp_avg: None,
        };
        let body = minute_body(&[row("m1", "a"), row("m2", "b")]);
        assert_eq!(body["batch_id"], json!("m1/a..m2/b"));
    }
}
