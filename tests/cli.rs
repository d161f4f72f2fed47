//! The operator commands (`tstat ...`, `db ...`) run as the real binary against
//! simulated thermostats and a PostgreSQL the harness starts: output, exit status, and
//! what each simulated unit received, with the daemon running and without it.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use support::daemon::{RunningDaemon, fleet_config, http_get, wait_for};
use thermostat_server::config::Secret;
use thermostat_server::rollup::minute_start;
use thermostat_server::simulator::{self, Fleet, FleetOptions, Mode, SimDevice};
use thermostat_server::store::{migrate, queries, report};
use thermostat_server::thermostat::{DeviceAddress, ThermostatId, ThermostatRecord};

/// The local API token of the daemon test.
const TOKEN: &str = "cli-test-token-7b1e0c44d2";

/// Runs `thermostat-server ARGS` with stdin closed (not a terminal, so no prompt).
fn cli(args: &[&str]) -> Output {
    cli_with_token(args, None)
}

fn cli_with_token(args: &[&str], token: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_thermostat-server"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("THERMOSTAT_API_TOKEN")
        .env_remove("THERMOSTAT_DB_PASSWORD")
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("THERMOSTAT_API_TOKEN", token);
    }
    command.output().expect("thermostat-server runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Asserts the exit status, showing both streams when it differs.
fn expect_status(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is not JSON ({error}):\n{}", stdout(output)))
}

/// Creates a folder for one test's config file.
fn scratch(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("tstat-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("create scratch folder");
    folder
}

/// Writes a config whose API address is `api` and returns its path.
fn write_config(folder: &Path, url: &str, api: SocketAddr) -> PathBuf {
    let path = folder.join("site.toml");
    let text = format!(
        "[site]\nsite_id = \"test_site\"\ntime_zone = \"UTC\"\n\
         [database]\nurl = \"{url}\"\nconnect_timeout_seconds = 2\n\
         [polling]\ninterval_seconds = 1\nrequest_timeout_seconds = 3\nmin_request_gap_ms = 300\n\
         program_gap_seconds = 1\n\
         [api]\nlisten = \"{api}\"\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Returns a loopback address where nothing listens, so the command finds no daemon.
fn closed_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

fn fleet(count: usize, model: simulator::ModelProfile) -> Fleet {
    Fleet::start(FleetOptions {
        count,
        models: vec![model],
        ..FleetOptions::default()
    })
    .expect("simulated fleet starts on loopback")
}

/// Creates the schema and stores `fleet`'s devices as the daemon would.
fn register(url: &str, devices: &[SimDevice]) -> postgres::Client {
    let mut client = support::connect(url);
    migrate::apply_migrations(&mut client).expect("migrations apply");
    for device in devices {
        let mut record = record(device.uuid(), DeviceAddress::new(device.address()));
        record.model = device.model().model_string().to_string();
        queries::upsert_thermostat(&mut client, &record, Timestamp::now())
            .expect("store thermostat");
    }
    client
}

/// A simulated fleet of CT50s stored in a database of its own, and a config for both
/// whose API address has no daemon behind it.
struct Site {
    fleet: Fleet,
    client: postgres::Client,
    config: PathBuf,
}

impl Site {
    fn start(name: &str, count: usize) -> Self {
        let url = support::fresh_database_url(&format!("cli_{name}"));
        let fleet = fleet(count, simulator::ModelProfile::Ct50);
        let client = register(&url, fleet.devices());
        let config = write_config(&scratch(name), &url, closed_address());
        Self {
            fleet,
            client,
            config,
        }
    }

    fn config(&self) -> &str {
        self.config.to_str().expect("UTF-8 path")
    }
}

fn record(uuid: &str, address: DeviceAddress) -> ThermostatRecord {
    ThermostatRecord {
        id: ThermostatId::parse(uuid).expect("valid uuid"),
        address,
        name: format!("Room {}", &uuid[uuid.len() - 2..]),
        model: "CT50 V1.94".to_string(),
        api_version: Some(113),
        fw_version: Some("1.04.84".to_string()),
        capabilities: Vec::new(),
        discovery_method: "static".to_string(),
        active: true,
        away_temp: None,
        last_seen: Some(Timestamp::now()),
        first_seen: None,
    }
}

/// POSTs to `/tstat` that the device received since its last stats reset.
fn tstat_posts(device: &SimDevice) -> Vec<String> {
    device
        .handle()
        .stats()
        .post_bodies
        .iter()
        .filter(|post| post.path == "/tstat")
        .map(|post| post.body.clone())
        .collect()
}

/// Asserts that `set` posted to every device once, never two requests at a time, and
/// left it heating at `target` °F.
fn assert_each_set_once(devices: &[SimDevice], output: &Output, target: f64) {
    for device in devices {
        let stats = device.handle().stats();
        let posts = tstat_posts(device);
        assert_eq!(posts.len(), 1, "{}: {posts:?}", device.uuid());
        assert_eq!(stats.overlapping_requests, 0, "{}", device.uuid());
        let snapshot = device.handle().snapshot();
        assert_eq!((snapshot.mode, snapshot.heat_target), (Mode::Heat, target));
        let line = format!("{}: applied", device.uuid());
        assert!(stdout(output).contains(&line), "{line}: {}", stdout(output));
    }
}

fn cool_all(devices: &[SimDevice]) {
    for device in devices {
        device
            .handle()
            .apply_tstat_post(r#"{"tmode":2,"t_cool":78}"#)
            .expect("simulator accepts cool mode");
        device.handle().reset_stats();
    }
}

#[test]
fn bad_usage_exits_2() {
    let cases: [(&[&str], &str); 6] = [
        (&["tstat"], "missing command"),
        (&["tstat", "frobnicate"], "frobnicate"),
        (
            &[
                "tstat", "set", "--all", "--config", "x.toml", "--mode", "dry",
            ],
            "off, heat, cool or auto",
        ),
        (
            &["tstat", "set", "--all", "--config", "x.toml"],
            "at least one of --mode",
        ),
        (
            &["db", "gaps", "--config", "x.toml", "--since", "6x"],
            "\"6x\"",
        ),
        (
            &["db", "minutes", "--config", "x.toml"],
            "needs a thermostat ID",
        ),
    ];
    for (args, expected) in cases {
        let output = cli(args);
        expect_status(&output, 2);
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let since = cli(&["db", "gaps", "--config", "x.toml", "--since", "6x"]);
    assert!(
        stderr(&since).contains("s, m, h or d"),
        "{}",
        stderr(&since)
    );
}

#[test]
fn config_problems_exit_78_and_66() {
    let folder = scratch("config");
    let invalid = folder.join("invalid.toml");
    std::fs::write(
        &invalid,
        "[site]\nsite_id = \"x\"\n[polling]\ninterval_seconds = \"often\"\n",
    )
    .expect("write config");
    let output = cli(&["db", "check", "--config", invalid.to_str().expect("path")]);
    expect_status(&output, 78);
    assert!(
        stderr(&output).contains("polling.interval_seconds"),
        "{}",
        stderr(&output)
    );

    let missing = folder.join("missing.toml");
    let output = cli(&["tstat", "list", "--config", missing.to_str().expect("path")]);
    expect_status(&output, 66);
}

#[test]
fn help_names_options_and_units() {
    let top = cli(&["help"]);
    expect_status(&top, 0);
    for word in ["tstat COMMAND", "db COMMAND", "2 bad usage", "78"] {
        assert!(stdout(&top).contains(word), "{word}: {}", stdout(&top));
    }

    let set = cli(&["tstat", "set", "--help"]);
    expect_status(&set, 0);
    for word in [
        "--mode",
        "--heat °F",
        "--cool °F",
        "--fan",
        "--hold",
        "--yes",
        "0.5 °F",
    ] {
        assert!(stdout(&set).contains(word), "{word}: {}", stdout(&set));
    }
    let gaps = cli(&["db", "gaps", "--help"]);
    assert!(
        stdout(&gaps).contains("minutes, hours, days"),
        "{}",
        stdout(&gaps)
    );
    let schedule = cli(&["tstat", "schedule", "--help"]);
    assert!(stdout(&schedule).contains("HH:MM"), "{}", stdout(&schedule));
    assert!(stdout(&schedule).contains("°F"), "{}", stdout(&schedule));
}

#[test]
fn unreachable_database_exits_1() {
    let folder = scratch("nodb");
    let url = format!("postgresql://nobody@{}/nothing", closed_address());
    let config = write_config(&folder, &url, closed_address());
    let output = cli(&["db", "check", "--config", config.to_str().expect("path")]);
    expect_status(&output, 1);
    assert!(
        stderr(&output).contains("database unavailable"),
        "{}",
        stderr(&output)
    );
}

fn sql_time(ts: Timestamp) -> std::time::SystemTime {
    std::time::SystemTime::try_from(ts).expect("time in SystemTime's range")
}

/// Inserts minute rows for `id` at `minutes` (offsets from `base`).
fn insert_minutes(client: &mut postgres::Client, id: &str, base: Timestamp, minutes: &[i64]) {
    for offset in minutes {
        let ts = sql_time(base + SignedDuration::from_mins(*offset));
        client
            .execute(
                "INSERT INTO minute_readings (thermostat_id, minute_ts, temp_avg, tmode_last,
                                              poll_count, poll_failures)
                 VALUES ($1, $2, 70.5, 1, 12, 0)",
                &[&id, &ts],
            )
            .expect("insert minute row");
    }
}

fn insert_failure(client: &mut postgres::Client, id: &str, ts: Timestamp, kind: &str) {
    client
        .execute(
            "INSERT INTO poll_failures (thermostat_id, ts, kind) VALUES ($1, $2, $3)",
            &[&id, &sql_time(ts), &kind],
        )
        .expect("insert failure");
}

#[test]
fn db_reports_known_holes() {
    let url = support::fresh_database_url("cli_db_gaps");
    let mut client = support::connect(&url);
    migrate::apply_migrations(&mut client).expect("migrations apply");
    let base = minute_start(Timestamp::now()) - SignedDuration::from_mins(100);
    let mut old = record("aa00000000a1", DeviceAddress::new(closed_address()));
    old.first_seen = Some(base - SignedDuration::from_hours(5));
    let mut new = record("aa00000000b2", DeviceAddress::new(closed_address()));
    new.first_seen = Some(base + SignedDuration::from_mins(90) + SignedDuration::from_secs(20));
    for thermostat in [&old, &new] {
        queries::upsert_thermostat(&mut client, thermostat, Timestamp::now())
            .expect("store thermostat");
    }

    // The old thermostat misses minutes 10-12 and 50; the new one 95-99.
    let old_minutes: Vec<i64> = (-200..100)
        .filter(|minute| !(10..13).contains(minute) && *minute != 50)
        .collect();
    insert_minutes(&mut client, old.id.as_str(), base, &old_minutes);
    insert_minutes(
        &mut client,
        new.id.as_str(),
        base,
        &(90..95).collect::<Vec<_>>(),
    );
    for offset in [10, 11, 12] {
        let ts = base + SignedDuration::from_mins(offset) + SignedDuration::from_secs(5);
        insert_failure(&mut client, old.id.as_str(), ts, "timeout");
    }
    let connect_at = base + SignedDuration::from_mins(50) + SignedDuration::from_secs(30);
    insert_failure(&mut client, old.id.as_str(), connect_at, "connect");
    // A failure far from any gap is not listed.
    insert_failure(
        &mut client,
        old.id.as_str(),
        base + SignedDuration::from_mins(30),
        "parse",
    );
    let through = sql_time(base + SignedDuration::from_mins(99));
    client
        .execute(
            "INSERT INTO maintenance_state (name, ts) VALUES ('rollup', $1)",
            &[&through],
        )
        .expect("set rollup checkpoint");

    let folder = scratch("gaps");
    let config = write_config(&folder, &url, closed_address());
    let config = config.to_str().expect("path");

    let output = cli(&["db", "gaps", "--since", "2h", "--json", "--config", config]);
    expect_status(&output, 0);
    let report = json_of(&output);
    let thermostats = report["thermostats"].as_array().expect("list");
    assert_eq!(thermostats.len(), 2, "{report:#}");
    let at = |offset: i64| (base + SignedDuration::from_mins(offset)).to_string();

    let old_gaps = &thermostats[0]["gaps"];
    assert_eq!(thermostats[0]["thermostat_id"], old.id.as_str());
    assert_eq!(old_gaps.as_array().map(Vec::len), Some(2), "{report:#}");
    assert_eq!(old_gaps[0]["first_minute"], at(10));
    assert_eq!(old_gaps[0]["minutes"], 3);
    assert_eq!(old_gaps[0]["failures_around"][0]["kind"], "timeout");
    assert_eq!(old_gaps[0]["failures_around"][0]["count"], 3);
    assert_eq!(
        old_gaps[0]["failures_around"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(old_gaps[1]["first_minute"], at(50));
    assert_eq!(old_gaps[1]["minutes"], 1);
    assert_eq!(old_gaps[1]["failures_around"][0]["kind"], "connect");
    assert_eq!(thermostats[0]["missing_minutes"], 4);

    let new_gaps = &thermostats[1]["gaps"];
    assert_eq!(thermostats[1]["checked_from"], at(90));
    assert_eq!(new_gaps.as_array().map(Vec::len), Some(1), "{report:#}");
    assert_eq!(new_gaps[0]["first_minute"], at(95));
    assert_eq!(new_gaps[0]["minutes"], 5);
    assert_eq!(new_gaps[0]["failures_around"], serde_json::json!([]));

    let text = cli(&["db", "gaps", "--since", "2h", "--config", config]);
    expect_status(&text, 0);
    let text = stdout(&text);
    assert!(text.contains("4 missing minute(s) in 2 range(s)"), "{text}");
    assert!(text.contains("timeout x3"), "{text}");
    assert!(!text.contains("parse"), "{text}");

    let minutes = cli(&[
        "db",
        "minutes",
        new.id.as_str(),
        "--since",
        "3h",
        "--config",
        config,
    ]);
    expect_status(&minutes, 0);
    let minutes = stdout(&minutes);
    assert!(
        minutes.contains("TEMP °F") && minutes.contains("5 minute row(s)"),
        "{minutes}"
    );
    assert!(
        minutes.contains("70.5") && minutes.contains("heat"),
        "{minutes}"
    );
    let json = cli(&[
        "db",
        "minutes",
        new.id.as_str(),
        "--json",
        "--config",
        config,
    ]);
    expect_status(&json, 0);
    assert_eq!(json_of(&json)["minutes"].as_array().map(Vec::len), Some(5));

    let check = cli(&["db", "check", "--json", "--config", config]);
    expect_status(&check, 0);
    let check = json_of(&check);
    assert_eq!(check["schema_version"], check["expected_schema_version"]);
    assert!(check["schema_version"].as_i64() >= Some(3), "{check}");
    assert_eq!(check["row_counts"]["thermostats"], 2);
    assert_eq!(
        check["row_counts"]["minute_readings"],
        old_minutes.len() as i64 + 5
    );
    assert_eq!(check["row_counts"]["poll_failures"], 5);
    assert_eq!(check["outbox_backlog"], 0);
    assert!(
        check["table_bytes"]["raw_readings"].as_i64() > Some(0),
        "{check:#}"
    );
    let text = cli(&["db", "check", "--config", config]);
    assert!(
        stdout(&text).contains(&format!(
            "Schema version: {} (current)",
            check["expected_schema_version"]
        )),
        "{}",
        stdout(&text)
    );

    let list = cli(&["tstat", "list", "--config", config]);
    expect_status(&list, 0);
    let list = stdout(&list);
    assert!(
        list.contains("Room a1") && list.contains("Room b2"),
        "{list}"
    );
    assert!(list.contains("2 thermostat(s)"), "{list}");

    let unknown = cli(&["db", "minutes", "ffffffffffff", "--config", config]);
    expect_status(&unknown, 1);
    assert!(
        stderr(&unknown).contains("tstat list"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn set_all_direct_writes_each_once() {
    let site = Site::start("set_direct", 4);
    let devices = site.fleet.devices();
    cool_all(devices);

    let output = cli(&[
        "tstat",
        "set",
        "--all",
        "--mode",
        "heat",
        "--heat",
        "67.8",
        "--hold",
        "on",
        "--config",
        site.config(),
    ]);

    expect_status(&output, 0);
    assert!(stderr(&output).contains("directly"), "{}", stderr(&output));
    assert!(stderr(&output).contains("[4/4]"), "{}", stderr(&output));
    assert_each_set_once(devices, &output, 68.0);
    assert!(devices.iter().all(|device| device.handle().snapshot().hold));
    let mut client = site.client;
    assert_eq!(
        recorded_settings(&mut client),
        vec![("command_line".to_string(), 68.0); 4]
    );
}

/// Returns `(source, t_heat)` of every `device_config` row.
fn recorded_settings(client: &mut postgres::Client) -> Vec<(String, f64)> {
    client
        .query(
            "SELECT source, t_heat FROM device_config ORDER BY thermostat_id",
            &[],
        )
        .expect("read device_config")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[test]
fn status_all_continues_past_failure() {
    let mut site = Site::start("status_failure", 2);
    let dead = record("dead000000d1", DeviceAddress::new(closed_address()));
    queries::upsert_thermostat(&mut site.client, &dead, Timestamp::now())
        .expect("store thermostat");

    let output = cli(&[
        "tstat",
        "status",
        "--all",
        "--json",
        "--config",
        site.config(),
    ]);

    expect_status(&output, 1);
    let report = json_of(&output);
    let list = report["thermostats"].as_array().expect("list");
    assert_eq!(list.len(), 3, "{report:#}");
    let failed: Vec<&Value> = list
        .iter()
        .filter(|entry| entry["error"].is_string())
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["thermostat_id"], "dead000000d1");
    assert!(
        list.iter()
            .filter(|entry| entry["tmode_name"] == "heat")
            .count()
            == 2,
        "{report:#}"
    );
    assert!(
        stderr(&output).contains("1 of 3 thermostat(s) failed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn time_sync_skips_temporary_setpoint() {
    let site = Site::start("time_sync", 3);
    let devices = site.fleet.devices();
    // A temporary setpoint: the next clock write would clear it.
    devices[0]
        .handle()
        .apply_tstat_post(r#"{"t_heat":75}"#)
        .expect("temporary setpoint");
    for device in devices {
        device.handle().reset_stats();
    }
    let config = site.config();

    let output = cli(&["tstat", "time-sync", "--all", "--config", config]);

    expect_status(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "{}: skipped, clock not set: a temporary setpoint",
            devices[0].uuid()
        )),
        "{text}"
    );
    assert!(tstat_posts(&devices[0]).is_empty());
    let kept = devices[0].handle().snapshot();
    assert!(
        kept.temporary_override && kept.heat_target == 75.0,
        "{kept:?}"
    );
    for device in &devices[1..] {
        assert!(
            text.contains(&format!("{}: clock set", device.uuid())),
            "{text}"
        );
        let posts = tstat_posts(device);
        assert_eq!(posts.len(), 1, "{posts:?}");
        assert!(posts[0].contains("\"time\""), "{posts:?}");
    }
}

#[test]
fn schedule_prints_week_tables() {
    let site = Site::start("schedule", 1);
    let device = &site.fleet.devices()[0];

    let schedule = cli(&[
        "tstat",
        "schedule",
        device.uuid(),
        "--config",
        site.config(),
    ]);

    expect_status(&schedule, 0);
    let table = stdout(&schedule);
    assert!(
        table.contains("Heat program") && table.contains("Cool program"),
        "{table}"
    );
    assert!(table.contains("Mon  06:00 70.0  08:00 62.0"), "{table}");
    assert!(table.contains("Sun  06:00 76.0  08:00 82.0"), "{table}");
    let stats = device.handle().stats();
    assert_eq!(stats.requests_to("/tstat/program/heat"), 1);
    assert_eq!(stats.requests_to("/tstat/program/cool"), 1);
    // polling.program_gap_seconds = 1 in the config, above min_request_gap_ms = 300.
    assert!(
        stats
            .min_gap
            .is_some_and(|gap| gap >= Duration::from_millis(950)),
        "{:?}",
        stats.min_gap
    );
}

#[test]
fn commands_use_running_daemon() {
    let url = support::fresh_database_url("cli_through_daemon");
    let fleet = fleet(3, simulator::ModelProfile::Ct50);
    let devices = fleet.devices();
    devices[0]
        .handle()
        .apply_tstat_post(r#"{"t_heat":75}"#)
        .expect("temporary setpoint");
    let mut daemon_config = fleet_config(&url, &fleet);
    daemon_config.secrets.api_token = Some(Secret::new(TOKEN));
    // A clock write on registration would count as a write below.
    daemon_config.discovery.sync_clock = false;
    // As in the command line's config: a 1 s quiet gap around program reads.
    daemon_config.polling.program_gap = Duration::from_secs(1);
    let daemon = RunningDaemon::start(daemon_config);
    wait_for(Duration::from_secs(30), "every thermostat polled", || {
        let (status, body) = http_get(daemon.api, "/api/thermostats");
        let listed: Value = serde_json::from_str(&body).unwrap_or_default();
        status == 200 && listed["count"] == 3
    });
    for device in devices {
        device.handle().reset_stats();
    }
    let folder = scratch("through-daemon");
    let config = write_config(&folder, &url, daemon.api);
    let config = config.to_str().expect("path");

    // Without the token the daemon refuses the write, and nothing reaches a unit.
    let rejected = cli(&["tstat", "time-sync", devices[1].uuid(), "--config", config]);
    expect_status(&rejected, 1);
    assert!(stderr(&rejected).contains("401"), "{}", stderr(&rejected));
    assert!(tstat_posts(&devices[1]).is_empty());

    let cli = |args: &[&str]| cli_with_token(args, Some(TOKEN));
    let sync = cli(&["tstat", "time-sync", "--all", "--yes", "--config", config]);
    expect_status(&sync, 0);
    assert!(
        stderr(&sync).contains("through the running daemon"),
        "{}",
        stderr(&sync)
    );
    let text = stdout(&sync);
    assert!(
        text.contains(&format!("{}: skipped", devices[0].uuid())),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: clock set", devices[1].uuid())),
        "{text}"
    );
    assert!(tstat_posts(&devices[0]).is_empty());

    cool_all(devices);
    let set = cli(&[
        "tstat", "set", "--all", "--mode", "heat", "--heat", "66", "--config", config,
    ]);
    expect_status(&set, 0);
    assert!(
        stderr(&set).contains("through the running daemon"),
        "{}",
        stderr(&set)
    );
    // The daemon polls all the while; its link keeps the requests apart.
    assert_each_set_once(devices, &set, 66.0);
    let mut client = support::connect(&url);
    assert_eq!(
        recorded_settings(&mut client),
        vec![("local_api".to_string(), 66.0); 3]
    );

    let status = cli(&["tstat", "status", devices[2].uuid(), "--config", config]);
    expect_status(&status, 0);
    let table = stdout(&status);
    assert!(
        table.starts_with("ID") && table.contains("heat") && table.contains("66.0"),
        "{table}"
    );
    assert!(
        table.contains("Desired state") && table.contains("tmode=heat t_heat=66.0"),
        "the desired state table is missing: {table}"
    );
    let status = cli(&[
        "tstat",
        "status",
        devices[2].uuid(),
        "--json",
        "--config",
        config,
    ]);
    expect_status(&status, 0);
    let desired = &json_of(&status)["thermostats"][0]["desired"];
    assert_eq!(desired["source"], "local_api", "{desired}");
    assert_eq!(desired["policy"], "enforce", "{desired}");
    assert_eq!(desired["holding_settings"], true, "{desired}");

    let schedule = cli(&[
        "tstat",
        "schedule",
        devices[2].uuid(),
        "--json",
        "--config",
        config,
    ]);
    expect_status(&schedule, 0);
    let program = json_of(&schedule);
    assert_eq!(program["heat"][0]["day"], "Mon");
    assert_eq!(program["heat"][0]["periods"][0]["start"], "06:00");
    assert_eq!(program["cool"][6]["day"], "Sun");
    assert_eq!(program["cool"][6]["periods"][1]["target"], 82.0);
    for device in devices {
        assert_eq!(device.handle().stats().overlapping_requests, 0);
    }

    // The new routes return 404 for a thermostat the daemon does not poll.
    for route in ["live", "program"] {
        let (status, body) = http_get(
            daemon.api,
            &format!("/api/thermostats/ffffffffffff/{route}"),
        );
        assert_eq!(status, 404, "{route}: {body}");
    }
    daemon.stop();
}

#[test]
fn silent_api_blocks_direct_requests() {
    // Something on api.listen accepts connections and never responds, as a daemon
    // whose workers are all stuck would. Going around it could overlap its polls.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let api = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let (output, requests) = status_beside_api(api, "silent_api");

    expect_status(&output, 1);
    assert!(
        stderr(&output).contains("did not respond"),
        "{}",
        stderr(&output)
    );
    assert_eq!(requests, 0);
}

/// Runs `tstat status` on one registered unit with `api` as api.listen, and returns
/// the command's output and the requests that reached the unit.
fn status_beside_api(api: SocketAddr, name: &str) -> (Output, u64) {
    let url = support::fresh_database_url(&format!("cli_{name}"));
    let fleet = fleet(1, simulator::ModelProfile::Ct50);
    register(&url, fleet.devices());
    let device = &fleet.devices()[0];
    device.handle().reset_stats();
    let config = write_config(&scratch(name), &url, api);

    let output = cli(&[
        "tstat",
        "status",
        device.uuid(),
        "--config",
        config.to_str().expect("path"),
    ]);

    (output, device.handle().stats().total_requests)
}

#[test]
fn rejecting_api_blocks_direct_requests() {
    // Something on api.listen returns 403 to every request, as the daemon does for a
    // Host it does not serve. Going around it could overlap the daemon's polls.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let api = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0_u8; 1024];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let body = r#"{"error":"Host not served"}"#;
            let response = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut stream, response.as_bytes());
        }
    });
    let (output, requests) = status_beside_api(api, "rejecting_api");

    expect_status(&output, 1);
    assert!(
        stderr(&output).contains("returned 403"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("api.allowed_hosts"),
        "{}",
        stderr(&output)
    );
    assert_eq!(requests, 0);
}

#[test]
fn db_check_estimates_large_tables() {
    let url = support::fresh_database_url("cli_db_estimate");
    let mut client = support::connect(&url);
    migrate::apply_migrations(&mut client).expect("migrations apply");
    let thermostat = record("aa00000000c3", DeviceAddress::new(closed_address()));
    queries::upsert_thermostat(&mut client, &thermostat, Timestamp::now())
        .expect("store thermostat");
    client
        .batch_execute(
            "INSERT INTO poll_failures (thermostat_id, ts, kind)
             SELECT 'aa00000000c3', now() - n * interval '1 second', 'timeout'
             FROM generate_series(1, 50) AS n;
             ANALYZE poll_failures;",
        )
        .expect("insert and analyze");

    let check = report::database_check(&mut client, 40.0).expect("check runs");

    let failures = check
        .row_counts
        .iter()
        .find(|count| count.table == "poll_failures")
        .expect("poll_failures counted");
    assert!(failures.estimated, "{failures:?}");
    assert_eq!(failures.rows, 50);
    let thermostats = check
        .row_counts
        .iter()
        .find(|count| count.table == "thermostats")
        .expect("thermostats counted");
    assert!(!thermostats.estimated, "{thermostats:?}");
    assert_eq!(thermostats.rows, 1);
}

/// Runs `thermostat-server ARGS` on a pseudo-terminal made by util-linux `script`,
/// typing `typed`; `None` when `script` is missing.
fn cli_on_terminal(args: &[&str], typed: &str) -> Option<Output> {
    let command_line = std::iter::once(env!("CARGO_BIN_EXE_thermostat-server"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command_line, "/dev/null"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    std::io::Write::write_all(&mut stdin, typed.as_bytes()).expect("type the answer");
    drop(stdin);
    Some(child.wait_with_output().expect("script finishes"))
}

#[test]
fn set_all_on_terminal_asks_first() {
    let site = Site::start("confirm", 2);
    let devices = site.fleet.devices();
    cool_all(devices);
    let args = [
        "tstat",
        "set",
        "--all",
        "--mode",
        "heat",
        "--config",
        site.config(),
    ];

    let Some(declined) = cli_on_terminal(&args, "n\n") else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };

    expect_status(&declined, 1);
    let shown = stdout(&declined);
    assert!(shown.contains("on 2 thermostat(s)? [y/N]"), "{shown}");
    assert!(shown.contains("cancelled; nothing was changed"), "{shown}");
    for device in devices {
        assert!(tstat_posts(device).is_empty(), "{}", device.uuid());
    }

    let accepted = cli_on_terminal(&args, "y\n").expect("script ran before");
    expect_status(&accepted, 0);
    for device in devices {
        assert_eq!(tstat_posts(device).len(), 1, "{}", device.uuid());
    }
}
