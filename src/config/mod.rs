//! The site configuration: one TOML file per site, plus secrets from the environment or
//! an environment file.
//!
//! [`load`] and [`parse`] walk the file key by key and report every problem in one pass:
//! missing required keys, wrong types, values out of range and unknown keys. Each problem
//! carries its dotted key, so `thermostat-server check-config FILE` lists them all at once.
//! `board/config.template.toml` documents every key.

mod check;
mod defaults;
mod discovery;
mod fields;
mod secrets;
mod sections;
mod weather;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::tz::TimeZone;

use crate::thermostat::DeviceAddress;

pub use check::{EX_CONFIG, EX_NOINPUT, check_config, check_config_command};
pub use discovery::DiscoveryConfig;
pub use secrets::{
    API_TOKEN_VAR, DB_PASSWORD_VAR, SITE_TOKEN_VAR, Secret, Secrets, WEATHER_API_KEY_VAR,
    parse_env_file,
};
pub use weather::{DEFAULT_WEATHER_BASE_URL, PLAUSIBLE_OUTSIDE_FAHRENHEIT, WeatherConfig};

/// The whole configuration of one site.
#[derive(Debug, Clone)]
pub struct Config {
    pub site: SiteConfig,
    pub database: DatabaseConfig,
    pub polling: PollingConfig,
    pub thermostats: ThermostatsConfig,
    pub discovery: DiscoveryConfig,
    pub retention: RetentionConfig,
    pub api: ApiConfig,
    pub log: LogConfig,
    pub weather: WeatherConfig,
    /// Settings applied once to each newly registered thermostat; empty by default.
    pub defaults: crate::control::SettingsChange,
    /// The `[public_server]` section; `None` (no section) turns the sync off.
    pub public_server: Option<PublicServerConfig>,
    pub secrets: Secrets,
}

impl Config {
    /// Builds a configuration with every default, for demos and tests, except that
    /// discovery only checks stored addresses.
    pub fn new(site_id: &str, database_url: &str) -> Config {
        Config {
            site: SiteConfig {
                site_id: site_id.to_string(),
                name: site_id.to_string(),
                time_zone: TimeZone::system(),
            },
            database: DatabaseConfig {
                url: database_url.to_string(),
                ..DatabaseConfig::default()
            },
            polling: PollingConfig::default(),
            thermostats: ThermostatsConfig::default(),
            discovery: DiscoveryConfig::database_only(),
            retention: RetentionConfig::default(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            weather: WeatherConfig::default(),
            defaults: crate::control::SettingsChange::default(),
            public_server: None,
            secrets: Secrets::default(),
        }
    }
}

/// The `[site]` section.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// 1 to 64 characters from `a-z`, `0-9`, `_` and `-`; it names the site to the public
    /// server.
    pub site_id: String,
    /// A name for people; the site id unless set.
    pub name: String,
    /// The zone that local times (such as the retention hour) are read in.
    pub time_zone: TimeZone,
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            site_id: String::new(),
            name: String::new(),
            time_zone: TimeZone::system(),
        }
    }
}

/// The `[database]` section.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// A libpq connection string, URL or `key=value` form, without a password.
    pub url: String,
    /// Readings kept in memory while PostgreSQL is unreachable.
    pub buffer_readings: usize,
    /// How often buffered readings are written.
    pub flush_interval: Duration,
    pub connect_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            buffer_readings: 20_000,
            flush_interval: Duration::from_millis(1000),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl DatabaseConfig {
    /// Builds the connection settings from the URL, the password (kept out of the URL)
    /// and the connect timeout.
    pub fn postgres_config(
        &self,
        password: Option<&Secret>,
    ) -> Result<postgres::Config, postgres::Error> {
        let mut config: postgres::Config = self.url.parse()?;
        if let Some(password) = password {
            config.password(password.expose());
        }
        config.connect_timeout(self.connect_timeout);
        Ok(config)
    }
}

/// The `[polling]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollingConfig {
    /// Time between two polls of one thermostat.
    pub interval: Duration,
    /// Deadline for one HTTP request to a thermostat.
    pub request_timeout: Duration,
    /// Minimum pause between two requests to one thermostat.
    pub min_request_gap: Duration,
    /// Pause before and after a program request to one thermostat.
    pub program_gap: Duration,
    /// Consecutive failed polls after which a thermostat counts as offline.
    pub offline_after_failures: u32,
    /// Upper bound of the retry delay for a failing thermostat.
    pub max_backoff: Duration,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(25),
            min_request_gap: Duration::from_millis(1000),
            program_gap: Duration::from_secs(15),
            offline_after_failures: 3,
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl PollingConfig {
    /// Returns the timing rules of every `DeviceLink` the daemon and the command line open.
    pub fn link_options(&self) -> crate::device::LinkOptions {
        crate::device::LinkOptions {
            request_timeout: self.request_timeout,
            min_request_gap: self.min_request_gap,
            program_gap: self.program_gap,
        }
    }
}

