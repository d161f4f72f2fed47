//! The handlers behind the route table. They run on the API worker threads, which may
//! wait: on the store's reply channels (bounded by [`STORE_TIMEOUT`]) and on a settings
//! change through the thermostat's `DeviceLink` (bounded by `ApiState::control_deadline`).

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use tiny_http::Request;

use super::body::{
    BODY_DEADLINE, MODE_FIELDS, SETTINGS_FIELDS, TEMPERATURE_FIELDS, check_content_type,
    check_declared_length, check_length_known, parse_change, parse_json, read_limited,
};
use super::reply::Reply;
use super::routes::{self, Route};
use super::{ApiState, header, metrics, page, views};
use crate::control::{Applied, ControlError, SettingsChange};
use crate::desired::Controller;
use crate::device::ModelProfile;
use crate::store::{StoreError, ThermostatOverview};
use crate::thermostat::ThermostatId;

/// Maximum wait for the store thread's reply. The thread reads requests between
/// statements, and a statement may run for up to 30 s, so a busy store gets a 503 instead
/// of a hung worker.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves every route of the table except those `mod.rs` matches first.
pub fn dispatch(request: &mut Request, method: &str, path: &str, state: &ApiState) -> Reply {
    let route = match routes::resolve(method, path) {
        Ok(route) => route,
        Err(reply) => return reply,
    };
    let authorization = header(request, "Authorization");
    if let Err(reply) = state
        .access
        .check_token(route.is_mutating(), authorization.as_deref())
    {
        return reply;
    }

    match route {
        Route::StatusPage => page::status_page(state),
        Route::Metrics => metrics::metrics(state),
        Route::Thermostats => list_thermostats(state),
        Route::ThermostatStatus(id) => thermostat_status(state, &id),
        Route::SetTemperature(id) => read_change(request, &TEMPERATURE_FIELDS)
            .map_or_else(|reply| reply, |change| control(state, &id, &change)),
        Route::SetMode(id) => read_change(request, &MODE_FIELDS)
            .map_or_else(|reply| reply, |change| control(state, &id, &change)),
        Route::SetSettings(id) => read_change(request, &SETTINGS_FIELDS)
            .map_or_else(|reply| reply, |change| control(state, &id, &change)),
        Route::LiveStatus(id) => super::device_routes::live_status(state, &id),
        Route::TimeSync(id) => super::device_routes::time_sync(state, &id),
        Route::Program(id) => super::device_routes::program(state, &id),
        Route::SiteStatus => site_status(state),
        Route::DiscoveryScan => {
            read_json(request, true).map_or_else(|reply| reply, |body| discovery_scan(state, &body))
        }
        Route::SystemInfo => system_info(state),
        Route::SystemHealth => super::system_health(state).into(),
        Route::SystemConfig => Reply::json(200, &state.config_view),
        Route::WeatherStatus => super::weather_status(state).into(),
    }
}

/// Reads and parses a JSON body with the size and content type checks.
fn read_json(request: &mut Request, empty_is_object: bool) -> Result<Value, Reply> {
    check_length_known(header(request, "Transfer-Encoding").as_deref())?;
    check_declared_length(request.body_length())?;
    let content_type = header(request, "Content-Type");
    let deadline = std::time::Instant::now() + BODY_DEADLINE;
    let body = read_limited(request.as_reader(), deadline)?;
    check_content_type(content_type.as_deref(), body.len())?;
    parse_json(&body, empty_is_object)
}

fn read_change(request: &mut Request, fields: &[&str]) -> Result<SettingsChange, Reply> {
    let body = read_json(request, false)?;
    parse_change(&body, fields)
}

