//! Commands from the public server: the envelope, validation into a [`Command`], and the
//! reasons a command is rejected. Pure: the caller passes what it has stored about
//! the thermostats.

use std::time::Duration;

use serde_json::Value;

use crate::control::{SETPOINT_RANGE, SettingsChange, round_setpoint};
use crate::thermostat::ThermostatId;

/// Maximum length of a command id. A longer id is skipped, because a result could not
/// name it.
pub const MAX_COMMAND_ID_LEN: usize = 128;

/// Discovery methods that `discover_devices` may name.
pub const DISCOVERY_METHODS: &[&str] = &["database", "udp", "tcp"];

/// Range of `timeout_seconds` accepted for `discover_devices`.
pub const DISCOVERY_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=600;

/// Most address ranges one `discover_devices` request may name. Each range is capped
/// at `MAX_RANGE_ADDRESSES`, so this bounds a scan the public server can order.
pub const MAX_SCAN_RANGES: usize = 16;

/// One element of `commands` from `GET /commands/pending`, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub command_id: String,
    pub command: String,
    pub thermostat_id: Option<String>,
    pub params: Value,
    pub issued_at: Option<String>,
}

/// A validated command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SetState {
        thermostat_id: ThermostatId,
        change: SettingsChange,
    },
    SetAwayTemp {
        thermostat_id: ThermostatId,
        /// °F, rounded to 0.5.
        away_temp: f64,
    },
    DiscoverDevices(DiscoveryRequest),
}

/// The parameters of `discover_devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryRequest {
    /// Methods to run, in the order given; all of [`DISCOVERY_METHODS`] when unset.
    pub methods: Vec<String>,
    /// Address ranges or CIDR blocks for the TCP scan, as the server wrote them.
    pub ip_ranges: Vec<String>,
    pub timeout: Option<Duration>,
}

/// Reads the envelope of one pending command. Fails only when there is no usable
/// `command_id`, because without one no result can be sent.
pub fn parse_envelope(value: &Value) -> Result<Envelope, String> {
    let command_id = match value.get("command_id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_COMMAND_ID_LEN => id.clone(),
        Some(Value::String(id)) if id.is_empty() => {
            return Err("command_id is empty".to_string());
        }
        Some(Value::String(_)) => {
            return Err(format!(
                "command_id is longer than {MAX_COMMAND_ID_LEN} characters"
            ));
        }
        Some(other) => return Err(format!("command_id is not a string: {other}")),
        None => return Err("command_id is missing".to_string()),
    };

    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    Ok(Envelope {
        command_id,
        command: text("command").unwrap_or_default(),
        thermostat_id: text("thermostat_id"),
        params: value.get("params").cloned().unwrap_or(Value::Null),
        issued_at: text("issued_at"),
    })
}

/// Validates `envelope`. `is_known` returns whether a thermostat id is registered at this
/// site. The error is the message sent with the `rejected` result.
pub fn validate(
    envelope: &Envelope,
    is_known: &dyn Fn(&ThermostatId) -> bool,
) -> Result<Command, String> {
    match envelope.command.as_str() {
        "set_state" => {
            let thermostat_id = known_thermostat(envelope, is_known)?;
            let change = SettingsChange::from_json(&envelope.params)
                .map_err(|error| format!("invalid set_state params: {error}"))?;
            Ok(Command::SetState {
                thermostat_id,
                change,
            })
        }
        "set_away_temp" => {
            let thermostat_id = known_thermostat(envelope, is_known)?;
            let away_temp = parse_away_temp(&envelope.params)?;
            Ok(Command::SetAwayTemp {
                thermostat_id,
                away_temp,
            })
        }
        "discover_devices" => parse_discovery(&envelope.params).map(Command::DiscoverDevices),
        "" => Err(
            "command is missing; expected set_state, set_away_temp or discover_devices".to_string(),
        ),
        other => Err(format!(
            "unknown command {:?}; expected set_state, set_away_temp or discover_devices",
            cut(other)
        )),
    }
}

