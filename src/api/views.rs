//! JSON bodies of the read routes: thermostats with their newest state and polling
//! status, and the configuration with every secret redacted. Pure.

use serde_json::{Value, json};

use crate::config::{Config, Secret};
use crate::poll::ThermostatStatus;
use crate::reading::ThermostatState;
use crate::store::ThermostatOverview;

/// Returns the state read most recently, from the database row or from the live status
/// board, with its time and the outside temperature stored beside it.
pub fn newest_state(
    overview: Option<&ThermostatOverview>,
    status: Option<&ThermostatStatus>,
) -> Option<(jiff::Timestamp, ThermostatState, Option<f64>)> {
    let stored = overview
        .and_then(|overview| overview.current.as_ref())
        .map(|current| (current.ts, current.state, current.local_temp));
    let live = status.and_then(|status| status.last_state);
    match (stored, live) {
        (Some(stored), Some((ts, state))) if ts > stored.0 => Some((ts, state, stored.2)),
        (Some(stored), _) => Some(stored),
        (None, Some((ts, state))) => Some((ts, state, None)),
        (None, None) => None,
    }
}

/// Builds the JSON of one thermostat state.
pub fn state_json(ts: jiff::Timestamp, state: &ThermostatState, local_temp: Option<f64>) -> Value {
    json!({
        "ts": ts.to_string(),
        "temp": state.temp,
        "t_heat": state.t_heat,
        "t_cool": state.t_cool,
        "tmode": state.tmode.map(|mode| mode.code()),
        "tmode_name": state.tmode.map(|mode| mode.name()),
        "fmode": state.fmode.map(|mode| mode.code()),
        "tstate": state.tstate.map(|tstate| tstate.code()),
        "tstate_name": state.tstate.map(tstate_name),
        "fstate": state.fstate,
        "hold": state.hold,
        "override": state.override_active,
        "local_temp": local_temp,
    })
}

/// Reads a state back from [`state_json`]'s form, for clients of the API such as the
/// command line. Missing or invalid fields become `None`.
pub fn state_from_json(value: &Value) -> ThermostatState {
    use crate::reading::{Fmode, Tmode, Tstate};
    let code = |key: &str| value.get(key).and_then(Value::as_i64);
    ThermostatState {
        temp: value.get("temp").and_then(Value::as_f64),
        t_heat: value.get("t_heat").and_then(Value::as_f64),
        t_cool: value.get("t_cool").and_then(Value::as_f64),
        tmode: code("tmode").and_then(Tmode::from_code),
        fmode: code("fmode").and_then(Fmode::from_code),
        tstate: code("tstate").and_then(Tstate::from_code),
        fstate: value.get("fstate").and_then(Value::as_bool),
        hold: value.get("hold").and_then(Value::as_bool),
        override_active: value.get("override").and_then(Value::as_bool),
    }
}

/// Builds the JSON of a clock sync's outcome: `outcome` is `synced`, `restored` (with
/// the `target` °F put back) or `skipped` (with the `reason`).
pub fn clock_outcome_json(outcome: &crate::discovery::setup::ClockOutcome) -> Value {
    use crate::discovery::setup::ClockOutcome;
    match outcome {
        ClockOutcome::Synced => json!({ "outcome": "synced" }),
        ClockOutcome::Restored { target } => json!({ "outcome": "restored", "target": target }),
        ClockOutcome::Skipped(reason) => json!({ "outcome": "skipped", "reason": reason }),
    }
}

pub fn tstate_name(tstate: crate::reading::Tstate) -> &'static str {
    match tstate {
        crate::reading::Tstate::Idle => "idle",
        crate::reading::Tstate::Heating => "heating",
        crate::reading::Tstate::Cooling => "cooling",
    }
}

/// Builds the JSON of one thermostat: its stored row, newest state and polling status.
pub fn thermostat_json(overview: &ThermostatOverview, status: Option<&ThermostatStatus>) -> Value {
    let record = &overview.record;
    let state = newest_state(Some(overview), status)
        .map(|(ts, state, local_temp)| state_json(ts, &state, local_temp));
    json!({
        "thermostat_id": record.id.as_str(),
        "name": record.name,
        "model": record.model,
        "ip_address": record.address.to_string(),
        "api_version": record.api_version,
        "fw_version": record.fw_version,
        "capabilities": record.capabilities,
        "discovery_method": record.discovery_method,
        "active": record.active,
        "away_temp": record.away_temp,
        "first_seen": record.first_seen.map(|ts| ts.to_string()),
        "last_seen": record.last_seen.map(|ts| ts.to_string()),
        "polling": status.map(polling_json),
        "state": state,
    })
}

/// Builds the desired-state part of a thermostat's view: `desired` (the commanded
/// settings, who commanded them and when), `policy`, `holding_settings` and `drift`
/// (the fields that differ now and the counters since start).
pub fn desired_json(snapshot: &crate::desired::DesiredSnapshot) -> Value {
    let settings = &snapshot.settings;
    let counters = &snapshot.counters;
    json!({
        "desired": {
            "tmode": settings.tmode.map(|mode| mode.code()),
            "t_heat": settings.t_heat,
            "t_cool": settings.t_cool,
            "fmode": settings.fmode.map(|mode| mode.code()),
            "hold": settings.hold,
            "source": snapshot.source,
            "commanded_at": snapshot.commanded_at.map(|ts| ts.to_string()),
        },
        "policy": snapshot.policy.name(),
        "holding_settings": snapshot.holding_settings,
        "drift": {
            "fields": snapshot.drift_fields,
            "wall_changes": counters.wall_changes,
            "device_resets": counters.resets,
            "dropped_writes": counters.dropped_writes,
            "clock_jumps": counters.clock_jumps,
            "reapplied": counters.reapplied,
            "reapply_failures": counters.reapply_failures,
            "failed_reapplies_in_a_row": snapshot.failed_reapplies,
            "coalesced_commands": counters.coalesced_commands,
        },
    })
}

