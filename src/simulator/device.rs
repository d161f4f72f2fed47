//! One simulated device between the sockets and the thermostat model: routing a
//! request to a reply with faults and latency applied, and `SimHandle`, the control
//! handle tests and the demo use to change a running device.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::fault::{
    self, Fault, FloodGovernor, FloodVerdict, Hostile, HostileSend, ReplyAction, hostile_reply,
    inject_negative_one, truncate_body,
};
use super::http::{NOT_FOUND_HTML, response};
use super::latency::{EndpointKind, Latency};
use super::room::Relay;
use super::stats::{RequestSpan, SimStats, StatsRecorder};
use super::tstat::{InvalidPost, Mode, PostOptions, PostOutcome, Thermostat};

const JSON: &str = "application/json";

/// The body firmware older than 1.04 sends after a POST.
const PLAIN_TEXT_SUCCESS: &str = "Tstat Command Processed";

/// The `/sys/services` body of a CT50 V1.94 on Wi-Fi firmware 1.04.84.
const SERVICES_BODY: &str = "{\"service_names\":[\"com.rtcoa.tstat:1.0\",\
    \"devices.controller.tstat:1.0\"],\"httpd_handlers\":{\"/tstat\":[1,1],\
    \"/sys/network\":[1,1],\"/sys/updater\":[0,1],\"/sys/filesystem\":[0,1],\
    \"/sys/fs-image\":[0,1],\"/sys/firmware\":[1,1],\"/sys/fw-image\":[0,1],\
    \"/sys/command\":[0,1],\"/sys/services\":[1,0],\"/sys/mode\":[1,1],\
    \"/sys/name\":[1,1],\"/sys/watchdog\":[1,1],\"/sys/diag/log\":[1,0],\
    \"/sys/diag/stats/live\":[1,0],\"/sys/diag/stats/history\":[1,0],\"/cloud\":[1,1]}}";

/// One request as the server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// The server's action for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// Wait `delay`, then send these bytes.
    Answer { delay: Duration, bytes: Vec<u8> },
    /// Wait `delay`, then hold the connection without replying until the client
    /// leaves, or until `until` when set.
    Silent {
        delay: Duration,
        until: Option<Instant>,
    },
    /// Wait `delay`, then send a hostile reply.
    Hostile { delay: Duration, send: HostileSend },
}

/// The maps between simulated time and the wall clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimClock {
    pub started: Instant,
    /// Simulated seconds per wall-clock second.
    pub speed: f64,
}

impl SimClock {
    pub fn sim_seconds(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.started).as_secs_f64() * self.speed
    }
}

/// Everything a device's server and its handles share.
pub(crate) struct DeviceShared {
    core: Mutex<DeviceCore>,
    stats: Mutex<StatsRecorder>,
    clock: SimClock,
}

struct DeviceCore {
    thermostat: Thermostat,
    faults: Vec<Fault>,
    latency: Latency,
    rng: fastrand::Rng,
    governor: FloodGovernor,
    script_position: usize,
    powered_off_until: Option<Instant>,
    /// Whether a silent reply and a `-1` reply were already logged at warn level.
    warned_silent: bool,
    warned_hostile: bool,
    warned_negative_one: bool,
}

impl DeviceShared {
    pub fn new(
        thermostat: Thermostat,
        faults: Vec<Fault>,
        latency: Latency,
        seed: u64,
        clock: SimClock,
    ) -> Self {
        let core = DeviceCore {
            thermostat,
            faults,
            latency,
            rng: fastrand::Rng::with_seed(seed),
            governor: FloodGovernor::default(),
            script_position: 0,
            powered_off_until: None,
            warned_silent: false,
            warned_hostile: false,
            warned_negative_one: false,
        };
        Self {
            core: Mutex::new(core),
            stats: Mutex::new(StatsRecorder::default()),
            clock,
        }
    }

    /// Locks the core. A panic while it was held cannot leave it half-changed in a
    /// way that matters to a simulator, so a poisoned lock is taken over.
    fn core(&self) -> MutexGuard<'_, DeviceCore> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self) -> MutexGuard<'_, StatsRecorder> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn uuid(&self) -> String {
        self.core().thermostat.uuid.clone()
    }

