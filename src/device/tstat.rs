//! Tolerant parsing of `GET /tstat` and of `POST` replies.
//!
//! Real units send `-1` for a value they failed to read and leave out keys that do not
//! apply to the current mode or model. They print temperatures with one or two
//! decimals, and on rare occasions send values no room can have. Each field is judged on its
//! own: a bad field becomes `None` with a note, and the rest of the sample is kept.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::reading::{Fmode, ThermostatState, Tmode, Tstate};

/// Indoor temperatures outside this range (°F) are sensor faults, not readings. Real
/// units have logged 0 °F.
pub const PLAUSIBLE_TEMP: std::ops::RangeInclusive<f64> = 10.0..=120.0;

/// Setpoints outside this range (°F) are not ones a RadioThermostat accepts.
pub const PLAUSIBLE_SETPOINT: std::ops::RangeInclusive<f64> = 35.0..=99.0;

/// An error that makes a whole body unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, or JSON cut short.
    InvalidJson(String),
    /// JSON, but not an object.
    NotAnObject,
    /// An object without a single usable thermostat field.
    NoThermostatFields,
    /// The device's own error object, `{"error":-1}` or `{"error_msg":"..."}`.
    ErrorObject(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidJson(cause) => write!(f, "not valid JSON ({cause})"),
            Self::NotAnObject => f.write_str("expected a JSON object"),
            Self::NoThermostatFields => f.write_str("no usable thermostat field in the object"),
            Self::ErrorObject(message) => write!(f, "device sent an error: {message}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// The problem with one field of an otherwise usable reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoteKind {
    /// `-1`: the device failed to read this value this time.
    NegativeOne,
    /// A number outside the range this field can take.
    OutOfRange(f64),
    /// Not a number at all (a string, an object, `null`).
    WrongType,
}

/// One field that was dropped from a sample, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldNote {
    pub field: &'static str,
    pub kind: NoteKind,
}

/// A parsed `/tstat` reply: the usable state and the notes about dropped fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TstatReply {
    pub state: ThermostatState,
    pub notes: Vec<FieldNote>,
}

/// Parses a `GET /tstat` body.
pub fn parse_tstat(body: &[u8]) -> Result<TstatReply, ParseError> {
    let raw = parse_object::<RawTstat>(body)?;
    if let Some(message) = raw.device_error() {
        return Err(ParseError::ErrorObject(message));
    }

    let mut notes = Vec::new();
    let mut judge = |field, value: &Field, valid: &dyn Fn(f64) -> bool| {
        judge_field(field, value, valid, &mut notes)
    };

    let temp = judge("temp", &raw.temp, &|v| PLAUSIBLE_TEMP.contains(&v));
    let t_heat = judge("t_heat", &raw.t_heat, &|v| PLAUSIBLE_SETPOINT.contains(&v));
    let t_cool = judge("t_cool", &raw.t_cool, &|v| PLAUSIBLE_SETPOINT.contains(&v));
    let tmode = judge("tmode", &raw.tmode, &is_code_in(0..=3));
    let fmode = judge("fmode", &raw.fmode, &is_code_in(0..=2));
    let tstate = judge("tstate", &raw.tstate, &is_code_in(0..=2));
    let fstate = judge("fstate", &raw.fstate, &is_code_in(0..=1));
    let hold = judge("hold", &raw.hold, &is_code_in(0..=1));
    // Firmware before 1.04 may report any non-zero value for an active override.
    let override_flag = judge("override", &raw.override_flag, &|v| {
        v >= 0.0 && v.fract() == 0.0
    });

    let state = ThermostatState {
        temp,
        t_heat,
        t_cool,
        tmode: tmode.and_then(|v| Tmode::from_code(v as i64)),
        fmode: fmode.and_then(|v| Fmode::from_code(v as i64)),
        tstate: tstate.and_then(|v| Tstate::from_code(v as i64)),
        fstate: fstate.map(|v| v != 0.0),
        hold: hold.map(|v| v != 0.0),
        override_active: override_flag.map(|v| v != 0.0),
    };

    if state == ThermostatState::default() {
        return Err(ParseError::NoThermostatFields);
    }
    Ok(TstatReply { state, notes })
}

