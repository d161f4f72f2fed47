//! The two ways the command line reaches a thermostat. A thermostat's web server takes one
//! connection at a time, and the daemon's `DeviceLink` keeps that rule only inside the
//! daemon. So while the daemon's local API responds, every request goes through it and
//! the daemon's own link does the work. Otherwise the command line opens a `DeviceLink`
//! of its own. Both ways run the same code: `control::apply_change` for settings and
//! `discovery::setup::sync_clock` for the clock.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::api::views;
use crate::config::Config;
use crate::control::{SettingsChange, apply_change};
use crate::device::{
    DeviceLink, LinkOptions, ModelProfile, ProgramKind, WeekProgram, parse_program,
};
use crate::discovery::setup::{ClockOutcome, sync_clock};
use crate::reading::ThermostatState;
use crate::thermostat::ThermostatRecord;

/// Maximum wait to connect to the daemon's API and to send a request to it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Maximum wait for the daemon's response to the first probe. Its API workers may all
/// be busy with slow thermostats for a few seconds.
const PROBE_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum size of an API response read, in bytes.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// The outcome of a clock sync, from either path.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeSync {
    Synced,
    /// The write changed the setpoint and it was put back, °F.
    Restored(f64),
    Skipped(String),
}

impl From<ClockOutcome> for TimeSync {
    fn from(outcome: ClockOutcome) -> Self {
        match outcome {
            ClockOutcome::Synced => Self::Synced,
            ClockOutcome::Restored { target } => Self::Restored(target),
            ClockOutcome::Skipped(reason) => Self::Skipped(reason.to_string()),
        }
    }
}

impl TimeSync {
    /// Reads the body of `POST /api/thermostats/{id}/time-sync`.
    pub fn from_json(body: &Value) -> Result<Self, String> {
        match body["outcome"].as_str() {
            Some("synced") => Ok(Self::Synced),
            Some("restored") => Ok(Self::Restored(body["target"].as_f64().unwrap_or_default())),
            Some("skipped") => Ok(Self::Skipped(
                body["reason"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_string(),
            )),
            _ => Err(format!(
                "unexpected time-sync answer from the daemon: {body}"
            )),
        }
    }
}

/// A settings change that took effect.
#[derive(Debug, Clone, PartialEq)]
pub struct SetOutcome {
    pub state: ThermostatState,
    /// `POST /tstat` requests sent, retries included.
    pub writes: u64,
}

/// A failed request to the daemon's API.
#[derive(Debug, Clone, PartialEq)]
enum CallError {
    /// Nothing accepted the connection.
    Unreachable(String),
    /// The connection was accepted, but no complete response came before the deadline.
    Silent(String),
    /// The API responded with a status other than 2xx.
    Rejected(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(message) | Self::Silent(message) | Self::Rejected(message) => {
                f.write_str(message)
            }
        }
    }
}

/// The way to the thermostats for this run.
pub enum Reach {
    /// Through the running daemon's local API at `address`.
    Daemon {
        address: SocketAddr,
        token: Option<String>,
        /// Read timeout for one API call: the daemon's longest deadline (a settings
        /// change, or both program reads with their gaps) plus a margin.
        timeout: Duration,
    },
    /// Directly, with a `DeviceLink` of this process per thermostat.
    Direct {
        options: LinkOptions,
        time_zone: jiff::tz::TimeZone,
    },
}

impl Reach {
    /// Chooses the daemon when its API returns this program's `GET /api/system/info`,
    /// and direct requests when nothing accepts the connection. Anything else on that
    /// address is an error, a silent listener included, because direct requests beside
    /// a running daemon would give a thermostat two requests at once.
    pub fn detect(config: &Config) -> Result<Self, String> {
        let address = api_address(config.api.listen);
        let token = config
            .secrets
            .api_token
            .as_ref()
            .map(|secret| secret.expose().to_string());
        let daemon = Self::Daemon {
            address,
            token,
            timeout: (config.polling.request_timeout * 2)
                .max(config.polling.link_options().both_programs_time())
                + Duration::from_secs(15),
        };
        match daemon.call("GET", "/api/system/info", None, PROBE_ANSWER_TIMEOUT) {
            Ok(info) if info["name"] == env!("CARGO_PKG_NAME") => Ok(daemon),
            Ok(_) => Err(format!(
                "{address} (api.listen) is served by another program than thermostat-server; \
                 set api.listen to the daemon's address"
            )),
            Err(CallError::Unreachable(_)) => Ok(Self::Direct {
                options: config.polling.link_options(),
                time_zone: config.site.time_zone.clone(),
            }),
            Err(error) => Err(format!(
                "{error}; the daemon seems to run, so this command will not reach the \
                 thermostats past it: check api.listen and api.allowed_hosts"
            )),
        }
    }

    /// Returns true when this process talks to the thermostats itself.
    pub fn is_direct(&self) -> bool {
        matches!(self, Self::Direct { .. })
    }

    /// Says which way requests go, for the progress lines.
    pub fn describe(&self) -> String {
        match self {
            Self::Daemon { address, .. } => format!("through the running daemon at {address}"),
            Self::Direct { .. } => {
                "directly (the daemon's local API did not accept a connection)".to_string()
            }
        }
    }

    /// Reads the state now (`GET /tstat`).
    pub fn status(&self, target: &ThermostatRecord) -> Result<ThermostatState, String> {
        match self {
            Self::Daemon { .. } => {
                let body = self.thermostat_call("GET", target, "live", None)?;
                Ok(views::state_from_json(&body["state"]))
            }
            Self::Direct { options, .. } => {
                let link = link(target, *options);
                smol::block_on(link.read_state())
                    .map(|reply| reply.state)
                    .map_err(|error| error.to_string())
            }
        }
    }

