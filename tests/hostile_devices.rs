//! The real daemon and PostgreSQL against simulated thermostats that misbehave on every
//! `/tstat` read (no reply, one byte a second, a 10 MB body, a body that is not UTF-8,
//! an HTTP/0.9 reply, a reset) and a WM-NOTIFY flood on the daemon's discovery port,
//! next to healthy units. The daemon's memory stays bounded, the healthy units keep
//! their poll rate, and each fault is logged once with the thermostat's uuid.

mod support;

use support::daemon::{RunningDaemon, connect, wait_for};
use support::log_capture;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thermostat_server::config::Config;
use thermostat_server::discovery::Method;
use thermostat_server::simulator::{Fault, Fleet, FleetOptions, Hostile};
use thermostat_server::thermostat::DeviceAddress;

// ---------------------------------------------------------------------------------------
// Helpers

const HEALTHY: usize = 4;
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The hostile units, each with the words its poll failure must be logged with.
fn hostile_faults() -> Vec<(Fault, &'static str)> {
    vec![
        (
            Fault::Flaky {
                hang_probability: 1.0,
                negative_one_probability: 0.0,
            },
            "no answer within",
        ),
        (
            Fault::Hostile(Hostile::Drip(Duration::from_secs(1))),
            "no answer within",
        ),
        (
            Fault::Hostile(Hostile::HugeBody(10_000_000)),
            "answer body larger than",
        ),
        (Fault::Hostile(Hostile::InvalidUtf8), "invalid body"),
        (Fault::Hostile(Hostile::Http09), "invalid HTTP answer"),
        (Fault::Hostile(Hostile::Reset), "reset"),
    ]
}

/// Returns the resident memory of this process (daemon, fleet and test), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Returns a loopback port with nothing listening on it, for the addresses the flood
/// announces.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("port").port()
}

fn free_udp_address() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    socket.local_addr().expect("UDP address")
}

