//! The room a simulated thermostat sits in: a first-order thermal model that drifts
//! toward the outside temperature, plus the heat/cool relay logic with its swing.
//! Pure code, advanced by explicit time steps so tests need no sleeps.

/// Largest step the integrator takes, in seconds. Longer advances are split so the
/// relay can switch between steps.
const MAX_STEP_SECONDS: f64 = 30.0;

/// Maximum advance simulated step by step, in seconds (one week). A longer gap is
/// clipped: the room has long reached equilibrium by then.
const MAX_ADVANCE_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// In auto mode the unit changes from heating duty to cooling duty this many °F above
/// the heat target, and back to heating duty this many °F below the cool target.
pub const AUTO_CHANGEOVER_F: f64 = 3.0;

/// State of the HVAC relay, with the `tstate` codes of the device protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    Idle,
    Heating,
    Cooling,
}

impl Relay {
    /// Returns the `tstate` value: 0 idle, 1 heating, 2 cooling.
    pub fn code(self) -> i64 {
        match self {
            Self::Idle => 0,
            Self::Heating => 1,
            Self::Cooling => 2,
        }
    }
}

/// Control mode of the thermostat, derived from `tmode` and the two targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Control {
    Off,
    Heat { target: f64 },
    Cool { target: f64 },
    Auto { heat_target: f64, cool_target: f64 },
}

/// Thermal constants of one room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomParams {
    /// Fraction of the indoor/outdoor difference lost per hour.
    pub loss_per_hour: f64,
    /// °F per hour the furnace adds while heating.
    pub heating_f_per_hour: f64,
    /// °F per hour the air conditioner removes while cooling.
    pub cooling_f_per_hour: f64,
    /// °F past the target before the relay turns on (the `tswing` setting).
    pub swing_f: f64,
}

impl Default for RoomParams {
    fn default() -> Self {
        Self {
            loss_per_hour: 0.2,
            heating_f_per_hour: 12.0,
            cooling_f_per_hour: 10.0,
            swing_f: 1.0,
        }
    }
}

/// The room state: the true indoor temperature, the outside temperature and the relay.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    /// Indoor temperature, °F, unrounded.
    pub indoor_f: f64,
    /// Outside temperature, °F.
    pub outside_f: f64,
    pub params: RoomParams,
    relay: Relay,
    /// In auto mode: true while the unit works toward the cool target.
    auto_cooling_duty: bool,
}

impl Room {
    pub fn new(indoor_f: f64, outside_f: f64, params: RoomParams) -> Self {
        Self {
            indoor_f,
            outside_f,
            params,
            relay: Relay::Idle,
            auto_cooling_duty: false,
        }
    }

    pub fn relay(&self) -> Relay {
        self.relay
    }

    /// Returns the temperature the thermostat reports: the indoor value rounded to 0.5 °F.
    pub fn reported_f(&self) -> f64 {
        round_half(self.indoor_f)
    }

    /// Advances the room by `seconds` under `control`, switching the relay between
    /// sub-steps of at most 30 s.
    pub fn advance(&mut self, seconds: f64, control: Control) {
        let mut remaining = seconds.clamp(0.0, MAX_ADVANCE_SECONDS);

        while remaining > 0.0 {
            let step = remaining.min(MAX_STEP_SECONDS);
            self.update_relay(control);
            self.integrate(step);
            remaining -= step;
        }

        self.update_relay(control);
    }

    /// Applies one Euler step of `seconds` with the current relay.
    fn integrate(&mut self, seconds: f64) {
        let hours = seconds / 3600.0;
        let loss = self.params.loss_per_hour * (self.indoor_f - self.outside_f);
        let hvac = match self.relay {
            Relay::Idle => 0.0,
            Relay::Heating => self.params.heating_f_per_hour,
            Relay::Cooling => -self.params.cooling_f_per_hour,
        };
        self.indoor_f += (hvac - loss) * hours;
    }