    pub fn refuses_concurrent(&self) -> bool {
        fault::refuses_concurrent(&self.core().faults)
    }

    pub fn is_powered_off(&self, now: Instant) -> bool {
        self.core()
            .powered_off_until
            .is_some_and(|until| now < until)
    }

    /// When the flood lockout in force at `now` ends.
    pub fn locked_until(&self, now: Instant) -> Option<Instant> {
        self.core().governor.locked_until(now)
    }

    /// Records a read request and decides its reply: governor, faults, latency and
    /// the body, all at `now`.
    pub fn prepare(&self, request: &Request, now: Instant) -> Prepared {
        self.stats()
            .request_read(&request.method, &request.path, &request.body);
        if request.method == "POST" && request.path == "/sys/mode" {
            self.stats().stats.forbidden_writes += 1;
            log::warn!(
                "simulated thermostat {} received a forbidden POST /sys/mode: {:?}",
                self.uuid(),
                request.body
            );
        }

        let mut core = self.core();
        let core_ref = &mut *core;
        match core_ref.governor.on_request(&core_ref.faults, now) {
            FloodVerdict::Serve => {}
            FloodVerdict::Tripped => {
                drop(core);
                return self.trip_lockout(now);
            }
            FloodVerdict::LockedOut => {
                let until = core.governor.locked_until(now);
                drop(core);
                self.stats().stats.silent_replies += 1;
                return Prepared::Silent {
                    delay: Duration::ZERO,
                    until,
                };
            }
        }

        let sim_now = self.clock.sim_seconds(now);
        core.prepare(request, sim_now, &self.stats)
    }

    fn trip_lockout(&self, now: Instant) -> Prepared {
        let until = self.locked_until(now);
        let mut stats = self.stats();
        stats.stats.flood_lockout_trips += 1;
        stats.stats.silent_replies += 1;
        drop(stats);

        log::warn!(
            "simulated thermostat {} flooded: locked out for {:?}",
            self.uuid(),
            until.map(|until| until.saturating_duration_since(now))
        );
        Prepared::Silent {
            delay: Duration::ZERO,
            until,
        }
    }

    /// Records the end of a connection.
    pub fn connection_closed(&self, span: Option<RequestSpan>) {
        self.stats().connection_closed(Instant::now(), span);
    }
}

impl DeviceCore {
    fn prepare(
        &mut self,
        request: &Request,
        sim_now: f64,
        stats: &Mutex<StatsRecorder>,
    ) -> Prepared {
        self.thermostat.advance_to(sim_now);

        let plan = fault::plan_reply(
            &self.faults,
            &request.method,
            &request.path,
            &mut self.script_position,
            &mut self.rng,
        );
        let mut delay = plan.extra_delay;
        if !plan.replaces_latency {
            let endpoint = EndpointKind::of_path(&request.path);
            delay += self
                .latency
                .draw(endpoint, &self.thermostat.profile, &mut self.rng);
        }

        // A write takes effect even when the reply is then lost.
        let routed = self.route(request);

        match plan.action {
            ReplyAction::Hostile(kind) => {
                self.warn_once_hostile(&kind);
                let send = hostile_reply(&kind, &self.thermostat.tstat_body().render());
                Prepared::Hostile { delay, send }
            }
            ReplyAction::Silent => {
                self.warn_once_silent();
                let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
                stats.stats.silent_replies += 1;
                Prepared::Silent { delay, until: None }
            }
            ReplyAction::Answer {
                status,
                body,
                negative_one,
                truncate,
            } => {
                let (routed_status, content_type, routed_body) = routed;
                let (status, mut text) = match body {
                    Some(scripted) => (status, scripted),
                    None if status != 200 => (status, routed_body),
                    None => (routed_status, routed_body),
                };
                if negative_one && request.path == "/tstat" && request.method == "GET" {
                    text = self.tstat_with_negative_one();
                }
                if truncate && content_type == JSON {
                    text = truncate_body(&text, &mut self.rng);
                }
                let bytes = response(status, content_type, &text);
                Prepared::Answer { delay, bytes }
            }
        }
    }

