//! The writes that carry a settings change to a thermostat under the device's rules,
//! and the check of what it reports back. Pure.
//!
//! Posting `t_heat` switches a unit to heat and `t_cool` switches it to cool. So a
//! setpoint for the other mode goes as `it_heat`/`it_cool`, which only CT80 Rev B units
//! honour. Each goes in its own request, because some firmware applies only the first
//! key of a body that carries both. A mode is posted together with its setpoint, the
//! pattern the manufacturer documents.

use std::fmt;

use serde_json::{Map, Value, json};

use super::change::SettingsChange;
use crate::device::ModelProfile;
use crate::reading::{Fmode, ThermostatState, Tmode};

/// A change the thermostat cannot make.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanError {
    /// The model has no auto mode.
    AutoUnsupported { model: ModelProfile },
    /// The model has no circulate fan mode.
    CirculateUnsupported { model: ModelProfile },
    /// A setpoint for a mode other than the one the unit will be in, on a model without
    /// `it_heat`/`it_cool`.
    SetpointForOtherMode {
        field: &'static str,
        mode: Tmode,
        model: ModelProfile,
    },
    /// A setpoint was given, but the current mode is unknown and no mode was given.
    ModeUnknown,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AutoUnsupported { model } => write!(
                f,
                "{} thermostats have no auto mode (tmode 3)",
                model.name()
            ),
            Self::CirculateUnsupported { model } => write!(
                f,
                "{} thermostats have no circulate fan mode (fmode 1)",
                model.name()
            ),
            Self::SetpointForOtherMode { field, mode, model } => write!(
                f,
                "{field} cannot be set while the thermostat is in {} mode on {} thermostats; \
                 send the matching tmode with it",
                mode.name(),
                model.name()
            ),
            Self::ModeUnknown => f.write_str(
                "the thermostat's current mode is unknown; send tmode with the setpoint",
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// A setting the thermostat reported differently after the writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {} instead of {}",
            self.field, self.found, self.expected
        )
    }
}

/// Returns the JSON bodies to `POST /tstat`, in order, for `change` on a thermostat
/// now in `current`.
pub fn plan_writes(
    current: &ThermostatState,
    change: &SettingsChange,
    model: ModelProfile,
) -> Result<Vec<Value>, PlanError> {
    check_model_supports(change, model)?;

    let mut main = Map::new();
    let mut separate = Vec::new();
    if let Some(mode) = change.tmode {
        main.insert("tmode".into(), json!(mode.code()));
    }

    let setpoints = [
        ("t_heat", "it_heat", change.t_heat, Tmode::Heat),
        ("t_cool", "it_cool", change.t_cool, Tmode::Cool),
    ];
    for (field, interior_field, value, field_mode) in setpoints {
        let Some(value) = value else { continue };
        let mode = change
            .tmode
            .or(current.tmode)
            .ok_or(PlanError::ModeUnknown)?;
        if mode == field_mode {
            main.insert(field.into(), json!(value));
        } else if model == ModelProfile::Ct80RevB {
            separate.push(json!({ interior_field: value }));
        } else {
            return Err(PlanError::SetpointForOtherMode { field, mode, model });
        }
    }

    if let Some(fan) = change.fmode {
        main.insert("fmode".into(), json!(fan.code()));
    }
    if let Some(hold) = change.hold {
        main.insert("hold".into(), json!(u8::from(hold)));
    }

    let mut writes = Vec::new();
    if !main.is_empty() {
        writes.push(Value::Object(main));
    }
    writes.extend(separate);
    Ok(writes)
}

fn check_model_supports(change: &SettingsChange, model: ModelProfile) -> Result<(), PlanError> {
    let capabilities = model.capabilities();
    let has = |name: &str| capabilities.iter().any(|capability| capability == name);
    if change.tmode == Some(Tmode::Auto) && !has("auto_mode") {
        return Err(PlanError::AutoUnsupported { model });
    }
    if change.fmode == Some(Fmode::Circulate) && !has("fan_circulate") {
        return Err(PlanError::CirculateUnsupported { model });
    }
    Ok(())
}

