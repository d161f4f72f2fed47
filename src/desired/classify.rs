//! Drift classification: what a difference between the desired and the reported state
//! of a thermostat means, and so whether to keep it or write the desired settings again.
//! Pure.

use std::time::Duration;

use crate::control::SettingsChange;
use crate::reading::ThermostatState;

/// A gap between the wall clock and the monotonic clock over one poll beyond which the
/// clock counts as jumped.
pub const CLOCK_JUMP_LIMIT: Duration = Duration::from_secs(120);

/// The meaning of a difference between the desired and the reported settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Drift {
    /// Every commanded setting the reading shows is as commanded.
    NoDrift,
    /// A person changed a commanded setting at the wall (hold kept, no reset signature).
    /// Kept: it becomes the desired state.
    WallChange(Vec<&'static str>),
    /// Hold went from 1 to 0 and a setpoint moved with it, as after a power cut.
    Reset(Vec<&'static str>),
    /// The unit never showed a commanded setting, though it accepted the write.
    DroppedWrite(Vec<&'static str>),
    /// The clock jumped between two polls and commanded settings changed.
    ClockJump(Vec<&'static str>),
}

impl Drift {
    /// Returns whether the desired settings should be written again (under `enforce`).
    pub fn needs_reapply(&self) -> bool {
        matches!(
            self,
            Self::Reset(_) | Self::DroppedWrite(_) | Self::ClockJump(_)
        )
    }

    /// Returns the commanded fields that differ, empty for `NoDrift`.
    pub fn fields(&self) -> &[&'static str] {
        match self {
            Self::NoDrift => &[],
            Self::WallChange(fields)
            | Self::Reset(fields)
            | Self::DroppedWrite(fields)
            | Self::ClockJump(fields) => fields,
        }
    }
}

/// Everything the classification looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The commanded settings; `None` fields were never commanded.
    pub desired: &'a SettingsChange,
    /// Whether the unit has shown the desired settings since they were last commanded.
    /// Time since the command cannot tell a dropped write from a quick change at the
    /// wall; whether the unit ever showed the command can.
    pub confirmed: bool,
    /// The reading before this one, if any since start-up.
    pub previous: Option<&'a ThermostatState>,
    pub current: &'a ThermostatState,
    /// Whether the clock jumped since the previous poll (see [`clock_jumped`]).
    pub clock_jumped: bool,
}

/// Classifies the difference between the desired and the reported state.
///
/// Only fields both commanded and shown by the reading count: `/tstat` leaves out the
/// setpoint of the other mode, and a `-1` reads as unknown. In order: no difference is
/// `NoDrift`; a jumped clock is `ClockJump`; a command the unit never showed is
/// `DroppedWrite`; hold 1→0 with a moved setpoint (or with no earlier reading to compare)
/// is `Reset`; anything else is a person at the wall.
pub fn classify(observation: &Observation<'_>) -> Drift {
    let fields = differing_fields(observation.desired, observation.current);
    if fields.is_empty() {
        return Drift::NoDrift;
    }
    if observation.clock_jumped {
        return Drift::ClockJump(fields);
    }
    if !observation.confirmed {
        return Drift::DroppedWrite(fields);
    }
    if has_reset_signature(
        observation.desired,
        observation.previous,
        observation.current,
    ) {
        return Drift::Reset(fields);
    }
    Drift::WallChange(fields)
}

/// Returns the commanded fields that `current` shows with another value.
pub fn differing_fields(desired: &SettingsChange, current: &ThermostatState) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut check = |field: &'static str, differs: Option<bool>| {
        if differs == Some(true) {
            fields.push(field);
        }
    };
    check("tmode", both(desired.tmode, current.tmode, |a, b| a != b));
    check(
        "t_heat",
        both(desired.t_heat, current.t_heat, setpoints_differ),
    );
    check(
        "t_cool",
        both(desired.t_cool, current.t_cool, setpoints_differ),
    );
    check("fmode", both(desired.fmode, current.fmode, |a, b| a != b));
    check("hold", both(desired.hold, current.hold, |a, b| a != b));
    fields
}

/// Hold went from 1 to 0 while a setpoint moved. Without an earlier reading, commanded
/// hold found off counts as a reset, because no reading showed a person release it.
fn has_reset_signature(
    desired: &SettingsChange,
    previous: Option<&ThermostatState>,
    current: &ThermostatState,
) -> bool {
    if current.hold != Some(false) {
        return false;
    }
    match previous {
        None => desired.hold == Some(true),
        Some(previous) => {
            let setpoint_moved = both(previous.t_heat, current.t_heat, setpoints_differ)
                == Some(true)
                || both(previous.t_cool, current.t_cool, setpoints_differ) == Some(true);
            previous.hold == Some(true) && setpoint_moved
        }
    }
}

/// Returns whether the wall clock and the monotonic clock disagree about the time
/// between two polls by more than [`CLOCK_JUMP_LIMIT`].
pub fn clock_jumped(wall_elapsed_seconds: f64, monotonic_elapsed: Duration) -> bool {
    (wall_elapsed_seconds - monotonic_elapsed.as_secs_f64()).abs() > CLOCK_JUMP_LIMIT.as_secs_f64()
}

fn both<T: Copy>(a: Option<T>, b: Option<T>, differ: fn(T, T) -> bool) -> Option<bool> {
    Some(differ(a?, b?))
}

