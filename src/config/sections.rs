//! Reads each section of a parsed file into its struct, with the range and cross-key
//! checks, and assembles the [`Config`] when no problem was found.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::tz::TimeZone;
use toml::Table;

use super::defaults::{DEFAULTS_KEYS, read_defaults};
use super::fields::{Field, Section, closest, quote, report_unknown_sections};
use super::secrets::{self, Findings, Secrets};
use super::weather::{WEATHER_KEYS, check_weather_key, read_weather};
use super::{
    ApiConfig, Config, ConfigErrors, DatabaseConfig, Loaded, LogConfig, PollingConfig, Problem,
    RetentionConfig, SiteConfig, ThermostatsConfig, resolve_path,
};
use crate::desired::{Policies, Policy};
use crate::thermostat::{DeviceAddress, ThermostatId};

const SITE_KEYS: &[&str] = &["site_id", "name", "time_zone"];
const DATABASE_KEYS: &[&str] = &[
    "url",
    "buffer_readings",
    "flush_interval_ms",
    "connect_timeout_seconds",
];
const POLLING_KEYS: &[&str] = &[
    "interval_seconds",
    "request_timeout_seconds",
    "min_request_gap_ms",
    "program_gap_seconds",
    "offline_after_failures",
    "max_backoff_seconds",
];
const THERMOSTATS_KEYS: &[&str] = &["addresses", "policy", "policy_overrides"];
const RETENTION_KEYS: &[&str] = &["raw_days", "minute_days", "hour"];
const API_KEYS: &[&str] = &["listen", "allowed_hosts"];
const LOG_KEYS: &[&str] = &["level"];
const SECRETS_KEYS: &[&str] = &["env_file"];
const PUBLIC_SERVER_KEYS: &[&str] = &[
    "base_url",
    "ca_cert",
    "ssl_verify",
    "request_timeout_seconds",
    "state_change_max_wait_seconds",
    "snapshot_interval_seconds",
    "minute_interval_seconds",
    "command_poll_seconds",
    "results_interval_seconds",
    "max_backoff_seconds",
    "auth_retry_seconds",
];

/// Every section and its keys, in the order the template lists them.
pub(super) const SECTIONS: &[(&str, &[&str])] = &[
    ("site", SITE_KEYS),
    ("database", DATABASE_KEYS),
    ("polling", POLLING_KEYS),
    ("thermostats", THERMOSTATS_KEYS),
    ("discovery", super::discovery::DISCOVERY_KEYS),
    ("retention", RETENTION_KEYS),
    ("api", API_KEYS),
    ("log", LOG_KEYS),
    ("weather", WEATHER_KEYS),
    ("defaults", DEFAULTS_KEYS),
    ("public_server", PUBLIC_SERVER_KEYS),
    ("secrets", SECRETS_KEYS),
];

/// Below this request timeout the slowest known units time out: a CT80 v2.34T takes
/// about 16 seconds to respond to `GET /tstat`.
const SLOW_UNIT_TIMEOUT_SECONDS: u64 = 20;

const SITE_ID_FORM: &str = "a site id of 1 to 64 characters from a-z, 0-9, '_' and '-', \
                            such as \"cape_home\"";
const DATABASE_URL_FORM: &str = "a PostgreSQL connection string such as \
                                 \"postgresql://thermostat@127.0.0.1:5432/thermostat\" \
                                 or \"host=127.0.0.1 user=thermostat dbname=thermostat\"";

/// The result of parsing, and whether the database URL carried a password, which makes
/// the permissions of the config file matter.
pub(super) struct ParseOutcome {
    pub(super) result: Result<Loaded, ConfigErrors>,
    pub(super) url_has_password: bool,
}

/// Problems and warnings collected over one parse.
#[derive(Default)]
struct Report {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    url_has_password: bool,
}

