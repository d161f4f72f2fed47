//! The `[defaults]` section: settings applied once to each thermostat when it is first
//! registered. A key the section leaves out, or a missing section, leaves that setting
//! as the thermostat has it.

use toml::Table;

use super::Problem;
use super::fields::{Field, Section};
use crate::control::{SETPOINT_RANGE, SettingsChange, round_setpoint};
use crate::reading::{Fmode, Tmode};

pub(super) const DEFAULTS_KEYS: &[&str] = &["tmode", "t_heat", "t_cool", "fmode", "hold"];

/// Reads `[defaults]` into the change to apply at first registration.
pub(super) fn read_defaults(
    root: &Table,
    problems: &mut Vec<Problem>,
    all_sections: &[(&'static str, &'static [&'static str])],
) -> SettingsChange {
    let mut section = Section::open(root, "defaults", DEFAULTS_KEYS, problems);
    let valid = |field: Field<i64>| match field {
        Field::Valid(code) => Some(code),
        _ => None,
    };
    let setpoint = |field: Field<f64>| match field {
        Field::Valid(degrees) => Some(round_setpoint(degrees)),
        _ => None,
    };

    let tmode = valid(section.integer("tmode", 0..=3, "(0 off, 1 heat, 2 cool, 3 auto)"));
    let fmode = valid(section.integer("fmode", 0..=2, "(0 auto, 1 circulate, 2 on)"));
    let t_heat = setpoint(section.number("t_heat", SETPOINT_RANGE, "°F"));
    let t_cool = setpoint(section.number("t_cool", SETPOINT_RANGE, "°F"));
    let hold = match section.boolean("hold") {
        Field::Valid(hold) => Some(hold),
        _ => None,
    };
    section.finish(all_sections);

    SettingsChange {
        tmode: tmode.and_then(Tmode::from_code),
        t_heat,
        t_cool,
        fmode: fmode.and_then(Fmode::from_code),
        hold,
    }
}