fn setpoints_differ(a: f64, b: f64) -> bool {
    (a - b).abs() >= 0.25
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Fmode, Tmode};

    fn heat(t_heat: f64, hold: bool) -> ThermostatState {
        ThermostatState {
            tmode: Some(Tmode::Heat),
            t_heat: Some(t_heat),
            fmode: Some(Fmode::Auto),
            hold: Some(hold),
            ..Default::default()
        }
    }

    fn held(t_heat: f64) -> SettingsChange {
        SettingsChange {
            t_heat: Some(t_heat),
            hold: Some(true),
            ..Default::default()
        }
    }

    struct Case {
        name: &'static str,
        desired: SettingsChange,
        confirmed: bool,
        previous: Option<ThermostatState>,
        current: ThermostatState,
        clock_jumped: bool,
        expected: Drift,
    }

    #[test]
    fn classification_table() {
        let cases = [
            Case {
                name: "matches the command",
                desired: held(70.0),
                confirmed: true,
                previous: Some(heat(70.0, true)),
                current: heat(70.0, true),
                clock_jumped: false,
                expected: Drift::NoDrift,
            },
            Case {
                name: "power cut: hold 1->0 and the program setpoint",
                desired: held(70.0),
                confirmed: true,
                previous: Some(heat(70.0, true)),
                current: heat(64.0, false),
                clock_jumped: false,
                expected: Drift::Reset(vec!["t_heat", "hold"]),
            },
            Case {
                name: "setpoint changed at the wall, hold kept",
                desired: held(70.0),
                confirmed: true,
                previous: Some(heat(70.0, true)),
                current: heat(72.0, true),
                clock_jumped: false,
                expected: Drift::WallChange(vec!["t_heat"]),
            },
            Case {
                name: "hold released at the wall, setpoint kept",
                desired: held(70.0),
                confirmed: true,
                previous: Some(heat(70.0, true)),
                current: heat(70.0, false),
                clock_jumped: false,
                expected: Drift::WallChange(vec!["hold"]),
            },
            Case {
                name: "mode changed at the wall",
                desired: SettingsChange {
                    tmode: Some(Tmode::Heat),
                    ..Default::default()
                },
                confirmed: true,
                previous: Some(heat(70.0, false)),
                current: ThermostatState {
                    tmode: Some(Tmode::Cool),
                    t_cool: Some(78.0),
                    ..Default::default()
                },
                clock_jumped: false,
                expected: Drift::WallChange(vec!["tmode"]),
            },
            Case {
                name: "write never showed on the unit",
                desired: held(70.0),
                confirmed: false,
                previous: Some(heat(66.0, false)),
                current: heat(66.0, false),
                clock_jumped: false,
                expected: Drift::DroppedWrite(vec!["t_heat", "hold"]),
            },
            Case {
                name: "clock jumped and the setpoint moved",
                desired: held(70.0),
                confirmed: true,
                previous: Some(heat(70.0, true)),
                current: heat(62.0, true),
                clock_jumped: true,
                expected: Drift::ClockJump(vec!["t_heat"]),
            },
            Case {
                name: "clock jumped, settings as commanded",
                desired: held(70.0),
                confirmed: true,
                previous: Some(heat(70.0, true)),
                current: heat(70.0, true),
                clock_jumped: true,
                expected: Drift::NoDrift,
            },
            Case {
                name: "first reading after start-up finds hold lost",
                desired: held(70.0),
                confirmed: true,
                previous: None,
                current: heat(64.0, false),
                clock_jumped: false,
                expected: Drift::Reset(vec!["t_heat", "hold"]),
            },
            Case {
                name: "first reading after start-up, other setpoint, no hold commanded",
                desired: SettingsChange {
                    t_heat: Some(70.0),
                    ..Default::default()
                },
                confirmed: true,
                previous: None,
                current: heat(68.0, false),
                clock_jumped: false,
                expected: Drift::WallChange(vec!["t_heat"]),
            },
            Case {
                name: "setpoint of the other mode is not shown, so not compared",
                desired: SettingsChange {
                    t_cool: Some(76.0),
                    ..Default::default()
                },
                confirmed: true,
                previous: Some(heat(70.0, false)),
                current: heat(70.0, false),
                clock_jumped: false,
                expected: Drift::NoDrift,
            },
            Case {
                name: "unknown hold (-1) is not drift",
                desired: held(70.0),
                confirmed: true,
                previous: Some(heat(70.0, true)),
                current: ThermostatState {
                    hold: None,
                    ..heat(70.0, true)
                },
                clock_jumped: false,
                expected: Drift::NoDrift,
            },
            Case {
                name: "nothing commanded",
                desired: SettingsChange::default(),
                confirmed: true,
                previous: Some(heat(70.0, true)),
                current: heat(60.0, false),
                clock_jumped: false,
                expected: Drift::NoDrift,
            },
        ];
        for case in cases {
            let observation = Observation {
                desired: &case.desired,
                confirmed: case.confirmed,
                previous: case.previous.as_ref(),
                current: &case.current,
                clock_jumped: case.clock_jumped,
            };
            assert_eq!(classify(&observation), case.expected, "{}", case.name);
        }
    }

    #[test]
    fn only_resets_dropped_writes_and_clock_jumps_are_reapplied() {
        assert!(Drift::Reset(vec!["hold"]).needs_reapply());
        assert!(Drift::DroppedWrite(vec!["hold"]).needs_reapply());
        assert!(Drift::ClockJump(vec!["hold"]).needs_reapply());
        assert!(!Drift::WallChange(vec!["hold"]).needs_reapply());
        assert!(!Drift::NoDrift.needs_reapply());
    }

    #[test]
    fn clock_jump_needs_more_than_the_limit() {
        assert!(!clock_jumped(5.2, Duration::from_secs(5)));
        assert!(!clock_jumped(120.0, Duration::from_secs(1)));
        assert!(clock_jumped(3600.0, Duration::from_secs(5)));
        assert!(clock_jumped(-3600.0, Duration::from_secs(5)));
    }
}
