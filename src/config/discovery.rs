//! The `[discovery]` section: which methods run, where WM-DISCOVER goes, which ranges
//! the TCP scan covers, and how often discovery repeats.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use toml::Table;

use super::fields::{Field, Section, quote};
use super::sections::SECTIONS;
use super::{PollingConfig, Problem};
use crate::discovery::{AddressRange, DiscoveryOptions, Method, TcpOptions, UdpOptions};

pub(super) const DISCOVERY_KEYS: &[&str] = &[
    "methods",
    "interval_seconds",
    "known_timeout_seconds",
    "sync_clock",
    "udp_group",
    "udp_bind",
    "udp_interface",
    "udp_window_seconds",
    "udp_repeat_gap_ms",
    "udp_ttl",
    "tcp_ranges",
    "tcp_port",
    "tcp_concurrency",
    "tcp_connect_timeout_ms",
    "tcp_batch_size",
];

/// The `[discovery]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// Methods of the start-up and periodic runs, in the order database, udp, tcp.
    pub methods: Vec<Method>,
    /// Time between periodic discovery runs.
    pub interval: Duration,
    pub known_timeout: Duration,
    /// Set the clock of each newly registered thermostat, unless that could clear a
    /// temporary setpoint.
    pub sync_clock: bool,
    pub udp: UdpOptions,
    pub tcp: TcpOptions,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        let options = DiscoveryOptions::default();
        Self {
            methods: Method::ALL.to_vec(),
            interval: Duration::from_secs(30 * 60),
            known_timeout: options.known_timeout,
            sync_clock: true,
            udp: options.udp,
            tcp: options.tcp,
        }
    }
}

impl DiscoveryConfig {
    /// Returns the defaults with only the database method, so that code building a
    /// config without a file (tests, the demo) never multicasts on a real network.
    pub fn database_only() -> Self {
        Self {
            methods: vec![Method::Database],
            ..Self::default()
        }
    }

    /// Builds the options of one run, identifying devices with the polling deadlines.
    pub fn options(&self, polling: &PollingConfig) -> DiscoveryOptions {
        DiscoveryOptions {
            udp: self.udp.clone(),
            tcp: self.tcp.clone(),
            known_timeout: self.known_timeout,
            link: polling.link_options(),
        }
    }
}

pub(super) fn read_discovery(root: &Table, problems: &mut Vec<Problem>) -> DiscoveryConfig {
    let mut section = Section::open(root, "discovery", DISCOVERY_KEYS, problems);
    let defaults = DiscoveryConfig::default();

    let methods = read_methods(&mut section).unwrap_or(defaults.methods.clone());
    let interval = section
        .integer("interval_seconds", 1..=86_400, "seconds")
        .or_default(defaults.interval.as_secs());
    let known_timeout = section
        .integer("known_timeout_seconds", 1..=60, "seconds")
        .or_default(defaults.known_timeout.as_secs());

    let sync_clock = section
        .boolean("sync_clock")
        .or_default(defaults.sync_clock)
        .unwrap_or(defaults.sync_clock);

    let udp = read_udp(&mut section, &defaults.udp);
    let tcp = read_tcp(&mut section, &defaults.tcp);
    section.finish(SECTIONS);

    DiscoveryConfig {
        methods,
        interval: interval.map_or(defaults.interval, Duration::from_secs),
        known_timeout: known_timeout.map_or(defaults.known_timeout, Duration::from_secs),
        sync_clock,
        udp,
        tcp,
    }
}

fn read_methods(section: &mut Section<'_>) -> Option<Vec<Method>> {
    let entries = match section.string_list("methods", "\"udp\"") {
        Field::Valid(entries) => entries,
        _ => return None,
    };

    let mut methods = Vec::new();
    for (index, text) in entries {
        match text.parse::<Method>() {
            Ok(method) if !methods.contains(&method) => methods.push(method),
            Ok(_) => section.report(
                &format!("methods[{index}]"),
                format!("duplicate method {}; list each method once", quote(&text)),
            ),
            Err(message) => section.report(&format!("methods[{index}]"), message),
        }
    }
    Some(methods)
}

fn read_udp(section: &mut Section<'_>, defaults: &UdpOptions) -> UdpOptions {
    const ADDRESS_FORM: &str = "an IPv4 address and port such as \"239.255.255.250:1900\"";
    let group = read_socket_address(section, "udp_group", ADDRESS_FORM).unwrap_or(defaults.group);
    let bind = read_socket_address(section, "udp_bind", "an address such as \"0.0.0.0:0\"")
        .unwrap_or(defaults.bind);

    let interface = match section.string("udp_interface", "an IPv4 address such as \"10.0.60.2\"") {
        Field::Valid(text) => match text.trim().parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                section.report(
                    "udp_interface",
                    format!(
                        "expected the IPv4 address of a local interface such as \"10.0.60.2\", \
                         found {}",
                        quote(&text)
                    ),
                );
                None
            }
        },
        _ => None,
    };

    let window = section
        .integer("udp_window_seconds", 1..=120, "seconds")
        .or_default(defaults.window.as_secs());
    let repeat_gap = section
        .integer("udp_repeat_gap_ms", 0..=10_000, "milliseconds")
        .or_default(defaults.repeat_gap.as_millis() as u64);
    let ttl = section
        .integer("udp_ttl", 1..=32, "")
        .or_default(defaults.ttl);

    UdpOptions {
        group,
        bind,
        interface,
        window: window.map_or(defaults.window, Duration::from_secs),
        repeat_gap: repeat_gap.map_or(defaults.repeat_gap, Duration::from_millis),
        ttl: ttl.unwrap_or(defaults.ttl),
    }
}