/// Most commands one `GET /commands/pending` response may carry. A site gets a few at a
/// time; a longer list is a server fault, and the whole list is refused rather than
/// partly run.
pub const MAX_PENDING_COMMANDS: usize = 100;

/// Entries without a usable id logged one by one per response; the rest are counted.
const SKIPPED_LOGGED: usize = 3;

/// Reads the envelopes of `{"commands":[...]}`, logging and skipping the ones without a
/// usable id, because no result can name them. A response that is not JSON, has no
/// `commands` array or lists more than `MAX_PENDING_COMMANDS` yields nothing.
pub fn parse_pending(body: &[u8]) -> Vec<Envelope> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => {
            log::error!(
                "command poll: the response is not JSON ({} bytes): {error}; running none of it",
                body.len()
            );
            return Vec::new();
        }
    };
    let Some(commands) = value.get("commands").and_then(Value::as_array) else {
        log::error!("command poll: the response has no \"commands\" array; ignoring it");
        return Vec::new();
    };
    if commands.len() > MAX_PENDING_COMMANDS {
        log::error!(
            "command poll: the response lists {} commands, more than the {MAX_PENDING_COMMANDS} \
             a poll accepts; running none of them (the public server must send fewer at a time)",
            commands.len()
        );
        return Vec::new();
    }

    let mut envelopes = Vec::with_capacity(commands.len());
    let mut skipped = 0;
    for command in commands {
        match parse_envelope(command) {
            Ok(envelope) => envelopes.push(envelope),
            Err(error) => {
                skipped += 1;
                if skipped <= SKIPPED_LOGGED {
                    log::error!(
                        "command poll: skipping a command that no result could name: {error}"
                    );
                }
            }
        }
    }
    if skipped > SKIPPED_LOGGED {
        log::error!("command poll: skipped {skipped} commands that no result could name");
    }
    envelopes
}

fn cut(text: &str) -> String {
    text.chars().take(40).collect()
}

fn known_thermostat(
    envelope: &Envelope,
    is_known: &dyn Fn(&ThermostatId) -> bool,
) -> Result<ThermostatId, String> {
    let Some(raw) = envelope.thermostat_id.as_deref() else {
        return Err(format!(
            "thermostat_id is missing; {} needs the thermostat's uuid",
            envelope.command
        ));
    };
    let id = ThermostatId::parse(raw).map_err(|error| error.to_string())?;
    if !is_known(&id) {
        return Err(format!(
            "unknown thermostat {id}: no active thermostat with that uuid at this site"
        ));
    }
    Ok(id)
}

fn parse_away_temp(params: &Value) -> Result<f64, String> {
    let Some(object) = params.as_object() else {
        return Err("invalid set_away_temp params: expected a JSON object".to_string());
    };
    if let Some(unknown) = object.keys().find(|key| key.as_str() != "away_temp") {
        return Err(format!(
            "invalid set_away_temp params: unknown field {:?}; the only field is away_temp",
            cut(unknown)
        ));
    }
    let Some(value) = object.get("away_temp") else {
        return Err("invalid set_away_temp params: away_temp is missing".to_string());
    };
    let Some(number) = value.as_f64() else {
        return Err(format!(
            "invalid away_temp: expected a number of °F, found {value}"
        ));
    };
    if !SETPOINT_RANGE.contains(&number) {
        return Err(format!(
            "invalid away_temp: expected {} to {} °F, found {number}",
            SETPOINT_RANGE.start(),
            SETPOINT_RANGE.end()
        ));
    }
    Ok(round_setpoint(number))
}

