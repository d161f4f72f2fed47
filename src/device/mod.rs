//! The RadioThermostat local HTTP API: one client per thermostat that keeps the device's
//! rules (one request in flight, a gap between requests, a deadline on every request),
//! and tolerant parsers for the bodies real units send.
//!
//! Nothing here talks to PostgreSQL or decides when to poll; see `poll` for that.

mod client;
mod error;
mod http;
mod info;
mod program;
mod tstat;

pub use client::{DeviceLink, LinkOptions};
pub use error::DeviceError;
pub use http::{HttpReply, MAX_BODY_BYTES};
pub use info::{DeviceIdentity, ModelProfile, SysInfo, parse_model, parse_name, parse_sys};
pub use program::{DAY_NAMES, Period, ProgramKind, WeekProgram, parse_program};
pub use tstat::{FieldNote, NoteKind, ParseError, TstatReply, parse_post_reply, parse_tstat};
