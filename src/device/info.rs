//! Identity replies: `GET /sys` (uuid and versions), `GET /sys/name` and
//! `GET /tstat/model`, and the capability profile derived from the model string.

use serde::Deserialize;

use super::tstat::{ParseError, parse_object};
use crate::thermostat::ThermostatId;

/// Maximum length of a kept name or model string; longer ones are cut.
const MAX_TEXT_CHARS: usize = 64;

/// The reply to `GET /sys`.
#[derive(Debug, Clone, PartialEq)]
pub struct SysInfo {
    pub uuid: ThermostatId,
    pub api_version: Option<i32>,
    pub fw_version: Option<String>,
    pub wlan_fw_version: Option<String>,
}

/// Everything the probe of a new address learns.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceIdentity {
    pub sys: SysInfo,
    pub name: String,
    pub model: String,
    pub profile: ModelProfile,
}

#[derive(Deserialize)]
struct RawSys {
    uuid: Option<serde_json::Value>,
    api_version: Option<serde_json::Value>,
    fw_version: Option<serde_json::Value>,
    wlan_fw_version: Option<serde_json::Value>,
}

/// Parses `GET /sys`. The uuid is required: it is the thermostat's identity.
pub fn parse_sys(body: &[u8]) -> Result<SysInfo, ParseError> {
    let raw: RawSys = parse_object(body)?;
    let uuid_text = raw
        .uuid
        .as_ref()
        .and_then(|value| value.as_str())
        .unwrap_or_default();
    let uuid = ThermostatId::parse(uuid_text)
        .map_err(|error| ParseError::InvalidJson(error.to_string()))?;

    Ok(SysInfo {
        uuid,
        api_version: raw
            .api_version
            .and_then(|value| value.as_i64())
            .and_then(|version| i32::try_from(version).ok()),
        fw_version: raw.fw_version.as_ref().and_then(text_value),
        wlan_fw_version: raw.wlan_fw_version.as_ref().and_then(text_value),
    })
}

/// Parses `GET /sys/name`; a missing or empty name becomes an empty string.
pub fn parse_name(body: &[u8]) -> Result<String, ParseError> {
    let value: serde_json::Value = parse_object(body)?;
    Ok(value.get("name").and_then(text_value).unwrap_or_default())
}

/// Parses `GET /tstat/model`, for example `{"model":"CT50 V1.94"}`.
pub fn parse_model(body: &[u8]) -> Result<String, ParseError> {
    let value: serde_json::Value = parse_object(body)?;
    value
        .get("model")
        .and_then(text_value)
        .filter(|model| !model.is_empty())
        .ok_or(ParseError::NoThermostatFields)
}

/// Turns a JSON string or number into printable text of bounded length.
fn text_value(value: &serde_json::Value) -> Option<String> {
    let text = match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Number(number) => number.to_string(),
        _ => return None,
    };
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT_CHARS)
        .collect();
    Some(cleaned.trim().to_string())
}

/// The capability profile of a model, from the manufacturer's model table. Model strings are not
/// uniform (`CT80 Rev B2 V1.09`, `CT80 V2.34T`), so they are matched by prefix, and an
/// unknown model gets the generic profile instead of being rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelProfile {
    Ct30,
    Ct50,
    Ct80RevA,
    Ct80RevB,
    Generic,
}

impl ModelProfile {
    pub fn from_model(model: &str) -> Self {
        let normalized: String = model
            .to_ascii_uppercase()
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if normalized.starts_with("CT80REVB") {
            Self::Ct80RevB
        } else if normalized.starts_with("CT80") {
            Self::Ct80RevA
        } else if normalized.starts_with("CT50") || normalized.starts_with("3M50") {
            Self::Ct50
        } else if normalized.starts_with("CT30") {
            Self::Ct30
        } else {
            Self::Generic
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ct30 => "ct30",
            Self::Ct50 => "ct50",
            Self::Ct80RevA => "ct80_rev_a",
            Self::Ct80RevB => "ct80_rev_b",
            Self::Generic => "generic",
        }
    }

    /// Capability names stored in `thermostats.capabilities`.
    pub fn capabilities(self) -> Vec<String> {
        let mut names = vec!["heat", "cool"];
        if matches!(self, Self::Ct50 | Self::Ct80RevA | Self::Ct80RevB) {
            names.push("auto_mode");
        }
        if matches!(self, Self::Ct80RevA | Self::Ct80RevB) {
            names.push("fan_circulate");
        }
        if self == Self::Ct80RevB {
            names.extend(["it_setpoints", "program_mode"]);
        }
        names.into_iter().map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/device/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
    }

    #[test]
    fn sys_fixture_parses() {
        let sys = parse_sys(&fixture("sys__ct50-v1.94__fw1.04.84__REDACTED.json")).expect("valid");
        assert_eq!(sys.uuid.as_str(), "5cdad4000001");
        assert_eq!(sys.api_version, Some(113));
        assert_eq!(sys.fw_version.as_deref(), Some("1.04.84"));
        assert_eq!(sys.wlan_fw_version.as_deref(), Some("v10.105576"));
    }

    #[test]
    fn sys_without_uuid_rejected() {
        assert!(parse_sys(br#"{"api_version":113}"#).is_err());
        assert!(parse_sys(br#"{"uuid":"bad uuid!"}"#).is_err());
    }

    #[test]
    fn model_fixtures_parse() {
        assert_eq!(
            parse_model(&fixture("tstat-model__ct50-v1.09.json")),
            Ok("CT50 V1.09".into())
        );
        assert_eq!(
            parse_model(&fixture("tstat-model__ct80-v2.14t.json")),
            Ok("CT80 V2.14T".into())
        );
        assert!(parse_model(br#"{"model":""}"#).is_err());
    }

    #[test]
    fn name_is_cleaned_and_bounded() {
        let long = format!(r#"{{"name":"Living\u0007 Room{}"}}"#, "x".repeat(200));
        let name = parse_name(long.as_bytes()).expect("valid");
        assert!(name.starts_with("Living Room"));
        assert_eq!(name.chars().count(), MAX_TEXT_CHARS);
        assert_eq!(parse_name(b"{}"), Ok(String::new()));
    }

    #[test]
    fn model_profiles_by_prefix() {
        let cases = [
            ("CT30 V1.94", ModelProfile::Ct30),
            ("CT50 V1.94", ModelProfile::Ct50),
            ("CT80 Rev B2 V1.09", ModelProfile::Ct80RevB),
            ("CT80 RevB1 V1.00", ModelProfile::Ct80RevB),
            ("CT80 V2.34T", ModelProfile::Ct80RevA),
            ("CT55 V9.01", ModelProfile::Generic),
            ("", ModelProfile::Generic),
        ];
        for (model, expected) in cases {
            assert_eq!(ModelProfile::from_model(model), expected, "model {model:?}");
        }
    }

    #[test]
    fn unknown_model_gets_basic_capabilities() {
        assert_eq!(ModelProfile::Generic.capabilities(), ["heat", "cool"]);
        assert!(
            ModelProfile::Ct80RevB
                .capabilities()
                .contains(&"it_setpoints".to_string())
        );
    }
}