    /// Sets the relay from the control and the current temperature, with hysteresis:
    /// heating starts below `target - swing` and stops at the target, cooling starts
    /// above `target + swing` and stops at the target.
    pub fn update_relay(&mut self, control: Control) {
        self.relay = match control {
            Control::Off => Relay::Idle,
            Control::Heat { target } => self.heat_relay(target),
            Control::Cool { target } => self.cool_relay(target),
            Control::Auto {
                heat_target,
                cool_target,
            } => self.auto_relay(heat_target, cool_target),
        };
    }

    fn heat_relay(&self, target: f64) -> Relay {
        let running = self.relay == Relay::Heating;
        if self.indoor_f < target - self.params.swing_f || (running && self.indoor_f < target) {
            Relay::Heating
        } else {
            Relay::Idle
        }
    }

    fn cool_relay(&self, target: f64) -> Relay {
        let running = self.relay == Relay::Cooling;
        if self.indoor_f > target + self.params.swing_f || (running && self.indoor_f > target) {
            Relay::Cooling
        } else {
            Relay::Idle
        }
    }

    /// Auto mode keeps a duty (heating or cooling) and changes it 3 °F past the
    /// other target, so the relay never flips straight from heating to cooling.
    fn auto_relay(&mut self, heat_target: f64, cool_target: f64) -> Relay {
        if !self.auto_cooling_duty && self.indoor_f >= heat_target + AUTO_CHANGEOVER_F {
            self.auto_cooling_duty = true;
        } else if self.auto_cooling_duty && self.indoor_f <= cool_target - AUTO_CHANGEOVER_F {
            self.auto_cooling_duty = false;
        }

        if self.auto_cooling_duty {
            self.cool_relay(cool_target)
        } else {
            self.heat_relay(heat_target)
        }
    }
}

/// Rounds to the nearest 0.5, the resolution of every temperature the device shows.
pub fn round_half(value: f64) -> f64 {
    (value * 2.0).round() / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cold_room() -> Room {
        Room::new(60.0, 30.0, RoomParams::default())
    }

    #[test]
    fn heating_warms_cold_room() {
        let mut room = cold_room();
        room.advance(600.0, Control::Heat { target: 70.0 });
        assert_eq!(room.relay(), Relay::Heating);
        assert!(
            room.indoor_f > 60.5,
            "indoor {} did not rise",
            room.indoor_f
        );
    }

    #[test]
    fn heating_reaches_target_then_idles() {
        let mut room = cold_room();
        room.advance(3.0 * 3600.0, Control::Heat { target: 68.0 });
        assert!(
            (room.indoor_f - 68.0).abs() < 1.5,
            "indoor {}",
            room.indoor_f
        );
    }

    #[test]
    fn off_drifts_toward_outside() {
        let mut room = cold_room();
        room.advance(3600.0, Control::Off);
        assert_eq!(room.relay(), Relay::Idle);
        assert!(room.indoor_f < 60.0);
        assert!(room.indoor_f > 30.0);
    }

    #[test]
    fn cooling_starts_past_swing() {
        let mut room = Room::new(75.5, 95.0, RoomParams::default());
        room.update_relay(Control::Cool { target: 75.0 });
        assert_eq!(room.relay(), Relay::Idle);
        room.indoor_f = 76.5;
        room.update_relay(Control::Cool { target: 75.0 });
        assert_eq!(room.relay(), Relay::Cooling);
        room.advance(3600.0, Control::Cool { target: 75.0 });
        assert!(room.indoor_f < 76.5, "indoor {}", room.indoor_f);
    }

    #[test]
    fn auto_changes_duty_past_changeover() {
        let auto = Control::Auto {
            heat_target: 68.0,
            cool_target: 76.0,
        };
        let mut room = Room::new(72.0, 95.0, RoomParams::default());
        room.update_relay(auto);
        assert_eq!(room.relay(), Relay::Idle);
        room.indoor_f = 77.5;
        room.update_relay(auto);
        assert_eq!(room.relay(), Relay::Cooling);
        room.indoor_f = 66.0;
        room.update_relay(auto);
        assert_eq!(room.relay(), Relay::Heating);
    }

    #[test]
    fn reported_temperature_rounds_to_half() {
        let mut room = cold_room();
        room.indoor_f = 71.26;
        assert_eq!(room.reported_f(), 71.5);
        room.indoor_f = 71.24;
        assert_eq!(room.reported_f(), 71.0);
    }
}
