//! The state of one simulated thermostat and its protocol semantics without sockets:
//! `/tstat` and the other bodies it serves, POST handling (mode switch on a mismatched
//! setpoint, temporary override, hold, clock writes) and the weekly program.

use std::fmt::Write as _;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::profile::ModelProfile;
use super::room::{Control, Relay, Room, RoomParams, round_half};

const MINUTES_PER_DAY: u32 = 24 * 60;
const SECONDS_PER_WEEK: f64 = 7.0 * 24.0 * 3600.0;

/// Setpoints outside this range (°F) are ignored, as firmware ignores invalid values
/// while still returning success.
const SETPOINT_RANGE_F: std::ops::RangeInclusive<f64> = 35.0..=95.0;

/// Maximum length of a name stored by `POST /sys/name`, in bytes.
const MAX_NAME_LEN: usize = 32;

/// Default program periods `(minute after midnight, °F)` for every day.
const HEAT_PERIODS: [(u32, f64); 4] = [(360, 70.0), (480, 62.0), (1080, 70.0), (1320, 62.0)];
const COOL_PERIODS: [(u32, f64); 4] = [(360, 76.0), (480, 82.0), (1080, 76.0), (1320, 78.0)];

/// Thermostat mode (`tmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Heat,
    Cool,
    Auto,
}

impl Mode {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Off),
            1 => Some(Self::Heat),
            2 => Some(Self::Cool),
            3 => Some(Self::Auto),
            _ => None,
        }
    }

    pub fn code(self) -> i64 {
        match self {
            Self::Off => 0,
            Self::Heat => 1,
            Self::Cool => 2,
            Self::Auto => 3,
        }
    }
}

/// Behaviour switches for POST handling that differ between units in the field.
#[derive(Debug, Clone, PartialEq)]
pub struct PostOptions {
    /// A POST carrying both `it_heat` and `it_cool` applies only the first of them.
    pub only_first_interior_target: bool,
    /// Probability (0 to 1) that a POST which changes `tmode` also clears hold.
    pub hold_drop_probability: f64,
    /// Reply to POSTs with the plain text `Tstat Command Processed`, like firmware
    /// older than 1.04.
    pub plain_text_reply: bool,
    /// Answer every POST with success but apply nothing, like firmware that drops
    /// writes (FIELD-CASES BL-14).
    pub ignore_writes: bool,
}

impl Default for PostOptions {
    fn default() -> Self {
        Self {
            only_first_interior_target: false,
            hold_drop_probability: 0.0,
            plain_text_reply: false,
            ignore_writes: false,
        }
    }
}

/// Error for a POST body the device cannot use; the device replies `{"error":-1}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPost(pub String);

impl std::fmt::Display for InvalidPost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid POST body: {}", self.0)
    }
}

impl std::error::Error for InvalidPost {}

/// The keys of a POST that changed the state, and those accepted but ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostOutcome {
    pub applied: Vec<String>,
    pub ignored: Vec<String>,
    /// True when a mode change cleared hold (see `PostOptions::hold_drop_probability`).
    pub hold_dropped: bool,
}

/// One value in a JSON body the device prints, so faults can replace it with -1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field {
    /// A temperature, printed with two decimals (`71.50`).
    Temp(f64),
    Int(i64),
    Time {
        day: u32,
        hour: u32,
        minute: u32,
    },
}

/// A JSON object as an ordered key list, printed the way the firmware prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct Body(pub Vec<(&'static str, Field)>);

impl Body {
    pub fn render(&self) -> String {
        let mut out = String::from("{");
        for (index, (key, field)) in self.0.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{key}\":");
            match field {
                Field::Temp(value) => {
                    let _ = write!(out, "{value:.2}");
                }
                Field::Int(value) => {
                    let _ = write!(out, "{value}");
                }
                Field::Time { day, hour, minute } => {
                    let _ = write!(out, "{{\"day\":{day},\"hour\":{hour},\"minute\":{minute}}}");
                }
            }
        }
        out.push('}');
        out
    }
}

/// A seven-day program: for each day (0 = Monday) its periods as
/// `(minute after midnight, target °F)`.
#[derive(Debug, Clone, PartialEq)]
pub struct WeekProgram {
    pub days: [Vec<(u32, f64)>; 7],
}

