//! `DeviceLink`: the only way to talk to one thermostat. It holds the device's rules:
//! one request in flight (the device's server is single-threaded), a minimum gap
//! between requests (it locks up for 20 to 30 minutes when flooded), and a deadline on
//! every request (replies take about 2.5 s and sometimes a minute).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_io::Timer;

use super::error::DeviceError;
use super::http::{HttpReply, exchange};
use super::info::{DeviceIdentity, ModelProfile, SysInfo, parse_model, parse_name, parse_sys};
use super::program::{ProgramKind, WeekProgram, parse_program};
use super::tstat::{TstatReply, parse_post_reply, parse_tstat};
use crate::reading::ThermostatState;
use crate::thermostat::DeviceAddress;

/// Timing rules for one thermostat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkOptions {
    /// Deadline for a whole request, connect to last body byte. One CT80 firmware takes
    /// 16 s to reply to `/tstat`, so this is 20 s or more in production.
    pub request_timeout: Duration,
    /// Quiet time between the end of one request and the start of the next.
    pub min_request_gap: Duration,
    /// Quiet time before and after a program request (`/tstat/program/...`): units take
    /// seconds to serve a program and some cycle their relay while they do.
    pub program_gap: Duration,
}

impl LinkOptions {
    /// Returns the maximum time that reading both programs through the link can take: a program gap
    /// and a full request deadline for each.
    pub fn both_programs_time(&self) -> Duration {
        (self.program_gap + self.request_timeout) * 2
    }
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(25),
            min_request_gap: Duration::from_secs(1),
            program_gap: Duration::from_secs(15),
        }
    }
}

/// A serialised connection to one thermostat. Share it behind an `Arc`: every caller
/// (poller, commands) goes through the same lock, so requests never overlap.
#[derive(Debug)]
pub struct DeviceLink {
    address: Mutex<DeviceAddress>,
    options: LinkOptions,
    last_request: async_lock::Mutex<Option<LastRequest>>,
}

/// When the previous request to the unit ended, and whether it was a program request.
#[derive(Debug, Clone, Copy)]
struct LastRequest {
    end: Instant,
    program: bool,
}

impl DeviceLink {
    pub fn new(address: DeviceAddress, options: LinkOptions) -> Self {
        Self {
            address: Mutex::new(address),
            options,
            last_request: async_lock::Mutex::new(None),
        }
    }

