//! The `demo` command as a user runs it: the binary against a test database, checked
//! against what the demo must leave behind, and stopped by SIGTERM.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

fn start_demo(url: &str, api: SocketAddr, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_thermostat-server"))
        .args([
            "demo",
            "--database-url",
            url,
            "--api-listen",
            &api.to_string(),
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start thermostat-server demo")
}

fn health_status(api: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&api, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /api/system/health HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait for demo") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn demo_stores_fleet_and_stops_after_duration() {
    let url = support::fresh_database_url("demo_duration");
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut demo = start_demo(&url, api, &["--thermostats", "20", "--duration", "130"]);

    // While it runs, the health check passes once the first polls are in.
    let mut healthy_seen = false;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) && !healthy_seen {
        healthy_seen = health_status(api) == Some(200);
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        healthy_seen,
        "GET /api/system/health never answered 200 in the first 60 s"
    );

    let status = wait_exit(&mut demo, Duration::from_secs(150))
        .expect("demo stops by itself after --duration");
    assert!(status.success(), "demo exited with {status}");

    let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let thermostats: i64 = db
        .query_one("SELECT count(*) FROM thermostats", &[])
        .expect("count")
        .get(0);
    assert_eq!(thermostats, 20);

    // The faulty thermostat is the last one the demo starts: the one with failures.
    let faulty: String = db
        .query_one(
            "SELECT thermostat_id FROM poll_failures GROUP BY thermostat_id ORDER BY count(*) DESC LIMIT 1",
            &[],
        )
        .expect("the faulty thermostat has failures")
        .get(0);

    let sparse: Vec<(String, i64)> = db
        .query(
            "SELECT t.thermostat_id, count(r.ts) FROM thermostats t \
             LEFT JOIN raw_readings r USING (thermostat_id) \
             WHERE t.thermostat_id <> $1 GROUP BY t.thermostat_id HAVING count(r.ts) < 20",
            &[&faulty],
        )
        .expect("readings per thermostat")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert!(
        sparse.is_empty(),
        "healthy thermostats with fewer than 20 readings: {sparse:?}"
    );

    let without_full_minute: Vec<String> = db
        .query(
            "SELECT t.thermostat_id FROM thermostats t WHERE t.thermostat_id <> $1 AND NOT EXISTS \
             (SELECT 1 FROM minute_readings m WHERE m.thermostat_id = t.thermostat_id AND m.poll_count >= 10)",
            &[&faulty],
        )
        .expect("minute rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        without_full_minute.is_empty(),
        "no minute row with 10 polls for {without_full_minute:?}"
    );

    let faulty_failures: i64 = db
        .query_one(
            "SELECT coalesce(sum(poll_failures), 0)::bigint FROM minute_readings WHERE thermostat_id = $1",
            &[&faulty],
        )
        .expect("faulty minute rows")
        .get(0);
    assert!(
        faulty_failures > 0,
        "the faulty thermostat's minute rows count no failures"
    );

    let faulty_minutes: i64 = db
        .query_one(
            "SELECT count(*) FROM minute_readings WHERE thermostat_id = $1",
            &[&faulty],
        )
        .expect("faulty minute rows")
        .get(0);
    assert!(faulty_minutes >= 1);
}

#[test]
fn demo_exits_zero_on_sigterm_within_five_seconds() {
    let url = support::fresh_database_url("demo_sigterm");
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut demo = start_demo(&url, api, &["--thermostats", "3"]);

    let started = Instant::now();
    while health_status(api).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the demo's API never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));

    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = wait_exit(&mut demo, Duration::from_secs(5));
    let took = sent.elapsed();
    let Some(status) = status else {
        let _ = demo.kill();
        panic!("the demo was still running 5 s after SIGTERM");
    };
    assert!(status.success(), "demo exited with {status} after SIGTERM");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
}
