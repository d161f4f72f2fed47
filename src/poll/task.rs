//! The polling task of one thermostat: wait for the schedule, read `/tstat` through the
//! thermostat's `DeviceLink`, hand the result to the sink, repeat until shutdown.

use std::sync::Arc;
use std::time::Instant;

use super::change::{ChangeType, StateChange, detect_change, merge_known};
use super::failure_log::FailureLog;
use super::schedule::{Outcome, PollSchedule, ScheduleOptions, Transition};
use super::status::StatusBoard;
use crate::clock::Clock;
use crate::desired::{self, Action, Controller, Drift, Policy, ReapplyOutcome};
use crate::device::{DeviceError, DeviceLink, FieldNote, NoteKind, TstatReply};
use crate::health::Health;
use crate::reading::{PollFailure, Reading, ThermostatState};
use crate::shutdown::Shutdown;
use crate::thermostat::ThermostatId;
use crate::weather::OutsideTemperature;

/// The destination of readings and failures. Implementations must return at once and
/// never wait on the database, because the caller is a polling task.
pub trait ReadingSink: Send + Sync {
    fn submit_reading(&self, reading: Reading);
    fn submit_failure(&self, failure: PollFailure);
}

/// What every polling task shares.
pub struct PollContext {
    pub sink: Arc<dyn ReadingSink>,
    pub health: Arc<Health>,
    pub clock: Arc<dyn Clock>,
    pub schedule: ScheduleOptions,
    pub status: Arc<StatusBoard>,
    /// The latest outside temperature, stored beside each reading.
    pub outside: Arc<OutsideTemperature>,
    pub shutdown: Shutdown,
    /// Receives the uuid of each thermostat that goes offline, so discovery can look
    /// for it at a new address. A full channel drops the report.
    pub went_offline: Option<async_channel::Sender<ThermostatId>>,
}

/// Polls one thermostat until shutdown, without a desired state to keep (policy
/// `off`). The first poll is due at `first_due`.
pub async fn poll_thermostat(
    id: ThermostatId,
    link: Arc<DeviceLink>,
    first_due: Instant,
    context: Arc<PollContext>,
) {
    let controller = Controller::new(id, link, context.clock.clone(), Policy::Off);
    poll_with_controller(Arc::new(controller), first_due, context).await;
}

/// Polls the thermostat of `controller` until shutdown, comparing each reading with
/// its desired state and writing that again through the controller when the policy
/// allows it. The first poll is due at `first_due`.
///
/// Not an `async fn`: the future it returns captures only the poller, so the task does
/// not also keep the arguments that the poller was made of. `run` borrows the poller,
/// because an argument moved into an `async fn` takes room twice in its future.
pub fn poll_with_controller(
    controller: Arc<Controller>,
    first_due: Instant,
    context: Arc<PollContext>,
) -> impl Future<Output = ()> + Send + 'static {
    let mut poller = Poller {
        schedule: PollSchedule::new(context.schedule, first_due),
        baseline: None,
        warned_fields: Vec::new(),
        controller,
        last_poll: None,
        failure_log: FailureLog::default(),
        context,
    };
    async move { poller.run().await }
}

struct Poller {
    schedule: PollSchedule,
    /// The last known value of every field, for change detection.
    baseline: Option<ThermostatState>,
    /// Fields already reported at warn level, so a unit that always sends one bad field
    /// does not fill the log. A `Vec`, because a reply has only nine fields.
    warned_fields: Vec<&'static str>,
    /// The settings writes and desired state of this thermostat.
    controller: Arc<Controller>,
    /// Wall clock and monotonic time of the previous successful poll, to notice a
    /// clock jump.
    last_poll: Option<(jiff::Timestamp, Instant)>,
    /// The failure kind last logged at info level.
    failure_log: FailureLog,
    context: Arc<PollContext>,
}

impl Poller {
    /// Polls until shutdown.
    async fn run(&mut self) {
        let link = self.controller.link().clone();
        while self.wait_until_due().await {
            let started = Instant::now();
            // Boxed like the re-apply below: the request's state (about 800 bytes) then
            // exists only while a poll runs, not between polls.
            let read = Box::pin(link.read_state());
            let Some(result) = self.context.shutdown.or_stop(read).await else {
                break;
            };

            let (outcome, error_text, reapply) = match result {
                Ok(reply) => {
                    self.context.status.record_latency(started.elapsed());
                    let (outcome, reapply) = self.handle_reply(reply, started);
                    (outcome, None, reapply)
                }
                Err(error) => (
                    self.handle_failure(&link, &error),
                    Some(error.to_string()),
                    None,
                ),
            };
            if let Some(fields) = reapply {
                let shutdown = self.context.shutdown.clone();
                // Boxed, so that the re-apply's state exists only while it runs
                // instead of enlarging every thermostat's poll task.
                let enforce = Box::pin(self.enforce(&fields));
                let stopped = shutdown.or_stop(enforce).await.is_none();
                if stopped {
                    break;
                }
            }
            let transition = self.schedule.record(started, Instant::now(), outcome);
            self.context.status.record_lateness(transition.lateness);
            let now = self.context.clock.now().as_second();
            self.context.health.record_poll_heartbeat(now);
            self.publish_status(outcome, transition, error_text);
            self.log_transition(&link, transition);
            if transition.went_offline {
                self.report_offline();
            }
        }
        log::debug!("thermostat {}: polling stopped", self.id());
    }

