//! Commands from the public server. They are polled every `command_interval` and logged
//! by `command_id` before they run, so a repeat is never executed twice. They run
//! through the control path, the thermostat row or the discovery runner, and their
//! results go back through the durable result outbox every `results_interval`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::SyncContext;
use super::client::{Sent, Stream};
use super::command::{Command, DiscoveryRequest, Envelope, parse_pending, validate};
use super::protocol::{
    PENDING_COMMANDS_PATH, RESULTS_PATH, ResultStatus, StatusReading, result_entry,
};
use crate::control::{ControlError, SettingsChange};
use crate::device::ModelProfile;
use crate::store::{Claim, ParkEffects, Parked};
use crate::thermostat::{ThermostatId, ThermostatRecord};

/// Maximum result entries in one `POST /commands/results`.
const RESULTS_BATCH_MAX: usize = 50;

/// Wait between attempts to store a final result while the database is away.
const FINISH_RETRY: Duration = Duration::from_secs(2);

/// Capacity of the queue of progress reports of one discovery run; reports beyond it
/// are dropped, because the next report carries the whole phase history.
const PROGRESS_QUEUE: usize = 16;

/// Receives each progress report of a discovery run: a JSON value with the run's
/// `phase_history` so far.
pub type ProgressFn = Box<dyn Fn(Value) + Send + Sync>;

/// Runs device discovery for `discover_devices`. The daemon hands in the real discovery;
/// tests hand in a simple one.
pub trait DiscoveryRunner: Send + Sync {
    /// Runs one discovery and returns its final result (for example
    /// `{"devices":[...],"phase_history":[...]}`) or an error message. Calls `progress`
    /// after each phase, and must drop it by the time the returned future completes,
    /// because the command waits for the last progress report until then.
    fn discover(
        &self,
        request: DiscoveryRequest,
        progress: ProgressFn,
    ) -> futures_lite::future::Boxed<Result<Value, String>>;
}

/// Command ids executing in this process, so that a command delivered again while it
/// runs is neither executed again nor taken for an interrupted one.
#[derive(Default)]
pub(super) struct Running(Mutex<HashSet<String>>);

impl Running {
    fn start(&self, id: &str) -> bool {
        self.lock().insert(id.to_string())
    }

    fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Polls `GET /commands/pending` and starts a task for each new command.
pub(super) struct CommandPoll {
    stream: Stream,
}

impl CommandPoll {
    pub(super) fn new(context: &SyncContext) -> Self {
        Self {
            stream: context.stream("command poll"),
        }
    }