/// Sends WM-NOTIFY datagrams, each announcing 30 new addresses, to `target` until
/// `stop` is set or `limit` datagrams are sent. Returns how many were sent.
fn flood(target: SocketAddr, stop: &AtomicBool, limit: u64, sent: &AtomicU64) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the flood socket");
    let port = closed_port();
    let mut next = 0_u32;
    while !stop.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < limit {
        let mut message = String::from("TYPE: WM-NOTIFY\r\nVERSION: 1.0\r\n");
        for _ in 0..30 {
            next = next.wrapping_add(1);
            let [_, b, c, d] = (0x7f00_0000 | (next % 0x00ff_fff0 + 2)).to_be_bytes();
            message.push_str(&format!(
                "SERVICE: com.marvell.wm.system:1.0\r\nLOCATION: http://127.{b}.{c}.{d}:{port}/sys/\r\n"
            ));
        }
        message.push_str("\r\n");
        // A full socket buffer on the daemon's side drops datagrams, as a flood does.
        let _ = socket.send_to(message.as_bytes(), target);
        if sent.fetch_add(1, Ordering::Relaxed).is_multiple_of(200) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn test_config(url: &str, fleet: &Fleet, notify: SocketAddr) -> Config {
    let mut config = Config::new("test_site", url);
    config.thermostats.addresses = fleet
        .devices()
        .iter()
        .map(|device| DeviceAddress::new(device.address()))
        .collect();
    config.polling.interval = POLL_INTERVAL;
    config.polling.request_timeout = Duration::from_secs(2);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.polling.offline_after_failures = 3;
    config.polling.max_backoff = Duration::from_secs(4);
    config.database.flush_interval = Duration::from_millis(200);
    config.discovery.methods = vec![Method::Database, Method::Udp];
    config.discovery.interval = Duration::from_secs(3);
    config.discovery.udp.group = fleet.discovery_address().expect("responder runs");
    config.discovery.udp.bind = notify;
    config.discovery.udp.window = Duration::from_secs(1);
    config.discovery.udp.repeat_gap = Duration::from_millis(500);
    config
}

fn tstat_reads(fleet: &Fleet, index: usize) -> u64 {
    fleet.devices()[index]
        .handle()
        .stats()
        .requests_to("/tstat")
}

// ---------------------------------------------------------------------------------------
// The test

#[test]
fn hostile_units_spare_healthy_polling() {
    log_capture::install(log::LevelFilter::Debug);
    let url = support::fresh_database_url("hostile_devices");
    let hostile = hostile_faults();
    let faults = hostile
        .iter()
        .enumerate()
        .map(|(index, (fault, _))| (HEALTHY + index, fault.clone()))
        .collect();
    let fleet = Fleet::start(FleetOptions {
        count: HEALTHY + hostile.len(),
        faults,
        discovery: Some("127.0.0.1:0".parse().expect("address")),
        ..FleetOptions::default()
    })
    .expect("fleet starts");
    let uuids: Vec<String> = fleet
        .devices()
        .iter()
        .map(|device| device.uuid().to_string())
        .collect();

    let notify = free_udp_address();
    let daemon = RunningDaemon::start(test_config(&url, &fleet, notify));
    let mut db = connect(&url);
    wait_for(
        Duration::from_secs(30),
        "every thermostat registered and the healthy ones polled",
        || {
            let registered: i64 = db
                .query_one("SELECT count(*) FROM thermostats", &[])
                .map(|row| row.get(0))
                .unwrap_or(0);
            registered == uuids.len() as i64
                && (0..HEALTHY).all(|index| tstat_reads(&fleet, index) >= 2)
        },
    );

    // The flood runs for the rest of the test, through several discovery windows.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || flood(notify, &stop, 200_000, &sent))
    };

    // Let the hostile units fail a few times, then measure.
    std::thread::sleep(Duration::from_secs(3));
    let rss_before = rss_kib();
    let reads_before: Vec<u64> = (0..HEALTHY).map(|i| tstat_reads(&fleet, i)).collect();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    let reads_after: Vec<u64> = (0..HEALTHY).map(|i| tstat_reads(&fleet, i)).collect();
    let elapsed = window.elapsed();
    let rss_after = rss_kib();

    stop.store(true, Ordering::Relaxed);
    flooder.join().expect("flood thread");
    daemon.stop();
    let datagrams = sent.load(Ordering::Relaxed);

    // Healthy units keep their poll rate: at least half the nominal count, a margin for
    // a loaded machine. Starved polling or exhausted sockets fall far below it.
    let nominal = elapsed.as_secs_f64() / POLL_INTERVAL.as_secs_f64();
    for (index, (before, after)) in reads_before.iter().zip(&reads_after).enumerate() {
        let polls = after - before;
        assert!(
            polls as f64 >= nominal / 2.0,
            "healthy thermostat {} was polled {polls} times in {elapsed:?}, nominal {nominal:.0}",
            uuids[index]
        );
    }

    // Memory: a 10 MB body read whole, or addresses kept from the flood, would show here.
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 32 * 1024,
        "RSS grew by {growth} KiB (from {rss_before} to {rss_after}) under hostile input"
    );

    let lines = log_capture::lines_containing("");
    let poll_failures = |uuid: &str| -> Vec<&String> {
        lines
            .iter()
            .filter(|line| !line.starts_with("DEBUG") && !line.starts_with("TRACE"))
            .filter(|line| line.contains(uuid) && line.contains("poll failed"))
            .collect()
    };
    for (offset, (fault, words)) in hostile.iter().enumerate() {
        let uuid = &uuids[HEALTHY + offset];
        let logged = poll_failures(uuid);
        assert_eq!(
            logged.len(),
            1,
            "{fault:?} on {uuid} should be logged once at info or above, got {logged:#?}"
        );
        eprintln!("{fault:?}: {}", logged[0]);
        assert!(
            logged[0].contains(words),
            "{fault:?} on {uuid} logged without {words:?}: {}",
            logged[0]
        );
        let failures: i64 = connect(&url)
            .query_one(
                "SELECT count(*) FROM poll_failures WHERE thermostat_id = $1",
                &[uuid],
            )
            .expect("count failures")
            .get(0);
        assert!(failures >= 2, "{uuid}: {failures} poll failures stored");
    }
    for uuid in &uuids[..HEALTHY] {
        assert!(poll_failures(uuid).is_empty(), "healthy {uuid} failed");
    }

    // The flood: announced addresses past the cap are refused with one warning per
    // discovery window, and the failed identifications are summed up, not listed.
    let flood_warnings = lines
        .iter()
        .filter(|line| line.contains("WM-NOTIFY flood"))
        .count();
    let windows = lines
        .iter()
        .filter(|line| line.contains("WM-DISCOVER sent"))
        .count();
    assert!(
        datagrams > 1000,
        "the flood sent only {datagrams} datagrams"
    );
    assert!(
        flood_warnings >= 1 && flood_warnings <= windows,
        "{flood_warnings} flood warnings for {windows} discovery windows"
    );
    let identify_lines = lines
        .iter()
        .filter(|line| line.starts_with("INFO") && line.contains("did not identify"))
        .count();
    assert!(
        identify_lines <= 10 * windows,
        "{identify_lines} identification failures logged at info for {windows} windows"
    );
    eprintln!(
        "hostile devices: {} faults, {datagrams} WM-NOTIFY datagrams, {windows} windows, \
         RSS {rss_before} -> {rss_after} KiB, healthy polls {:?} in {elapsed:?}",
        hostile.len(),
        reads_after
            .iter()
            .zip(&reads_before)
            .map(|(after, before)| after - before)
            .collect::<Vec<_>>()
    );
    fleet.stop();
}