/// Parses and validates `text`, resolving a relative `secrets.env_file` against `base`.
pub(super) fn parse_in(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base: Option<&Path>,
) -> ParseOutcome {
    let root: Table = match text.parse() {
        Ok(root) => root,
        Err(error) => {
            let problem = syntax_problem(text, &error);
            return ParseOutcome {
                result: Err(ConfigErrors {
                    problems: vec![problem],
                    warnings: Vec::new(),
                }),
                url_has_password: false,
            };
        }
    };

    let mut report = Report::default();
    let config = read_config(&root, env, base, &mut report);

    let result = if report.problems.is_empty() {
        Ok(Loaded {
            config,
            warnings: report.warnings,
        })
    } else {
        Err(ConfigErrors {
            problems: report.problems,
            warnings: report.warnings,
        })
    };
    ParseOutcome {
        result,
        url_has_password: report.url_has_password,
    }
}

/// Reads every section. A rejected value is replaced by its default, so the returned
/// config is only meaningful when `report` contains no problems.
fn read_config(
    root: &Table,
    env: &dyn Fn(&str) -> Option<String>,
    base: Option<&Path>,
    report: &mut Report,
) -> Config {
    report_unknown_sections(root, SECTIONS, &mut report.problems);

    let site = read_site(root, report);
    let database = read_database(root, report);
    let polling = read_polling(root, report);
    let thermostats = read_thermostats(root, report);
    let discovery = super::discovery::read_discovery(root, &mut report.problems);
    let retention = read_retention(root, report);
    let api = read_api(root, report);
    let log = read_log(root, report);
    let weather = read_weather(root, &mut report.problems, SECTIONS);
    let defaults = read_defaults(root, &mut report.problems, SECTIONS);
    let public_server = read_public_server(root, base, report);
    let secrets = read_secrets(root, env, base, report);

    check_api_token(&api, &secrets, report);
    check_weather_key(&weather, &secrets, &mut report.warnings);
    check_site_token(public_server.as_ref(), &secrets, report);

    Config {
        site,
        database,
        polling,
        thermostats,
        discovery,
        retention,
        api,
        log,
        weather,
        defaults,
        public_server,
        secrets,
    }
}

/// Turns a TOML syntax error into one problem with the line and column it points at.
fn syntax_problem(text: &str, error: &toml::de::Error) -> Problem {
    let message = error.message().trim_end();

    let Some(span) = error.span() else {
        return Problem::new("", format!("invalid TOML: {message}"));
    };

    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = before[line_start..].chars().count() + 1;
    Problem::new(
        "",
        format!("line {line}, column {column}: invalid TOML: {message}"),
    )
}

fn read_site(root: &Table, report: &mut Report) -> SiteConfig {
    let mut section = Section::open(root, "site", SITE_KEYS, &mut report.problems);

    let site_id = section
        .required_string("site_id", SITE_ID_FORM)
        .filter(|site_id| check_site_id(&mut section, site_id));

    let name = match section.string("name", "a name such as \"Cape House\"") {
        Field::Valid(name) if name.trim().is_empty() => {
            section.report(
                "name",
                "must not be empty; remove the key to use the site id",
            );
            None
        }
        Field::Valid(name) => Some(name),
        _ => None,
    };

    let time_zone = match section.string(
        "time_zone",
        "an IANA time zone name such as \"America/New_York\"",
    ) {
        Field::Valid(name) => read_time_zone(&mut section, &name),
        _ => None,
    };

    section.finish(SECTIONS);

    let site_id = site_id.unwrap_or_default();
    SiteConfig {
        name: name.unwrap_or_else(|| site_id.clone()),
        site_id,
        time_zone: time_zone.unwrap_or_else(TimeZone::system),
    }
}

fn check_site_id(section: &mut Section<'_>, site_id: &str) -> bool {
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    let valid = (1..=64).contains(&site_id.len()) && site_id.chars().all(valid_char);

    if !valid {
        section.report(
            "site_id",
            format!("expected {SITE_ID_FORM}, found {}", quote(site_id)),
        );
    }
    valid
}

