//! Changing a thermostat's settings safely, for every caller: public server commands,
//! the local API and the command line. The request is validated and rounded, the writes
//! the device's rules allow are planned and sent through the thermostat's `DeviceLink`,
//! and the result is read back, because some firmware reports success for writes it
//! ignored.

mod change;
mod plan;

use std::fmt;

pub use change::{InvalidChange, SETPOINT_RANGE, SettingsChange, round_setpoint};
pub use plan::{Mismatch, PlanError, needs_targets, plan_writes, retry_change, verify};

use crate::device::{DeviceError, DeviceLink, ModelProfile};
use crate::reading::ThermostatState;

/// An error that kept a settings change from taking effect.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlError {
    /// The model cannot make this change.
    Unsupported(PlanError),
    /// A request to the thermostat failed.
    Device(DeviceError),
    /// The thermostat still reports other settings after one retry.
    NotApplied(Vec<Mismatch>),
    /// The write carrying this change stopped before it finished (shutdown or a
    /// deadline), so its outcome is unknown.
    Interrupted,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported(error) => write!(f, "{error}"),
            Self::Device(error) => write!(f, "thermostat request failed: {error}"),
            Self::NotApplied(mismatches) => {
                let list: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "the thermostat did not apply the change: {}",
                    list.join(", ")
                )
            }
            Self::Interrupted => f.write_str(
                "the write carrying this change was interrupted; read the thermostat's status to see what it holds",
            ),
        }
    }
}

impl std::error::Error for ControlError {}

impl From<DeviceError> for ControlError {
    fn from(error: DeviceError) -> Self {
        Self::Device(error)
    }
}

impl From<PlanError> for ControlError {
    fn from(error: PlanError) -> Self {
        Self::Unsupported(error)
    }
}

/// The outcome of an applied change.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The state the thermostat reported after the change.
    pub state: ThermostatState,
    /// `POST /tstat` requests sent, retries included.
    pub writes: usize,
}

/// Applies `change` to the thermostat behind `link` and verifies it. A setting that
/// reads back wrong is sent once more (a mode change can clear hold, and some firmware
/// drops writes) before the change counts as not applied.
pub async fn apply_change(
    link: &DeviceLink,
    model: ModelProfile,
    change: &SettingsChange,
) -> Result<Applied, ControlError> {
    let current = link.read_state().await?.state;
    let writes = plan_writes(&current, change, model)?;
    send_all(link, &writes).await?;
    let mut sent = writes.len();

    let (mut state, mut mismatches) = read_back(link, change).await?;
    if !mismatches.is_empty() {
        let address = link.address();
        let list: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        log::info!(
            "thermostat at {address}: sending again because {}",
            list.join(", ")
        );

        let retry = plan_writes(&state, &retry_change(change, &mismatches), model)?;
        send_all(link, &retry).await?;
        sent += retry.len();
        (state, mismatches) = read_back(link, change).await?;
    }

    if mismatches.is_empty() {
        Ok(Applied {
            state,
            writes: sent,
        })
    } else {
        Err(ControlError::NotApplied(mismatches))
    }
}

async fn send_all(link: &DeviceLink, writes: &[serde_json::Value]) -> Result<(), DeviceError> {
    for body in writes {
        link.write_state(body).await?;
    }
    Ok(())
}

async fn read_back(
    link: &DeviceLink,
    change: &SettingsChange,
) -> Result<(ThermostatState, Vec<Mismatch>), DeviceError> {
    let state = link.read_state().await?.state;
    let targets = if needs_targets(change, &state) {
        Some(link.read_targets().await?)
    } else {
        None
    };
    let mismatches = verify(change, &state, targets.as_ref());
    Ok((state, mismatches))
}