    fn tstat_with_negative_one(&mut self) -> String {
        if !self.warned_negative_one {
            self.warned_negative_one = true;
            log::warn!(
                "simulated thermostat {} injects -1 into /tstat replies",
                self.thermostat.uuid
            );
        }
        let mut body = self.thermostat.tstat_body();
        inject_negative_one(&mut body, &mut self.rng);
        body.render()
    }

    fn warn_once_hostile(&mut self, kind: &Hostile) {
        if !self.warned_hostile {
            self.warned_hostile = true;
            log::warn!(
                "simulated thermostat {} answers /tstat with a hostile reply: {kind:?}",
                self.thermostat.uuid
            );
        }
    }

    fn warn_once_silent(&mut self) {
        if !self.warned_silent {
            self.warned_silent = true;
            log::warn!(
                "simulated thermostat {} leaves a request unanswered",
                self.thermostat.uuid
            );
        }
    }

    /// Routes a request to `(status, content type, body)`.
    fn route(&mut self, request: &Request) -> (u16, &'static str, String) {
        let ok = |body: String| (200, JSON, body);
        let unit = &mut self.thermostat;

        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/tstat") => ok(unit.tstat_body().render()),
            ("POST", "/tstat") => self.post_tstat(&request.body),
            ("POST", "/tstat/time") => {
                let wrapped = format!("{{\"time\":{}}}", request.body);
                self.post_tstat(&wrapped)
            }
            ("GET", "/sys") => ok(unit.sys_body()),
            ("GET", "/sys/name") => ok(unit.name_body()),
            ("POST", "/sys/name") => match unit.apply_name_post(&request.body) {
                Ok(()) => ok(success_body()),
                Err(error) => invalid_post(&unit.uuid, &error),
            },
            ("GET", "/sys/services") => ok(SERVICES_BODY.to_string()),
            ("GET", "/sys/mode") => ok("{\"mode\":1}".to_string()),
            ("POST", "/sys/mode") => ok(success_body()),
            ("GET", "/tstat/model") => ok(unit.model_body()),
            ("GET", "/tstat/ttemp") => ok(unit.ttemp_body().render()),
            ("GET", "/tstat/humidity") => ok(unit.humidity_body().render()),
            ("GET", "/tstat/program/heat") => ok(unit.program_body(false)),
            ("GET", "/tstat/program/cool") => ok(unit.program_body(true)),
            // NOTE: program writes (`POST /tstat/program/...`) are not simulated and
            // get the 404 page.
            ("GET", path) => match path
                .strip_prefix("/tstat/")
                .and_then(|key| unit.field_body(key))
            {
                Some(body) => ok(body.render()),
                None => not_found(),
            },
            _ => not_found(),
        }
    }

    fn post_tstat(&mut self, body: &str) -> (u16, &'static str, String) {
        let unit = &mut self.thermostat;
        match unit.apply_post(body, &mut self.rng) {
            Ok(outcome) => {
                log::debug!(
                    "simulated thermostat {} applied POST /tstat keys {:?}, ignored {:?}",
                    unit.uuid,
                    outcome.applied,
                    outcome.ignored
                );
                if unit.post_options.plain_text_reply {
                    (200, "text/plain", PLAIN_TEXT_SUCCESS.to_string())
                } else {
                    (200, JSON, success_body())
                }
            }
            Err(error) => invalid_post(&unit.uuid, &error),
        }
    }
}

fn success_body() -> String {
    "{\"success\":0}".to_string()
}

fn invalid_post(uuid: &str, error: &InvalidPost) -> (u16, &'static str, String) {
    log::debug!("simulated thermostat {uuid} rejected a POST: {error}");
    (200, JSON, "{\"error\":-1}".to_string())
}

fn not_found() -> (u16, &'static str, String) {
    (404, "text/html", NOT_FOUND_HTML.to_string())
}

/// A device's state as seen from outside, for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSnapshot {
    /// The temperature `/tstat` reports, rounded to 0.5 °F.
    pub temp_f: f64,
    /// The room's unrounded temperature.
    pub indoor_f: f64,
    pub outside_f: f64,
    pub mode: Mode,
    pub hold: bool,
    /// Whether a temporary setpoint is in force, even on models that report 0.
    pub temporary_override: bool,
    pub heat_target: f64,
    pub cool_target: f64,
    pub relay: Relay,
    /// The device clock in minutes since Monday 00:00.
    pub week_minute: u32,
    pub name: String,
}

