//! The desired state of each thermostat (what was last commanded, with the command's
//! source and time) and the enforcement that keeps it on the unit through power cuts,
//! dropped writes and mode changes that clear hold.
//!
//! [`classify`] names a difference between the desired and the reported state (pure),
//! [`decide`] picks what to do about it under the thermostat's [`Policy`] (pure), and
//! [`Controller`] is the per-thermostat shell: every settings write of every caller
//! goes through its pending-change slot, so a burst of commands is merged into the
//! fewest writes, one at a time.

mod classify;
mod controller;

use std::fmt;

pub use classify::{
    CLOCK_JUMP_LIMIT, Drift, Observation, classify, clock_jumped, differing_fields,
};
pub use controller::{
    Controller, DesiredSnapshot, DriftCounters, Observed, ReapplyOutcome, StoredDesired,
};

use crate::control::SettingsChange;

/// Failed re-applies in a row after which a thermostat counts as not holding its
/// settings. Each re-apply already includes one resend (see `control::apply_change`).
pub const REAPPLY_BUDGET: u32 = 3;

/// The response to a thermostat that drifts from its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Write the desired settings again after a reset, a dropped write or a clock jump.
    #[default]
    Enforce,
    /// Never write; report drift only.
    Report,
    /// Ignore drift.
    Off,
}

impl Policy {
    pub const NAMES: &'static str = "\"enforce\", \"report\" or \"off\"";

    pub fn name(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Report => "report",
            Self::Off => "off",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "enforce" => Some(Self::Enforce),
            "report" => Some(Self::Report),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `[thermostats]` policy: a default and per-thermostat overrides by uuid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    pub default: Policy,
    pub overrides: std::collections::BTreeMap<String, Policy>,
}

impl Policies {
    pub fn for_id(&self, id: &crate::thermostat::ThermostatId) -> Policy {
        self.overrides
            .get(id.as_str())
            .copied()
            .unwrap_or(self.default)
    }
}

/// The step the poll task takes after a classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Store the drift and send it upstream, without writing.
    Report,
    /// Report the drift if new, then write the desired settings again.
    Reapply,
}

/// Decides what a drift leads to. `new` is false when the same difference was handled
/// at an earlier poll; `holding` is false once the retry budget ran out.
pub fn decide(policy: Policy, drift: &Drift, new: bool, holding: bool) -> Action {
    match (policy, drift) {
        (Policy::Off, _) | (_, Drift::NoDrift) => Action::Nothing,
        (Policy::Enforce, drift) if drift.needs_reapply() && holding => Action::Reapply,
        _ if new => Action::Report,
        _ => Action::Nothing,
    }
}

/// Returns the part of `desired` to write again for `fields`. A setpoint travels with
/// its commanded mode, so the mode goes along when one is commanded.
pub fn reapply_change(desired: &SettingsChange, fields: &[&str]) -> SettingsChange {
    let named = |field: &str| fields.contains(&field);
    let setpoint = named("t_heat") || named("t_cool");
    SettingsChange {
        tmode: desired.tmode.filter(|_| named("tmode") || setpoint),
        t_heat: desired.t_heat.filter(|_| named("t_heat")),
        t_cool: desired.t_cool.filter(|_| named("t_cool")),
        fmode: desired.fmode.filter(|_| named("fmode")),
        hold: desired.hold.filter(|_| named("hold")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Tmode;

    #[test]
    fn policy_decides_the_action() {
        let reset = Drift::Reset(vec!["hold"]);
        let wall = Drift::WallChange(vec!["t_heat"]);
        let cases = [
            (Policy::Enforce, &reset, true, true, Action::Reapply),
            (Policy::Enforce, &reset, false, true, Action::Reapply),
            (Policy::Enforce, &reset, true, false, Action::Report),
            (Policy::Enforce, &reset, false, false, Action::Nothing),
            (Policy::Enforce, &wall, true, true, Action::Report),
            (Policy::Enforce, &wall, false, true, Action::Nothing),
            (Policy::Report, &reset, true, true, Action::Report),
            (Policy::Report, &reset, false, true, Action::Nothing),
            (Policy::Report, &wall, true, true, Action::Report),
            (Policy::Off, &reset, true, true, Action::Nothing),
            (Policy::Off, &wall, true, true, Action::Nothing),
            (
                Policy::Enforce,
                &Drift::NoDrift,
                true,
                true,
                Action::Nothing,
            ),
        ];
        for (policy, drift, new, holding, expected) in cases {
            assert_eq!(
                decide(policy, drift, new, holding),
                expected,
                "{policy} {drift:?} new={new} holding={holding}"
            );
        }
    }

    #[test]
    fn reapply_sends_named_fields_with_their_mode() {
        let desired = SettingsChange {
            tmode: Some(Tmode::Heat),
            t_heat: Some(70.0),
            hold: Some(true),
            fmode: Some(crate::reading::Fmode::On),
            ..Default::default()
        };
        let change = reapply_change(&desired, &["t_heat", "hold"]);
        assert_eq!(change.tmode, Some(Tmode::Heat));
        assert_eq!(change.t_heat, Some(70.0));
        assert_eq!(change.hold, Some(true));
        assert_eq!(change.fmode, None);

        let only_hold = reapply_change(&desired, &["hold"]);
        assert_eq!(only_hold.tmode, None);
        assert_eq!(only_hold.hold, Some(true));
    }

    #[test]
    fn policy_names_round_trip() {
        for policy in [Policy::Enforce, Policy::Report, Policy::Off] {
            assert_eq!(Policy::parse(policy.name()), Some(policy));
        }
        assert_eq!(Policy::parse("Enforce"), None);
    }
}