/// Returns true when verifying `change` needs `GET /tstat/ttemp`: `/tstat` shows only
/// the setpoint of the current mode.
pub fn needs_targets(change: &SettingsChange, state: &ThermostatState) -> bool {
    let heat_hidden = change.t_heat.is_some() && state.tmode != Some(Tmode::Heat);
    let cool_hidden = change.t_cool.is_some() && state.tmode != Some(Tmode::Cool);
    heat_hidden || cool_hidden
}

/// Compares what the thermostat reports with what was requested. `targets` is the reply to
/// `GET /tstat/ttemp` (both setpoints), when it was read.
pub fn verify(
    change: &SettingsChange,
    state: &ThermostatState,
    targets: Option<&ThermostatState>,
) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    let mut check = |field: &'static str, expected: Option<String>, found: Option<String>| {
        if let Some(expected) = expected
            && found.as_ref() != Some(&expected)
        {
            mismatches.push(Mismatch {
                field,
                expected,
                found: found.unwrap_or_else(|| "unknown".into()),
            });
        }
    };
    let temperature = |value: Option<f64>| value.map(|degrees| format!("{degrees:.1}"));
    let setpoint = |mode: Tmode, shown: Option<f64>, target: Option<f64>| {
        if state.tmode == Some(mode) {
            shown
        } else {
            target
        }
    };

    check(
        "tmode",
        change.tmode.map(|m| m.name().to_string()),
        state.tmode.map(|m| m.name().to_string()),
    );
    check(
        "t_heat",
        temperature(change.t_heat),
        temperature(setpoint(
            Tmode::Heat,
            state.t_heat,
            targets.and_then(|t| t.t_heat),
        )),
    );
    check(
        "t_cool",
        temperature(change.t_cool),
        temperature(setpoint(
            Tmode::Cool,
            state.t_cool,
            targets.and_then(|t| t.t_cool),
        )),
    );
    check(
        "fmode",
        change.fmode.map(|m| m.code().to_string()),
        state.fmode.map(|m| m.code().to_string()),
    );
    check(
        "hold",
        change.hold.map(|h| u8::from(h).to_string()),
        state.hold.map(|h| u8::from(h).to_string()),
    );
    mismatches
}