/// Waits for a store request on this worker thread, at most [`STORE_TIMEOUT`].
fn wait_for_store<T>(request: impl Future<Output = Result<T, StoreError>>) -> Result<T, Reply> {
    let timed = futures_lite::future::or(async { Some(request.await) }, async {
        async_io::Timer::after(STORE_TIMEOUT).await;
        None
    });
    match async_io::block_on(timed) {
        Some(Ok(value)) => Ok(value),
        Some(Err(error)) => Err(store_error(&error)),
        None => Err(Reply::error(
            503,
            format!(
                "the database did not answer within {} s; retry later",
                STORE_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn store_error(error: &StoreError) -> Reply {
    match error {
        StoreError::Unavailable(_) | StoreError::Closed => {
            Reply::error(503, format!("{error}; retry later"))
        }
        _ => {
            log::error!("local API: {error}");
            Reply::error(500, format!("{error}"))
        }
    }
}

fn load_overviews(
    state: &ApiState,
    id: Option<&ThermostatId>,
) -> Result<Vec<ThermostatOverview>, Reply> {
    wait_for_store(state.store.thermostat_overviews(id.cloned()))
}

pub(super) fn not_found(id: &ThermostatId) -> Reply {
    Reply::error(
        404,
        format!("no thermostat with id {id}: GET /api/thermostats lists the known ids"),
    )
}

fn list_thermostats(state: &ApiState) -> Reply {
    let overviews = match load_overviews(state, None) {
        Ok(overviews) => overviews,
        Err(reply) => return reply,
    };
    let list: Vec<Value> = overviews
        .iter()
        .map(|overview| thermostat_view(state, overview))
        .collect();
    Reply::json(200, &json!({ "count": list.len(), "thermostats": list }))
}

fn thermostat_status(state: &ApiState, id: &ThermostatId) -> Reply {
    let overviews = match load_overviews(state, Some(id)) {
        Ok(overviews) => overviews,
        Err(reply) => return reply,
    };
    let Some(overview) = overviews.first() else {
        return not_found(id);
    };
    Reply::json(200, &thermostat_view(state, overview))
}

/// Builds a thermostat's view with its polling status and, while it is polled, its
/// desired state and drift.
fn thermostat_view(state: &ApiState, overview: &ThermostatOverview) -> Value {
    let id = &overview.record.id;
    let status = state.status.get(id);
    let mut view = views::thermostat_json(overview, status.as_ref());
    if let (Some(controller), Some(object)) = (state.registry.controller(id), view.as_object_mut())
        && let Value::Object(desired) = views::desired_json(&controller.snapshot())
    {
        object.extend(desired);
    }
    view
}

/// Applies a validated change through the thermostat's `DeviceLink`, verifies it by
/// reading back, and records it in `device_config`.
fn control(state: &ApiState, id: &ThermostatId, change: &SettingsChange) -> Reply {
    let Some(controller) = state.registry.controller(id) else {
        return not_found(id);
    };
    let model = match load_overviews(state, Some(id)) {
        Ok(overviews) => overviews.first().map_or(ModelProfile::Generic, |overview| {
            ModelProfile::from_model(&overview.record.model)
        }),
        Err(reply) => return reply,
    };

    log::info!(
        "local API: applying {} to thermostat {id}",
        change.describe()
    );
    let applied = apply_within_deadline(state, &controller, model, id, change);
    // The change is the desired state unless the model cannot make it, so it is
    // recorded even when the unit did not take it: the poll task keeps trying.
    let refused = matches!(&applied, Err((ControlError::Unsupported(_), _)));
    let recorded = !refused && record_applied(state, id, change);
    let applied = match applied {
        Ok(applied) => applied,
        Err((_, reply)) => return reply,
    };
    let now = state.clock.now();
    state.status.record_state(id, now, applied.state);
    log::info!(
        "local API: thermostat {id} applied {} in {} write(s)",
        change.describe(),
        applied.writes
    );

    Reply::json(
        200,
        &json!({
            "thermostat_id": id.as_str(),
            "applied": change.describe(),
            "writes": applied.writes,
            "recorded": recorded,
            "state": views::state_json(now, &applied.state, None),
        }),
    )
}

/// Runs the change through the thermostat's controller on this worker thread, at most
/// `ApiState::control_deadline`.
fn apply_within_deadline(
    state: &ApiState,
    controller: &Controller,
    model: ModelProfile,
    id: &ThermostatId,
    change: &SettingsChange,
) -> Result<Applied, (ControlError, Reply)> {
    let deadline = state.control_deadline;
    match within_deadline(state, controller.submit(*change, model, "local_api")) {
        Some(Ok(applied)) => Ok(applied),
        Some(Err(error)) => Err((error.clone(), control_error(id, &error))),
        None => {
            log::warn!(
                "local API: change {} to thermostat {id} timed out after {} s",
                change.describe(),
                deadline.as_secs()
            );
            Err((
                ControlError::Interrupted,
                Reply::error(
                    504,
                    format!(
                        "thermostat {id} did not finish the change within {} s; it may be partly applied, so check GET /api/thermostats/{id}/status",
                        deadline.as_secs()
                    ),
                ),
            ))
        }
    }
}

/// Runs `work` on this worker thread and returns its output, or `None` once
/// `ApiState::control_deadline` has passed.
pub(super) fn within_deadline<T>(state: &ApiState, work: impl Future<Output = T>) -> Option<T> {
    within(state.control_deadline, work)
}

/// Runs `work` on this worker thread and returns its output, or `None` once `deadline`
/// has passed.
pub(super) fn within<T>(deadline: Duration, work: impl Future<Output = T>) -> Option<T> {
    let bounded = futures_lite::future::or(async { Some(work.await) }, async {
        async_io::Timer::after(deadline).await;
        None
    });
    async_io::block_on(bounded)
}

/// Records an applied change in `device_config` and returns whether that worked. The
/// change is on the device already, so a failure is logged and the request succeeds.
fn record_applied(state: &ApiState, id: &ThermostatId, change: &SettingsChange) -> bool {
    let recording = state
        .store
        .record_settings(id.clone(), *change, "local_api");
    match wait_for_store(recording) {
        Ok(()) => true,
        Err(reply) => {
            log::warn!(
                "local API: thermostat {id} applied {} but device_config was not updated: {}",
                change.describe(),
                reply.body
            );
            false
        }
    }
}

fn control_error(id: &ThermostatId, error: &ControlError) -> Reply {
    log::warn!("local API: change to thermostat {id} failed: {error}");
    match error {
        ControlError::Unsupported(_) => Reply::error(409, format!("thermostat {id}: {error}")),
        ControlError::Device(_) | ControlError::NotApplied(_) | ControlError::Interrupted => {
            Reply::error(502, format!("thermostat {id}: {error}"))
        }
    }
}

fn discovery_scan(state: &ApiState, body: &Value) -> Reply {
    match &state.discovery {
        Some(scan) => {
            let (status, answer) = scan(body);
            Reply::json(status, &answer)
        }
        None => Reply::error(503, "discovery is not available in this build"),
    }
}

fn site_status(state: &ApiState) -> Reply {
    let report = super::health_report(state);
    let statuses = state.status.all();
    let online = statuses.iter().filter(|(_, status)| status.online).count();
    let live: Vec<_> = statuses
        .iter()
        .filter_map(|(_, status)| status.last_state.map(|(_, state)| state))
        .collect();
    let running = |wanted: crate::reading::Tstate| {
        live.iter()
            .filter(|state| state.tstate == Some(wanted))
            .count()
    };
    let temperatures: Vec<f64> = live.iter().filter_map(|state| state.temp).collect();
    let average = (!temperatures.is_empty())
        .then(|| temperatures.iter().sum::<f64>() / temperatures.len() as f64);

    Reply::json(
        200,
        &json!({
            "site_id": state.site_id,
            "site_name": state.site_name,
            "status": report.status,
            "thermostats": {
                "polled": statuses.len(),
                "online": online,
                "offline": statuses.len() - online,
                "heating": running(crate::reading::Tstate::Heating),
                "cooling": running(crate::reading::Tstate::Cooling),
                "average_temp": average.map(|value| (value * 10.0).round() / 10.0),
            },
            "database": report.database,
            "polling": report.polling,
        }),
    )
}

fn system_info(state: &ApiState) -> Reply {
    let snapshot = state.health.snapshot();
    let now = state.clock.now().as_second();
    let started = jiff::Timestamp::from_second(snapshot.started_at)
        .map(|ts| ts.to_string())
        .ok();
    Reply::json(
        200,
        &json!({
            "name": env!("CARGO_PKG_NAME"),
            "version": env!("CARGO_PKG_VERSION"),
            "site_id": state.site_id,
            "site_name": state.site_name,
            "started_at": started,
            "uptime_seconds": now - snapshot.started_at,
            "thermostats_polled": state.registry.len(),
            "api": {
                "listen": state.listen.to_string(),
                "lan_bound": state.access.is_lan_bound(),
            },
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "pid": std::process::id(),
        }),
    )
}
