//! Routes that talk to one thermostat through the daemon's own `DeviceLink`: a live
//! `GET /tstat`, the clock write and the program read. The command line sends its
//! requests here while the daemon runs, so a unit never gets two requests at once.
//! Each runs on the API worker thread within `ApiState::control_deadline`.

use serde_json::json;

use super::handlers::{not_found, within, within_deadline};
use super::reply::Reply;
use super::{ApiState, views};
use crate::device::{DeviceError, ProgramKind};
use crate::discovery::setup::sync_clock;
use crate::thermostat::ThermostatId;

/// `GET /api/thermostats/{id}/live`: reads `/tstat` now, whatever the poll schedule.
pub fn live_status(state: &ApiState, id: &ThermostatId) -> Reply {
    let Some(link) = state.registry.link(id) else {
        return not_found(id);
    };
    let reply = match within_deadline(state, link.read_state()) {
        Some(Ok(reply)) => reply,
        Some(Err(error)) => return device_error(id, &error),
        None => return timed_out(state.control_deadline, id),
    };
    let now = state.clock.now();
    state.status.record_state(id, now, reply.state);
    let notes: Vec<String> = reply
        .notes
        .iter()
        .map(|note| format!("{}: {:?}", note.field, note.kind))
        .collect();
    Reply::json(
        200,
        &json!({
            "thermostat_id": id.as_str(),
            "state": views::state_json(now, &reply.state, None),
            "notes": notes,
        }),
    )
}

/// `POST /api/thermostats/{id}/time-sync`: sets the unit's clock to the site's local
/// time unless a temporary setpoint would be lost.
pub fn time_sync(state: &ApiState, id: &ThermostatId) -> Reply {
    let Some(link) = state.registry.link(id) else {
        return not_found(id);
    };
    let now = state.clock.now().to_zoned_datetime(state.time_zone.clone());
    match within_deadline(state, sync_clock(&link, &now)) {
        Some(Ok(outcome)) => {
            let mut body = views::clock_outcome_json(&outcome);
            log::info!("local API: clock sync of thermostat {id}: {body}");
            body["thermostat_id"] = id.as_str().into();
            Reply::json(200, &body)
        }
        Some(Err(error)) => device_error(id, &error),
        None => timed_out(state.control_deadline, id),
    }
}

/// `GET /api/thermostats/{id}/program`: the heat and cool programs, read one after the
/// other with the link's program gap before, between and after them. Polls of the unit
/// wait meanwhile, since they share the link.
pub fn program(state: &ApiState, id: &ThermostatId) -> Reply {
    let Some(link) = state.registry.link(id) else {
        return not_found(id);
    };
    let deadline = state
        .control_deadline
        .max(link.options().both_programs_time());
    let both = async {
        let heat = link.read_program(ProgramKind::Heat).await?;
        let cool = link.read_program(ProgramKind::Cool).await?;
        Ok::<_, DeviceError>((heat, cool))
    };
    match within(deadline, both) {
        Some(Ok((heat, cool))) => Reply::json(
            200,
            &json!({
                "thermostat_id": id.as_str(),
                "heat": heat.to_json(),
                "cool": cool.to_json(),
            }),
        ),
        Some(Err(error)) => device_error(id, &error),
        None => timed_out(deadline, id),
    }
}

fn device_error(id: &ThermostatId, error: &DeviceError) -> Reply {
    log::warn!("local API: request to thermostat {id} failed: {error}");
    Reply::error(502, format!("thermostat {id}: {error}"))
}

fn timed_out(deadline: std::time::Duration, id: &ThermostatId) -> Reply {
    Reply::error(
        504,
        format!(
            "thermostat {id} did not answer within {} s; retry later",
            deadline.as_secs()
        ),
    )
}
