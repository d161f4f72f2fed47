//! PostgreSQL faults injected for real under the running daemon. The server is stopped
//! for two minutes (and is down at start-up), and the daemon's connection is terminated
//! in the middle of its transactions. A full disk sits under the readings table, and a
//! backend frozen with SIGSTOP makes the systemd watchdog stop being petted.
//!
//! Each test counts what survived: every `GET /tstat` the simulator answered must end
//! up as a stored reading or poll failure (one poll may be cut off by the stop), and the
//! health endpoint must report the outage while it lasts.

mod support;

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use support::child::{ChildConfig, ChildDaemon, free_port, send_signal};
use support::daemon::{RunningDaemon, http_get, wait_for};
use support::log_capture;
use thermostat_server::config::Config;
use thermostat_server::pgtemp::TempPostgres;
use thermostat_server::simulator::{Fleet, FleetOptions, ModelProfile};
use thermostat_server::thermostat::DeviceAddress;

const THERMOSTATS: usize = 3;

/// Length of the PostgreSQL outage; `PG_OUTAGE_SECONDS` shortens it for a quick run.
fn outage_length() -> Duration {
    let seconds = std::env::var("PG_OUTAGE_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(seconds)
}

fn fleet() -> Fleet {
    Fleet::start(FleetOptions {
        count: THERMOSTATS,
        models: vec![ModelProfile::Ct50],
        ..FleetOptions::default()
    })
    .expect("fleet starts on loopback")
}

fn config(url: &str, fleet: &Fleet) -> Config {
    log_capture::install(log::LevelFilter::Info);
    let mut config = Config::new("fault_site", url);
    config.thermostats.addresses = fleet
        .devices()
        .iter()
        .map(|device| DeviceAddress::new(device.address()))
        .collect();
    config.polling.interval = Duration::from_secs(1);
    config.polling.request_timeout = Duration::from_secs(2);
    config.polling.min_request_gap = Duration::from_millis(50);
    config.database.flush_interval = Duration::from_millis(200);
    config.database.connect_timeout = Duration::from_secs(2);
    config
}

/// Returns the `GET /tstat` requests that each device has served.
fn polls_answered(fleet: &Fleet) -> Vec<u64> {
    fleet
        .devices()
        .iter()
        .map(|device| device.handle().stats().requests_to("/tstat"))
        .collect()
}

fn health(daemon: &RunningDaemon) -> (u16, Value) {
    let (status, body) = http_get(daemon.api, "/api/system/health");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Stored readings and poll failures of each device, in fleet order.
fn stored_polls(db: &mut postgres::Client, fleet: &Fleet) -> Vec<u64> {
    fleet
        .devices()
        .iter()
        .map(|device| {
            let row = db
                .query_one(
                    "SELECT (SELECT count(*) FROM raw_readings WHERE thermostat_id = $1)
                          + (SELECT count(*) FROM poll_failures WHERE thermostat_id = $1)",
                    &[&device.uuid()],
                )
                .expect("count stored polls");
            u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
        })
        .collect()
}

/// Stops the daemon cleanly and checks that every served poll was stored. The
/// difference per device is 0, or 1 for a poll cut off by the stop. Returns the total
/// of stored polls.
fn stop_and_count(daemon: RunningDaemon, url: &str, fleet: &Fleet, fault: &str) -> u64 {
    let (_, before_stop) = health(&daemon);
    assert_eq!(
        before_stop["database"]["dropped_readings"], 0,
        "{fault}: readings dropped: {before_stop}"
    );
    daemon.stop();
    let answered = polls_answered(fleet);
    let stored = stored_polls(&mut support::connect(url), fleet);
    for (index, (answered, stored)) in answered.iter().zip(&stored).enumerate() {
        // More stored than served would be a duplicate, and two or more fewer a loss.
        let unstored = i128::from(*answered) - i128::from(*stored);
        assert!(
            (0..=1).contains(&unstored),
            "{fault}: device {index} answered {answered} polls, {stored} stored"
        );
    }
    println!("{fault}: polls answered {answered:?}, stored {stored:?}");
    stored.iter().sum()
}

fn wait_for_readings(url: &str, count: i64) {
    let mut db = support::connect(url);
    wait_for(Duration::from_secs(30), "readings in PostgreSQL", || {
        db.query_one("SELECT count(*) FROM raw_readings", &[])
            .map(|row| row.get::<_, i64>(0) >= count)
            .unwrap_or(false)
    });
}

fn readings_between(url: &str, from: SystemTime, to: SystemTime) -> i64 {
    support::connect(url)
        .query_one(
            "SELECT count(*) FROM raw_readings WHERE ts >= $1 AND ts < $2",
            &[&from, &to],
        )
        .expect("count readings in the outage")
        .get(0)
}

#[test]
fn server_outage_loses_no_reading() {
    let cluster = support::start_test_cluster();
    let url = cluster
        .create_database("outage")
        .expect("create the test database");
    let fleet = fleet();

    // Down at start-up: the daemon runs and reports the outage on the health check. It
    // waits for the database before it polls, because it needs the stored thermostat
    // list and their rows.
    cluster.stop_server().expect("stop PostgreSQL");
    let daemon = RunningDaemon::start(config(&url, &fleet));
    wait_for(Duration::from_secs(20), "503 with PostgreSQL down", || {
        let (status, body) = health(&daemon);
        status == 503 && body["database"]["connected"] == false
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        polls_answered(&fleet),
        vec![0; THERMOSTATS],
        "polled before the thermostat list loaded"
    );
    cluster.start_server().expect("start PostgreSQL");
    wait_for(Duration::from_secs(60), "200 once PostgreSQL is up", || {
        health(&daemon).0 == 200
    });
    wait_for_readings(&url, 3 * THERMOSTATS as i64);

    // Down for two minutes while running.
    let outage = outage_length();
    let polls_before = polls_answered(&fleet);
    let stopped_at = SystemTime::now();
    cluster.stop_server().expect("stop PostgreSQL");
    let down = Instant::now();
    let mut health_checks = 0;
    let mut unhealthy = 0;
    let mut max_buffered = 0;
    // The store notices at its next flush (every 200 ms); allow a few seconds.
    std::thread::sleep(Duration::from_secs(5));
    while down.elapsed() < outage {
        let (status, body) = health(&daemon);
        health_checks += 1;
        assert_eq!(status, 503, "health while PostgreSQL is down: {body}");
        assert_eq!(body["database"]["ok"], false, "{body}");
        unhealthy += 1;
        max_buffered =
            max_buffered.max(body["database"]["buffered_readings"].as_u64().unwrap_or(0));
        std::thread::sleep(Duration::from_secs(5));
    }
    let polls_during = polls_answered(&fleet);
    cluster.start_server().expect("start PostgreSQL again");
    let started_at = SystemTime::now();
    for (before, during) in polls_before.iter().zip(&polls_during) {
        let expected = outage.as_secs() / 2;
        assert!(
            during - before >= expected,
            "polling slowed in the outage: {polls_before:?} -> {polls_during:?}"
        );
    }

    let recovered = wait_for(Duration::from_secs(60), "200 after the outage", || {
        health(&daemon).0 == 200
    });
    wait_for(Duration::from_secs(30), "the buffer to drain", || {
        health(&daemon).1["database"]["buffered_readings"] == 0
    });
    let in_outage = readings_between(&url, stopped_at, started_at);
    let stored = stop_and_count(daemon, &url, &fleet, "outage");
    let expected = (outage.as_secs() as i64) * THERMOSTATS as i64 / 2;
    assert!(
        in_outage >= expected,
        "only {in_outage} readings cover the {} s outage",
        outage.as_secs()
    );
    println!(
        "outage: {} s down, {unhealthy}/{health_checks} health checks answered 503, up to \
         {max_buffered} readings buffered, {in_outage} readings from the outage stored, \
         {stored} polls stored in all, 0 lost; healthy {:.1} s after the restart",
        outage.as_secs(),
        recovered.as_secs_f64()
    );
    cluster.stop().expect("remove the cluster");
}

/// Backends of the daemon, with their state, on the database behind `db`.
fn daemon_backends(db: &mut postgres::Client) -> Vec<(i32, String)> {
    db.query(
        "SELECT pid, coalesce(state, '') FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'thermostat-server'",
        &[],
    )
    .expect("read pg_stat_activity")
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

#[test]
fn connection_terminated_mid_transaction() {
    // Each termination waits for the daemon to reconnect first, which takes seconds on
    // a loaded machine, so the count stays modest and the time limit generous.
    const TERMINATIONS: usize = 15;
    let seed = fastrand::u64(..);
    println!("terminate test: seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let url = support::fresh_database_url("pg_terminate");
    let fleet = fleet();
    let daemon = RunningDaemon::start(config(&url, &fleet));
    wait_for_readings(&url, THERMOSTATS as i64);

    let mut db = support::connect(&url);
    let mut terminated = 0;
    let mut in_transaction = 0;
    let started = Instant::now();
    while terminated < TERMINATIONS && started.elapsed() < Duration::from_secs(240) {
        std::thread::sleep(Duration::from_millis(rng.u64(200..800)));
        // Catch the backend inside a transaction when possible: poll its state for a
        // moment, then terminate it whatever it is doing.
        let watch = Instant::now();
        let target = loop {
            let backends = daemon_backends(&mut db);
            let busy = backends
                .iter()
                .find(|(_, state)| state == "active" || state.starts_with("idle in transaction"));
            if let Some(found) = busy {
                break Some(found.clone());
            }
            if watch.elapsed() > Duration::from_millis(500) {
                break backends.first().cloned();
            }
        };
        let Some((pid, state)) = target else { continue };
        let done: bool = db
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .expect("pg_terminate_backend")
            .get(0);
        if done {
            terminated += 1;
            if state != "idle" {
                in_transaction += 1;
            }
        }
    }
    assert_eq!(
        terminated,
        TERMINATIONS,
        "the daemon did not reconnect often enough: {terminated} terminations in {:?}",
        started.elapsed()
    );

    wait_for(
        Duration::from_secs(60),
        "200 after the terminations",
        || {
            let (status, body) = health(&daemon);
            status == 200 && body["database"]["buffered_readings"] == 0
        },
    );
    let stored = stop_and_count(daemon, &url, &fleet, "terminate");
    println!(
        "terminate: {terminated} backends terminated ({in_transaction} inside a statement or \
         transaction), {stored} polls stored, 0 lost"
    );
}

/// A small tmpfs mounted for the test and lazily unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it) owned by the user the
    /// throwaway server runs as. Fails without root or the right to mount.
    fn mount(size: &str) -> Result<Self, String> {
        let path =
            std::env::temp_dir().join(format!("thermostat-small-disk-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|error| format!("mkdir: {error}"))?;
        let output = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            let _ = std::fs::remove_dir(&path);
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let disk = Self { path };
        // The server runs as `postgres` when the test runs as root, else as this user.
        if run_as_root() {
            let status = std::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(&disk.path)
                .status()
                .map_err(|error| format!("cannot run chown: {error}"))?;
            if !status.success() {
                return Err(format!("chown postgres {} failed", disk.path.display()));
            }
        }
        Ok(disk)
    }

    /// Fills the disk with a root-owned file until a write fails with ENOSPC.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).expect("create the filler file");
        let block = vec![0u8; 4096];
        let mut written = 0;
        while file.write_all(&block).is_ok() {
            written += block.len() as u64;
        }
        let _ = file.sync_all();
        written
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler file");
    }

    fn filler(&self) -> std::path::PathBuf {
        self.path.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn run_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn disk_full_under_readings_table() {
    // Dropped in reverse order: the cluster stops before the disk is unmounted.
    let disk = match SmallDisk::mount("2m") {
        Ok(disk) => disk,
        Err(reason) => {
            println!(
                "SKIPPED disk_full_under_readings_table: {reason}; run as root to mount a tmpfs"
            );
            return;
        }
    };
    let cluster: TempPostgres = support::start_test_cluster();
    let url = cluster
        .create_database("disk_full")
        .expect("create the test database");
    let fleet = fleet();
    let daemon = RunningDaemon::start(config(&url, &fleet));
    wait_for_readings(&url, THERMOSTATS as i64);

    let mut db = support::connect(&url);
    db.batch_execute(&format!(
        "CREATE TABLESPACE small LOCATION '{}'",
        disk.path.display()
    ))
    .expect("create a tablespace on the small disk");
    db.batch_execute(
        "ALTER TABLE raw_readings SET TABLESPACE small;
         ALTER INDEX raw_readings_pkey SET TABLESPACE small;",
    )
    .expect("move raw_readings to the small disk");
    let lines_before = log_capture::lines_containing("/disk_full").len();
    let filled = disk.fill();
    let full_at = Instant::now();

    // The last page of the table still has room. Once it is used up, every insert fails
    // with "could not extend file", so the readings wait in the buffer.
    let mut max_buffered = 0;
    wait_for(
        Duration::from_secs(120),
        "writes to fail on the full disk",
        || {
            let (_, body) = health(&daemon);
            max_buffered = body["database"]["buffered_readings"].as_u64().unwrap_or(0);
            max_buffered >= 30
        },
    );
    let failing_after = full_at.elapsed();
    // The connection works, so health turns 503 once no write has passed for 30 s.
    let mut problem = String::new();
    wait_for(
        Duration::from_secs(60),
        "503 while the disk is full",
        || {
            let (status, body) = health(&daemon);
            max_buffered =
                max_buffered.max(body["database"]["buffered_readings"].as_u64().unwrap_or(0));
            problem = body["database"]["problem"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            status == 503
        },
    );
    assert!(problem.contains("no write for over"), "{problem}");
    let polls_while_full = polls_answered(&fleet);
    disk.free();

    wait_for(Duration::from_secs(60), "the buffer to drain", || {
        let (status, body) = health(&daemon);
        status == 200 && body["database"]["buffered_readings"] == 0
    });
    let stored = stop_and_count(daemon, &url, &fleet, "disk full");
    let lines = log_capture::lines_containing("/disk_full");
    let lines = &lines[lines_before.min(lines.len())..];
    println!("disk full: {} log lines about the database:", lines.len());
    for line in lines.iter().take(12) {
        println!("  {line}");
    }
    // One warning when the writes fail and one line when they pass again, not a
    // reconnect every few hundred milliseconds.
    assert!(
        lines.len() <= 3,
        "the full disk flooded the log: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("No space left on device")),
        "the warning does not name the cause: {lines:#?}"
    );
    println!(
        "disk full: filled {filled} bytes; inserts failed from {:.0} s later; health 503 \
         while full ({problem}); up to {max_buffered} readings buffered; polls went on ({polls_while_full:?}); \
         {stored} polls stored after the space came back, 0 lost",
        failing_after.as_secs_f64()
    );
    drop(db);
    cluster.stop().expect("remove the cluster");
    drop(disk);
}

/// Collects the datagrams sent to a NOTIFY_SOCKET, with the time each arrived.
fn notify_listener(path: &std::path::Path) -> mpsc::Receiver<(Instant, String)> {
    let _ = std::fs::remove_file(path);
    let socket = UnixDatagram::bind(path).expect("bind the notify socket");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok(length) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..length]).to_string();
            if sender.send((Instant::now(), message)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Returns the messages that arrive within `window`.
fn messages_within(receiver: &mpsc::Receiver<(Instant, String)>, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut messages = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match receiver.recv_timeout(left) {
            Ok((_, message)) => messages.push(message),
            Err(_) => break,
        }
    }
    messages
}

fn pets(messages: &[String]) -> usize {
    messages
        .iter()
        .filter(|message| *message == "WATCHDOG=1")
        .count()
}

#[test]
fn watchdog_stops_while_store_frozen() {
    let cluster = support::start_test_cluster();
    let url = cluster
        .create_database("watchdog")
        .expect("create the test database");
    let fleet = fleet();
    let folder = std::env::temp_dir().join(format!("thermostat-watchdog-{}", std::process::id()));
    let config = ChildConfig {
        site_id: "watchdog_site".to_string(),
        database_url: url.clone(),
        thermostats: fleet.devices().iter().map(|d| d.address()).collect(),
        api_port: free_port(),
        public_server: None,
    }
    .write(&folder);
    let socket_path = folder.join("notify.sock");
    let notifications = notify_listener(&socket_path);
    let socket_text = socket_path.display().to_string();
    let daemon = ChildDaemon::start(
        &config,
        &folder.join("daemon.log"),
        &[
            ("NOTIFY_SOCKET", &socket_text),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );

    // Ready, then a pet every second.
    let mut ready = false;
    wait_for(Duration::from_secs(60), "READY=1", || {
        ready |= messages_within(&notifications, Duration::from_millis(200))
            .iter()
            .any(|message| message.starts_with("READY=1"));
        ready
    });
    let before = messages_within(&notifications, Duration::from_secs(5));
    assert!(pets(&before) >= 3, "pets before the stall: {before:?}");

    // Freeze the daemon's backend: its next statement never returns.
    let mut db = support::connect(&url);
    let backends = daemon_backends(&mut db);
    assert_eq!(backends.len(), 1, "one store connection: {backends:?}");
    let backend = u32::try_from(backends[0].0).expect("pid");
    send_signal("STOP", backend);
    let frozen = Instant::now();

    // A store thread may block for up to 60 s (twice the statement timeout) before it
    // counts as stuck, so pets go on for a while, then stop.
    let early = messages_within(&notifications, Duration::from_secs(30));
    let mut silent_from = None;
    let mut last_pet = Instant::now();
    while frozen.elapsed() < Duration::from_secs(120) {
        match notifications.recv_timeout(Duration::from_secs(1)) {
            Ok((at, message)) if message == "WATCHDOG=1" => last_pet = at,
            Ok(_) => {}
            Err(_) if last_pet.elapsed() >= Duration::from_secs(8) => {
                silent_from = Some(last_pet.duration_since(frozen));
                break;
            }
            Err(_) => {}
        }
    }
    send_signal("CONT", backend);
    let silent_from = silent_from.unwrap_or_else(|| {
        panic!(
            "the watchdog was still petted 120 s into the stall; log:\n{}",
            daemon.log_tail(20)
        )
    });
    let resumed = Instant::now();
    let mut resumed_after = None;
    while resumed.elapsed() < Duration::from_secs(30) {
        if let Ok((at, message)) = notifications.recv_timeout(Duration::from_secs(1))
            && message == "WATCHDOG=1"
        {
            resumed_after = Some(at.duration_since(resumed));
            break;
        }
    }
    let resumed_after = resumed_after.expect("pets resume after SIGCONT");
    let log = daemon.log();
    assert!(
        log.contains("not petting the systemd watchdog: the store thread has not run"),
        "{}",
        daemon.log_tail(20)
    );
    assert!(log.contains("petting the systemd watchdog again"));
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "stopped with {status}");
    println!(
        "watchdog: {} pets in the 5 s before the stall, {} in its first 30 s, last pet {:.0} s \
         into the stall, pets again {:.1} s after SIGCONT",
        pets(&before),
        pets(&early),
        silent_from.as_secs_f64(),
        resumed_after.as_secs_f64()
    );
    assert!(pets(&early) >= 10, "pets stopped too early: {early:?}");
    let _ = std::fs::remove_dir_all(&folder);
    cluster.stop().expect("remove the cluster");
}