pub(crate) fn parse_discovery(params: &Value) -> Result<DiscoveryRequest, String> {
    let object = match params {
        Value::Null => return Ok(default_discovery()),
        Value::Object(object) => object,
        other => {
            return Err(format!(
                "invalid discover_devices params: expected a JSON object, found {other}"
            ));
        }
    };

    let mut request = default_discovery();
    for (key, value) in object {
        match key.as_str() {
            "methods" => request.methods = parse_methods(value)?,
            "ip_ranges" => {
                let ranges = parse_strings(value, "ip_ranges")?;
                if ranges.len() > MAX_SCAN_RANGES {
                    return Err(format!(
                        "invalid ip_ranges: {} ranges is more than the limit of \
                         {MAX_SCAN_RANGES}; name the subnets that hold thermostats",
                        ranges.len()
                    ));
                }
                request.ip_ranges = ranges;
            }
            "timeout_seconds" => request.timeout = Some(parse_timeout(value)?),
            other => {
                return Err(format!(
                    "invalid discover_devices params: unknown field {:?}; the fields are \
                     methods, ip_ranges and timeout_seconds",
                    cut(other)
                ));
            }
        }
    }
    Ok(request)
}

fn default_discovery() -> DiscoveryRequest {
    DiscoveryRequest {
        methods: DISCOVERY_METHODS.iter().map(|m| m.to_string()).collect(),
        ip_ranges: Vec::new(),
        timeout: None,
    }
}

fn parse_methods(value: &Value) -> Result<Vec<String>, String> {
    let methods = parse_strings(value, "methods")?;
    if methods.is_empty() {
        return Err("invalid methods: the list is empty; name database, udp or tcp".to_string());
    }
    if let Some(unknown) = methods
        .iter()
        .find(|method| !DISCOVERY_METHODS.contains(&method.as_str()))
    {
        return Err(format!(
            "invalid methods: unknown method {:?}; expected database, udp or tcp",
            cut(unknown)
        ));
    }
    Ok(methods)
}

fn parse_strings(value: &Value, field: &str) -> Result<Vec<String>, String> {
    let Some(items) = value.as_array() else {
        return Err(format!(
            "invalid {field}: expected an array of strings, found {value}"
        ));
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("invalid {field}: expected strings, found {item}"))
        })
        .collect()
}

