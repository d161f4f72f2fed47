//! The pure parts of the operator commands' arguments: durations such as `6h`, the
//! names of modes, and the confirmation rule for writes to every thermostat.

use std::time::Duration;

use serde_json::{Value, json};

use crate::control::SettingsChange;

/// Parses a duration written as a whole number and a unit: `90s`, `90m`, `6h`, `2d`.
pub fn parse_duration(option: &str, text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid {option} {text:?}: expected a whole number followed by s, m, h or d \
             (seconds, minutes, hours, days), such as 90m, 6h or 2d"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = trimmed.split_at(split);
    let count: u64 = number.parse().map_err(|_| invalid())?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    match count.checked_mul(seconds_per_unit) {
        Some(seconds) if seconds > 0 && seconds <= 10 * 365 * 86_400 => {
            Ok(Duration::from_secs(seconds))
        }
        _ => Err(format!(
            "invalid {option} {text:?}: expected more than zero and at most 10 years"
        )),
    }
}

/// Returns the code of a `--mode` name: off 0, heat 1, cool 2, auto 3.
pub fn parse_mode(text: &str) -> Result<i64, String> {
    code_of("--mode", text, &["off", "heat", "cool", "auto"])
}

/// Returns the code of a `--fan` name: auto 0, circulate 1, on 2.
pub fn parse_fan(text: &str) -> Result<i64, String> {
    code_of("--fan", text, &["auto", "circulate", "on"])
}

/// Returns the position of `text` in `names` (case-insensitive), which is the device's
/// code for it.
fn code_of(option: &str, text: &str, names: &[&str]) -> Result<i64, String> {
    let wanted = text.to_ascii_lowercase();
    match names.iter().position(|name| *name == wanted) {
        Some(code) => Ok(code as i64),
        None => {
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            Err(format!(
                "invalid {option} {text:?}: expected {} or {last}",
                rest.join(", ")
            ))
        }
    }
}

/// Parses a `--hold` value: on or off.
pub fn parse_hold(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "yes" | "1" | "true" => Ok(true),
        "off" | "no" | "0" | "false" => Ok(false),
        _ => Err(format!("invalid --hold {text:?}: expected on or off")),
    }
}

/// Parses a `--heat` or `--cool` setpoint in °F. [`settings_change`] checks the range
/// and rounds it with the rest of the change.
pub fn parse_setpoint(option: &str, text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
        .ok_or_else(|| {
            format!("invalid {option} {text:?}: expected a temperature in °F such as 68 or 72.5")
        })
}

/// Turns the collected `tstat set` options (device field names) into a change, through
/// the same validation as the API and the public server: 35 to 95 °F, rounded to 0.5.
pub fn settings_change(fields: &serde_json::Map<String, Value>) -> Result<SettingsChange, String> {
    if fields.is_empty() {
        return Err(
            "tstat set needs at least one of --mode, --heat, --cool, --fan and --hold".to_string(),
        );
    }
    SettingsChange::from_json(&Value::Object(fields.clone())).map_err(|error| {
        // Name the command line's option, not the device field.
        error
            .to_string()
            .replace("t_heat", "--heat")
            .replace("t_cool", "--cool")
    })
}

/// Returns the JSON body of a change for `POST /api/thermostats/{id}/settings`.
pub fn change_body(change: &SettingsChange) -> Value {
    let mut body = serde_json::Map::new();
    if let Some(mode) = change.tmode {
        body.insert("tmode".into(), json!(mode.code()));
    }
    if let Some(value) = change.t_heat {
        body.insert("t_heat".into(), json!(value));
    }
    if let Some(value) = change.t_cool {
        body.insert("t_cool".into(), json!(value));
    }
    if let Some(mode) = change.fmode {
        body.insert("fmode".into(), json!(mode.code()));
    }
    if let Some(hold) = change.hold {
        body.insert("hold".into(), json!(hold));
    }
    Value::Object(body)
}

/// Returns true when a write to every thermostat must be confirmed first: only from a
/// terminal, and never with `--yes`. Scripts (stdin not a terminal) proceed.
pub fn needs_confirmation(all: bool, yes: bool, stdin_is_terminal: bool) -> bool {
    all && !yes && stdin_is_terminal
}

/// Returns true when `answer` (a line typed at the prompt) confirms.
pub fn confirms(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        let cases = [("90s", 90), ("90m", 5_400), ("6h", 21_600), ("2d", 172_800)];
        for (text, seconds) in cases {
            assert_eq!(
                parse_duration("--since", text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_duration_names_value_and_units() {
        for text in ["6", "h", "6x", "6 h", "-1h", "1.5h", ""] {
            let error = parse_duration("--since", text).expect_err(text);
            assert!(error.contains(&format!("{text:?}")), "{error}");
            assert!(
                error.contains("s, m, h or d") || error.contains("more than zero"),
                "{error}"
            );
        }
    }

    #[test]
    fn zero_and_huge_durations_rejected() {
        assert!(parse_duration("--since", "0h").is_err());
        assert!(parse_duration("--since", "99999999999999d").is_err());
    }

    #[test]
    fn mode_fan_and_hold_names() {
        assert_eq!(parse_mode("Heat"), Ok(1));
        assert_eq!(parse_fan("circulate"), Ok(1));
        assert_eq!(parse_hold("off"), Ok(false));
        assert!(
            parse_mode("dry")
                .expect_err("dry")
                .contains("off, heat, cool or auto")
        );
    }

    #[test]
    fn setpoints_validated_and_rounded_like_the_api() {
        let mut fields = serde_json::Map::new();
        fields.insert("t_heat".into(), json!(68.3));
        fields.insert("tmode".into(), json!(1));
        let change = settings_change(&fields).expect("valid");
        assert_eq!(change.t_heat, Some(68.5));
        assert_eq!(change_body(&change), json!({"tmode":1,"t_heat":68.5}));

        fields.insert("t_cool".into(), json!(120));
        let error = settings_change(&fields).expect_err("120 °F");
        assert!(error.contains("--cool"), "{error}");
    }

    #[test]
    fn empty_set_names_the_options() {
        let error = settings_change(&serde_json::Map::new()).expect_err("empty");
        assert!(error.contains("--mode"), "{error}");
    }

    #[test]
    fn confirmation_only_for_all_from_a_terminal() {
        assert!(needs_confirmation(true, false, true));
        assert!(!needs_confirmation(true, true, true));
        assert!(!needs_confirmation(true, false, false));
        assert!(!needs_confirmation(false, false, true));
        assert!(confirms(" Y\n"));
        assert!(!confirms(""));
    }
}