fn read_tcp(section: &mut Section<'_>, defaults: &TcpOptions) -> TcpOptions {
    let mut ranges = Vec::new();
    if let Field::Valid(entries) = section.string_list("tcp_ranges", "\"10.0.60.1-10.0.60.254\"") {
        for (index, text) in entries {
            match text.parse::<AddressRange>() {
                Ok(range) => ranges.push(range),
                Err(error) => section.report(&format!("tcp_ranges[{index}]"), error.to_string()),
            }
        }
    }

    let port = section
        .integer("tcp_port", 1..=65_535, "")
        .or_default(defaults.port);
    let concurrency = section
        .integer("tcp_concurrency", 1..=256, "connections")
        .or_default(defaults.concurrency);
    let connect_timeout = section
        .integer("tcp_connect_timeout_ms", 50..=30_000, "milliseconds")
        .or_default(defaults.connect_timeout.as_millis() as u64);
    let batch_size = section
        .integer("tcp_batch_size", 1..=4096, "addresses")
        .or_default(defaults.batch_size);

    TcpOptions {
        ranges,
        port: port.unwrap_or(defaults.port),
        concurrency: concurrency.unwrap_or(defaults.concurrency),
        connect_timeout: connect_timeout.map_or(defaults.connect_timeout, Duration::from_millis),
        batch_size: batch_size.unwrap_or(defaults.batch_size),
    }
}

fn read_socket_address(
    section: &mut Section<'_>,
    key: &'static str,
    form: &str,
) -> Option<SocketAddr> {
    let text = match section.string(key, form) {
        Field::Valid(text) => text,
        _ => return None,
    };
    match text.trim().parse::<SocketAddr>() {
        Ok(SocketAddr::V4(address)) => Some(SocketAddr::V4(address)),
        _ => {
            section.report(key, format!("expected {form}, found {}", quote(&text)));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (DiscoveryConfig, Vec<Problem>) {
        let root: Table = text.parse().expect("valid TOML");
        let mut problems = Vec::new();
        let config = read_discovery(&root, &mut problems);
        (config, problems)
    }

    #[test]
    fn absent_section_gives_defaults() {
        let (config, problems) = read("");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config, DiscoveryConfig::default());
    }

    #[test]
    fn default_interval_is_30_minutes() {
        assert_eq!(
            DiscoveryConfig::default().interval,
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn every_key_is_read() {
        let (config, problems) = read(
            r#"[discovery]
            methods = ["udp", "tcp"]
            interval_seconds = 60
            known_timeout_seconds = 2
            sync_clock = false
            udp_group = "127.0.0.1:19000"
            udp_bind = "127.0.0.1:0"
            udp_interface = "127.0.0.1"
            udp_window_seconds = 2
            udp_repeat_gap_ms = 500
            udp_ttl = 1
            tcp_ranges = ["127.0.7.1-127.0.7.64", "10.0.60.0/24"]
            tcp_port = 18080
            tcp_concurrency = 8
            tcp_connect_timeout_ms = 200
            tcp_batch_size = 16
            "#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.methods, [Method::Udp, Method::Tcp]);
        assert_eq!(config.interval, Duration::from_secs(60));
        assert!(!config.sync_clock);
        assert_eq!(config.udp.group, "127.0.0.1:19000".parse().expect("valid"));
        assert_eq!(config.udp.interface, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(config.udp.repeat_gap, Duration::from_millis(500));
        assert_eq!(config.tcp.ranges.len(), 2);
        assert_eq!(config.tcp.port, 18080);
        assert_eq!(config.tcp.connect_timeout, Duration::from_millis(200));
        assert_eq!(config.tcp.batch_size, 16);
    }

    #[test]
    fn bad_range_reported_with_index() {
        let (_, problems) = read("[discovery]\ntcp_ranges = [\"10.0.60.1\", \"10.0.0.0/8\"]\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "discovery.tcp_ranges[1]");
        assert!(
            problems[0].message.contains("10.0.0.0/8"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn unknown_method_reported() {
        let (_, problems) = read("[discovery]\nmethods = [\"mdns\"]\n");
        assert_eq!(problems[0].key, "discovery.methods[0]");
    }

    #[test]
    fn duplicate_method_reported() {
        let (_, problems) = read("[discovery]\nmethods = [\"udp\", \"udp\"]\n");
        assert_eq!(problems[0].key, "discovery.methods[1]");
    }

    #[test]
    fn ipv6_group_rejected() {
        let (_, problems) = read("[discovery]\nudp_group = \"[ff02::1]:1900\"\n");
        assert_eq!(problems[0].key, "discovery.udp_group");
    }

    #[test]
    fn string_sync_clock_rejected() {
        let (_, problems) = read("[discovery]\nsync_clock = \"yes\"\n");
        assert_eq!(problems[0].key, "discovery.sync_clock");
    }

    #[test]
    fn zero_window_rejected() {
        let (_, problems) = read("[discovery]\nudp_window_seconds = 0\n");
        assert_eq!(problems[0].key, "discovery.udp_window_seconds");
    }

    #[test]
    fn misspelled_key_reported() {
        let (_, problems) = read("[discovery]\nudp_windw_seconds = 3\n");
        assert_eq!(problems[0].key, "discovery.udp_windw_seconds");
    }
}
