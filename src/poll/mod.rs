//! Polling: one task per thermostat reads `/tstat` on its own schedule, turns the reply
//! into a reading, detects state changes and hands readings to the store without ever
//! waiting on the database.
//!
//! The decisions live in [`schedule`], [`change`] and [`failure_log`] as plain functions; [`task`] and
//! [`registry`] are the thin async shell around them.

pub mod change;
pub mod failure_log;
pub mod registry;
pub mod schedule;
pub mod status;
pub mod task;

pub use registry::Registry;
pub use status::{StatusBoard, ThermostatStatus};
pub use task::{PollContext, ReadingSink, poll_thermostat, poll_with_controller};
