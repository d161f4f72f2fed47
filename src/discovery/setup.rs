//! Initial configuration of a newly registered thermostat: setting its clock without
//! losing a temporary setpoint.
//!
//! Writing the clock clears a temporary override on these units, so the plan skips the
//! write while `override` reads 1. Some models (CT30, CT50 V1.09) always report 0, so
//! after every write the setpoint of the current mode is read back and restored when
//! it changed. Only the key of the current mode is ever posted, because posting
//! `t_heat` in cool mode switches the unit to heat.

use serde_json::json;

use crate::device::{DeviceError, DeviceLink};
use crate::reading::{ThermostatState, Tmode};

/// The decision about writing a thermostat's clock.
#[derive(Debug, Clone, PartialEq)]
pub enum ClockPlan {
    /// Leave the clock alone, for the stated reason.
    Skip(&'static str),
    /// Write the clock, then restore the setpoint if the write changed it.
    Sync(Setpoint),
}

/// The setpoint of the current mode before the clock write; `None` in off mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setpoint {
    pub tmode: Tmode,
    pub target: Option<f64>,
}

/// The result of `sync_clock`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClockOutcome {
    Skipped(&'static str),
    Synced,
    /// The write changed the setpoint, and it was posted back and read back equal.
    Restored {
        target: f64,
    },
}

/// Decides whether the clock can be written, from a fresh `/tstat` reading.
pub fn plan_clock_sync(state: &ThermostatState) -> ClockPlan {
    if state.override_active == Some(true) {
        return ClockPlan::Skip("a temporary setpoint is in force (override 1)");
    }
    let Some(tmode) = state.tmode else {
        return ClockPlan::Skip("the mode is unknown");
    };

    let target = match tmode {
        Tmode::Off => None,
        Tmode::Heat => state.t_heat,
        Tmode::Cool => state.t_cool,
        // /tstat carries no setpoint in auto, so a change could not be seen.
        Tmode::Auto => {
            return ClockPlan::Skip("auto mode setpoints cannot be checked after the write");
        }
    };
    if tmode != Tmode::Off && target.is_none() {
        return ClockPlan::Skip("the setpoint of the current mode is unknown");
    }
    ClockPlan::Sync(Setpoint { tmode, target })
}

/// Returns the body that puts `before`'s setpoint back, when `after` differs from it.
pub fn restore_body(before: Setpoint, after: &ThermostatState) -> Option<serde_json::Value> {
    let target = before.target?;
    let (key, current) = match before.tmode {
        Tmode::Heat => ("t_heat", after.t_heat),
        Tmode::Cool => ("t_cool", after.t_cool),
        Tmode::Off | Tmode::Auto => return None,
    };
    if after.tmode != Some(before.tmode) || current == Some(target) {
        return None;
    }
    Some(json!({ key: target }))
}

/// Builds the `POST /tstat` body that sets the clock; the device counts days from
/// Monday (0).
pub fn clock_body(now: &jiff::ZonedDateTime) -> serde_json::Value {
    json!({
        "time": {
            "day": now.weekday().to_monday_zero_offset(),
            "hour": now.hour(),
            "minute": now.minute(),
        }
    })
}

/// Sets the clock of the thermostat behind `link` to `now` when `plan_clock_sync`
/// allows it, and restores the setpoint if the write cleared it.
pub async fn sync_clock(
    link: &DeviceLink,
    now: &jiff::ZonedDateTime,
) -> Result<ClockOutcome, DeviceError> {
    let before = link.read_state().await?.state;
    let setpoint = match plan_clock_sync(&before) {
        ClockPlan::Skip(reason) => return Ok(ClockOutcome::Skipped(reason)),
        ClockPlan::Sync(setpoint) => setpoint,
    };

    link.write_state(&clock_body(now)).await?;
    let after = link.read_state().await?.state;
    let Some(body) = restore_body(setpoint, &after) else {
        return Ok(ClockOutcome::Synced);
    };

    link.write_state(&body).await?;
    let restored = link.read_state().await?.state;
    match restore_body(setpoint, &restored) {
        None => Ok(ClockOutcome::Restored {
            target: setpoint.target.unwrap_or_default(),
        }),
        Some(_) => Err(DeviceError::Protocol(format!(
            "the setpoint {body} did not stick after the clock write; set it again on the unit"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heating(t_heat: f64, override_active: bool) -> ThermostatState {
        ThermostatState {
            tmode: Some(Tmode::Heat),
            t_heat: Some(t_heat),
            override_active: Some(override_active),
            hold: Some(false),
            ..ThermostatState::default()
        }
    }

    #[test]
    fn override_skips_clock_sync() {
        assert!(matches!(
            plan_clock_sync(&heating(72.0, true)),
            ClockPlan::Skip(_)
        ));
    }

    #[test]
    fn no_override_allows_sync() {
        assert_eq!(
            plan_clock_sync(&heating(72.0, false)),
            ClockPlan::Sync(Setpoint {
                tmode: Tmode::Heat,
                target: Some(72.0)
            })
        );
    }

    #[test]
    fn auto_mode_skips_sync() {
        let state = ThermostatState {
            tmode: Some(Tmode::Auto),
            ..ThermostatState::default()
        };
        assert!(matches!(plan_clock_sync(&state), ClockPlan::Skip(_)));
    }

    #[test]
    fn missing_setpoint_skips_sync() {
        let state = ThermostatState {
            tmode: Some(Tmode::Cool),
            ..ThermostatState::default()
        };
        assert!(matches!(plan_clock_sync(&state), ClockPlan::Skip(_)));
    }

    #[test]
    fn off_mode_syncs_without_setpoint() {
        let state = ThermostatState {
            tmode: Some(Tmode::Off),
            ..ThermostatState::default()
        };
        assert_eq!(
            plan_clock_sync(&state),
            ClockPlan::Sync(Setpoint {
                tmode: Tmode::Off,
                target: None
            })
        );
    }

    #[test]
    fn changed_heat_setpoint_restored() {
        let before = Setpoint {
            tmode: Tmode::Heat,
            target: Some(72.0),
        };
        assert_eq!(
            restore_body(before, &heating(66.0, false)),
            Some(json!({"t_heat": 72.0}))
        );
    }

    #[test]
    fn unchanged_setpoint_not_restored() {
        let before = Setpoint {
            tmode: Tmode::Heat,
            target: Some(72.0),
        };
        assert_eq!(restore_body(before, &heating(72.0, false)), None);
    }

    #[test]
    fn mode_change_never_restored() {
        // Posting t_heat while the unit cools would switch it to heat.
        let before = Setpoint {
            tmode: Tmode::Heat,
            target: Some(72.0),
        };
        let cooling = ThermostatState {
            tmode: Some(Tmode::Cool),
            t_cool: Some(76.0),
            ..ThermostatState::default()
        };
        assert_eq!(restore_body(before, &cooling), None);
    }

    #[test]
    fn clock_body_counts_from_monday() {
        let now: jiff::ZonedDateTime = "2026-12-07T14:02:00[UTC]".parse().expect("valid time");
        assert_eq!(
            clock_body(&now),
            json!({"time": {"day": 0, "hour": 14, "minute": 2}})
        );
    }
}