    pub(super) async fn step(&mut self, context: &Arc<SyncContext>) -> Duration {
        let interval = context.options.command_interval;
        let body = match context.client.get(PENDING_COMMANDS_PATH).await {
            Sent::Delivered(body) => {
                self.stream.delivered();
                body
            }
            Sent::Retry {
                detail,
                retry_after,
            } => {
                let url = context.client.url(PENDING_COMMANDS_PATH);
                return self.stream.failed(&url, &detail, retry_after).max(interval);
            }
            Sent::Unauthorized { status } => {
                return context.client.auth_failed(status, PENDING_COMMANDS_PATH);
            }
            Sent::Park { status, reason } => {
                log::error!(
                    "command poll: {} returned status {status}: {reason}; trying again in {} s",
                    context.client.url(PENDING_COMMANDS_PATH),
                    interval.as_secs()
                );
                return interval;
            }
        };

        for envelope in parse_pending(&body) {
            if context.running.start(&envelope.command_id) {
                let task_context = context.clone();
                context.spawn(async move {
                    let id = envelope.command_id.clone();
                    handle(&task_context, envelope).await;
                    task_context.running.end(&id);
                });
            }
        }
        interval
    }
}

/// Claims the command in the log, then executes it, resends its stored result, or
/// fails it as interrupted.
async fn handle(context: &SyncContext, envelope: Envelope) {
    let id = envelope.command_id.clone();
    let claim = match context.store.claim_command(envelope.clone()).await {
        Ok(claim) => claim,
        Err(error) => {
            log::warn!("command {id}: cannot log it, so it waits for the next poll: {error}");
            return;
        }
    };

    match claim {
        Claim::New => execute(context, envelope).await,
        Claim::Finished(entry) => {
            log::info!("command {id}: delivered again; it ran before, resending its stored result");
            if let Err(error) = context.store.queue_result(id.clone(), entry).await {
                log::warn!("command {id}: cannot queue the stored result: {error}");
            }
        }
        Claim::Running => {
            let message = "the daemon stopped while this command ran, so it may have been \
                           applied in part; check the thermostat and send a new command";
            log::warn!("command {id}: {message}");
            finish(
                context,
                &id,
                ResultStatus::Failed,
                Value::Null,
                Some(message),
            )
            .await;
        }
    }
}

async fn execute(context: &SyncContext, envelope: Envelope) {
    let id = envelope.command_id.clone();
    let records = match context.store.load_thermostats().await {
        Ok(records) => records,
        Err(error) => {
            let message = format!("cannot read the thermostat list: {error}");
            finish(
                context,
                &id,
                ResultStatus::Failed,
                Value::Null,
                Some(&message),
            )
            .await;
            return;
        }
    };
    let by_id: HashMap<ThermostatId, ThermostatRecord> = records
        .into_iter()
        .map(|record| (record.id.clone(), record))
        .collect();

    let command = match validate(&envelope, &|id| by_id.contains_key(id)) {
        Ok(command) => command,
        Err(message) => {
            log::warn!("command {id} ({}) rejected: {message}", envelope.command);
            finish(
                context,
                &id,
                ResultStatus::Rejected,
                Value::Null,
                Some(&message),
            )
            .await;
            return;
        }
    };

    log::info!("command {id}: running {}", envelope.command);
    let outcome = match command {
        Command::SetState {
            thermostat_id,
            change,
        } => {
            let model = by_id
                .get(&thermostat_id)
                .map_or(ModelProfile::Generic, |record| {
                    ModelProfile::from_model(&record.model)
                });
            set_state(context, &thermostat_id, model, change).await
        }
        Command::SetAwayTemp {
            thermostat_id,
            away_temp,
        } => set_away_temp(context, thermostat_id, away_temp).await,
        Command::DiscoverDevices(request) => discover(context, &id, request).await,
    };

    match outcome {
        Ok(result) => {
            log::info!("command {id}: completed");
            finish(context, &id, ResultStatus::Completed, result, None).await;
        }
        Err(message) => {
            log::warn!("command {id}: failed: {message}");
            finish(
                context,
                &id,
                ResultStatus::Failed,
                Value::Null,
                Some(&message),
            )
            .await;
        }
    }
}

/// Returns the thermostat's controller, waiting up to 10 s for it: right after a
/// restart, commands arrive before onboarding has started every poll task.
async fn controller_after_start_up(
    context: &SyncContext,
    id: &ThermostatId,
) -> Option<std::sync::Arc<crate::desired::Controller>> {
    for _ in 0..20 {
        if let Some(controller) = context.links.controller(id) {
            return Some(controller);
        }
        async_io::Timer::after(Duration::from_millis(500)).await;
    }
    context.links.controller(id)
}

async fn set_state(
    context: &SyncContext,
    id: &ThermostatId,
    model: ModelProfile,
    change: SettingsChange,
) -> Result<Value, String> {
    let Some(controller) = controller_after_start_up(context, id).await else {
        return Err(format!(
            "thermostat {id} is registered but not being polled yet; try again in a minute"
        ));
    };
    let result = controller.submit(change, model, "public_server").await;

    // The change is the desired state unless the model cannot make it, even when the
    // unit did not take it: the poll task keeps trying.
    if !matches!(result, Err(ControlError::Unsupported(_)))
        && let Err(error) = context
            .store
            .record_settings(id.clone(), change, "public_server")
            .await
    {
        log::warn!(
            "thermostat {id}: cannot record {} in device_config: {error}",
            change.describe()
        );
    }
    let applied = result.map_err(|error| format!("thermostat {id}: {error}"))?;
    let state = StatusReading::from_state(id.as_str(), context.clock.now(), &applied.state, None);
    Ok(json!({ "state": state, "writes": applied.writes }))
}

async fn set_away_temp(
    context: &SyncContext,
    id: ThermostatId,
    away_temp: f64,
) -> Result<Value, String> {
    match context.store.set_away_temp(id.clone(), away_temp).await {
        Ok(true) => Ok(json!({ "thermostat_id": id.as_str(), "away_temp": away_temp })),
        Ok(false) => Err(format!(
            "unknown thermostat {id}: no row to store the away temperature on"
        )),
        Err(error) => Err(format!(
            "cannot store the away temperature of {id}: {error}"
        )),
    }
}

/// Runs discovery, queueing each progress report as an `inprogress` result.
async fn discover(
    context: &SyncContext,
    command_id: &str,
    request: DiscoveryRequest,
) -> Result<Value, String> {
    // NOTE: `thermostat-server run` passes no runner until the discovery module is wired
    // into `RunOptions::discovery`, so this command fails there for now.
    let Some(runner) = context.discovery.clone() else {
        return Err("discovery is not available in this daemon".to_string());
    };

    let (sender, receiver) = async_channel::bounded::<Value>(PROGRESS_QUEUE);
    let progress: ProgressFn = Box::new(move |report| {
        let _ = sender.try_send(report);
    });
    let run = runner.discover(request, progress);

    let forward = async {
        while let Ok(report) = receiver.recv().await {
            let entry = result_entry(
                command_id,
                ResultStatus::InProgress,
                context.clock.now(),
                report,
                None,
            );
            if let Err(error) = context
                .store
                .queue_result(command_id.to_string(), entry)
                .await
            {
                log::debug!("command {command_id}: progress report not queued: {error}");
            }
        }
    };

    // The runner drops the progress callback when it finishes, which ends `forward`.
    let (result, ()) = futures_lite::future::zip(run, forward).await;
    result
}

/// Stores the final result and queues it, retrying while the database is away. If the
/// daemon stops first, the command stays logged as running and is failed as
/// interrupted when the server delivers it again.
async fn finish(
    context: &SyncContext,
    id: &str,
    status: ResultStatus,
    result: Value,
    error: Option<&str>,
) {
    let entry = result_entry(id, status, context.clock.now(), result, error);
    loop {
        match context
            .store
            .finish_command(id.to_string(), status.as_str(), entry.clone())
            .await
        {
            Ok(()) => return,
            Err(store_error) => log::warn!(
                "command {id}: cannot store its {} result yet: {store_error}",
                status.as_str()
            ),
        }
        if !context.shutdown.sleep(FINISH_RETRY).await {
            return;
        }
    }
}

/// Sends queued results in batches of up to 50, oldest first, every `results_interval`.
pub(super) struct Results {
    stream: Stream,
}

impl Results {
    pub(super) fn new(context: &SyncContext) -> Self {
        Self {
            stream: context.stream("command results"),
        }
    }

