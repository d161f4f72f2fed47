//! Crash safety: the real daemon binary killed with SIGKILL at random moments, 50 times,
//! while it polls simulated thermostats, rolls up minutes, uploads to the fake public
//! server and runs commands queued there. Every restart uses the same PostgreSQL,
//! simulator and fake public server. After each kill, the test checks that no minute row
//! is missing or counts other readings than the stored ones. At the end it also checks
//! that no command wrote to a thermostat twice or finished with two outcomes, and that
//! the outbox delivered every state change, minute row and result.
//!
//! The kill moments come from a seeded RNG, and the test prints the seed. `CRASH_SEED=N`
//! repeats the same draws, but the moments also depend on the wall clock (kills aimed
//! at rollups) and the machine's speed, so a replay is close, not exact.
//! `CRASH_KILLS=N` changes the number of kills (default 50).

mod support;

#[path = "support/fake_cloud.rs"]
mod fake_cloud;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use fake_cloud::FakeCloud;
use support::child::{ChildConfig, ChildDaemon, SITE_TOKEN, free_port};
use support::daemon::wait_for;
use thermostat_server::simulator::{Fleet, FleetOptions, Latency, ModelProfile};

const SITE: &str = "crash_site";
const THERMOSTATS: usize = 3;
const DEFAULT_KILLS: usize = 50;

/// Range of a daemon's life before SIGKILL, in milliseconds.
const LIFE_MS: std::ops::RangeInclusive<u64> = 300..=2_400;

/// Maximum delay of a kill aimed at a rollup. The store rolls up a minute at its first
/// flush after the minute's end plus the 5 s grace, so kills are aimed at that moment.
const ROLLUP_AIM_MS: u64 = 600;

/// Returns how long the life starting now lasts: a random draw, or up to just after
/// the next rollup moment when that comes first, so that kills also land on rollups.
fn life_length(rng: &mut fastrand::Rng) -> (Duration, bool) {
    let drawn = Duration::from_millis(rng.u64(LIFE_MS));
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    let into_minute = Duration::from_millis((since_epoch.as_millis() % 60_000) as u64);
    let rollup_at = Duration::from_secs(5);
    let until_rollup = if into_minute < rollup_at {
        rollup_at - into_minute
    } else {
        Duration::from_secs(65) - into_minute
    };
    let aimed = until_rollup + Duration::from_millis(rng.u64(0..ROLLUP_AIM_MS));
    if aimed < drawn {
        (aimed, true)
    } else {
        (drawn, false)
    }
}

/// What one life of the daemon did before it was killed, read from its debug log.
#[derive(Debug, Default, Clone, Copy)]
struct Life {
    flushes: usize,
    rollups: usize,
    uploads: usize,
    commands_started: usize,
    commands_finished: usize,
}

impl Life {
    fn from_log(log: &str) -> Self {
        let mut life = Self::default();
        for line in log.lines() {
            if line.contains("flushed ") {
                life.flushes += 1;
            } else if line.contains("rolled up ") {
                life.rollups += 1;
            } else if line.contains("/api/v1/sites/")
                && line.contains(" returned status 200")
                && !line.contains("/commands/pending")
            {
                life.uploads += 1;
            } else if line.contains(": running set_state") {
                life.commands_started += 1;
            } else if line.contains("crash-cmd-") && line.contains(": completed") {
                life.commands_finished += 1;
            }
        }
        life
    }

    /// Returns whether the kill came while a command ran (logged as running, not completed).
    fn killed_mid_command(&self) -> bool {
        self.commands_started > self.commands_finished
    }
}

fn temp_folder() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("thermostat-crash-{}", std::process::id()))
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

fn kills() -> usize {
    std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_KILLS)
}

/// Builds set_state command number `n`, which heats to a setpoint no other command uses.
fn command(n: usize, uuid: &str) -> (String, f64, Value) {
    let id = format!("crash-cmd-{n}");
    let setpoint = 55.0 + n as f64 * 0.5;
    let body = json!({"command_id": id, "command": "set_state", "thermostat_id": uuid,
        "params": {"tmode": 1, "t_heat": setpoint, "hold": 1},
        "issued_at": "2026-01-01T00:00:00Z"});
    (id, setpoint, body)
}

