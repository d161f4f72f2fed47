//! The database phase: each stored address is checked with one `GET /sys` under a
//! short deadline, and counts as found when the same uuid still answers there.

use std::time::Duration;

use async_io::Timer;
use futures_lite::future;

use super::{Discovered, LinkSource, Method, identify, join_all, link_for};
use crate::device::{DeviceError, DeviceIdentity, LinkOptions, ModelProfile, SysInfo};
use crate::thermostat::ThermostatRecord;

/// Checks every record's address and returns what answers there. A different uuid at
/// a stored address is identified in full and reported as found by the database phase.
pub async fn check_known(
    records: &[ThermostatRecord],
    known_timeout: Duration,
    link_options: LinkOptions,
    links: &dyn LinkSource,
) -> Vec<Discovered> {
    let checks = records
        .iter()
        .map(|record| check_one(record, known_timeout, link_options, links));
    join_all(checks).await.into_iter().flatten().collect()
}

async fn check_one(
    record: &ThermostatRecord,
    known_timeout: Duration,
    link_options: LinkOptions,
    links: &dyn LinkSource,
) -> Option<Discovered> {
    let link = link_for(links, record.address, link_options);
    let sys = match read_sys_within(&link, known_timeout).await {
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
        return identify(link, Method::Database).await.ok();
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
        link,
    })
}

/// Reads `/sys` through `link`, giving up after `deadline`. The wait for the link's
/// lock counts against the deadline too.
async fn read_sys_within(
    link: &crate::device::DeviceLink,
    deadline: Duration,
) -> Result<SysInfo, DeviceError> {
    let timeout = async {
        Timer::after(deadline).await;
        Err(DeviceError::Timeout(deadline))
    };
    future::or(link.read_sys(), timeout).await
}
