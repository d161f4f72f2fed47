//! The seven-day programs of `GET /tstat/program/heat` and `/tstat/program/cool`:
//! `{"0":[minute,°F,minute,°F,…],…,"6":[…]}`, day 0 being Monday. Pure parsing.
//!
//! Units mix integers and floats (`[390,62.50,1200,61]`), and CT30s have 4 periods a
//! day where CT80s have 7, so a day is any even-length list of numbers.

use std::fmt;

use super::tstat::{ParseError, parse_object};

/// The heat or the cool program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    Heat,
    Cool,
}

impl ProgramKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Heat => "heat",
            Self::Cool => "cool",
        }
    }

    /// Returns the device path that serves this program.
    pub fn path(self) -> &'static str {
        match self {
            Self::Heat => "/tstat/program/heat",
            Self::Cool => "/tstat/program/cool",
        }
    }
}

/// One program period: from `start` (minutes after midnight) the target is `target` °F.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    pub start: u16,
    pub target: f64,
}

impl Period {
    /// Formats the start as `HH:MM`.
    pub fn start_text(&self) -> String {
        format!("{:02}:{:02}", self.start / 60, self.start % 60)
    }
}

/// A seven-day program; `days[0]` is Monday.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeekProgram {
    pub days: [Vec<Period>; 7],
}

/// Names of the days in the device's order.
pub const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl WeekProgram {
    /// Returns the program in the device's own JSON form, so that a reader of the local
    /// API can parse it with [`parse_program`].
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        for (day, periods) in self.days.iter().enumerate() {
            let flat: Vec<serde_json::Value> = periods
                .iter()
                .flat_map(|period| [period.start.into(), period.target.into()])
                .collect();
            object.insert(day.to_string(), flat.into());
        }
        object.into()
    }
}

/// A program body that is JSON but not a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProgram(pub String);

impl fmt::Display for InvalidProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid program: {}", self.0)
    }
}

/// Parses a program body. Days the unit left out stay empty. A day that is not a list
/// of `minute, °F` pairs with minutes from 0 to 1439 fails the whole body, because a
/// schedule shown half right would mislead.
pub fn parse_program(body: &[u8]) -> Result<WeekProgram, ParseError> {
    let raw: serde_json::Map<String, serde_json::Value> = parse_object(body)?;
    if let Some(message) = raw.get("error_msg").or_else(|| raw.get("error")) {
        return Err(ParseError::ErrorObject(message.to_string()));
    }
    let mut program = WeekProgram::default();
    for (key, value) in &raw {
        let day = key
            .parse::<usize>()
            .ok()
            .filter(|day| *day < 7)
            .ok_or_else(|| invalid(format!("day key {key:?} is not 0 to 6")))?;
        program.days[day] = parse_day(key, value)?;
    }
    Ok(program)
}

fn parse_day(key: &str, value: &serde_json::Value) -> Result<Vec<Period>, ParseError> {
    let numbers = value
        .as_array()
        .ok_or_else(|| invalid(format!("day {key} is not a list")))?;
    if numbers.len() % 2 != 0 {
        return Err(invalid(format!(
            "day {key} has {} numbers: expected minute, °F pairs",
            numbers.len()
        )));
    }
    numbers
        .chunks(2)
        .map(|pair| {
            let start = pair[0]
                .as_f64()
                .filter(|minute| minute.fract() == 0.0 && (0.0..1440.0).contains(minute))
                .ok_or_else(|| invalid(format!("day {key}: start {} is not 0 to 1439", pair[0])))?;
            let target = pair[1]
                .as_f64()
                .ok_or_else(|| invalid(format!("day {key}: target {} is not a number", pair[1])))?;
            Ok(Period {
                start: start as u16,
                target,
            })
        })
        .collect()
}

fn invalid(message: String) -> ParseError {
    ParseError::InvalidJson(InvalidProgram(message).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_integer_and_float_targets_parse() {
        let program =
            parse_program(br#"{"0":[390,62.50,1200,61],"6":[0,70,60,71]}"#).expect("valid program");
        assert_eq!(
            program.days[0],
            vec![
                Period {
                    start: 390,
                    target: 62.5
                },
                Period {
                    start: 1200,
                    target: 61.0
                }
            ]
        );
        assert_eq!(program.days[6].len(), 2);
        assert!(program.days[3].is_empty());
    }

    #[test]
    fn start_prints_as_clock_time() {
        let period = Period {
            start: 390,
            target: 70.0,
        };
        assert_eq!(period.start_text(), "06:30");
    }

    #[test]
    fn odd_length_day_rejected() {
        let error = parse_program(br#"{"1":[390,62,1200]}"#).expect_err("odd day");
        assert!(error.to_string().contains("day 1 has 3 numbers"), "{error}");
    }

    #[test]
    fn out_of_range_day_and_minute_rejected() {
        assert!(parse_program(br#"{"7":[0,70]}"#).is_err());
        assert!(parse_program(br#"{"0":[1440,70]}"#).is_err());
    }

    #[test]
    fn device_error_object_reported() {
        let error = parse_program(br#"{"error_msg":"Invalid HTTP API"}"#).expect_err("error");
        assert!(matches!(error, ParseError::ErrorObject(_)));
    }

    #[test]
    fn json_form_round_trips() {
        let program = parse_program(br#"{"0":[390,62.5,1200,61],"4":[360,70]}"#).expect("valid");
        let again = parse_program(program.to_json().to_string().as_bytes()).expect("round trip");
        assert_eq!(again, program);
    }
}
