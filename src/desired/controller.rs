//! The per-thermostat controller: the pending-change slot every settings write goes
//! through, and the in-memory desired state the poll task compares readings with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use jiff::Timestamp;
use smol::lock::{Mutex as WriteLock, MutexGuard as WriteLockGuard};

use super::classify::{Drift, Observation, classify, differing_fields};
use super::{Policy, REAPPLY_BUDGET, reapply_change};
use crate::clock::Clock;
use crate::control::{Applied, ControlError, SettingsChange, apply_change};
use crate::device::{DeviceLink, ModelProfile};
use crate::poll::change::merge_known;
use crate::reading::ThermostatState;
use crate::thermostat::ThermostatId;

/// Drift and enforcement counts since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriftCounters {
    pub wall_changes: u64,
    pub resets: u64,
    pub dropped_writes: u64,
    pub clock_jumps: u64,
    /// Re-applies read back as commanded.
    pub reapplied: u64,
    /// Re-applies that failed.
    pub reapply_failures: u64,
    /// Commands merged into a write already waiting.
    pub coalesced_commands: u64,
}

/// A copy of the desired state for views and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSnapshot {
    pub settings: SettingsChange,
    /// Source of the command: `public_server`, `local_api`, `cli`, `defaults` or `wall`.
    pub source: Option<String>,
    pub commanded_at: Option<Timestamp>,
    pub policy: Policy,
    /// False once re-applying failed [`REAPPLY_BUDGET`] times in a row.
    pub holding_settings: bool,
    pub failed_reapplies: u32,
    /// The commanded fields the last reading showed otherwise.
    pub drift_fields: Vec<&'static str>,
    pub counters: DriftCounters,
}

/// The desired state as stored in `device_config`, loaded at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDesired {
    pub settings: SettingsChange,
    pub source: Option<String>,
    pub commanded_at: Option<Timestamp>,
    pub model: String,
}

/// The result of comparing one reading with the desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub drift: Drift,
    /// False when the same difference was seen at the previous poll.
    pub new: bool,
    pub policy: Policy,
    pub holding: bool,
}

#[derive(Debug)]
struct State {
    settings: SettingsChange,
    source: Option<String>,
    commanded_at: Option<Timestamp>,
    model: ModelProfile,
    policy: Policy,
    confirmed: bool,
    holding: bool,
    failed_reapplies: u32,
    /// The fields and values of the difference handled last, to report it once. Boxed
    /// because most units never drift.
    last_drift: Option<Box<(Vec<&'static str>, SettingsChange)>>,
    drift_fields: Vec<&'static str>,
    counters: DriftCounters,
    /// The last known value of each setting, from polls and write read-backs.
    reported: Option<ThermostatState>,
    /// When the last command's write and read-back ended.
    last_write_end: Option<Instant>,
}

/// Commands waiting for the write in flight to finish, merged into one change.
#[derive(Default)]
struct Pending {
    change: Option<SettingsChange>,
    model: Option<ModelProfile>,
    source: String,
    waiters: Vec<async_channel::Sender<Result<Applied, ControlError>>>,
}

/// One thermostat's settings writes and desired state.
pub struct Controller {
    id: ThermostatId,
    link: Arc<DeviceLink>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Boxed and created by the first command, because most thermostats get none
    /// between restarts.
    pending: Mutex<Option<Box<Pending>>>,
    /// Held for the whole of one write and its read-back, through [`Controller::write_lock`]
    /// or [`Controller::try_write_lock`].
    writer: WriteLock<()>,
    /// True while `writer` is held. `is_busy` reads this flag instead of trying the
    /// lock, because the first unlock makes event-listener 5.4 allocate the lock's wait
    /// list (72 bytes), which the controller would then keep for its whole life.
    writing: AtomicBool,
}

/// The write lock of a controller, held. Clears the controller's `writing` flag when
/// dropped, just before the lock itself is released.
struct Writing<'a> {
    _lock: WriteLockGuard<'a, ()>,
    flag: &'a AtomicBool,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.flag.store(false, Ordering::Release);
    }
}

