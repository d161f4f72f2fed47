//! Thermostat identity and addressing: the device uuid that keys every table, and the
//! network address that may change under it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The port real RadioThermostat units serve their HTTP API on.
pub const DEFAULT_DEVICE_PORT: u16 = 80;

/// Maximum length of a thermostat id. Real units report the 12-digit MAC; simulators and
/// future firmware get some room, but the bound keeps hostile input small.
pub const MAX_ID_LEN: usize = 32;

/// A thermostat's identity: the `uuid` from `GET /sys`, lower-cased. Addresses change
/// after power cuts (DHCP), so every table is keyed by this value instead.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ThermostatId(heapless::String<MAX_ID_LEN>);

/// Error for a uuid that cannot be a thermostat id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(pub String);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid thermostat uuid {:?}: expected 1 to {MAX_ID_LEN} letters, digits, '-' or '_'",
            self.0
        )
    }
}

impl std::error::Error for InvalidId {}

impl ThermostatId {
    /// Parses a device uuid, accepting ASCII letters, digits, `-` and `_`, and folding
    /// letters to lower case so that `5CDAD4…` and `5cdad4…` name the same unit.
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let trimmed = raw.trim();
        let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if trimmed.is_empty() || !trimmed.chars().all(valid_char) {
            return Err(InvalidId(raw.chars().take(64).collect()));
        }

        let mut id = heapless::String::new();
        for c in trimmed.chars() {
            id.push(c.to_ascii_lowercase())
                .map_err(|_| InvalidId(raw.chars().take(64).collect()))?;
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ThermostatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ThermostatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ThermostatId({})", self.0)
    }
}

/// The HTTP endpoint of a thermostat: an IP address and a port, 80 unless written out.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceAddress(SocketAddr);

/// Error for an address string that is neither `IP` nor `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAddress(pub String);

impl fmt::Display for InvalidAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid thermostat address {:?}: expected an IP address such as 10.0.60.21 \
             or an address with a port such as 127.0.0.2:8081",
            self.0
        )
    }
}

impl std::error::Error for InvalidAddress {}

impl DeviceAddress {
    pub fn new(socket: SocketAddr) -> Self {
        Self(socket)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.0
    }

    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }
}

impl FromStr for DeviceAddress {
    type Err = InvalidAddress;

    /// Parses `10.0.60.21`, `127.0.0.2:8081`, `[::1]:8081` or `::1`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let trimmed = raw.trim();
        if let Ok(socket) = trimmed.parse::<SocketAddr>() {
            return Ok(Self(socket));
        }
        match trimmed.parse::<IpAddr>() {
            Ok(ip) => Ok(Self(SocketAddr::new(ip, DEFAULT_DEVICE_PORT))),
            Err(_) => Err(InvalidAddress(raw.chars().take(80).collect())),
        }
    }
}

/// Writes the address the way operators type it: the port only when it is not 80.
impl fmt::Display for DeviceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.port() == DEFAULT_DEVICE_PORT {
            write!(f, "{}", self.0.ip())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl fmt::Debug for DeviceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceAddress({self})")
    }
}

/// The stored facts about one thermostat: a row of the `thermostats` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ThermostatRecord {
    pub id: ThermostatId,
    pub address: DeviceAddress,
    pub name: String,
    /// The raw `/tstat/model` string, for example `CT50 V1.94`.
    pub model: String,
    pub api_version: Option<i32>,
    pub fw_version: Option<String>,
    /// Capability names from the model profile, for example `auto_mode`.
    pub capabilities: Vec<String>,
    /// The method that found the address: `static`, `database`, `udp` or `tcp`.
    pub discovery_method: String,
    pub active: bool,
    /// Kept across re-registration; set by the public server's `set_away_temp`.
    pub away_temp: Option<f64>,
    pub last_seen: Option<jiff::Timestamp>,
    pub first_seen: Option<jiff::Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_folds_case_and_trims() {
        let id = ThermostatId::parse(" 5CDAD4A0A0A1 ").expect("valid uuid");
        assert_eq!(id.as_str(), "5cdad4a0a0a1");
    }

    #[test]
    fn id_rejects_empty_long_and_odd_characters() {
        assert!(ThermostatId::parse("").is_err());
        assert!(ThermostatId::parse("5cda d4").is_err());
        assert!(ThermostatId::parse("5cdad4'; drop table").is_err());
        assert!(ThermostatId::parse(&"a".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(ThermostatId::parse(&"a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn address_defaults_to_port_80() {
        let plain: DeviceAddress = "10.0.60.21".parse().expect("valid address");
        assert_eq!(plain.socket_addr().port(), 80);
        assert_eq!(plain.to_string(), "10.0.60.21");
    }

    #[test]
    fn address_keeps_an_explicit_port() {
        let with_port: DeviceAddress = "127.0.0.2:8081".parse().expect("valid address");
        assert_eq!(with_port.socket_addr().port(), 8081);
        assert_eq!(with_port.to_string(), "127.0.0.2:8081");
    }

    #[test]
    fn address_rejects_host_names_and_junk() {
        let error = "thermostat.local"
            .parse::<DeviceAddress>()
            .expect_err("host names are not addresses");
        assert!(error.to_string().contains("thermostat.local"));
        assert!("10.0.60".parse::<DeviceAddress>().is_err());
        assert!("10.0.60.21:99999".parse::<DeviceAddress>().is_err());
    }
}