/// The `[thermostats]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThermostatsConfig {
    /// Thermostats polled from start-up, before discovery finds any; no duplicates.
    pub addresses: Vec<DeviceAddress>,
    /// The drift policy (`policy`, default `enforce`) and its per-uuid overrides
    /// (`policy_overrides`).
    pub policies: crate::desired::Policies,
}

/// The `[retention]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Days that raw readings are kept.
    pub raw_days: u32,
    /// Days that per-minute rows are kept; at least `raw_days`.
    pub minute_days: u32,
    /// Local hour (0 to 23, in `site.time_zone`) at which old rows are deleted.
    pub hour: u8,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            raw_days: 14,
            minute_days: 365,
            hour: 3,
        }
    }
}

/// The `[api]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Address the local HTTP API binds to. A non-loopback address needs
    /// `THERMOSTAT_API_TOKEN`.
    pub listen: SocketAddr,
    /// Extra `Host` header names accepted when the API is bound to the LAN.
    pub allowed_hosts: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8000)),
            allowed_hosts: Vec::new(),
        }
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: log::LevelFilter,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: log::LevelFilter::Info,
        }
    }
}

/// The `[public_server]` section: where and how often the sync talks to the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicServerConfig {
    /// `https://host[:port]`, without a path; plain `http://` only for loopback hosts.
    pub base_url: String,
    /// A PEM file of CA certificates trusted besides the built-in web roots.
    pub ca_cert: Option<PathBuf>,
    /// Whether the server's certificate is checked.
    pub ssl_verify: bool,
    /// Deadline of one request, connect to last byte.
    pub request_timeout: Duration,
    /// Maximum time a state change waits to be batched with others.
    pub state_change_wait: Duration,
    pub snapshot_interval: Duration,
    pub minute_interval: Duration,
    pub command_interval: Duration,
    pub results_interval: Duration,
    /// Maximum wait between retries after a 429 or 5xx response, or none.
    pub max_backoff: Duration,
    /// Wait between retries after 401 or 403, and between their log lines.
    pub auth_retry: Duration,
}

impl PublicServerConfig {
    /// Returns the section with the protocol's defaults for `base_url`.
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_string(),
            ca_cert: None,
            ssl_verify: true,
            request_timeout: Duration::from_secs(30),
            state_change_wait: Duration::from_secs(5),
            snapshot_interval: Duration::from_secs(30),
            minute_interval: Duration::from_secs(60),
            command_interval: Duration::from_secs(10),
            results_interval: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            auth_retry: Duration::from_secs(300),
        }
    }
}

/// One problem with a configuration, filed under the dotted key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, for example `polling.interval_seconds`, or `thermostats.addresses[2]`
    /// for an array element. Empty for a problem with the whole file.
    pub key: String,
    /// Message stating the value found and the expected form.
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a rejected configuration, and the warnings found beside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Never empty.
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "{count} configuration problem{}",
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// An accepted configuration and the warnings about it (such as a secrets file that
/// others can read).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

/// Reads and validates the file at `path`, taking secrets from the process environment
/// and from `secrets.env_file`.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_with_env(path, &process_env)
}

/// Reads and validates the file at `path` with `env` in place of the process environment.
/// A relative `secrets.env_file` is resolved against the file's folder.
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let text = read_config_file(path).map_err(|error| ConfigErrors {
        problems: vec![Problem::new(
            "",
            format!("cannot read {}: {error}", path.display()),
        )],
        warnings: Vec::new(),
    })?;
    load_text(path, &text, env)
}

/// Validates `text`, read from `path`, and warns when the file contains a password that
/// group or others can read.
fn load_text(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let base = path.parent().map(Path::to_path_buf);
    let outcome = sections::parse_in(text, env, base.as_deref());
    let mut result = outcome.result;

    if outcome.url_has_password {
        let warnings = match &mut result {
            Ok(loaded) => &mut loaded.warnings,
            Err(errors) => &mut errors.warnings,
        };
        warnings.extend(secrets::check_private(path, "database.url"));
    }
    result
}

/// Validates configuration `text`. `env` looks up environment variables, so that tests
/// can inject them. A relative `secrets.env_file` is resolved against the current
/// directory.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigErrors> {
    sections::parse_in(text, env, None).result
}

/// Looks `name` up in the process environment; a value that is not UTF-8 counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn read_config_file(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Resolves `path` against `base` when it is relative.
fn resolve_path(path: PathBuf, base: Option<&Path>) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    }
}