impl WeekProgram {
    /// Builds the same day for all seven days, padding to `periods` by repeating the
    /// last period the way real units fill unused slots.
    fn uniform(day: &[(u32, f64)], periods: usize) -> Self {
        let mut periods_of_day = day.to_vec();
        while periods_of_day.len() < periods {
            let last = periods_of_day.last().copied().unwrap_or((0, 65.0));
            periods_of_day.push(last);
        }
        Self {
            days: std::array::from_fn(|_| periods_of_day.clone()),
        }
    }

    /// Returns the period in force at `week_minute` as `(period id, target)`. Before
    /// the first period of a day the previous day's last period still applies.
    pub fn active(&self, week_minute: u32) -> (usize, f64) {
        let day = (week_minute / MINUTES_PER_DAY) as usize % 7;
        let minute = week_minute % MINUTES_PER_DAY;

        let today = &self.days[day];
        if let Some(index) = today.iter().rposition(|(start, _)| *start <= minute) {
            return (day * 16 + index, today[index].1);
        }

        let previous_day = (day + 6) % 7;
        let yesterday = &self.days[previous_day];
        let index = yesterday.len().saturating_sub(1);
        let target = yesterday.get(index).map_or(65.0, |period| period.1);
        (previous_day * 16 + index, target)
    }

    /// Renders the `/tstat/program/heat|cool` body: `{"0":[min,temp,…],…,"6":[…]}`.
    pub fn render(&self) -> String {
        let mut out = String::from("{");
        for (day, periods) in self.days.iter().enumerate() {
            if day > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{day}\":[");
            for (index, (start, target)) in periods.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{start},{}", format_program_temp(*target));
            }
            out.push(']');
        }
        out.push('}');
        out
    }
}

/// Program temperatures print as integers when whole and with two decimals otherwise
/// (`[390,62.50,1200,61]`).
fn format_program_temp(target: f64) -> String {
    if target.fract() == 0.0 {
        format!("{target:.0}")
    } else {
        format!("{target:.2}")
    }
}

/// A simulated thermostat: identity, settings, program, clock and room.
#[derive(Debug, Clone)]
pub struct Thermostat {
    pub profile: ModelProfile,
    pub uuid: String,
    pub name: String,
    pub post_options: PostOptions,
    pub room: Room,
    mode: Mode,
    fmode: i64,
    hold: bool,
    /// True while a temporary setpoint is in force. Kept even on profiles that never
    /// report it, because the clock and program boundaries still clear it there.
    temporary_override: bool,
    heat_target: f64,
    cool_target: f64,
    program_mode: i64,
    heat_program: WeekProgram,
    cool_program: WeekProgram,
    /// Device clock in seconds since Monday 00:00 at simulated time zero.
    clock_origin: f64,
    /// Simulated seconds since the fleet started, as of the last `advance_to`.
    sim_now: f64,
    /// The program period last seen, to notice boundaries.
    period: usize,
}