    pub(super) async fn step(&mut self, context: &SyncContext) -> Duration {
        let interval = context.options.results_interval;
        let pending = match context.store.pending_results(RESULTS_BATCH_MAX).await {
            Ok(pending) => pending,
            Err(error) => {
                log::debug!("command results: waiting for the database: {error}");
                return interval;
            }
        };
        if pending.is_empty() {
            return interval;
        }
        let count = pending.len();
        let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
        let entries: Vec<Value> = pending.into_iter().map(|(_, entry)| entry).collect();
        let body = json!({ "results": entries });

        match context.client.post(RESULTS_PATH, &body).await {
            Sent::Delivered(_) => {
                self.stream.delivered();
                if let Err(error) = context.store.ack_results(ids).await {
                    // Sent again later; the server upserts results by command_id.
                    log::debug!("command results: sent but not deleted yet: {error}");
                }
                if count == RESULTS_BATCH_MAX {
                    Duration::ZERO
                } else {
                    interval
                }
            }
            Sent::Retry {
                detail,
                retry_after,
            } => self
                .stream
                .failed(&context.client.url(RESULTS_PATH), &detail, retry_after),
            Sent::Unauthorized { status } => context.client.auth_failed(status, RESULTS_PATH),
            Sent::Park { status, reason } => {
                log::error!(
                    "command results: the public server rejected them with status {status}: \
                     {reason}; parked them in sync_parked"
                );
                let parked = Parked {
                    endpoint: RESULTS_PATH,
                    payload: body,
                    status,
                    reason,
                };
                let effects = ParkEffects {
                    result_ids: ids,
                    ..ParkEffects::default()
                };
                if let Err(error) = context.store.park(parked, effects).await {
                    log::debug!("command results: cannot park yet: {error}");
                }
                Duration::ZERO
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_set_refuses_second_start() {
        let running = Running::default();
        assert!(running.start("c1"));
        assert!(!running.start("c1"));
        running.end("c1");
        assert!(running.start("c1"));
    }
}