/// Builds the JSON of a thermostat's polling status.
pub fn polling_json(status: &ThermostatStatus) -> Value {
    json!({
        "online": status.online,
        "consecutive_failures": status.consecutive_failures,
        "polls": status.polls,
        "failures": status.failures,
        "last_success": status.last_success.map(|ts| ts.to_string()),
        "last_error": status.last_error,
    })
}

/// Builds the configuration as `GET /api/system/config` shows it: every key, with each
/// secret replaced by whether it is set, and a password in the database URL redacted.
pub fn config_json(config: &Config) -> Value {
    let secret = |value: &Option<Secret>| if value.is_some() { "set" } else { "not set" };
    let secrets = &config.secrets;
    json!({
        "site": {
            "site_id": config.site.site_id,
            "name": config.site.name,
            "time_zone": config.site.time_zone.iana_name(),
        },
        "database": {
            "url": redact_database_url(&config.database.url),
            "buffer_readings": config.database.buffer_readings,
            "flush_interval_ms": config.database.flush_interval.as_millis() as u64,
            "connect_timeout_seconds": config.database.connect_timeout.as_secs(),
        },
        "polling": {
            "interval_seconds": config.polling.interval.as_secs_f64(),
            "request_timeout_seconds": config.polling.request_timeout.as_secs_f64(),
            "min_request_gap_ms": config.polling.min_request_gap.as_millis() as u64,
            "offline_after_failures": config.polling.offline_after_failures,
            "max_backoff_seconds": config.polling.max_backoff.as_secs(),
        },
        "thermostats": {
            "addresses": config.thermostats.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "policy": config.thermostats.policies.default.name(),
            "policy_overrides": config
                .thermostats
                .policies
                .overrides
                .iter()
                .map(|(uuid, policy)| (uuid.clone(), Value::from(policy.name())))
                .collect::<serde_json::Map<_, _>>(),
        },
        "retention": {
            "raw_days": config.retention.raw_days,
            "minute_days": config.retention.minute_days,
            "hour": config.retention.hour,
        },
        "api": {
            "listen": config.api.listen.to_string(),
            "allowed_hosts": config.api.allowed_hosts,
        },
        "log": { "level": config.log.level.to_string().to_ascii_lowercase() },
        "secrets": {
            "env_file": secrets.env_file.as_ref().map(|path| path.display().to_string()),
            "database_password": secret(&secrets.database_password),
            "site_token": secret(&secrets.site_token),
            "weather_api_key": secret(&secrets.weather_api_key),
            "api_token": secret(&secrets.api_token),
        },
    })
}

/// Replaces the password of a `postgresql://user:password@host/db` URL or of a
/// `password=...` pair with `<redacted>`.
pub fn redact_database_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((user_info, host)) = authority.rsplit_once('@')
            && let Some((user, _password)) = user_info.split_once(':')
        {
            return format!("{scheme}://{user}:<redacted>@{host}{tail}");
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=<redacted>"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json() {
        use crate::reading::{Fmode, Tmode, Tstate};
        let state = ThermostatState {
            temp: Some(71.5),
            t_heat: Some(68.0),
            t_cool: None,
            tmode: Some(Tmode::Heat),
            fmode: Some(Fmode::Auto),
            tstate: Some(Tstate::Heating),
            fstate: Some(true),
            hold: Some(false),
            override_active: Some(true),
        };
        let ts = jiff::Timestamp::UNIX_EPOCH;
        assert_eq!(state_from_json(&state_json(ts, &state, None)), state);
    }

    #[test]
    fn url_password_redacted() {
        assert_eq!(
            redact_database_url("postgresql://thermo:hunter2@127.0.0.1:5432/db?sslmode=disable"),
            "postgresql://thermo:<redacted>@127.0.0.1:5432/db?sslmode=disable"
        );
    }

    #[test]
    fn url_without_password_unchanged() {
        let url = "postgresql://thermo@127.0.0.1/db";
        assert_eq!(redact_database_url(url), url);
    }

    #[test]
    fn key_value_password_redacted() {
        assert_eq!(
            redact_database_url("host=/run/pg password=hunter2 dbname=x"),
            "host=/run/pg password=<redacted> dbname=x"
        );
    }

    #[test]
    fn config_shows_no_secret_value() {
        let mut config = Config::new("site", "postgresql://u:dbpass@127.0.0.1/db");
        config.secrets.database_password = Some(Secret::new("pw-value-1"));
        config.secrets.site_token = Some(Secret::new("site-token-2"));
        config.secrets.weather_api_key = Some(Secret::new("weather-key-3"));
        config.secrets.api_token = Some(Secret::new("api-token-4"));
        let text = config_json(&config).to_string();
        for secret in [
            "dbpass",
            "pw-value-1",
            "site-token-2",
            "weather-key-3",
            "api-token-4",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn config_says_which_secrets_are_set() {
        let mut config = Config::new("site", "postgresql://u@127.0.0.1/db");
        config.secrets.api_token = Some(Secret::new("x"));
        let view = config_json(&config);
        assert_eq!(view["secrets"]["api_token"], "set");
        assert_eq!(view["secrets"]["site_token"], "not set");
    }
}