    /// Returns the thermostat's uuid, which only the controller stores.
    fn id(&self) -> &ThermostatId {
        self.controller.id()
    }

    /// Sleeps until the next poll is due. Returns false when the daemon shuts down.
    async fn wait_until_due(&self) -> bool {
        self.context
            .shutdown
            .sleep_until(self.schedule.next_due())
            .await
    }

    /// Records a reply. Returns the outcome and the commanded fields to write again.
    fn handle_reply(
        &mut self,
        reply: TstatReply,
        started: Instant,
    ) -> (Outcome, Option<Vec<&'static str>>) {
        let now = self.context.clock.now();
        for note in &reply.notes {
            self.log_note(note);
        }

        let clock_jumped = self.last_poll.is_some_and(|(wall, monotonic)| {
            let wall_elapsed = (now - wall).as_secs_f64();
            desired::clock_jumped(wall_elapsed, started.saturating_duration_since(monotonic))
        });
        self.last_poll = Some((now, started));
        let (drift_change, reapply) = self.check_desired(&reply.state, clock_jumped);

        let change = drift_change.or_else(|| detect_change(self.baseline.as_ref(), &reply.state));
        if let Some(change) = &change {
            self.log_change(change, &reply.state);
            if change.change_type != ChangeType::Initial {
                self.context
                    .status
                    .update(self.id(), |status| status.state_changes += 1);
            }
        }
        self.baseline = Some(merge_known(self.baseline.as_ref(), &reply.state));

        self.context
            .status
            .record_state(self.id(), now, reply.state);
        self.context.sink.submit_reading(Reading {
            thermostat_id: self.id().clone(),
            ts: now,
            state: reply.state,
            local_temp: self.context.outside.current(now),
            change,
        });
        self.context.health.record_poll_success(now.as_second());
        (Outcome::Success, reapply)
    }

    /// Compares `state` with the desired state. Returns the state change to report
    /// instead of the plain one, and the fields to write again.
    fn check_desired(
        &self,
        state: &ThermostatState,
        clock_jumped: bool,
    ) -> (Option<StateChange>, Option<Vec<&'static str>>) {
        // A command being written settles the state with its own read-back.
        if self.controller.is_busy() {
            return (None, None);
        }
        let observed = self.controller.observe(state, clock_jumped);
        let action = desired::decide(
            observed.policy,
            &observed.drift,
            observed.new,
            observed.holding,
        );
        if action == Action::Nothing {
            return (None, None);
        }
        let fields = observed.drift.fields().to_vec();
        let change_type = match observed.drift {
            Drift::WallChange(_) => ChangeType::WallChange,
            Drift::Reset(_) => ChangeType::DeviceReset,
            Drift::DroppedWrite(_) => ChangeType::WriteDropped,
            Drift::ClockJump(_) | Drift::NoDrift => ChangeType::ClockJump,
        };
        let report = observed.new.then(|| {
            let verdict = match (action, change_type) {
                (_, ChangeType::WallChange) => "kept as the new desired state",
                (Action::Reapply, _) => "writing the desired settings again",
                _ => "reported only (policy or retry budget)",
            };
            log::warn!(
                "thermostat {}: {} on {}: {verdict}",
                self.id(),
                change_type.as_str(),
                describe_fields(state, &fields)
            );
            StateChange {
                change_type,
                fields: fields.clone(),
            }
        });
        let reapply = (action == Action::Reapply).then_some(fields);
        (report, reapply)
    }