/// Counts the POST /tstat bodies that set `t_heat` to `setpoint`.
fn writes_of(fleet: &Fleet, setpoint: f64) -> usize {
    fleet
        .devices()
        .iter()
        .flat_map(|device| device.handle().stats().post_bodies)
        .filter(|post| post.path == "/tstat")
        .filter_map(|post| serde_json::from_str::<Value>(&post.body).ok())
        .filter(|body| body["t_heat"].as_f64() == Some(setpoint))
        .count()
}

/// Minute rows that break the rollup's promise, up to the rollup checkpoint.
#[derive(Debug, Default, PartialEq, Eq)]
struct MinuteAudit {
    /// Rolled-up minutes with stored readings or failures.
    checked: i64,
    /// Minutes with stored readings or failures but no row.
    missing: i64,
    /// Rows whose poll_count or poll_failures differ from the stored rows.
    miscounted: i64,
    /// Rows without any stored reading or failure behind them.
    orphaned: i64,
}

fn audit_minutes(db: &mut postgres::Client) -> MinuteAudit {
    let row = db
        .query_one(
            "WITH checkpoint AS (
                 SELECT ts FROM maintenance_state WHERE name = 'rollup'),
             stored AS (
                 SELECT thermostat_id, date_trunc('minute', ts) AS minute,
                        count(*) AS readings, 0::bigint AS failures
                 FROM raw_readings GROUP BY 1, 2
                 UNION ALL
                 SELECT thermostat_id, date_trunc('minute', ts), 0, count(*)
                 FROM poll_failures GROUP BY 1, 2),
             per_minute AS (
                 SELECT thermostat_id, minute, sum(readings) AS readings,
                        sum(failures) AS failures
                 FROM stored, checkpoint WHERE minute <= checkpoint.ts GROUP BY 1, 2),
             rows AS (
                 SELECT m.* FROM minute_readings m, checkpoint
                 WHERE m.minute_ts <= checkpoint.ts)
             SELECT
                 (SELECT count(*) FROM per_minute),
                 (SELECT count(*) FROM per_minute p LEFT JOIN rows r
                     ON r.thermostat_id = p.thermostat_id AND r.minute_ts = p.minute
                  WHERE r.thermostat_id IS NULL),
                 (SELECT count(*) FROM per_minute p JOIN rows r
                     ON r.thermostat_id = p.thermostat_id AND r.minute_ts = p.minute
                  WHERE r.poll_count <> p.readings OR r.poll_failures <> p.failures),
                 (SELECT count(*) FROM rows r LEFT JOIN per_minute p
                     ON r.thermostat_id = p.thermostat_id AND r.minute_ts = p.minute
                  WHERE p.thermostat_id IS NULL)",
            &[],
        )
        .expect("audit the minute rows");
    MinuteAudit {
        checked: row.get(0),
        missing: row.get(1),
        miscounted: row.get(2),
        orphaned: row.get(3),
    }
}

fn scalar(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[])
        .map(|row| row.get(0))
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

fn rollup_checkpoint(db: &mut postgres::Client) -> Option<SystemTime> {
    db.query_opt(
        "SELECT ts FROM maintenance_state WHERE name = 'rollup'",
        &[],
    )
    .ok()
    .flatten()
    .map(|row| row.get(0))
}

fn format_minute(ts: SystemTime) -> String {
    jiff::Timestamp::try_from(ts)
        .expect("timestamp in range")
        .to_string()
}

/// Minute rows in PostgreSQL up to the rollup checkpoint that the fake server lacks.
fn minutes_not_delivered(db: &mut postgres::Client, cloud: &FakeCloud) -> Vec<(String, String)> {
    let rows = db
        .query(
            "SELECT thermostat_id, minute_ts FROM minute_readings
             WHERE minute_ts <= (SELECT ts FROM maintenance_state WHERE name = 'rollup')",
            &[],
        )
        .expect("read minute rows");
    let state = cloud.state();
    rows.iter()
        .map(|row| (row.get::<_, String>(0), format_minute(row.get(1))))
        .filter(|key| !state.minutes.contains_key(key))
        .collect()
}

/// State changes in the outbox that the fake server lacks, or that are not acked.
fn state_changes_not_delivered(db: &mut postgres::Client, cloud: &FakeCloud) -> usize {
    let rows = db
        .query(
            "SELECT payload->>'thermostat_id', payload->>'ts', acked_at IS NOT NULL
             FROM sync_outbox",
            &[],
        )
        .expect("read the outbox");
    let state = cloud.state();
    rows.iter()
        .filter(|row| {
            let key = (row.get::<_, String>(0), row.get::<_, String>(1));
            !row.get::<_, bool>(2) || !state.state_changes.contains_key(&key)
        })
        .count()
}

