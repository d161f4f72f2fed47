//! A requested settings change: parsed from JSON, checked field by field, with
//! setpoints rounded to the device's 0.5 °F resolution. Pure.

use std::fmt;

use crate::reading::{Fmode, Tmode};

/// Setpoints a RadioThermostat accepts, °F.
pub const SETPOINT_RANGE: std::ops::RangeInclusive<f64> = 35.0..=95.0;

/// The settings a caller asks to change. `None` leaves a setting as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SettingsChange {
    pub tmode: Option<Tmode>,
    pub t_heat: Option<f64>,
    pub t_cool: Option<f64>,
    pub fmode: Option<Fmode>,
    pub hold: Option<bool>,
}

/// A request that cannot be turned into a settings change.
#[derive(Debug, Clone, PartialEq)]
pub enum InvalidChange {
    NotAnObject,
    Empty,
    UnknownField(String),
    Invalid {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
}

impl fmt::Display for InvalidChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnObject => f.write_str("expected a JSON object of settings"),
            Self::Empty => {
                f.write_str("no setting to change: give tmode, t_heat, t_cool, fmode or hold")
            }
            Self::UnknownField(name) => write!(
                f,
                "unknown field {name:?}: the settings are tmode, t_heat, t_cool, fmode and hold"
            ),
            Self::Invalid {
                field,
                expected,
                found,
            } => write!(f, "invalid {field}: expected {expected}, found {found}"),
        }
    }
}

impl std::error::Error for InvalidChange {}

impl SettingsChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Parses `{"tmode":1,"t_heat":68.3,"hold":true}`. Modes are codes: 0 to 3 for
    /// tmode and 0 to 2 for fmode. Hold is a boolean or 0/1. Setpoints are numbers in °F
    /// from 35 to 95, rounded to the nearest 0.5.
    pub fn from_json(params: &serde_json::Value) -> Result<Self, InvalidChange> {
        let object = params.as_object().ok_or(InvalidChange::NotAnObject)?;
        let mut change = Self::default();
        for (name, value) in object {
            match name.as_str() {
                "tmode" => {
                    change.tmode = Some(parse_code(
                        value,
                        "tmode",
                        "0 (off), 1 (heat), 2 (cool) or 3 (auto)",
                        Tmode::from_code,
                    )?)
                }
                "fmode" => {
                    change.fmode = Some(parse_code(
                        value,
                        "fmode",
                        "0 (auto), 1 (circulate) or 2 (on)",
                        Fmode::from_code,
                    )?)
                }
                "t_heat" => change.t_heat = Some(parse_setpoint(value, "t_heat")?),
                "t_cool" => change.t_cool = Some(parse_setpoint(value, "t_cool")?),
                "hold" => change.hold = Some(parse_flag(value, "hold")?),
                other => {
                    return Err(InvalidChange::UnknownField(
                        other.chars().take(40).collect(),
                    ));
                }
            }
        }
        if change.is_empty() {
            return Err(InvalidChange::Empty);
        }
        Ok(change)
    }

    /// Returns this change with `later` laid over it: each field takes the latest value
    /// given, so a burst of commands becomes one change.
    pub fn merged_with(&self, later: &SettingsChange) -> SettingsChange {
        SettingsChange {
            tmode: later.tmode.or(self.tmode),
            t_heat: later.t_heat.or(self.t_heat),
            t_cool: later.t_cool.or(self.t_cool),
            fmode: later.fmode.or(self.fmode),
            hold: later.hold.or(self.hold),
        }
    }

    /// Returns the change as the device's JSON fields, for logs and `device_config`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(mode) = self.tmode {
            parts.push(format!("tmode={}", mode.name()));
        }
        if let Some(value) = self.t_heat {
            parts.push(format!("t_heat={value:.1}"));
        }
        if let Some(value) = self.t_cool {
            parts.push(format!("t_cool={value:.1}"));
        }
        if let Some(mode) = self.fmode {
            parts.push(format!("fmode={}", mode.code()));
        }
        if let Some(hold) = self.hold {
            parts.push(format!("hold={}", u8::from(hold)));
        }
        parts.join(" ")
    }
}

/// Rounds a temperature to the nearest 0.5 °F, the device's resolution.
pub fn round_setpoint(fahrenheit: f64) -> f64 {
    (fahrenheit * 2.0).round() / 2.0
}

fn found(value: &serde_json::Value) -> String {
    value.to_string().chars().take(40).collect()
}