    /// Writes the desired values of `fields` again and reports the outcome upstream: a
    /// `reapplied` state change when it reads back as commanded, a `not_holding` one when
    /// the retry budget runs out.
    async fn enforce(&mut self, fields: &[&'static str]) {
        let Some(outcome) = self.controller.reapply(fields).await else {
            return;
        };
        let (state, change_type) = match outcome {
            ReapplyOutcome::Holding(state) => {
                log::info!(
                    "thermostat {}: desired settings written again and read back",
                    self.id()
                );
                (state, ChangeType::Reapplied)
            }
            ReapplyOutcome::Failed(_) => return,
            ReapplyOutcome::NotHolding(error) => {
                log::warn!(
                    "thermostat {}: not holding its settings after {} failed re-applies ({error}); \
                     reporting it and waiting for a new command or a matching reading",
                    self.id(),
                    desired::REAPPLY_BUDGET
                );
                (self.baseline.unwrap_or_default(), ChangeType::NotHolding)
            }
        };
        let now = self.context.clock.now();
        self.baseline = Some(merge_known(self.baseline.as_ref(), &state));
        self.context.status.record_state(self.id(), now, state);
        self.context.sink.submit_reading(Reading {
            thermostat_id: self.id().clone(),
            ts: now,
            state,
            local_temp: self.context.outside.current(now),
            change: Some(StateChange {
                change_type,
                fields: fields.to_vec(),
            }),
        });
    }

    fn handle_failure(&mut self, link: &DeviceLink, error: &DeviceError) -> Outcome {
        let failures = self.schedule.consecutive_failures() + 1;
        let level = if self.failure_log.on_failure(error.kind()) {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "thermostat {} at {}: poll failed: {error} ({failures} in a row)",
            self.id(),
            link.address()
        );

        self.context.sink.submit_failure(PollFailure {
            thermostat_id: self.id().clone(),
            ts: self.context.clock.now(),
            kind: error.kind(),
        });
        Outcome::Failure
    }

    fn log_change(&self, change: &StateChange, state: &ThermostatState) {
        if change.change_type == ChangeType::Initial {
            log::info!(
                "thermostat {}: first reading: {}",
                self.id(),
                describe_fields(state, &ALL_FIELDS)
            );
            return;
        }
        let level = match change.change_type {
            ChangeType::Temperature | ChangeType::HvacState => log::Level::Debug,
            _ => log::Level::Info,
        };
        log::log!(
            level,
            "thermostat {}: {} change: {}",
            self.id(),
            change.change_type.as_str(),
            describe_fields(state, &change.fields)
        );
    }

    fn publish_status(&self, outcome: Outcome, transition: Transition, error: Option<String>) {
        let online = self.schedule.is_online();
        let failures_in_a_row = self.schedule.consecutive_failures();
        let now = self.context.clock.now();
        self.context.status.update(self.id(), |status| {
            status.online = online;
            status.consecutive_failures = failures_in_a_row;
            status.polls += 1;
            status.offline_transitions += u64::from(transition.went_offline);
            match outcome {
                Outcome::Success => status.last_success = Some(now),
                Outcome::Failure => {
                    status.failures += 1;
                    status.last_error = error;
                }
            }
        });
    }

    fn log_note(&mut self, note: &FieldNote) {
        let first_time = !self.warned_fields.contains(&note.field);
        if first_time {
            self.warned_fields.push(note.field);
        }
        let (level, what) = match note.kind {
            NoteKind::NegativeOne => (
                log::Level::Debug,
                "-1 (read error on the device)".to_string(),
            ),
            NoteKind::OutOfRange(value) => (log::Level::Warn, format!("implausible value {value}")),
            NoteKind::WrongType => (log::Level::Warn, "a value that is not a number".to_string()),
        };
        let level = if first_time { level } else { log::Level::Debug };
        log::log!(
            level,
            "thermostat {}: {} dropped from the reading: {what}",
            self.id(),
            note.field
        );
    }

    fn report_offline(&self) {
        if let Some(sender) = &self.context.went_offline
            && sender.try_send(self.id().clone()).is_err()
        {
            log::debug!(
                "thermostat {}: offline report dropped, discovery is busy or stopped",
                self.id()
            );
        }
    }

    fn log_transition(&mut self, link: &DeviceLink, transition: Transition) {
        if transition.went_offline {
            log::warn!(
                "thermostat {} at {}: offline after {} failed polls in a row; retrying every {} s",
                self.id(),
                link.address(),
                self.schedule.consecutive_failures(),
                self.schedule.delay().as_secs()
            );
        }
        if transition.came_online {
            self.failure_log.on_back_online();
            log::info!(
                "thermostat {} at {}: back online",
                self.id(),
                link.address()
            );
        }
        if transition.skipped_ticks > 0 {
            log::debug!(
                "thermostat {}: {} poll tick(s) skipped while waiting for the device",
                self.id(),
                transition.skipped_ticks
            );
        }
    }
}

/// Every field that `describe_fields` formats, in the order of the device's `/tstat` body.
const ALL_FIELDS: [&str; 9] = [
    "temp", "tmode", "fmode", "override", "hold", "t_heat", "t_cool", "tstate", "fstate",
];

/// Formats `fields` of `state` as `name=value` pairs, with `?` for an unknown value.
fn describe_fields(state: &ThermostatState, fields: &[&'static str]) -> String {
    let flag = |value: Option<bool>| value.map(|on| if on { "1" } else { "0" }.to_string());
    let temperature = |value: Option<f64>| value.map(|degrees| format!("{degrees:.1}"));
    let parts: Vec<String> = fields
        .iter()
        .map(|field| {
            let value = match *field {
                "temp" => temperature(state.temp),
                "t_heat" => temperature(state.t_heat),
                "t_cool" => temperature(state.t_cool),
                "tmode" => state.tmode.map(|mode| mode.name().to_string()),
                "fmode" => state.fmode.map(|mode| mode.code().to_string()),
                "tstate" => state.tstate.map(|tstate| tstate.code().to_string()),
                "fstate" => flag(state.fstate),
                "hold" => flag(state.hold),
                "override" => flag(state.override_active),
                _ => None,
            };
            format!("{field}={}", value.unwrap_or_else(|| "?".to_string()))
        })
        .collect();
    parts.join(" ")
}