/// Returns whether the daemon created the schema before a kill.
fn migrated(db: &mut postgres::Client) -> bool {
    db.query_one(
        "SELECT to_regclass('public.sync_result_outbox') IS NOT NULL",
        &[],
    )
    .map(|row| row.get(0))
    .expect("look for the schema")
}

/// Returns the start of the minute before the one `at` falls in. Once the rollup has
/// passed it, every minute that closed before `at` is rolled up.
fn minute_before(at: SystemTime) -> SystemTime {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds / 60 * 60 - 60)
}

#[test]
fn sigkill_at_random_moments_loses_nothing_stored() {
    let seed = seed();
    let kills = kills();
    println!("crash test: seed {seed}, {kills} kills (repeat the draws with CRASH_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);

    let url = support::fresh_database_url("crash_sigkill");
    let cloud = FakeCloud::start(SITE, SITE_TOKEN);
    let fleet = Fleet::start(FleetOptions {
        count: THERMOSTATS,
        models: vec![ModelProfile::Ct50],
        // Slow enough that a kill often lands inside a poll or a command's requests.
        latency: Latency::Fixed(Duration::from_millis(100)),
        seed,
        ..FleetOptions::default()
    })
    .expect("fleet starts on loopback");
    let uuids: Vec<String> = fleet
        .devices()
        .iter()
        .map(|device| device.uuid().to_string())
        .collect();
    let folder = temp_folder();
    let config = ChildConfig {
        site_id: SITE.to_string(),
        database_url: url.clone(),
        thermostats: fleet.devices().iter().map(|d| d.address()).collect(),
        api_port: free_port(),
        public_server: Some((cloud.base_url(), cloud.ca_file.clone())),
    }
    .write(&folder);
    let log_path = folder.join("daemon.log");

    let started = Instant::now();
    let mut commands: Vec<(String, f64)> = Vec::new();
    let mut totals = Life::default();
    let mut lives_with = BTreeMap::<&str, usize>::new();
    let mut killed_mid_command = 0;
    let mut audits = 0;
    let mut aimed_at_rollup = 0;

    for kill in 0..kills {
        if kill % 2 == 1 {
            let (id, setpoint, body) = command(commands.len(), &uuids[kill % THERMOSTATS]);
            cloud.queue_command(body);
            commands.push((id, setpoint));
        }
        let daemon = ChildDaemon::start(&config, &log_path, &[]);
        let (length, at_rollup) = life_length(&mut rng);
        aimed_at_rollup += usize::from(at_rollup);
        std::thread::sleep(length);
        let log = daemon.log();
        daemon.kill();

        let life = Life::from_log(&log);
        totals.flushes += life.flushes;
        totals.rollups += life.rollups;
        totals.uploads += life.uploads;
        totals.commands_started += life.commands_started;
        for (name, happened) in [
            ("flush", life.flushes > 0),
            ("rollup", life.rollups > 0),
            ("upload", life.uploads > 0),
            ("command", life.commands_started > 0),
        ] {
            if happened {
                *lives_with.entry(name).or_default() += 1;
            }
        }
        if life.killed_mid_command() {
            killed_mid_command += 1;
        }

        // After every kill: the minute rows match what was stored.
        let mut db = support::connect(&url);
        if !migrated(&mut db) {
            continue;
        }
        let audit = audit_minutes(&mut db);
        assert_eq!(
            (audit.missing, audit.miscounted, audit.orphaned),
            (0, 0, 0),
            "after kill {kill} (seed {seed}): {audit:?}"
        );
        audits += 1;
        for (_, setpoint) in &commands {
            let writes = writes_of(&fleet, *setpoint);
            assert!(
                writes <= 1,
                "after kill {kill} (seed {seed}): t_heat {setpoint} written {writes} times"
            );
        }
    }
    let kill_phase = started.elapsed();

    // The last life runs until everything stored before it started is delivered.
    let final_start = SystemTime::now();
    let daemon = ChildDaemon::start(&config, &log_path, &[]);
    // The sync starts after the SIGTERM handler, so the clean stop below is handled.
    daemon.wait_for_log("public server sync on", Duration::from_secs(30));
    let mut db = support::connect(&url);
    let rolled_through = minute_before(final_start);
    wait_for(
        Duration::from_secs(90),
        "every command to get a final result",
        || cloud.state().pending.is_empty(),
    );
    wait_for(
        Duration::from_secs(90),
        "the rollup to pass the last kill",
        || rollup_checkpoint(&mut db).is_some_and(|ts| ts >= rolled_through),
    );
    wait_for(Duration::from_secs(90), "the outbox to drain", || {
        scalar(&mut db, "SELECT count(*) FROM sync_result_outbox") == 0
            && state_changes_not_delivered(&mut db, &cloud) == 0
            && minutes_not_delivered(&mut db, &cloud).is_empty()
    });
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "the last daemon stopped with {status}");
    let total = started.elapsed();

    // Minute rows: none missing, none counting other readings than the stored ones.
    let audit = audit_minutes(&mut db);
    assert_eq!((audit.missing, audit.miscounted, audit.orphaned), (0, 0, 0));
    assert!(audit.checked > 0, "no minute was rolled up: {audit:?}");
    let undelivered = minutes_not_delivered(&mut db, &cloud);
    assert!(undelivered.is_empty(), "not delivered: {undelivered:?}");
    assert_eq!(state_changes_not_delivered(&mut db, &cloud), 0);
    let parked = scalar(&mut db, "SELECT count(*) FROM sync_parked");
    assert_eq!(parked, 0, "payloads were parked");
    assert_eq!(
        scalar(&mut db, "SELECT count(*) FROM thermostats"),
        THERMOSTATS as i64
    );

    // Commands: each wrote at most once and finished with one outcome.
    let mut outcomes = BTreeMap::<String, usize>::new();
    let mut writes_total = 0;
    for (id, setpoint) in &commands {
        let finals: BTreeSet<String> = cloud
            .results_for(id)
            .iter()
            .filter(|entry| entry["status"] != "inprogress")
            .map(Value::to_string)
            .collect();
        assert_eq!(finals.len(), 1, "command {id} finished as {finals:?}");
        let result = cloud.state().results[id].clone();
        let status = result["status"].as_str().unwrap_or_default().to_string();
        let writes = writes_of(&fleet, *setpoint);
        writes_total += writes;
        assert!(
            writes <= 1,
            "command {id} wrote t_heat {setpoint} {writes} times"
        );
        if status == "completed" {
            assert_eq!(writes, 1, "completed command {id} never wrote");
        }
        let stored: String = db
            .query_one(
                "SELECT status FROM sync_commands WHERE command_id = $1",
                &[id],
            )
            .expect("the command is logged")
            .get(0);
        assert_eq!(stored, status, "command {id}");
        if status != "completed" {
            println!("crash test: command {id} {status}: {}", result["error"]);
        }
        *outcomes.entry(status).or_default() += 1;
    }
    assert!(
        outcomes.get("completed").copied().unwrap_or(0) > 0,
        "no command completed: {outcomes:?}"
    );

    let readings = scalar(&mut db, "SELECT count(*) FROM raw_readings");
    let minutes = scalar(&mut db, "SELECT count(*) FROM minute_readings");
    let results_sent = cloud.state().result_log.len();
    println!(
        "crash test: seed {seed}: {kills} SIGKILLs survived in {:.0} s ({:.0} s in all); \
         {audits} audits after kills; lives that flushed {}, rolled up {}, uploaded {}, \
         ran a command {}; {killed_mid_command} kills during a command, {aimed_at_rollup} aimed \
         at a rollup; in all {} flushes, \
         {} rollups, {} uploads and {} command runs logged",
        kill_phase.as_secs_f64(),
        total.as_secs_f64(),
        lives_with.get("flush").copied().unwrap_or(0),
        lives_with.get("rollup").copied().unwrap_or(0),
        lives_with.get("upload").copied().unwrap_or(0),
        lives_with.get("command").copied().unwrap_or(0),
        totals.flushes,
        totals.rollups,
        totals.uploads,
        totals.commands_started,
    );
    println!(
        "crash test: {readings} readings and {minutes} minute rows stored, {} minutes audited: \
         0 missing, 0 miscounted, 0 duplicated; {} commands: {outcomes:?}, {writes_total} \
         thermostat writes, none twice; {results_sent} result entries sent; outbox empty",
        audit.checked,
        commands.len(),
    );
    let _ = std::fs::remove_dir_all(&folder);
}
