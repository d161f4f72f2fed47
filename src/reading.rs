//! One poll's result as the daemon stores it: the thermostat state after the device's
//! quirks (`-1`, missing keys, implausible values) have been turned into `None`.

use crate::thermostat::ThermostatId;

/// Thermostat operating mode (`tmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tmode {
    Off,
    Heat,
    Cool,
    Auto,
}

impl Tmode {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Off),
            1 => Some(Self::Heat),
            2 => Some(Self::Cool),
            3 => Some(Self::Auto),
            _ => None,
        }
    }

    pub fn code(self) -> i16 {
        match self {
            Self::Off => 0,
            Self::Heat => 1,
            Self::Cool => 2,
            Self::Auto => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Heat => "heat",
            Self::Cool => "cool",
            Self::Auto => "auto",
        }
    }
}

/// Fan mode (`fmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fmode {
    Auto,
    Circulate,
    On,
}

impl Fmode {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Auto),
            1 => Some(Self::Circulate),
            2 => Some(Self::On),
            _ => None,
        }
    }

    pub fn code(self) -> i16 {
        match self {
            Self::Auto => 0,
            Self::Circulate => 1,
            Self::On => 2,
        }
    }
}

/// The current activity of the HVAC equipment (`tstate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tstate {
    Idle,
    Heating,
    Cooling,
}

impl Tstate {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Idle),
            1 => Some(Self::Heating),
            2 => Some(Self::Cooling),
            _ => None,
        }
    }

    pub fn code(self) -> i16 {
        match self {
            Self::Idle => 0,
            Self::Heating => 1,
            Self::Cooling => 2,
        }
    }

    /// Returns true while the equipment heats or cools, which is what
    /// `hvac_runtime_percent` counts.
    pub fn is_running(self) -> bool {
        self != Self::Idle
    }
}

/// The thermostat state from one successful `GET /tstat`. A field is `None` when the
/// device left it out (setpoint keys depend on the mode), sent `-1`, or sent a value
/// outside the plausible range for that field.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThermostatState {
    /// Indoor temperature, °F.
    pub temp: Option<f64>,
    /// Heat setpoint, °F; only reported in heat mode (and on some units in auto).
    pub t_heat: Option<f64>,
    /// Cool setpoint, °F; only reported in cool mode (and on some units in auto).
    pub t_cool: Option<f64>,
    pub tmode: Option<Tmode>,
    pub fmode: Option<Fmode>,
    pub tstate: Option<Tstate>,
    /// Fan relay: true while the fan runs. Some units report false while heating.
    pub fstate: Option<bool>,
    pub hold: Option<bool>,
    /// True while a temporary setpoint is in force. CT30-class units always report false.
    pub override_active: Option<bool>,
}

/// The kind of a change, most significant first: a reading that changes the mode and
/// the temperature is reported as a mode change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// The first reading of a thermostat since start-up.
    Initial,
    Mode,
    Setpoint,
    Hold,
    Override,
    Fan,
    HvacState,
    Temperature,
    /// A person changed a commanded setting at the wall; the change is kept.
    WallChange,
    /// The unit lost its commanded settings the way a power cut does: hold dropped and
    /// the program's setpoint came back.
    DeviceReset,
    /// The unit never took a commanded setting, though it accepted the write.
    WriteDropped,
    /// The unit's clock jumped and its commanded settings changed with it.
    ClockJump,
    /// The commanded settings were written again and read back as commanded.
    Reapplied,
    /// Re-applying the commanded settings failed every time the retry budget allows.
    NotHolding,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Mode => "mode",
            Self::Setpoint => "setpoint",
            Self::Hold => "hold",
            Self::Override => "override",
            Self::Fan => "fan",
            Self::HvacState => "hvac_state",
            Self::Temperature => "temperature",
            Self::WallChange => "wall_change",
            Self::DeviceReset => "device_reset",
            Self::WriteDropped => "write_dropped",
            Self::ClockJump => "clock_jump",
            Self::Reapplied => "reapplied",
            Self::NotHolding => "not_holding",
        }
    }

    /// Returns whether this change concerns the desired state: drift or enforcement.
    pub fn is_desired_state(self) -> bool {
        matches!(
            self,
            Self::WallChange
                | Self::DeviceReset
                | Self::WriteDropped
                | Self::ClockJump
                | Self::Reapplied
                | Self::NotHolding
        )
    }
}

/// The difference between two readings.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub change_type: ChangeType,
    /// Names of the changed fields, as in the `/tstat` protocol.
    pub fields: Vec<&'static str>,
}

/// A stored poll result: the state plus when and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub thermostat_id: ThermostatId,
    /// The time the reply arrived, not when the request was sent: a reply can take 16 s.
    pub ts: jiff::Timestamp,
    pub state: ThermostatState,
    /// Outside temperature from the weather service, °F, when one is current.
    pub local_temp: Option<f64>,
    /// The change from the previous reading of this thermostat, if any. The first
    /// reading after start-up carries `ChangeType::Initial`.
    pub change: Option<StateChange>,
}

/// A poll that produced no reading: timeout, refused connection, bad body.
#[derive(Debug, Clone, PartialEq)]
pub struct PollFailure {
    pub thermostat_id: ThermostatId,
    pub ts: jiff::Timestamp,
    /// Short machine-readable cause, for example `timeout` or `connect`.
    pub kind: &'static str,
}