    /// Applies `change` through `control::apply_change` and returns the read-back state.
    pub fn set(
        &self,
        target: &ThermostatRecord,
        change: &SettingsChange,
    ) -> Result<SetOutcome, String> {
        match self {
            Self::Daemon { .. } => {
                let body = super::args::change_body(change);
                let answer = self.thermostat_call("POST", target, "settings", Some(&body))?;
                Ok(SetOutcome {
                    state: views::state_from_json(&answer["state"]),
                    writes: answer["writes"].as_u64().unwrap_or_default(),
                })
            }
            Self::Direct { options, .. } => {
                let link = link(target, *options);
                let model = ModelProfile::from_model(&target.model);
                smol::block_on(apply_change(&link, model, change))
                    .map(|applied| SetOutcome {
                        state: applied.state,
                        writes: applied.writes as u64,
                    })
                    .map_err(|error| error.to_string())
            }
        }
    }

    /// Sets the clock to the site's local time unless a temporary setpoint would be lost.
    pub fn time_sync(&self, target: &ThermostatRecord) -> Result<TimeSync, String> {
        match self {
            Self::Daemon { .. } => {
                let body = self.thermostat_call("POST", target, "time-sync", None)?;
                TimeSync::from_json(&body)
            }
            Self::Direct { options, time_zone } => {
                let link = link(target, *options);
                let now = jiff::Timestamp::now().to_zoned_datetime(time_zone.clone());
                smol::block_on(sync_clock(&link, &now))
                    .map(TimeSync::from)
                    .map_err(|error| error.to_string())
            }
        }
    }

    /// Reads the heat and cool programs, one after the other with the link's program gap
    /// before, between and after them.
    pub fn schedule(
        &self,
        target: &ThermostatRecord,
    ) -> Result<(WeekProgram, WeekProgram), String> {
        match self {
            Self::Daemon { .. } => {
                let body = self.thermostat_call("GET", target, "program", None)?;
                let parse = |key: &str| {
                    parse_program(body[key].to_string().as_bytes())
                        .map_err(|error| format!("{key} program from the daemon: {error}"))
                };
                Ok((parse("heat")?, parse("cool")?))
            }
            Self::Direct { options, .. } => {
                let link = link(target, *options);
                smol::block_on(async {
                    let heat = link.read_program(ProgramKind::Heat).await?;
                    let cool = link.read_program(ProgramKind::Cool).await?;
                    Ok((heat, cool))
                })
                .map_err(|error: crate::device::DeviceError| error.to_string())
            }
        }
    }

    fn thermostat_call(
        &self,
        method: &str,
        target: &ThermostatRecord,
        action: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let Self::Daemon { timeout, .. } = self else {
            return Err("no daemon in use".to_string());
        };
        let path = format!("/api/thermostats/{}/{action}", target.id);
        self.call(method, &path, body, *timeout)
            .map_err(|error| error.to_string())
    }

    /// Sends one request to the daemon's API and returns the JSON body of a 2xx
    /// response.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let Self::Daemon { address, token, .. } = self else {
            return Err(CallError::Unreachable("no daemon in use".to_string()));
        };
        let stream = TcpStream::connect_timeout(address, PROBE_TIMEOUT)
            .map_err(|error| CallError::Unreachable(format!("local API at {address}: {error}")))?;
        let (status, text) = exchange(
            stream,
            *address,
            token.as_deref(),
            method,
            path,
            body,
            timeout,
        )
        .map_err(|error| {
            CallError::Silent(format!(
                "the local API at {address} accepted the connection but did not respond \
                     within {} s: {error}",
                timeout.as_secs()
            ))
        })?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let message = json["error"].as_str().map_or(text.trim(), str::trim);
        Err(CallError::Rejected(format!(
            "the local API at {address} returned {status}: {message}"
        )))
    }
}

/// Returns the address to reach the API at: a wildcard listen address means this host.
pub fn api_address(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        let ip = match listen.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, listen.port())
    } else {
        listen
    }
}

fn link(target: &ThermostatRecord, options: LinkOptions) -> DeviceLink {
    DeviceLink::new(target.address, options)
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and body.
fn exchange(
    mut stream: TcpStream,
    address: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let payload = body.map(Value::to_string).unwrap_or_default();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;

    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        payload.len()
    );
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(payload.as_bytes())?;

    let mut raw = Vec::new();
    stream.take(MAX_ANSWER_BYTES).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line")
        })?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcard_listen_reached_on_loopback() {
        let address = api_address("0.0.0.0:8000".parse().expect("address"));
        assert_eq!(address, "127.0.0.1:8000".parse().expect("address"));
        let fixed: SocketAddr = "127.0.0.5:9000".parse().expect("address");
        assert_eq!(api_address(fixed), fixed);
    }

    #[test]
    fn time_sync_outcomes_round_trip() {
        let outcomes = [
            ClockOutcome::Synced,
            ClockOutcome::Restored { target: 70.5 },
            ClockOutcome::Skipped("a temporary setpoint is in force (override 1)"),
        ];
        for outcome in outcomes {
            let body = views::clock_outcome_json(&outcome);
            assert_eq!(TimeSync::from_json(&body), Ok(TimeSync::from(outcome)));
        }
        assert!(TimeSync::from_json(&json!({"outcome":"maybe"})).is_err());
    }
}