/// A cloneable control handle for one running simulated device. Every change takes
/// effect on the next request the device reads.
#[derive(Clone)]
pub struct SimHandle {
    pub(crate) device: Arc<DeviceShared>,
}

impl SimHandle {
    /// Replaces all faults.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        let mut core = self.device.core();
        core.faults = faults;
        core.script_position = 0;
    }

    pub fn add_fault(&self, fault: Fault) {
        self.device.core().faults.push(fault);
    }

    /// Removes all faults and ends any flood lockout.
    pub fn clear_faults(&self) {
        let mut core = self.device.core();
        core.faults.clear();
        core.governor.reset();
        core.script_position = 0;
    }

    pub fn faults(&self) -> Vec<Fault> {
        self.device.core().faults.clone()
    }

    pub fn set_latency(&self, latency: Latency) {
        self.device.core().latency = latency;
    }

    pub fn set_post_options(&self, options: PostOptions) {
        self.device.core().thermostat.post_options = options;
    }

    /// Returns a copy of the statistics so far.
    pub fn stats(&self) -> SimStats {
        self.device.stats().stats.clone()
    }

    pub fn reset_stats(&self) {
        self.device.stats().reset();
    }

    /// Simulates a power cycle: for `downtime` every connection is reset without a
    /// reply. Hold, any temporary override and any flood lockout are lost.
    /// NOTE: the listener stays bound, so clients still connect and then see a reset,
    /// where a real unit that is off makes the connect itself time out.
    pub fn power_cycle(&self, downtime: Duration) {
        let mut core = self.device.core();
        let sim_now = self.device.clock.sim_seconds(Instant::now());
        core.thermostat.advance_to(sim_now);
        core.thermostat.power_cycle();
        core.governor.reset();
        core.powered_off_until = Some(Instant::now() + downtime);
        log::warn!("simulated thermostat {} power-cycled", core.thermostat.uuid);
    }

    /// Applies a `POST /tstat` body directly, as a change made at the wall unit.
    /// Nothing is counted in the statistics.
    pub fn apply_tstat_post(&self, body: &str) -> Result<PostOutcome, InvalidPost> {
        let mut core = self.device.core();
        let core = &mut *core;
        core.thermostat
            .advance_to(self.device.clock.sim_seconds(Instant::now()));
        core.thermostat.apply_post(body, &mut core.rng)
    }

    pub fn set_indoor_temperature(&self, fahrenheit: f64) {
        self.device.core().thermostat.room.indoor_f = fahrenheit;
    }

    pub fn set_outside_temperature(&self, fahrenheit: f64) {
        self.device.core().thermostat.room.outside_f = fahrenheit;
    }

    /// Sets the device clock; like a clock POST it clears a temporary override.
    pub fn set_clock(&self, day: u32, hour: u32, minute: u32) {
        self.device
            .core()
            .thermostat
            .set_clock(day % 7, hour % 24, minute % 60);
    }

    /// Renders the current `/tstat` body without faults.
    pub fn tstat_body(&self) -> String {
        let mut core = self.device.core();
        core.thermostat
            .advance_to(self.device.clock.sim_seconds(Instant::now()));
        core.thermostat.tstat_body().render()
    }

    pub fn snapshot(&self) -> DeviceSnapshot {
        let mut core = self.device.core();
        core.thermostat
            .advance_to(self.device.clock.sim_seconds(Instant::now()));
        let unit = &core.thermostat;
        DeviceSnapshot {
            temp_f: unit.room.reported_f(),
            indoor_f: unit.room.indoor_f,
            outside_f: unit.room.outside_f,
            mode: unit.mode(),
            hold: unit.hold(),
            temporary_override: unit.temporary_override(),
            heat_target: unit.heat_target(),
            cool_target: unit.cool_target(),
            relay: unit.room.relay(),
            week_minute: unit.week_minute(),
            name: unit.name.clone(),
        }
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("uuid", &self.device.uuid())
            .finish()
    }
}