fn read_time_zone(section: &mut Section<'_>, name: &str) -> Option<TimeZone> {
    match TimeZone::get(name) {
        Ok(time_zone) => Some(time_zone),
        Err(_) => {
            let names: Vec<String> = jiff::tz::db()
                .available()
                .map(|zone| zone.as_str().to_string())
                .collect();
            let candidates: Vec<&str> = names.iter().map(String::as_str).collect();
            let hint = closest(name, &candidates)
                .map(|zone| format!("; did you mean \"{zone}\"?"))
                .unwrap_or_default();
            section.report(
                "time_zone",
                format!(
                    "unknown time zone {}; expected an IANA name such as \"America/New_York\"{hint}",
                    quote(name)
                ),
            );
            None
        }
    }
}

fn read_database(root: &Table, report: &mut Report) -> DatabaseConfig {
    let mut section = Section::open(root, "database", DATABASE_KEYS, &mut report.problems);
    let defaults = DatabaseConfig::default();

    let url = section.required_string("url", DATABASE_URL_FORM);
    if let Some(url) = &url {
        report.url_has_password = check_database_url(&mut section, url);
    }

    let buffer_readings = section
        .integer("buffer_readings", 100..=1_000_000, "readings")
        .or_default(defaults.buffer_readings);
    let flush_interval = section
        .integer("flush_interval_ms", 100..=60_000, "milliseconds")
        .or_default(defaults.flush_interval.as_millis() as u64);
    let connect_timeout = section
        .integer("connect_timeout_seconds", 1..=120, "seconds")
        .or_default(defaults.connect_timeout.as_secs());

    section.finish(SECTIONS);

    DatabaseConfig {
        url: url.unwrap_or_default(),
        buffer_readings: buffer_readings.unwrap_or(defaults.buffer_readings),
        flush_interval: flush_interval.map_or(defaults.flush_interval, Duration::from_millis),
        connect_timeout: connect_timeout.map_or(defaults.connect_timeout, Duration::from_secs),
    }
}

/// Checks that `url` is a connection string without a password, and returns whether it
/// carries one. The URL itself never appears in a message, because it may hold the
/// password.
fn check_database_url(section: &mut Section<'_>, url: &str) -> bool {
    if url.trim().is_empty() {
        section.report(
            "url",
            format!("must not be empty; expected {DATABASE_URL_FORM}"),
        );
        return false;
    }

    let has_password = match url.parse::<postgres::Config>() {
        Ok(config) => config.get_password().is_some(),
        Err(error) => {
            let cause = std::error::Error::source(&error)
                .map(|source| format!(": {source}"))
                .unwrap_or_default();
            let message = format!("{error}{cause}; expected {DATABASE_URL_FORM}");
            section.report("url", message);
            looks_like_password(url)
        }
    };

    if has_password {
        section.report(
            "url",
            format!(
                "contains a password; remove it from the URL and set {} in the environment \
                 or in secrets.env_file",
                super::DB_PASSWORD_VAR
            ),
        );
    }
    has_password
}

/// Spots a password in a connection string that failed to parse: `user:password@` in a
/// URL or a `password=` pair.
fn looks_like_password(url: &str) -> bool {
    if url.to_ascii_lowercase().contains("password=") {
        return true;
    }

    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((user_info, _)) => user_info.contains(':'),
        None => false,
    }
}