impl Thermostat {
    /// Creates a unit in heat mode on its program, with the clock at `week_minute`
    /// (minutes since Monday 00:00) and the room at `indoor_f`.
    pub fn new(profile: ModelProfile, uuid: &str, week_minute: u32, indoor_f: f64) -> Self {
        let periods = profile.program_periods();
        let heat_program = WeekProgram::uniform(&HEAT_PERIODS, periods);
        let cool_program = WeekProgram::uniform(&COOL_PERIODS, periods);
        let (period, heat_target) = heat_program.active(week_minute);
        let (_, cool_target) = cool_program.active(week_minute);

        Self {
            name: default_name(uuid),
            uuid: uuid.to_string(),
            profile,
            post_options: PostOptions::default(),
            room: Room::new(indoor_f, 45.0, RoomParams::default()),
            mode: Mode::Heat,
            fmode: 0,
            hold: false,
            temporary_override: false,
            heat_target,
            cool_target,
            program_mode: 0,
            heat_program,
            cool_program,
            clock_origin: f64::from(week_minute) * 60.0,
            sim_now: 0.0,
            period,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn hold(&self) -> bool {
        self.hold
    }

    /// Returns whether a temporary setpoint is in force, whatever the profile reports.
    pub fn temporary_override(&self) -> bool {
        self.temporary_override
    }

    pub fn heat_target(&self) -> f64 {
        self.heat_target
    }

    pub fn cool_target(&self) -> f64 {
        self.cool_target
    }

    /// Returns the device clock as minutes since Monday 00:00.
    pub fn week_minute(&self) -> u32 {
        let seconds = (self.clock_origin + self.sim_now).rem_euclid(SECONDS_PER_WEEK);
        (seconds / 60.0) as u32
    }

    /// Moves simulated time forward to `sim_seconds`: runs the room, then loads the
    /// program targets if a program boundary passed and hold is off.
    pub fn advance_to(&mut self, sim_seconds: f64) {
        let elapsed = sim_seconds - self.sim_now;
        if elapsed <= 0.0 {
            return;
        }

        self.room.advance(elapsed, self.control());
        self.sim_now = sim_seconds;

        let (period, _) = self.heat_program.active(self.week_minute());
        if period != self.period {
            self.period = period;
            if !self.hold {
                self.load_program_targets();
            }
        }
    }

    /// Sets the device clock to `day` (0 = Monday), `hour` and `minute`. A clock write
    /// clears a temporary override and restores the program targets unless hold is on.
    pub fn set_clock(&mut self, day: u32, hour: u32, minute: u32) {
        let week_seconds = f64::from((day * MINUTES_PER_DAY + hour * 60 + minute) * 60);
        self.clock_origin = (week_seconds - self.sim_now).rem_euclid(SECONDS_PER_WEEK);
        self.period = self.heat_program.active(self.week_minute()).0;

        if !self.hold {
            self.load_program_targets();
        }
    }

    /// Simulates a power cycle: hold and any override are lost and the program
    /// targets return. Mode, clock and room are kept.
    pub fn power_cycle(&mut self) {
        self.hold = false;
        self.load_program_targets();
    }

    fn load_program_targets(&mut self) {
        let week_minute = self.week_minute();
        self.heat_target = self.heat_program.active(week_minute).1;
        self.cool_target = self.cool_program.active(week_minute).1;
        self.temporary_override = false;
    }

    fn control(&self) -> Control {
        match self.mode {
            Mode::Off => Control::Off,
            Mode::Heat => Control::Heat {
                target: self.heat_target,
            },
            Mode::Cool => Control::Cool {
                target: self.cool_target,
            },
            Mode::Auto => Control::Auto {
                heat_target: self.heat_target,
                cool_target: self.cool_target,
            },
        }
    }

    /// Builds the `GET /tstat` body with keys in the order real units print them.
    pub fn tstat_body(&self) -> Body {
        let mut fields = vec![
            ("temp", Field::Temp(self.room.reported_f())),
            ("tmode", Field::Int(self.mode.code())),
            ("fmode", Field::Int(self.fmode)),
            ("override", Field::Int(i64::from(self.reported_override()))),
            ("hold", Field::Int(i64::from(self.hold))),
        ];

        match self.mode {
            Mode::Heat => fields.push(("t_heat", Field::Temp(self.heat_target))),
            Mode::Cool => fields.push(("t_cool", Field::Temp(self.cool_target))),
            Mode::Off | Mode::Auto => {}
        }

        if self.profile.reports_program_mode() {
            fields.push(("program_mode", Field::Int(self.reported_program_mode())));
        }

        let relay = self.room.relay();
        fields.push(("tstate", Field::Int(relay.code())));
        fields.push(("fstate", Field::Int(i64::from(self.fan_running(relay)))));
        fields.push(("time", self.time_field()));
        fields.push(("t_type_post", Field::Int(0)));
        Body(fields)
    }

    fn reported_override(&self) -> bool {
        self.temporary_override && self.profile.reports_override()
    }

    fn reported_program_mode(&self) -> i64 {
        if self.profile.program_mode_unsupported() {
            -1
        } else {
            self.program_mode
        }
    }

    fn fan_running(&self, relay: Relay) -> bool {
        self.fmode == 2 || relay != Relay::Idle
    }

    fn time_field(&self) -> Field {
        let week_minute = self.week_minute();
        Field::Time {
            day: week_minute / MINUTES_PER_DAY,
            hour: (week_minute % MINUTES_PER_DAY) / 60,
            minute: week_minute % 60,
        }
    }

    /// `GET /tstat/ttemp`: both targets whatever the mode.
    pub fn ttemp_body(&self) -> Body {
        Body(vec![
            ("t_heat", Field::Temp(self.heat_target)),
            ("t_cool", Field::Temp(self.cool_target)),
        ])
    }

    /// `GET /tstat/humidity`: a reading on CT80s, `-1.00` ("no sensor") elsewhere.
    pub fn humidity_body(&self) -> Body {
        let humidity = if self.profile.has_humidity_sensor() {
            41.0
        } else {
            -1.0
        };
        Body(vec![("humidity", Field::Temp(humidity))])
    }

    /// One-key sub-resources such as `/tstat/temp`, or `None` for an unknown key.
    pub fn field_body(&self, key: &str) -> Option<Body> {
        self.tstat_body()
            .0
            .into_iter()
            .find(|(name, _)| *name == key)
            .map(|entry| Body(vec![entry]))
    }

    /// `GET /tstat/program/heat` or `/cool`.
    pub fn program_body(&self, cooling: bool) -> String {
        if cooling {
            self.cool_program.render()
        } else {
            self.heat_program.render()
        }
    }

    /// `GET /sys`.
    pub fn sys_body(&self) -> String {
        format!(
            "{{\"uuid\":\"{}\",\"api_version\":113,\"fw_version\":\"1.04.84\",\
             \"wlan_fw_version\":\"v10.105576\"}}",
            self.uuid
        )
    }

    /// `GET /tstat/model`.
    pub fn model_body(&self) -> String {
        serde_json::json!({ "model": self.profile.model_string() }).to_string()
    }

    /// `GET /sys/name`.
    pub fn name_body(&self) -> String {
        serde_json::json!({ "name": self.name }).to_string()
    }

    /// Applies `POST /sys/name`: a JSON object with a string `name`.
    pub fn apply_name_post(&mut self, body: &str) -> Result<(), InvalidPost> {
        let object = parse_object(body)?;
        let name = object
            .iter()
            .find(|(key, _)| key == "name")
            .and_then(|(_, value)| value.as_str())
            .ok_or_else(|| InvalidPost("expected a string \"name\" key".to_string()))?;

        self.name = name.chars().take(MAX_NAME_LEN).collect();
        Ok(())
    }

    /// Applies `POST /tstat`, key by key in body order, the way the firmware does.
    /// Unknown keys and invalid values are ignored, so the caller still replies with
    /// success for them. `rng` decides whether a mode change drops hold.
    pub fn apply_post(
        &mut self,
        body: &str,
        rng: &mut fastrand::Rng,
    ) -> Result<PostOutcome, InvalidPost> {
        let object = parse_object(body)?;
        let mut outcome = PostOutcome::default();
        if self.post_options.ignore_writes {
            outcome.ignored = object.iter().map(|(key, _)| key.clone()).collect();
            return Ok(outcome);
        }
        let mut mode_changed = false;
        let mut interior_target_seen = false;

        for (key, value) in &object {
            let applied = match key.as_str() {
                "tmode" => {
                    let changed = self.post_mode(value);
                    mode_changed |= changed == Some(true);
                    changed.is_some()
                }
                "t_heat" => self.post_setpoint(value, Mode::Heat),
                "t_cool" => self.post_setpoint(value, Mode::Cool),
                "it_heat" | "it_cool" => {
                    let skip = interior_target_seen && self.post_options.only_first_interior_target;
                    interior_target_seen = true;
                    !skip && self.post_interior_target(value, key == "it_cool")
                }
                "a_heat" => self.post_absolute(value, false),
                "a_cool" => self.post_absolute(value, true),
                "fmode" => self.post_fmode(value),
                "hold" => self.post_hold(value),
                "time" => self.post_time(value),
                "program_mode" => self.post_program_mode(value),
                _ => false,
            };

            if applied {
                outcome.applied.push(key.clone());
            } else {
                outcome.ignored.push(key.clone());
            }
        }

        if mode_changed && self.hold && rng.f64() < self.post_options.hold_drop_probability {
            self.hold = false;
            outcome.hold_dropped = true;
        }
        Ok(outcome)
    }

    /// Returns `Some(true)` when the mode changed, `Some(false)` when it was already
    /// set, `None` when the value is invalid or unsupported on this model.
    fn post_mode(&mut self, value: &Value) -> Option<bool> {
        let mode = value.as_i64().and_then(Mode::from_code)?;
        if mode == Mode::Auto && !self.profile.supports_auto() {
            return None;
        }
        if mode == self.mode {
            return Some(false);
        }

        // A mode change clears the current setpoint: the program target returns.
        self.mode = mode;
        self.load_program_targets();
        Some(true)
    }

    /// `t_heat`/`t_cool`: sets a temporary target (permanent under hold) and switches
    /// the unit to the matching mode if it is in another one.
    fn post_setpoint(&mut self, value: &Value, mode: Mode) -> bool {
        let Some(target) = setpoint(value) else {
            return false;
        };
        if self.mode != mode {
            self.mode = mode;
            self.load_program_targets();
        }

        match mode {
            Mode::Cool => self.cool_target = target,
            _ => self.heat_target = target,
        }
        self.temporary_override = !self.hold;
        true
    }

    /// `it_heat`/`it_cool`: sets a target without touching the mode, on models with
    /// interior targets only.
    fn post_interior_target(&mut self, value: &Value, cooling: bool) -> bool {
        let Some(target) = setpoint(value) else {
            return false;
        };
        if !self.profile.supports_interior_targets() {
            return false;
        }

        if cooling {
            self.cool_target = target;
        } else {
            self.heat_target = target;
        }
        self.temporary_override = !self.hold;
        true
    }

    /// `a_heat`/`a_cool`: an absolute target that never expires, modelled as the
    /// target plus hold.
    fn post_absolute(&mut self, value: &Value, cooling: bool) -> bool {
        let Some(target) = setpoint(value) else {
            return false;
        };

        if cooling {
            self.cool_target = target;
        } else {
            self.heat_target = target;
        }
        self.hold = true;
        self.temporary_override = false;
        true
    }

    fn post_fmode(&mut self, value: &Value) -> bool {
        match value.as_i64() {
            Some(0 | 2) => {}
            Some(1) if self.profile.supports_circulate() => {}
            _ => return false,
        }
        self.fmode = value.as_i64().unwrap_or(0);
        true
    }

    /// `hold` 1 keeps the current targets across program boundaries; `hold` 0 returns
    /// to the program at once.
    fn post_hold(&mut self, value: &Value) -> bool {
        match value.as_i64() {
            Some(1) => {
                self.hold = true;
                self.temporary_override = false;
                true
            }
            Some(0) => {
                self.hold = false;
                self.load_program_targets();
                true
            }
            _ => false,
        }
    }

    fn post_time(&mut self, value: &Value) -> bool {
        let member = |name: &str, limit: u64| {
            value
                .get(name)
                .and_then(Value::as_u64)
                .filter(|member| *member < limit)
        };
        let (Some(day), Some(hour), Some(minute)) =
            (member("day", 7), member("hour", 24), member("minute", 60))
        else {
            return false;
        };

        // The filters above bound each member below 60, so the casts are lossless.
        self.set_clock(day as u32, hour as u32, minute as u32);
        true
    }

    fn post_program_mode(&mut self, value: &Value) -> bool {
        if !self.profile.reports_program_mode() || self.profile.program_mode_unsupported() {
            return false;
        }
        match value.as_i64() {
            Some(mode @ 0..=3) => {
                self.program_mode = mode;
                true
            }
            _ => false,
        }
    }
}

/// Builds the factory name: `thermostat-` and the last three uuid bytes, upper-case.
pub fn default_name(uuid: &str) -> String {
    let tail = uuid.get(uuid.len().saturating_sub(6)..).unwrap_or(uuid);
    let upper = tail.to_ascii_uppercase();
    let bytes: Vec<&str> = (0..upper.len())
        .step_by(2)
        .filter_map(|start| upper.get(start..start + 2))
        .collect();
    format!("thermostat-{}", bytes.join("-"))
}

/// Rounds a numeric setpoint to the device's 0.5 °F resolution. Returns `None` when
/// the value is not a number or outside the accepted range.
fn setpoint(value: &Value) -> Option<f64> {
    let target = round_half(value.as_f64()?);
    SETPOINT_RANGE_F.contains(&target).then_some(target)
}

/// A JSON object as its entries in body order. `serde_json::Map` sorts keys, and the
/// order matters: the firmware applies POST keys one after another.
struct OrderedObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = OrderedObject;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(OrderedObject(entries))
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

fn parse_object(body: &str) -> Result<Vec<(String, Value)>, InvalidPost> {
    serde_json::from_str::<OrderedObject>(body)
        .map(|object| object.0)
        .map_err(|error| InvalidPost(format!("{error} in {:?}", truncate_for_log(body))))
}

fn truncate_for_log(body: &str) -> String {
    body.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wednesday 14:00, in the 08:00 to 18:00 period of the default program (62 °F heat).
    const WEDNESDAY_2PM: u32 = 2 * MINUTES_PER_DAY + 14 * 60;

    fn unit(profile: ModelProfile) -> Thermostat {
        Thermostat::new(profile, "5cdad4a0a0a1", WEDNESDAY_2PM, 66.0)
    }

    fn post(unit: &mut Thermostat, body: &str) -> PostOutcome {
        let mut rng = fastrand::Rng::with_seed(7);
        unit.apply_post(body, &mut rng).expect("valid POST body")
    }

    #[test]
    fn default_name_uses_last_three_bytes() {
        assert_eq!(default_name("5cdad4a0b1c2"), "thermostat-A0-B1-C2");
    }

    #[test]
    fn tstat_heat_shape_and_order() {
        let body = unit(ModelProfile::Ct50).tstat_body().render();
        assert_eq!(
            body,
            "{\"temp\":66.00,\"tmode\":1,\"fmode\":0,\"override\":0,\"hold\":0,\
             \"t_heat\":62.00,\"tstate\":0,\"fstate\":0,\
             \"time\":{\"day\":2,\"hour\":14,\"minute\":0},\"t_type_post\":0}"
        );
    }

    #[test]
    fn tstat_off_has_no_setpoint() {
        let mut unit = unit(ModelProfile::Ct50);
        post(&mut unit, r#"{"tmode":0}"#);
        let body = unit.tstat_body().render();
        assert!(!body.contains("t_heat"), "{body}");
        assert!(!body.contains("t_cool"), "{body}");
    }

    #[test]
    fn program_mode_per_profile() {
        let rev_b = unit(ModelProfile::Ct80RevB).tstat_body().render();
        assert!(
            rev_b.contains("\"t_heat\":62.00,\"program_mode\":0,"),
            "{rev_b}"
        );
        let v234 = unit(ModelProfile::Ct80V234T).tstat_body().render();
        assert!(v234.contains("\"program_mode\":-1"), "{v234}");
        let ct30 = unit(ModelProfile::Ct30).tstat_body().render();
        assert!(!ct30.contains("program_mode"), "{ct30}");
    }

    #[test]
    fn heat_setpoint_in_cool_switches_to_heat() {
        let mut unit = unit(ModelProfile::Ct50);
        post(&mut unit, r#"{"tmode":2}"#);
        post(&mut unit, r#"{"t_heat":70}"#);
        assert_eq!(unit.mode(), Mode::Heat);
        assert_eq!(unit.heat_target(), 70.0);
        assert!(unit.temporary_override());
    }

    #[test]
    fn setpoint_with_hold_is_not_override() {
        let mut unit = unit(ModelProfile::Ct50);
        post(&mut unit, r#"{"tmode":1,"t_heat":74,"hold":1}"#);
        assert!(unit.hold());
        assert!(!unit.temporary_override());
        assert!(
            unit.tstat_body()
                .render()
                .contains("\"override\":0,\"hold\":1")
        );
    }

    #[test]
    fn setpoint_rounds_to_half_degree() {
        let mut unit = unit(ModelProfile::Ct50);
        post(&mut unit, r#"{"t_heat":72.3}"#);
        assert_eq!(unit.heat_target(), 72.5);
    }

    #[test]
    fn clock_write_clears_override() {
        let mut unit = unit(ModelProfile::Ct50);
        post(&mut unit, r#"{"t_heat":72}"#);
        assert!(unit.tstat_body().render().contains("\"override\":1"));
        post(&mut unit, r#"{"time":{"day":1,"hour":14,"minute":2}}"#);
        assert!(!unit.temporary_override());
        assert_eq!(unit.heat_target(), 62.0);
        assert_eq!(unit.week_minute(), MINUTES_PER_DAY + 14 * 60 + 2);
    }

    #[test]
    fn ct30_never_reports_override() {
        let mut unit = unit(ModelProfile::Ct30);
        post(&mut unit, r#"{"t_heat":72}"#);
        assert!(unit.temporary_override());
        assert!(unit.tstat_body().render().contains("\"override\":0"));
    }

    #[test]
    fn interior_targets_only_on_ct80_rev_b() {
        let mut ct50 = unit(ModelProfile::Ct50);
        let outcome = post(&mut ct50, r#"{"it_cool":75}"#);
        assert_eq!(outcome.ignored, vec!["it_cool".to_string()]);
        assert_eq!(ct50.cool_target(), 82.0);

        let mut rev_b = unit(ModelProfile::Ct80RevB);
        post(&mut rev_b, r#"{"tmode":3}"#);
        post(&mut rev_b, r#"{"it_cool":75}"#);
        assert_eq!(rev_b.mode(), Mode::Auto);
        assert_eq!(rev_b.cool_target(), 75.0);
    }

    #[test]
    fn only_first_interior_target_option() {
        let mut rev_b = unit(ModelProfile::Ct80RevB);
        rev_b.post_options.only_first_interior_target = true;
        let outcome = post(&mut rev_b, r#"{"it_heat":66,"it_cool":78}"#);
        assert_eq!(rev_b.heat_target(), 66.0);
        assert_eq!(rev_b.cool_target(), 82.0);
        assert_eq!(outcome.ignored, vec!["it_cool".to_string()]);
    }

    #[test]
    fn auto_rejected_on_ct30() {
        let mut ct30 = unit(ModelProfile::Ct30);
        let outcome = post(&mut ct30, r#"{"tmode":3}"#);
        assert_eq!(ct30.mode(), Mode::Heat);
        assert_eq!(outcome.ignored, vec!["tmode".to_string()]);
    }

    #[test]
    fn mode_change_may_drop_hold() {
        let mut unit = unit(ModelProfile::Ct50);
        unit.post_options.hold_drop_probability = 1.0;
        let outcome = post(&mut unit, r#"{"tmode":2,"hold":1}"#);
        assert!(outcome.hold_dropped);
        assert!(!unit.hold());
    }

    #[test]
    fn invalid_json_is_an_error() {
        let mut unit = unit(ModelProfile::Ct50);
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(unit.apply_post("tmode=1", &mut rng).is_err());
        assert!(unit.apply_post("[1,2]", &mut rng).is_err());
    }

    #[test]
    fn program_boundary_ends_override() {
        let mut unit = unit(ModelProfile::Ct50);
        post(&mut unit, r#"{"t_heat":72}"#);
        // 14:00 to 18:30 crosses the 18:00 boundary, whose target is 70.
        unit.advance_to(4.5 * 3600.0);
        assert_eq!(unit.heat_target(), 70.0);
        assert!(!unit.temporary_override());
    }

    #[test]
    fn hold_survives_program_boundary() {
        let mut unit = unit(ModelProfile::Ct50);
        post(&mut unit, r#"{"t_heat":72,"hold":1}"#);
        unit.advance_to(4.5 * 3600.0);
        assert_eq!(unit.heat_target(), 72.0);
    }

    #[test]
    fn program_body_matches_fixture_shape() {
        let body = unit(ModelProfile::Ct50).program_body(false);
        assert!(
            body.starts_with("{\"0\":[360,70,480,62,1080,70,1320,62],\"1\":["),
            "{body}"
        );
        let week: Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(week.as_object().map(|days| days.len()), Some(7));
    }
}
