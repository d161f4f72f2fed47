//! State-change detection: compares a new reading with the last known state of the
//! same thermostat and names what changed. Pure.

use crate::reading::ThermostatState;
pub use crate::reading::{ChangeType, StateChange};

/// Smallest temperature move (°F) that counts as a change. The device resolves 0.5 °F.
pub const TEMPERATURE_STEP: f64 = 0.5;

/// Compares `current` with `baseline`, the last known state. A field that the current
/// reading lacks (a `-1` or a key the mode leaves out) is not a change.
pub fn detect_change(
    baseline: Option<&ThermostatState>,
    current: &ThermostatState,
) -> Option<StateChange> {
    let Some(baseline) = baseline else {
        return Some(StateChange {
            change_type: ChangeType::Initial,
            fields: Vec::new(),
        });
    };

    let checks: [(&'static str, ChangeType, bool); 9] = [
        (
            "tmode",
            ChangeType::Mode,
            differs(baseline.tmode, current.tmode),
        ),
        (
            "t_heat",
            ChangeType::Setpoint,
            differs(baseline.t_heat, current.t_heat),
        ),
        (
            "t_cool",
            ChangeType::Setpoint,
            differs(baseline.t_cool, current.t_cool),
        ),
        (
            "hold",
            ChangeType::Hold,
            differs(baseline.hold, current.hold),
        ),
        (
            "override",
            ChangeType::Override,
            differs(baseline.override_active, current.override_active),
        ),
        (
            "fmode",
            ChangeType::Fan,
            differs(baseline.fmode, current.fmode),
        ),
        (
            "tstate",
            ChangeType::HvacState,
            differs(baseline.tstate, current.tstate),
        ),
        (
            "fstate",
            ChangeType::HvacState,
            differs(baseline.fstate, current.fstate),
        ),
        (
            "temp",
            ChangeType::Temperature,
            temperature_moved(baseline.temp, current.temp),
        ),
    ];

    let changed: Vec<_> = checks.iter().filter(|(_, _, changed)| *changed).collect();
    let change_type = changed.first()?.1;
    let fields = changed.iter().map(|(field, _, _)| *field).collect();
    Some(StateChange {
        change_type,
        fields,
    })
}

/// Folds `current` into `baseline`: known values replace old ones, unknown ones keep
/// the old value, so a transient `-1` is not later mistaken for a change.
pub fn merge_known(
    baseline: Option<&ThermostatState>,
    current: &ThermostatState,
) -> ThermostatState {
    let Some(old) = baseline else {
        return *current;
    };
    ThermostatState {
        temp: current.temp.or(old.temp),
        t_heat: current.t_heat.or(old.t_heat),
        t_cool: current.t_cool.or(old.t_cool),
        tmode: current.tmode.or(old.tmode),
        fmode: current.fmode.or(old.fmode),
        tstate: current.tstate.or(old.tstate),
        fstate: current.fstate.or(old.fstate),
        hold: current.hold.or(old.hold),
        override_active: current.override_active.or(old.override_active),
    }
}

fn differs<T: PartialEq>(old: Option<T>, new: Option<T>) -> bool {
    match (old, new) {
        (Some(old), Some(new)) => old != new,
        (None, Some(_)) => true,
        _ => false,
    }
}

fn temperature_moved(old: Option<f64>, new: Option<f64>) -> bool {
    match (old, new) {
        (Some(old), Some(new)) => (new - old).abs() >= TEMPERATURE_STEP,
        (None, Some(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Tmode, Tstate};

    fn heating_at(temp: f64) -> ThermostatState {
        ThermostatState {
            temp: Some(temp),
            t_heat: Some(68.0),
            tmode: Some(Tmode::Heat),
            tstate: Some(Tstate::Idle),
            hold: Some(false),
            override_active: Some(false),
            ..ThermostatState::default()
        }
    }

    #[test]
    fn first_reading_is_initial() {
        let change = detect_change(None, &heating_at(70.0)).expect("a change");
        assert_eq!(change.change_type, ChangeType::Initial);
    }

    #[test]
    fn same_state_is_no_change() {
        assert_eq!(
            detect_change(Some(&heating_at(70.0)), &heating_at(70.0)),
            None
        );
    }

    #[test]
    fn temperature_needs_half_a_degree() {
        assert_eq!(
            detect_change(Some(&heating_at(70.0)), &heating_at(70.25)),
            None
        );
        let change = detect_change(Some(&heating_at(70.0)), &heating_at(70.5)).expect("a change");
        assert_eq!(change.change_type, ChangeType::Temperature);
        assert_eq!(change.fields, ["temp"]);
        assert!(detect_change(Some(&heating_at(70.0)), &heating_at(69.5)).is_some());
    }

    #[test]
    fn mode_outranks_setpoint_and_temperature() {
        let before = heating_at(70.0);
        let after = ThermostatState {
            temp: Some(72.0),
            t_heat: None,
            t_cool: Some(76.0),
            tmode: Some(Tmode::Cool),
            ..before
        };
        let change = detect_change(Some(&before), &after).expect("a change");
        assert_eq!(change.change_type, ChangeType::Mode);
        assert_eq!(change.fields, ["tmode", "t_cool", "temp"]);
    }

    #[test]
    fn each_field_has_its_type() {
        let before = heating_at(70.0);
        let cases = [
            (
                ThermostatState {
                    t_heat: Some(69.5),
                    ..before
                },
                ChangeType::Setpoint,
            ),
            (
                ThermostatState {
                    hold: Some(true),
                    ..before
                },
                ChangeType::Hold,
            ),
            (
                ThermostatState {
                    override_active: Some(true),
                    ..before
                },
                ChangeType::Override,
            ),
            (
                ThermostatState {
                    tstate: Some(Tstate::Heating),
                    ..before
                },
                ChangeType::HvacState,
            ),
        ];
        for (after, expected) in cases {
            let change = detect_change(Some(&before), &after).expect("a change");
            assert_eq!(change.change_type, expected, "{after:?}");
        }
    }

    #[test]
    fn transient_negative_one_is_not_a_change() {
        // temp and tmode came back as -1, which the parser turned into None.
        let before = heating_at(70.0);
        let glitch = ThermostatState {
            temp: None,
            tmode: None,
            ..before
        };
        assert_eq!(detect_change(Some(&before), &glitch), None);

        let baseline = merge_known(Some(&before), &glitch);
        assert_eq!(baseline, before);
        assert_eq!(detect_change(Some(&baseline), &heating_at(70.0)), None);
    }
}