fn read_polling(root: &Table, report: &mut Report) -> PollingConfig {
    let mut section = Section::open(root, "polling", POLLING_KEYS, &mut report.problems);
    let defaults = PollingConfig::default();

    let interval = section
        .integer("interval_seconds", 1..=3600, "seconds")
        .or_default(defaults.interval.as_secs());
    let request_timeout = section
        .integer("request_timeout_seconds", 2..=300, "seconds")
        .or_default(defaults.request_timeout.as_secs());
    let min_request_gap = section
        .integer("min_request_gap_ms", 0..=60_000, "milliseconds")
        .or_default(defaults.min_request_gap.as_millis() as u64);
    let program_gap = section
        .integer("program_gap_seconds", 0..=120, "seconds")
        .or_default(defaults.program_gap.as_secs());
    let offline_after_failures = section
        .integer("offline_after_failures", 1..=100, "failures")
        .or_default(defaults.offline_after_failures);
    let max_backoff = section
        .integer("max_backoff_seconds", 1..=3600, "seconds")
        .or_default(defaults.max_backoff.as_secs());

    if let (Some(interval), Some(max_backoff)) = (interval, max_backoff)
        && max_backoff < interval
    {
        section.report(
            "max_backoff_seconds",
            format!("must be at least polling.interval_seconds ({interval}), found {max_backoff}"),
        );
    }

    if let Some(timeout) = request_timeout
        && timeout < SLOW_UNIT_TIMEOUT_SECONDS
    {
        report.warnings.push(Problem::new(
            section.path("request_timeout_seconds"),
            format!(
                "{timeout} seconds is below {SLOW_UNIT_TIMEOUT_SECONDS}; some units, such as the \
                 CT80 v2.34T, take about 16 seconds to answer and would be counted as failures"
            ),
        ));
    }

    section.finish(SECTIONS);

    PollingConfig {
        interval: interval.map_or(defaults.interval, Duration::from_secs),
        request_timeout: request_timeout.map_or(defaults.request_timeout, Duration::from_secs),
        min_request_gap: min_request_gap.map_or(defaults.min_request_gap, Duration::from_millis),
        program_gap: program_gap.map_or(defaults.program_gap, Duration::from_secs),
        offline_after_failures: offline_after_failures.unwrap_or(defaults.offline_after_failures),
        max_backoff: max_backoff.map_or(defaults.max_backoff, Duration::from_secs),
    }
}

fn read_thermostats(root: &Table, report: &mut Report) -> ThermostatsConfig {
    let mut section = Section::open(root, "thermostats", THERMOSTATS_KEYS, &mut report.problems);

    let entries = match section.string_list("addresses", "\"10.0.60.21\"") {
        Field::Valid(entries) => entries,
        _ => Vec::new(),
    };

    let mut addresses: Vec<DeviceAddress> = Vec::with_capacity(entries.len());
    let mut first_index: Vec<usize> = Vec::with_capacity(entries.len());
    for (index, text) in entries {
        let key = format!("addresses[{index}]");
        let address = match text.parse::<DeviceAddress>() {
            Ok(address) => address,
            Err(error) => {
                section.report(&key, error.to_string());
                continue;
            }
        };

        match addresses.iter().position(|known| *known == address) {
            Some(position) => {
                let message = format!(
                    "duplicate of thermostats.addresses[{}] ({address}); list each thermostat once",
                    first_index[position]
                );
                section.report(&key, message);
            }
            None => {
                addresses.push(address);
                first_index.push(index);
            }
        }
    }

    let policies = read_policies(&mut section);
    section.finish(SECTIONS);
    ThermostatsConfig {
        addresses,
        policies,
    }
}

