//! The database phase: each stored address is checked with one `GET /sys` under a
//! short deadline, and counts as found when the same uuid still answers there.

use std::sync::Arc;
use std::time::Duration;

use super::{Discovered, Method, identify, join_all};
use crate::device::{DeviceIdentity, DeviceLink, LinkOptions, ModelProfile};
use crate::thermostat::ThermostatRecord;

/// Checks every record's address and returns what answers there. A different uuid at
/// a stored address is identified in full and reported as found by the database phase.
pub async fn check_known(
    records: &[ThermostatRecord],
    known_timeout: Duration,
    link_options: LinkOptions,
) -> Vec<Discovered> {
    let checks = records
        .iter()
        .map(|record| check_one(record, known_timeout, link_options));
    join_all(checks).await.into_iter().flatten().collect()
}

async fn check_one(
    record: &ThermostatRecord,
    known_timeout: Duration,
    link_options: LinkOptions,
) -> Option<Discovered> {
    let short = LinkOptions {
        request_timeout: known_timeout,
        ..link_options
    };
    let probe = DeviceLink::new(record.address, short);
    let sys = match probe.read_sys().await {
        Ok(sys) => sys,
        Err(error) => {
            log::debug!(
                "thermostat {}: not at its stored address {}: {error}",
                record.id,
                record.address
            );
            return None;
        }
    };

    if sys.uuid != record.id {
        log::info!(
            "address {}: thermostat {} answers instead of {}",
            record.address,
            sys.uuid,
            record.id
        );
        return identify(record.address, link_options, Method::Database)
            .await
            .ok();
    }

    let identity = DeviceIdentity {
        sys,
        name: record.name.clone(),
        model: record.model.clone(),
        profile: ModelProfile::from_model(&record.model),
    };
    Some(Discovered {
        address: record.address,
        identity,
        method: Method::Database,
        link: Arc::new(DeviceLink::new(record.address, link_options)),
    })
}