    pub fn address(&self) -> DeviceAddress {
        *self
            .address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Points the link at a new address, after DHCP moved the thermostat.
    pub fn set_address(&self, address: DeviceAddress) {
        *self
            .address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = address;
    }

    pub fn options(&self) -> LinkOptions {
        self.options
    }

    /// Reads the current state (`GET /tstat`).
    pub async fn read_state(&self) -> Result<TstatReply, DeviceError> {
        let reply = self.get("/tstat").await?;
        Ok(parse_tstat(&reply.body)?)
    }

    /// Reads both setpoints whatever the mode (`GET /tstat/ttemp`); only `t_heat` and
    /// `t_cool` are set in the result.
    pub async fn read_targets(&self) -> Result<ThermostatState, DeviceError> {
        let reply = self.get("/tstat/ttemp").await?;
        Ok(parse_tstat(&reply.body)?.state)
    }

    /// Reads the uuid and versions (`GET /sys`).
    pub async fn read_sys(&self) -> Result<SysInfo, DeviceError> {
        let reply = self.get("/sys").await?;
        Ok(parse_sys(&reply.body)?)
    }

    /// Reads `/sys`, `/sys/name` and `/tstat/model`, each with the full request
    /// deadline: some units take several seconds for the model.
    pub async fn identify(&self) -> Result<DeviceIdentity, DeviceError> {
        let sys = self.read_sys().await?;
        let name = parse_name(&self.get("/sys/name").await?.body)?;
        let model = parse_model(&self.get("/tstat/model").await?.body)?;
        let profile = ModelProfile::from_model(&model);
        Ok(DeviceIdentity {
            sys,
            name,
            model,
            profile,
        })
    }

    /// Reads the heat or cool seven-day program, with the link's program gap before and
    /// after it, so callers reading both programs get that gap between them.
    pub async fn read_program(&self, kind: ProgramKind) -> Result<WeekProgram, DeviceError> {
        let reply = self.get(kind.path()).await?;
        Ok(parse_program(&reply.body)?)
    }

    /// Sends `POST /tstat` with a JSON object of the fields to change. The device's
    /// "success" is not proof that it applied them: callers read the state back.
    pub async fn write_state(&self, fields: &serde_json::Value) -> Result<(), DeviceError> {
        let body = serde_json::to_vec(fields)
            .map_err(|error| DeviceError::Protocol(format!("cannot encode request: {error}")))?;
        let reply = self.request("POST", "/tstat", Some(body)).await?;
        parse_post_reply(&reply.body).map_err(DeviceError::Reported)
    }

    async fn get(&self, path: &str) -> Result<HttpReply, DeviceError> {
        self.request("GET", path, None).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpReply, DeviceError> {
        // Holding this lock across the exchange is what keeps requests from overlapping.
        let mut last = self.last_request.lock().await;
        let program = is_program_path(path);
        if let Some(wait) = remaining_gap(*last, program, Instant::now(), &self.options) {
            Timer::after(wait).await;
        }

        let address = self.address().socket_addr();
        // Boxed: hyper's connection state is several KiB, and inline it would make every
        // poll task that many bytes bigger for its whole life, not only during a request.
        let exchange = exchange(address, method, path, body, self.options.request_timeout);
        let result = Box::pin(exchange).await;
        *last = Some(LastRequest {
            end: Instant::now(),
            program,
        });

        let reply = result?;
        if reply.status != 200 {
            return Err(DeviceError::Status(reply.status));
        }
        Ok(reply)
    }
}

/// Returns whether `path` reads or writes a program, which needs the longer quiet gap.
fn is_program_path(path: &str) -> bool {
    path.starts_with("/tstat/program")
}

/// Returns how long to wait before the next request may start, if at all: the program
/// gap when this request or the previous one is a program request, the minimum gap
/// otherwise.
fn remaining_gap(
    last: Option<LastRequest>,
    program: bool,
    now: Instant,
    options: &LinkOptions,
) -> Option<Duration> {
    let last = last?;
    let gap = if program || last.program {
        options.program_gap.max(options.min_request_gap)
    } else {
        options.min_request_gap
    };
    (last.end + gap)
        .checked_duration_since(now)
        .filter(|wait| !wait.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LinkOptions {
        LinkOptions {
            request_timeout: Duration::from_secs(25),
            min_request_gap: Duration::from_secs(1),
            program_gap: Duration::from_secs(15),
        }
    }

    fn ended(end: Instant, program: bool) -> Option<LastRequest> {
        Some(LastRequest { end, program })
    }

    #[test]
    fn no_wait_before_first_request() {
        assert_eq!(remaining_gap(None, true, Instant::now(), &options()), None);
    }

    #[test]
    fn waits_out_the_rest_of_the_gap() {
        let end = Instant::now();
        let now = end + Duration::from_millis(300);
        assert_eq!(
            remaining_gap(ended(end, false), false, now, &options()),
            Some(Duration::from_millis(700))
        );
    }

    #[test]
    fn no_wait_once_the_gap_has_passed() {
        let end = Instant::now();
        let now = end + Duration::from_secs(2);
        assert_eq!(
            remaining_gap(ended(end, false), false, now, &options()),
            None
        );
    }

    #[test]
    fn program_request_waits_the_program_gap_on_both_sides() {
        let end = Instant::now();
        let now = end + Duration::from_secs(2);
        let before = remaining_gap(ended(end, false), true, now, &options());
        let after = remaining_gap(ended(end, true), false, now, &options());
        assert_eq!(before, Some(Duration::from_secs(13)));
        assert_eq!(after, Some(Duration::from_secs(13)));
    }

    #[test]
    fn program_gap_never_shorter_than_the_minimum_gap() {
        let short = LinkOptions {
            program_gap: Duration::ZERO,
            ..options()
        };
        let end = Instant::now();
        assert_eq!(
            remaining_gap(ended(end, true), false, end, &short),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn only_program_paths_need_the_program_gap() {
        assert!(is_program_path("/tstat/program/heat"));
        assert!(is_program_path("/tstat/program/cool/mon"));
        assert!(!is_program_path("/tstat"));
        assert!(!is_program_path("/tstat/ttemp"));
    }
}