/// Reads `policy` and `policy_overrides`, the drift policy by thermostat uuid.
fn read_policies(section: &mut Section<'_>) -> Policies {
    let parse = |section: &mut Section<'_>, key: &str, text: &str| {
        let policy = Policy::parse(text);
        if policy.is_none() {
            let message = format!("expected {}, found {}", Policy::NAMES, quote(text));
            section.report(key, message);
        }
        policy
    };
    let default = match section.string("policy", Policy::NAMES) {
        Field::Valid(text) => parse(section, "policy", &text).unwrap_or_default(),
        _ => Policy::default(),
    };
    let example = "{ \"5cdad4000001\" = \"report\" }";
    let entries = match section.string_table("policy_overrides", example) {
        Field::Valid(entries) => entries,
        _ => Vec::new(),
    };
    let mut overrides = std::collections::BTreeMap::new();
    for (uuid, text) in entries {
        let key = format!("policy_overrides.{}", quote(&uuid));
        let id = match ThermostatId::parse(&uuid) {
            Ok(id) => id,
            Err(error) => {
                section.report(&key, format!("{error}; use the uuid from GET /sys"));
                continue;
            }
        };
        if let Some(policy) = parse(section, &key, &text) {
            overrides.insert(id.as_str().to_string(), policy);
        }
    }
    Policies { default, overrides }
}

fn read_retention(root: &Table, report: &mut Report) -> RetentionConfig {
    let mut section = Section::open(root, "retention", RETENTION_KEYS, &mut report.problems);
    let defaults = RetentionConfig::default();

    let raw_days = section
        .integer("raw_days", 1..=3650, "days")
        .or_default(defaults.raw_days);
    let minute_days = section
        .integer("minute_days", 1..=36_500, "days")
        .or_default(defaults.minute_days);
    let hour = section
        .integer("hour", 0..=23, "")
        .or_default(defaults.hour);

    if let (Some(raw_days), Some(minute_days)) = (raw_days, minute_days)
        && minute_days < raw_days
    {
        section.report(
            "minute_days",
            format!("must be at least retention.raw_days ({raw_days}), found {minute_days}"),
        );
    }

    section.finish(SECTIONS);

    RetentionConfig {
        raw_days: raw_days.unwrap_or(defaults.raw_days),
        minute_days: minute_days.unwrap_or(defaults.minute_days),
        hour: hour.unwrap_or(defaults.hour),
    }
}

fn read_api(root: &Table, report: &mut Report) -> ApiConfig {
    let mut section = Section::open(root, "api", API_KEYS, &mut report.problems);
    let defaults = ApiConfig::default();

    const LISTEN_FORM: &str = "an IP address and port such as \"127.0.0.1:8000\"";
    let listen = match section.string("listen", LISTEN_FORM) {
        Field::Valid(text) => read_listen(&mut section, &text, LISTEN_FORM),
        Field::Absent => Some(defaults.listen),
        Field::Invalid => None,
    };

    let allowed_hosts = match section.string_list("allowed_hosts", "\"thermostat.local\"") {
        Field::Valid(entries) => read_allowed_hosts(&mut section, entries),
        _ => Vec::new(),
    };

    section.finish(SECTIONS);

    ApiConfig {
        listen: listen.unwrap_or(defaults.listen),
        allowed_hosts,
    }
}

fn read_listen(section: &mut Section<'_>, text: &str, form: &str) -> Option<SocketAddr> {
    match text.trim().parse::<SocketAddr>() {
        Ok(address) if address.port() == 0 => {
            section.report("listen", format!("port 0 is not accepted; expected {form}"));
            None
        }
        Ok(address) => Some(address),
        Err(_) => {
            section.report("listen", format!("expected {form}, found {}", quote(text)));
            None
        }
    }
}

/// Checks each `Host` name and returns them lower-cased. Wildcards are rejected because
/// a wildcard would let any web page reach the API through DNS rebinding.
fn read_allowed_hosts(section: &mut Section<'_>, entries: Vec<(usize, String)>) -> Vec<String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || ".-_:[]".contains(c);
    let mut hosts = Vec::with_capacity(entries.len());

    for (index, host) in entries {
        let key = format!("allowed_hosts[{index}]");
        if host.contains('*') {
            section.report(
                &key,
                "wildcards are not accepted, because they would let any web page reach the API \
                 through DNS rebinding; list each host name",
            );
        } else if host.is_empty() || !host.chars().all(valid_char) {
            section.report(
                &key,
                format!(
                    "expected a host name or IP address such as \"thermostat.local\", found {}",
                    quote(&host)
                ),
            );
        } else {
            hosts.push(host.to_ascii_lowercase());
        }
    }
    hosts
}