impl Controller {
    pub fn new(
        id: ThermostatId,
        link: Arc<DeviceLink>,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> Self {
        Self {
            id,
            link,
            clock,
            state: Mutex::new(State {
                settings: SettingsChange::default(),
                source: None,
                commanded_at: None,
                model: ModelProfile::Generic,
                policy,
                confirmed: true,
                holding: true,
                failed_reapplies: 0,
                last_drift: None,
                drift_fields: Vec::new(),
                counters: DriftCounters::default(),
                reported: None,
                last_write_end: None,
            }),
            pending: Mutex::new(None),
            writer: WriteLock::new(()),
            writing: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> &ThermostatId {
        &self.id
    }

    pub fn link(&self) -> &Arc<DeviceLink> {
        &self.link
    }

    /// Takes the desired state stored before a restart. The unit is assumed to have
    /// shown it, so a difference at the first poll is a reset or a change at the wall.
    pub fn restore(&self, stored: &StoredDesired) {
        let mut state = self.lock_state();
        state.settings = stored.settings;
        state.source = stored.source.clone();
        state.commanded_at = stored.commanded_at;
        state.model = ModelProfile::from_model(&stored.model);
    }

    pub fn set_policy(&self, policy: Policy) {
        self.lock_state().policy = policy;
    }

    pub fn snapshot(&self) -> DesiredSnapshot {
        let state = self.lock_state();
        DesiredSnapshot {
            settings: state.settings,
            source: state.source.clone(),
            commanded_at: state.commanded_at,
            policy: state.policy,
            holding_settings: state.holding,
            failed_reapplies: state.failed_reapplies,
            drift_fields: state.drift_fields.clone(),
            counters: state.counters,
        }
    }

    /// Returns the drift counters and whether the unit keeps its desired settings,
    /// without copying the rest of the snapshot.
    pub fn counters(&self) -> (DriftCounters, bool) {
        let state = self.lock_state();
        (state.counters, state.holding)
    }

    /// Returns true while a write is in flight. The desired state changes only when a
    /// write ends, so a command still waiting does not affect a comparison.
    pub fn is_busy(&self) -> bool {
        self.writing.load(Ordering::Acquire)
    }

    /// Waits for the write lock.
    async fn write_lock(&self) -> Writing<'_> {
        let lock = self.writer.lock().await;
        self.writing.store(true, Ordering::Release);
        Writing {
            _lock: lock,
            flag: &self.writing,
        }
    }

    /// Takes the write lock unless a write holds it.
    fn try_write_lock(&self) -> Option<Writing<'_>> {
        let lock = self.writer.try_lock()?;
        self.writing.store(true, Ordering::Release);
        Some(Writing {
            _lock: lock,
            flag: &self.writing,
        })
    }

    /// Applies `change` from `source` through the pending-change slot and returns the
    /// outcome of the write that carried it. While a write is in flight, later commands
    /// merge into one waiting change (the latest value of each field wins), so a burst
    /// reaches the unit as at most two writes, one after the other.
    ///
    /// A change the model cannot make is refused and leaves the desired state alone.
    /// Otherwise the change becomes the desired state even when the unit did not take
    /// it, so the poll task keeps trying under the `enforce` policy.
    pub async fn submit(
        &self,
        change: SettingsChange,
        model: ModelProfile,
        source: &str,
    ) -> Result<Applied, ControlError> {
        let (sender, answer) = async_channel::bounded(1);
        {
            let mut slot = self.lock_pending();
            let pending = slot.get_or_insert_with(Box::default);
            if pending.change.is_some() {
                self.lock_state().counters.coalesced_commands += 1;
            }
            pending.change = Some(
                pending
                    .change
                    .map_or(change, |waiting| waiting.merged_with(&change)),
            );
            pending.model = Some(model);
            pending.source = source.to_string();
            pending.waiters.push(sender);
        }

        {
            let _writing = self.write_lock().await;
            // The unit needs a gap after the previous write anyway: commands that
            // arrive during it join this write instead of waiting for another.
            let last_end = self.lock_state().last_write_end;
            if let Some(wait) = last_end.and_then(|end| {
                (end + self.link.options().min_request_gap).checked_duration_since(Instant::now())
            }) {
                async_io::Timer::after(wait).await;
            }
            let mut taken = self
                .lock_pending()
                .take()
                .map_or_else(Pending::default, |taken| *taken);
            // A caller that gave up (an API deadline) no longer waits for its change,
            // so a change that no caller waits for is dropped instead of written late.
            taken.waiters.retain(|waiter| !waiter.is_closed());
            if taken.waiters.is_empty() {
                taken.change = None;
            }
            if let Some(merged) = taken.change {
                let model = taken.model.unwrap_or(model);
                if taken.waiters.len() > 1 {
                    log::info!(
                        "thermostat {}: {} commands merged into one change: {}",
                        self.id,
                        taken.waiters.len(),
                        merged.describe()
                    );
                }
                let result = apply_change(&self.link, model, &merged).await;
                self.record_command(&merged, model, &taken.source, &result);
                for waiter in taken.waiters {
                    let _ = waiter.try_send(result.clone());
                }
            }
        }

        answer
            .recv()
            .await
            .unwrap_or(Err(ControlError::Interrupted))
    }

    fn record_command(
        &self,
        change: &SettingsChange,
        model: ModelProfile,
        source: &str,
        result: &Result<Applied, ControlError>,
    ) {
        let mut state = self.lock_state();
        state.last_write_end = Some(Instant::now());
        if let Ok(applied) = result {
            state.reported = Some(merge_known(state.reported.as_ref(), &applied.state));
        }
        if matches!(result, Err(ControlError::Unsupported(_))) {
            return;
        }
        state.settings = state.settings.merged_with(change);
        state.source = Some(source.to_string());
        state.commanded_at = Some(self.clock.now());
        state.model = model;
        state.confirmed = result.is_ok();
        state.holding = true;
        state.failed_reapplies = 0;
        state.last_drift = None;
        state.drift_fields.clear();
    }

    /// Compares a reading with the desired state and updates it: a change at the wall
    /// becomes the desired state (source `wall`), and a match confirms the last command.
    ///
    /// The previous state compared with is the newest the controller knows: the last
    /// poll or the read-back of a later write.
    pub fn observe(&self, current: &ThermostatState, clock_jumped: bool) -> Observed {
        let mut state = self.lock_state();
        let drift = if state.policy == Policy::Off {
            Drift::NoDrift
        } else {
            classify(&Observation {
                desired: &state.settings,
                confirmed: state.confirmed,
                previous: state.reported.as_ref(),
                current,
                clock_jumped,
            })
        };
        state.reported = Some(merge_known(state.reported.as_ref(), current));

        let fields = drift.fields().to_vec();
        let key = (fields.clone(), values_of(current, &fields));
        let new = !fields.is_empty() && state.last_drift.as_deref() != Some(&key);
        state.drift_fields = fields;
        match &drift {
            Drift::NoDrift => {
                state.confirmed = true;
                state.last_drift = None;
                if !state.holding {
                    log::info!("thermostat {}: holding its settings again", self.id);
                }
                state.holding = true;
                state.failed_reapplies = 0;
            }
            Drift::WallChange(fields) => {
                let kept = values_of(current, fields);
                state.settings = state.settings.merged_with(&kept);
                state.source = Some("wall".to_string());
                state.commanded_at = Some(self.clock.now());
                state.confirmed = true;
                state.counters.wall_changes += 1;
                state.drift_fields.clear();
            }
            Drift::Reset(_) if new => state.counters.resets += 1,
            Drift::DroppedWrite(_) if new => state.counters.dropped_writes += 1,
            Drift::ClockJump(_) if new => state.counters.clock_jumps += 1,
            _ => {}
        }
        if new && !matches!(drift, Drift::WallChange(_)) {
            state.last_drift = Some(Box::new(key));
        }
        Observed {
            drift,
            new,
            policy: state.policy,
            holding: state.holding,
        }
    }

    /// Writes the desired values of `fields` again and verifies them, unless a command
    /// is being written (its own read-back settles the question). Returns `None` when
    /// skipped. After [`REAPPLY_BUDGET`] failures in a row the thermostat counts as not
    /// holding its settings until a reading or a command shows them again.
    pub async fn reapply(&self, fields: &[&'static str]) -> Option<ReapplyOutcome> {
        let _writing = self.try_write_lock()?;
        let (change, model) = {
            let state = self.lock_state();
            (reapply_change(&state.settings, fields), state.model)
        };
        if change.is_empty() {
            return None;
        }
        log::info!(
            "thermostat {}: writing the desired {} again",
            self.id,
            change.describe()
        );
        let result = apply_change(&self.link, model, &change).await;
        let mut state = self.lock_state();
        Some(match result {
            Ok(applied) => {
                state.counters.reapplied += 1;
                state.failed_reapplies = 0;
                state.holding = true;
                state.confirmed = true;
                state.last_drift = None;
                state.drift_fields = differing_fields(&state.settings, &applied.state);
                state.reported = Some(merge_known(state.reported.as_ref(), &applied.state));
                ReapplyOutcome::Holding(applied.state)
            }
            Err(error) => {
                state.counters.reapply_failures += 1;
                state.failed_reapplies += 1;
                let exhausted = state.failed_reapplies >= REAPPLY_BUDGET;
                let newly_lost = exhausted && state.holding;
                if exhausted {
                    state.holding = false;
                }
                log::warn!(
                    "thermostat {}: re-applying {} failed ({} of {REAPPLY_BUDGET}): {error}",
                    self.id,
                    change.describe(),
                    state.failed_reapplies.min(REAPPLY_BUDGET)
                );
                if newly_lost {
                    ReapplyOutcome::NotHolding(error)
                } else {
                    ReapplyOutcome::Failed(error)
                }
            }
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_pending(&self) -> MutexGuard<'_, Option<Box<Pending>>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Outcome of one re-apply.
#[derive(Debug, Clone, PartialEq)]
pub enum ReapplyOutcome {
    /// The unit reads back as commanded; its state after the write.
    Holding(ThermostatState),
    /// The write failed, within the retry budget.
    Failed(ControlError),
    /// The write failed and the budget ran out with it: the unit is not holding.
    NotHolding(ControlError),
}

/// Returns the values `state` shows for `fields`, as a change.
fn values_of(state: &ThermostatState, fields: &[&'static str]) -> SettingsChange {
    let named = |field: &str| fields.contains(&field);
    SettingsChange {
        tmode: state.tmode.filter(|_| named("tmode")),
        t_heat: state.t_heat.filter(|_| named("t_heat")),
        t_cool: state.t_cool.filter(|_| named("t_cool")),
        fmode: state.fmode.filter(|_| named("fmode")),
        hold: state.hold.filter(|_| named("hold")),
    }
}