/// Returns the part of `change` that `mismatches` name, to send again.
pub fn retry_change(change: &SettingsChange, mismatches: &[Mismatch]) -> SettingsChange {
    let named = |field: &str| mismatches.iter().any(|mismatch| mismatch.field == field);
    SettingsChange {
        // A setpoint travels with its mode, so resending either resends both.
        tmode: change
            .tmode
            .filter(|_| named("tmode") || named("t_heat") || named("t_cool")),
        t_heat: change.t_heat.filter(|_| named("t_heat") || named("tmode")),
        t_cool: change.t_cool.filter(|_| named("t_cool") || named("tmode")),
        fmode: change.fmode.filter(|_| named("fmode")),
        hold: change.hold.filter(|_| named("hold")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_mode(mode: Tmode) -> ThermostatState {
        let mut state = ThermostatState {
            tmode: Some(mode),
            hold: Some(false),
            fmode: Some(Fmode::Auto),
            ..Default::default()
        };
        match mode {
            Tmode::Heat => state.t_heat = Some(68.0),
            Tmode::Cool => state.t_cool = Some(76.0),
            _ => {}
        }
        state
    }

    #[test]
    fn mode_and_setpoint_in_one_write() {
        let change = SettingsChange {
            tmode: Some(Tmode::Heat),
            t_heat: Some(70.0),
            hold: Some(true),
            ..Default::default()
        };
        let writes =
            plan_writes(&in_mode(Tmode::Cool), &change, ModelProfile::Ct50).expect("plannable");
        assert_eq!(writes, [json!({"tmode":1,"t_heat":70.0,"hold":1})]);
    }

    #[test]
    fn setpoint_for_current_mode_alone() {
        let change = SettingsChange {
            t_heat: Some(69.5),
            ..Default::default()
        };
        let writes =
            plan_writes(&in_mode(Tmode::Heat), &change, ModelProfile::Ct30).expect("plannable");
        assert_eq!(writes, [json!({"t_heat":69.5})]);
    }

    #[test]
    fn other_mode_setpoint_refused_without_interior_targets() {
        // Posting t_cool to a CT50 in heat mode would switch it to cool.
        let change = SettingsChange {
            t_cool: Some(75.0),
            ..Default::default()
        };
        let error =
            plan_writes(&in_mode(Tmode::Heat), &change, ModelProfile::Ct50).expect_err("refused");
        assert_eq!(
            error,
            PlanError::SetpointForOtherMode {
                field: "t_cool",
                mode: Tmode::Heat,
                model: ModelProfile::Ct50
            }
        );
    }

    #[test]
    fn auto_setpoints_sent_separately() {
        let change = SettingsChange {
            t_heat: Some(66.0),
            t_cool: Some(78.0),
            ..Default::default()
        };
        let writes =
            plan_writes(&in_mode(Tmode::Auto), &change, ModelProfile::Ct80RevB).expect("plannable");
        assert_eq!(writes, [json!({"it_heat":66.0}), json!({"it_cool":78.0})]);
    }

    #[test]
    fn auto_setpoint_refused_on_ct50() {
        let change = SettingsChange {
            t_cool: Some(75.0),
            ..Default::default()
        };
        let error =
            plan_writes(&in_mode(Tmode::Auto), &change, ModelProfile::Ct50).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("t_cool cannot be set while the thermostat is in auto mode")
        );
    }

    #[test]
    fn unsupported_modes_refused() {
        let auto = SettingsChange {
            tmode: Some(Tmode::Auto),
            ..Default::default()
        };
        assert!(plan_writes(&in_mode(Tmode::Heat), &auto, ModelProfile::Ct30).is_err());
        let circulate = SettingsChange {
            fmode: Some(Fmode::Circulate),
            ..Default::default()
        };
        assert!(plan_writes(&in_mode(Tmode::Heat), &circulate, ModelProfile::Ct50).is_err());
        assert!(plan_writes(&in_mode(Tmode::Heat), &circulate, ModelProfile::Ct80RevB).is_ok());
    }

    #[test]
    fn setpoint_with_unknown_mode_refused() {
        let change = SettingsChange {
            t_heat: Some(70.0),
            ..Default::default()
        };
        let error = plan_writes(&ThermostatState::default(), &change, ModelProfile::Ct50)
            .expect_err("refused");
        assert_eq!(error, PlanError::ModeUnknown);
    }

    #[test]
    fn verify_finds_dropped_hold() {
        let change = SettingsChange {
            tmode: Some(Tmode::Cool),
            hold: Some(true),
            ..Default::default()
        };
        let reported = in_mode(Tmode::Cool);
        assert_eq!(
            verify(&change, &reported, None),
            [Mismatch {
                field: "hold",
                expected: "1".into(),
                found: "0".into()
            }]
        );
        assert_eq!(
            retry_change(&change, &verify(&change, &reported, None)),
            SettingsChange {
                hold: Some(true),
                ..Default::default()
            }
        );
    }

    #[test]
    fn verify_reads_hidden_setpoint_from_targets() {
        let change = SettingsChange {
            t_cool: Some(78.0),
            ..Default::default()
        };
        let state = in_mode(Tmode::Auto);
        assert!(needs_targets(&change, &state));
        let targets = ThermostatState {
            t_heat: Some(66.0),
            t_cool: Some(78.0),
            ..Default::default()
        };
        assert!(verify(&change, &state, Some(&targets)).is_empty());
        assert_eq!(verify(&change, &state, None).len(), 1);
    }

    #[test]
    fn verify_accepts_matching_state() {
        let change = SettingsChange {
            tmode: Some(Tmode::Heat),
            t_heat: Some(68.0),
            fmode: Some(Fmode::Auto),
            hold: Some(false),
            ..Default::default()
        };
        assert!(verify(&change, &in_mode(Tmode::Heat), None).is_empty());
        assert!(!needs_targets(&change, &in_mode(Tmode::Heat)));
    }
}