fn read_log(root: &Table, report: &mut Report) -> LogConfig {
    let mut section = Section::open(root, "log", LOG_KEYS, &mut report.problems);
    const LEVEL_FORM: &str = "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"";

    let level = match section.string("level", LEVEL_FORM) {
        Field::Valid(text) => match text.as_str() {
            "error" => Some(log::LevelFilter::Error),
            "warn" => Some(log::LevelFilter::Warn),
            "info" => Some(log::LevelFilter::Info),
            "debug" => Some(log::LevelFilter::Debug),
            "trace" => Some(log::LevelFilter::Trace),
            _ => {
                section.report(
                    "level",
                    format!("expected {LEVEL_FORM}, found {}", quote(&text)),
                );
                None
            }
        },
        _ => None,
    };

    section.finish(SECTIONS);
    LogConfig {
        level: level.unwrap_or(LogConfig::default().level),
    }
}

const BASE_URL_FORM: &str =
    "an https URL without a path, such as \"https://thermostats.example.org\"";

/// Reads `[public_server]`; returns `None` when the section is absent, which turns the
/// sync off.
fn read_public_server(
    root: &Table,
    base: Option<&Path>,
    report: &mut Report,
) -> Option<super::PublicServerConfig> {
    if !root.contains_key("public_server") {
        return None;
    }
    let mut section = Section::open(
        root,
        "public_server",
        PUBLIC_SERVER_KEYS,
        &mut report.problems,
    );
    let defaults = super::PublicServerConfig::new("");

    let base_url = section
        .required_string("base_url", BASE_URL_FORM)
        .filter(|url| check_base_url(&mut section, url));
    let ca_cert = match section.string(
        "ca_cert",
        "a PEM file path such as \"/etc/thermostat-server/ca.pem\"",
    ) {
        Field::Valid(path) => Some(resolve_path(PathBuf::from(path), base)),
        _ => None,
    };
    let ssl_verify = section.boolean("ssl_verify").or_default(true);
    let mut seconds =
        |key: &'static str, range: std::ops::RangeInclusive<i64>, default: Duration| {
            section
                .integer::<u64>(key, range, "seconds")
                .or_default(default.as_secs())
                .map_or(default, Duration::from_secs)
        };
    let request_timeout = seconds("request_timeout_seconds", 1..=300, defaults.request_timeout);
    let state_change_wait = seconds(
        "state_change_max_wait_seconds",
        1..=60,
        defaults.state_change_wait,
    );
    let snapshot_interval = seconds(
        "snapshot_interval_seconds",
        5..=3600,
        defaults.snapshot_interval,
    );
    let minute_interval = seconds(
        "minute_interval_seconds",
        10..=3600,
        defaults.minute_interval,
    );
    let command_interval = seconds("command_poll_seconds", 1..=600, defaults.command_interval);
    let results_interval = seconds(
        "results_interval_seconds",
        1..=60,
        defaults.results_interval,
    );
    let max_backoff = seconds("max_backoff_seconds", 1..=3600, defaults.max_backoff);
    let auth_retry = seconds("auth_retry_seconds", 10..=3600, defaults.auth_retry);

    if let Some(path) = &ca_cert
        && !path.is_file()
    {
        section.report(
            "ca_cert",
            format!(
                "{} is not a readable file; give the PEM file of the site's CA",
                path.display()
            ),
        );
    }
    if ssl_verify == Some(false) {
        report.warnings.push(Problem::new(
            section.path("ssl_verify"),
            "false turns off certificate checks, so anyone on the path can read the site token",
        ));
    }
    section.finish(SECTIONS);

    Some(super::PublicServerConfig {
        base_url: base_url.unwrap_or_default(),
        ca_cert,
        ssl_verify: ssl_verify.unwrap_or(true),
        request_timeout,
        state_change_wait,
        snapshot_interval,
        minute_interval,
        command_interval,
        results_interval,
        max_backoff,
        auth_retry,
    })
}