fn parse_timeout(value: &Value) -> Result<Duration, String> {
    let seconds = value
        .as_u64()
        .filter(|s| DISCOVERY_TIMEOUT_RANGE.contains(s));
    seconds.map(Duration::from_secs).ok_or_else(|| {
        format!(
            "invalid timeout_seconds: expected a whole number from {} to {}, found {value}",
            DISCOVERY_TIMEOUT_RANGE.start(),
            DISCOVERY_TIMEOUT_RANGE.end()
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pending_skips_commands_without_id() {
        let body = br#"{"commands":[{"command":"set_state"},{"command_id":"c2","command":"x"}]}"#;
        let envelopes = parse_pending(body);
        let ids: Vec<&str> = envelopes.iter().map(|e| e.command_id.as_str()).collect();
        assert_eq!(ids, vec!["c2"]);
    }

    #[test]
    fn pending_refuses_a_list_over_the_limit() {
        let entry = |n: usize| json!({"command_id": format!("c{n}"), "command": "x"});
        let within: Vec<Value> = (0..MAX_PENDING_COMMANDS).map(entry).collect();
        let body = json!({ "commands": within }).to_string();
        assert_eq!(parse_pending(body.as_bytes()).len(), MAX_PENDING_COMMANDS);

        let over: Vec<Value> = (0..=MAX_PENDING_COMMANDS).map(entry).collect();
        let body = json!({ "commands": over }).to_string();
        assert!(parse_pending(body.as_bytes()).is_empty());
    }

    #[test]
    fn pending_with_trailing_garbage_runs_nothing() {
        let body = br#"{"commands":[{"command_id":"c1","command":"set_state"}]} trailing"#;
        assert!(parse_pending(body).is_empty());
    }

    #[test]
    fn pending_ignores_non_json() {
        assert!(parse_pending(b"<html>").is_empty());
    }

    const KNOWN: &str = "5cdad4a0a0a1";

    fn envelope(value: Value) -> Envelope {
        parse_envelope(&value).expect("valid envelope")
    }

    fn check(value: Value) -> Result<Command, String> {
        let known = |id: &ThermostatId| id.as_str() == KNOWN;
        validate(&envelope(value), &known)
    }

    #[test]
    fn envelope_without_id_unanswerable() {
        let error = parse_envelope(&json!({"command":"set_state"})).expect_err("no id");
        assert!(error.contains("command_id is missing"), "{error}");
    }

    #[test]
    fn set_state_rounds_setpoint() {
        let command = check(json!({"command_id":"c1","command":"set_state",
            "thermostat_id":KNOWN,"params":{"t_heat":68.3}}))
        .expect("valid");
        let Command::SetState { change, .. } = command else {
            panic!("expected set_state, got {command:?}");
        };
        assert_eq!(change.t_heat, Some(68.5));
    }

    #[test]
    fn unknown_thermostat_rejected() {
        let error = check(json!({"command_id":"c1","command":"set_state",
            "thermostat_id":"ffffffffffff","params":{"tmode":1}}))
        .expect_err("unknown thermostat");
        assert!(error.contains("unknown thermostat ffffffffffff"), "{error}");
    }

    #[test]
    fn out_of_range_setpoint_rejected() {
        let error = check(json!({"command_id":"c1","command":"set_state",
            "thermostat_id":KNOWN,"params":{"t_heat":120}}))
        .expect_err("out of range");
        assert!(error.contains("t_heat"), "{error}");
    }

    #[test]
    fn unknown_command_rejected() {
        let error = check(json!({"command_id":"c1","command":"reboot"})).expect_err("unknown");
        assert!(error.contains("unknown command \"reboot\""), "{error}");
    }

    #[test]
    fn malformed_params_rejected() {
        let error = check(json!({"command_id":"c1","command":"set_state",
            "thermostat_id":KNOWN,"params":"hot"}))
        .expect_err("params not an object");
        assert!(error.contains("invalid set_state params"), "{error}");
    }

    #[test]
    fn away_temp_parsed_and_rounded() {
        let command = check(json!({"command_id":"c1","command":"set_away_temp",
            "thermostat_id":KNOWN,"params":{"away_temp":61.2}}))
        .expect("valid");
        assert!(matches!(command, Command::SetAwayTemp { away_temp, .. } if away_temp == 61.0));
    }

    #[test]
    fn away_temp_out_of_range_rejected() {
        let error = check(json!({"command_id":"c1","command":"set_away_temp",
            "thermostat_id":KNOWN,"params":{"away_temp":20}}))
        .expect_err("out of range");
        assert!(error.contains("invalid away_temp"), "{error}");
    }

    #[test]
    fn discovery_defaults_to_every_method() {
        let command =
            check(json!({"command_id":"c1","command":"discover_devices"})).expect("valid");
        let Command::DiscoverDevices(request) = command else {
            panic!("expected discover_devices, got {command:?}");
        };
        assert_eq!(request.methods, vec!["database", "udp", "tcp"]);
    }

    #[test]
    fn discovery_too_many_ranges_rejected() {
        let ranges: Vec<String> = (0..=MAX_SCAN_RANGES)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        let error = parse_discovery(&json!({ "ip_ranges": ranges })).expect_err("17 ranges");
        assert!(error.contains("more than the limit"), "{error}");
        let ranges = &ranges[..MAX_SCAN_RANGES];
        assert!(parse_discovery(&json!({ "ip_ranges": ranges })).is_ok());
    }

    #[test]
    fn discovery_unknown_method_rejected() {
        let error = check(json!({"command_id":"c1","command":"discover_devices",
            "params":{"methods":["udp","ssdp"]}}))
        .expect_err("unknown method");
        assert!(error.contains("\"ssdp\""), "{error}");
    }

    #[test]
    fn discovery_timeout_out_of_range_rejected() {
        let error = check(json!({"command_id":"c1","command":"discover_devices",
            "params":{"timeout_seconds":0}}))
        .expect_err("zero timeout");
        assert!(error.contains("timeout_seconds"), "{error}");
    }
}
