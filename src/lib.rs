//! thermostat-server: an edge daemon for one site's RadioThermostat Wi-Fi thermostats.
//!
//! It polls every thermostat over the device's HTTP API, stores each reading and a
//! per-minute rollup in a local PostgreSQL, and serves local status checks. The parts:
//!
//! - [`config`]: the site configuration file and its secrets, with validation.
//! - [`device`]: the RadioThermostat HTTP protocol: requests, deadlines, tolerant parsing.
//! - [`poll`]: the per-thermostat poll schedule, change detection and the polling tasks.
//! - [`rollup`]: per-minute summaries and the daily retention decision.
//! - [`store`]: the only code that talks to PostgreSQL, on its own thread.
//! - [`weather`]: the outside temperature from OpenWeatherMap, stored beside each reading.
//! - [`api`]: the local HTTP API on tiny_http threads.
//! - [`net`]: an HTTP/HTTPS client for services outside the site.
//! - [`simulator`]: a fleet of simulated thermostats for tests, demos and benchmarks.
//! - [`daemon`]: start-up, wiring and shutdown of the parts above.
//!
//! ARCHITECTURE.md describes how the parts talk and the rules they keep.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod desired;
pub mod device;
pub mod discovery;
pub mod health;
pub mod net;
pub mod pgtemp;
pub mod poll;
pub mod reading;
pub mod rollup;
pub mod shutdown;
pub mod simulator;
pub mod store;
pub mod sync;
pub mod thermostat;
pub mod weather;