/// Checks a base URL: https, or http to a loopback host (tests); no path, query or
/// credentials.
fn check_base_url(section: &mut Section<'_>, url: &str) -> bool {
    let trimmed = url.trim_end_matches('/');
    let rest = if let Some(rest) = trimmed.strip_prefix("https://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("http://") {
        let host = rest.rsplit_once(':').map_or(rest, |(host, _)| host);
        if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
            section.report(
                "base_url",
                format!(
                    "{} is plain http, which would send the site token unencrypted; use https",
                    quote(url)
                ),
            );
            return false;
        }
        rest
    } else {
        section.report(
            "base_url",
            format!("expected {BASE_URL_FORM}, found {}", quote(url)),
        );
        return false;
    };

    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        section.report(
            "base_url",
            format!(
                "expected {BASE_URL_FORM}, found {}; the paths are added by the daemon",
                quote(url)
            ),
        );
        return false;
    }
    true
}

/// Requires the site token when the sync is on.
fn check_site_token(
    public_server: Option<&super::PublicServerConfig>,
    secrets: &Secrets,
    report: &mut Report,
) {
    if public_server.is_none() || secrets.site_token.is_some() {
        return;
    }
    let message = format!(
        "the sync needs {} in the environment or in secrets.env_file; set it, or remove \
         [public_server] to run without the sync",
        super::SITE_TOKEN_VAR
    );
    report.problems.push(Problem::new("public_server", message));
}

fn read_secrets(
    root: &Table,
    env: &dyn Fn(&str) -> Option<String>,
    base: Option<&Path>,
    report: &mut Report,
) -> Secrets {
    let mut section = Section::open(root, "secrets", SECRETS_KEYS, &mut report.problems);

    let env_file = match section.string(
        "env_file",
        "a file path such as \"/etc/thermostat-server/secrets.env\"",
    ) {
        Field::Valid(path) if path.trim().is_empty() => {
            section.report(
                "env_file",
                "must not be empty; remove the key to read no file",
            );
            None
        }
        Field::Valid(path) => Some(resolve_path(PathBuf::from(path), base)),
        _ => None,
    };
    section.finish(SECTIONS);

    let mut findings = Findings::default();
    let secrets = secrets::collect(env_file, env, &mut findings);
    report.problems.extend(findings.problems);
    report.warnings.extend(findings.warnings);
    secrets
}

/// Requires the API token when the API listens on anything but loopback, because then
/// other hosts on the LAN can reach it.
fn check_api_token(api: &ApiConfig, secrets: &Secrets, report: &mut Report) {
    if api.listen.ip().is_loopback() || secrets.api_token.is_some() {
        return;
    }

    let message = format!(
        "{} is reachable from other hosts, so {} must be set in the environment or in \
         secrets.env_file; set it, or listen on 127.0.0.1",
        api.listen,
        super::API_TOKEN_VAR
    );
    report.problems.push(Problem::new("api.listen", message));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_spotted_in_url_user_info() {
        assert!(looks_like_password("postgresql://user:secret@[bad/db"));
    }

    #[test]
    fn password_spotted_in_key_value_pair() {
        assert!(looks_like_password("host=x password=secret port=abc"));
    }

    #[test]
    fn no_password_in_plain_url() {
        assert!(!looks_like_password("postgresql://user@127.0.0.1/db"));
    }

    #[test]
    fn syntax_problem_has_line_and_column() {
        let text = "[site]\nsite_id = \n";
        let error = text.parse::<Table>().expect_err("invalid TOML");
        let problem = syntax_problem(text, &error);
        assert!(problem.message.starts_with("line 2, column "), "{problem}");
    }
}