/// Parses the reply to a `POST`: `{"success":0}` (zero is success) or, before firmware
/// 1.04, the plain text `Tstat Command Processed`. Returns the device's own words on
/// failure.
pub fn parse_post_reply(body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.starts_with("Tstat Command Processed") {
        return Ok(());
    }

    match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(value) if value.get("success").and_then(|v| v.as_i64()) == Some(0) => Ok(()),
        _ => Err(trimmed.chars().take(200).collect()),
    }
}

pub(crate) fn parse_object<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, ParseError> {
    let trimmed = body.trim_ascii();
    if !trimmed.starts_with(b"{") {
        return match serde_json::from_slice::<IgnoredAny>(trimmed) {
            Ok(_) => Err(ParseError::NotAnObject),
            Err(error) => Err(ParseError::InvalidJson(error.to_string())),
        };
    }
    serde_json::from_slice(trimmed).map_err(|error| ParseError::InvalidJson(error.to_string()))
}

fn is_code_in(range: std::ops::RangeInclusive<i64>) -> impl Fn(f64) -> bool {
    move |value| value.fract() == 0.0 && range.contains(&(value as i64))
}

fn judge_field(
    field: &'static str,
    value: &Field,
    valid: &dyn Fn(f64) -> bool,
    notes: &mut Vec<FieldNote>,
) -> Option<f64> {
    let kind = match *value {
        Field::Missing => return None,
        Field::Number(number) if valid(number) => return Some(number),
        Field::Number(-1.0) => NoteKind::NegativeOne,
        Field::Number(number) => NoteKind::OutOfRange(number),
        Field::WrongType => NoteKind::WrongType,
    };
    notes.push(FieldNote { field, kind });
    None
}

/// The keys of `/tstat` the daemon stores. Unknown keys (`time`, `program_mode`,
/// `t_type_post`, future additions) are skipped.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTstat {
    temp: Field,
    tmode: Field,
    fmode: Field,
    #[serde(rename = "override")]
    override_flag: Field,
    hold: Field,
    t_heat: Field,
    t_cool: Field,
    tstate: Field,
    fstate: Field,
    error: Field,
    error_msg: Option<ErrorText>,
}

impl RawTstat {
    /// Returns the device's error message when it sent `{"error":-1}` or
    /// `{"error_msg":"..."}` in place of a state object.
    fn device_error(&self) -> Option<String> {
        if let Some(ErrorText(message)) = &self.error_msg {
            return Some(message.clone());
        }
        match self.error {
            Field::Missing => None,
            Field::Number(code) => Some(format!("error {code}")),
            Field::WrongType => Some("error".to_string()),
        }
    }
}

/// One JSON value judged only by whether it is a number.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) enum Field {
    #[default]
    Missing,
    Number(f64),
    WrongType,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_f64<E>(self, value: f64) -> Result<Field, E> {
        Ok(Field::Number(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Field, E> {
        Ok(Field::Number(value as f64))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Field, E> {
        Ok(Field::Number(value as f64))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Field, E> {
        Ok(Field::WrongType)
    }

    fn visit_str<E>(self, _: &str) -> Result<Field, E> {
        Ok(Field::WrongType)
    }

    fn visit_unit<E>(self) -> Result<Field, E> {
        Ok(Field::WrongType)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::WrongType)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::WrongType)
    }
}

/// The text of an `error_msg`, whatever JSON type it came as.
struct ErrorText(String);

impl<'de> Deserialize<'de> for ErrorText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer).map_err(de::Error::custom)?;
        let text = match value {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        };
        Ok(Self(text.chars().take(200).collect()))
    }
}

#[cfg(test)]
mod tests;