fn parse_code<T>(
    value: &serde_json::Value,
    field: &'static str,
    expected: &'static str,
    from_code: fn(i64) -> Option<T>,
) -> Result<T, InvalidChange> {
    value
        .as_i64()
        .and_then(from_code)
        .ok_or_else(|| InvalidChange::Invalid {
            field,
            expected,
            found: found(value),
        })
}

fn parse_setpoint(value: &serde_json::Value, field: &'static str) -> Result<f64, InvalidChange> {
    let invalid = || InvalidChange::Invalid {
        field,
        expected: "a temperature from 35 to 95 °F",
        found: found(value),
    };
    let degrees = value
        .as_f64()
        .filter(|v| v.is_finite())
        .ok_or_else(invalid)?;
    let rounded = round_setpoint(degrees);
    if SETPOINT_RANGE.contains(&rounded) {
        Ok(rounded)
    } else {
        Err(invalid())
    }
}

fn parse_flag(value: &serde_json::Value, field: &'static str) -> Result<bool, InvalidChange> {
    match value {
        serde_json::Value::Bool(flag) => Ok(*flag),
        serde_json::Value::Number(number) if number.as_i64() == Some(0) => Ok(false),
        serde_json::Value::Number(number) if number.as_i64() == Some(1) => Ok(true),
        _ => Err(InvalidChange::Invalid {
            field,
            expected: "true, false, 0 or 1",
            found: found(value),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_field() {
        let change = SettingsChange::from_json(
            &json!({"tmode":1,"t_heat":68,"t_cool":76.5,"fmode":2,"hold":1}),
        )
        .expect("valid change");
        assert_eq!(change.tmode, Some(Tmode::Heat));
        assert_eq!(change.t_heat, Some(68.0));
        assert_eq!(change.t_cool, Some(76.5));
        assert_eq!(change.fmode, Some(Fmode::On));
        assert_eq!(change.hold, Some(true));
    }

    #[test]
    fn setpoints_round_to_half_degrees() {
        let cases = [
            (72.3, 72.5),
            (72.2, 72.0),
            (72.25, 72.5),
            (68.74, 68.5),
            (68.76, 69.0),
        ];
        for (requested, expected) in cases {
            assert_eq!(round_setpoint(requested), expected, "{requested}");
        }
    }

    #[test]
    fn merge_keeps_the_latest_value_of_each_field() {
        let first = SettingsChange {
            tmode: Some(Tmode::Heat),
            t_heat: Some(68.0),
            hold: Some(true),
            ..Default::default()
        };
        let later = SettingsChange {
            t_heat: Some(70.0),
            fmode: Some(Fmode::On),
            ..Default::default()
        };
        let merged = first.merged_with(&later);
        assert_eq!(merged.tmode, Some(Tmode::Heat));
        assert_eq!(merged.t_heat, Some(70.0));
        assert_eq!(merged.fmode, Some(Fmode::On));
        assert_eq!(merged.hold, Some(true));
        assert_eq!(merged.t_cool, None);
        assert_eq!(SettingsChange::default().merged_with(&first), first);
        assert_eq!(first.merged_with(&SettingsChange::default()), first);
    }

    #[test]
    fn out_of_range_setpoint_names_field() {
        let error =
            SettingsChange::from_json(&json!({"t_heat":200})).expect_err("200 °F is invalid");
        assert_eq!(
            error.to_string(),
            "invalid t_heat: expected a temperature from 35 to 95 °F, found 200"
        );
    }

    #[test]
    fn invalid_values_rejected() {
        let cases = [
            json!({"tmode":4}),
            json!({"tmode":"heat"}),
            json!({"fmode":-1}),
            json!({"hold":"yes"}),
            json!({"hold":2}),
            json!({"t_cool":null}),
            json!({"t_cool":34.7}),
        ];
        for params in cases {
            assert!(SettingsChange::from_json(&params).is_err(), "{params}");
        }
    }

    #[test]
    fn empty_unknown_and_non_object_rejected() {
        assert_eq!(
            SettingsChange::from_json(&json!({})),
            Err(InvalidChange::Empty)
        );
        assert_eq!(
            SettingsChange::from_json(&json!([1])),
            Err(InvalidChange::NotAnObject)
        );
        assert_eq!(
            SettingsChange::from_json(&json!({"mode":1})),
            Err(InvalidChange::UnknownField("mode".into()))
        );
    }
}
