//! Fleet benchmark. It runs the release daemon (`thermostat-server run`) against a
//! simulated fleet in fast mode and a throwaway PostgreSQL, for several fleet sizes.
//! Each size also measures the floor: a bare HTTP GET loop and a bare batched INSERT.
//! A last run uses realistic device latency. Everything listens on 127.0.0.1.
//!
//! Run: `cargo bench --bench fleet -- --sizes 10,100,1000,3000 --seconds 60`.
//! `--help` prints the options ([`USAGE`]); docs/BENCHMARKS.md explains the figures.

mod child;
mod measure;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use thermostat_server::pgtemp::TempPostgres;

use child::{FleetStats, http_get};
use measure::{
    Buckets, CpuTicks, check_daemon, family_sum, format_bound_ms, median, metric_value, micros_per,
    parse_proc_stat, parse_sizes, parse_status_kib, parse_whole_number, ticks_to_duration,
    unit_environment,
};

/// The daemon's poll interval in every run.
const INTERVAL_SECONDS: u64 = 5;

/// The lateness histogram's name on `/metrics`.
const LATENESS: &str = "thermostat_poll_lateness_seconds";

/// Help text for `--help`.
const USAGE: &str = "\
Usage: cargo bench --bench fleet -- [OPTIONS]

  --sizes LIST         fleet sizes, such as 10,100,1000,3000 (the default)
  --seconds N          measured window per size, at least 5 (default 60)
  --warmup N           seconds to wait after every thermostat answered (default 12)
  --realistic N        fleet of the realistic-latency run (default 200; 0 skips it)
  --floor-seconds N    length of each floor loop, at least 1 (default 10)
  --daemon PATH        the daemon to run (default: the release build cargo made)
  --log-level LEVEL    the daemon's log level (default warn); its log stays in the
                       work folder when a run fails
  --unit FILE|none     the systemd unit whose Environment= lines the daemon runs with
                       (default systemd/thermostat-server.service)
  --help               this text

docs/BENCHMARKS.md, \"The fleet benchmark\", explains each figure.
";

/// A poll counts as on time when it started at most this long after its tick.
const ON_TIME_SECONDS: f64 = 0.25;

fn main() {
    // `cargo bench` adds `--bench`, which this harness ignores.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    let result = match args.first().map(String::as_str) {
        Some("--simulator-child") => child::simulator(&args[1..]),
        Some("--floor-http") => child::floor_http(&args[1..]),
        Some("--floor-insert") => child::floor_insert(&args[1..]),
        _ if args.iter().any(|arg| arg == "--help" || arg == "-h") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Options::parse(&args).and_then(|options| run(&options)),
    };
    if let Err(error) = result {
        eprintln!("fleet benchmark: {error}");
        std::process::exit(1);
    }
}

struct Options {
    sizes: Vec<usize>,
    seconds: u64,
    warmup: u64,
    realistic: usize,
    floor_seconds: u64,
    daemon: PathBuf,
    log_level: String,
    /// The variables of the shipped unit's `Environment=` lines, and the unit's path.
    environment: Vec<(String, String)>,
    unit: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            sizes: vec![10, 100, 1000, 3000],
            seconds: 60,
            warmup: 12,
            realistic: 200,
            floor_seconds: 10,
            daemon: PathBuf::from(env!("CARGO_BIN_EXE_thermostat-server")),
            log_level: "warn".into(),
            environment: Vec::new(),
            unit: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/thermostat-server.service"),
            ),
        };
        let mut iter = args.iter();
        while let Some(flag) = iter.next() {
            let mut value = || {
                iter.next()
                    .ok_or_else(|| format!("{flag} needs a value"))
                    .cloned()
            };
            match flag.as_str() {
                "--sizes" => options.sizes = parse_sizes(&value()?)?,
                "--seconds" => {
                    options.seconds = parse_whole_number(flag, &value()?, INTERVAL_SECONDS)?
                }
                "--warmup" => options.warmup = parse_whole_number(flag, &value()?, 0)?,
                "--realistic" => {
                    options.realistic = parse_whole_number(flag, &value()?, 0)? as usize
                }
                "--floor-seconds" => {
                    options.floor_seconds = parse_whole_number(flag, &value()?, 1)?
                }
                "--daemon" => options.daemon = PathBuf::from(value()?),
                "--log-level" => options.log_level = value()?,
                "--unit" => {
                    options.unit = Some(value()?)
                        .filter(|unit| unit != "none")
                        .map(PathBuf::from)
                }
                other => return Err(format!("unknown option {other}; --help lists the options")),
            }
        }
        check_daemon(&options.daemon)?;
        if let Some(unit) = &options.unit {
            let text = std::fs::read_to_string(unit).map_err(|error| {
                format!(
                    "cannot read the unit {}: {error}; pass --unit none to run without its environment",
                    unit.display()
                )
            })?;
            options.environment = unit_environment(&text);
        }
        Ok(options)
    }
}

/// Figures of one fleet run.
#[derive(Debug, Default)]
struct RunResult {
    size: usize,
    window: Duration,
    load_average: String,
    polls: u64,
    cpu: Duration,
    rss_steady_kib: u64,
    rss_peak_kib: u64,
    lateness: Option<Buckets>,
    lateness_max_since_start: f64,
    readings: u64,
    /// WAL written in the window: the distance between the WAL positions at its ends.
    wal_position_bytes: u64,
    /// WAL in the window by `pg_stat_wal`. A backend adds its WAL there up to seconds
    /// later, and an autovacuum worker only when it finishes a table, so this can hold
    /// WAL written before the window.
    wal_bytes: u64,
    wal_fpi: u64,
    commits: u64,
    batch_writes: u64,
    /// The window's WAL by relation and record type, largest first.
    wal_records: Vec<WalShare>,
    overlaps: FleetStats,
    floor_http_us: Option<f64>,
    floor_insert_us: Option<f64>,
}

impl RunResult {
    fn cpu_per_poll_us(&self) -> Option<f64> {
        micros_per(self.cpu, self.polls)
    }

    fn floor_us(&self) -> Option<f64> {
        Some(self.floor_http_us? + self.floor_insert_us?)
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.window.as_secs_f64()
    }
}

fn run(options: &Options) -> Result<(), String> {
    let ticks_per_second = clock_ticks_per_second();
    print_machine(options);
    let postgres = TempPostgres::start().map_err(|error| error.to_string())?;
    let work = std::env::temp_dir().join(format!("fleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;

    run_all(&postgres, &work, options, ticks_per_second).map_err(|error| {
        format!(
            "{error}\nthe site files and daemon logs of the runs are kept in {}",
            work.display()
        )
    })?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Runs every fleet size and then the realistic-latency run, printing as it goes.
fn run_all(
    postgres: &TempPostgres,
    work: &Path,
    options: &Options,
    ticks_per_second: u64,
) -> Result<(), String> {
    let mut results = Vec::new();
    for &size in &options.sizes {
        let result = run_fleet(postgres, work, options, size, "fast", ticks_per_second)?;
        print_run(&result);
        results.push(result);
    }
    print_table(&results);

    if options.realistic > 0 {
        let result = run_fleet(
            postgres,
            work,
            options,
            options.realistic,
            "realistic",
            ticks_per_second,
        )?;
        print_run(&result);
        print_realistic(&result, options.seconds);
    }
    Ok(())
}

fn print_machine(options: &Options) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let binary_size = std::fs::metadata(&options.daemon).map_or(0, |m| m.len());
    println!("# fleet benchmark, {}", jiff::Timestamp::now());
    println!("cpus: {cpus}; load average at start: {}", load_average());
    println!(
        "daemon: {} ({} bytes, {:.2} MiB)",
        options.daemon.display(),
        binary_size,
        binary_size as f64 / 1048576.0
    );
    let environment: Vec<String> = options
        .environment
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    match &options.unit {
        Some(unit) => println!(
            "daemon environment from {}: {}",
            unit.display(),
            if environment.is_empty() {
                "(none)".to_string()
            } else {
                environment.join(" ")
            }
        ),
        None => println!("daemon environment: none from a unit (--unit none)"),
    }
    // The daemon also inherits the benchmark's own environment, glibc's tunables included.
    let inherited: Vec<String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("MALLOC_") || name == "GLIBC_TUNABLES")
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if !inherited.is_empty() {
        println!("inherited by the daemon: {}", inherited.join(" "));
    }
    println!(
        "interval {INTERVAL_SECONDS} s; window {} s per size after {} s warm-up; floor loops {} s",
        options.seconds, options.warmup, options.floor_seconds
    );
}

/// Runs the daemon against `size` simulated thermostats and measures one window.
fn run_fleet(
    postgres: &TempPostgres,
    work: &Path,
    options: &Options,
    size: usize,
    latency: &str,
    ticks_per_second: u64,
) -> Result<RunResult, String> {
    println!("\n## {size} thermostats, {latency} latency");
    let database = format!("bench_{latency}_{size}");
    let url = postgres
        .create_database(&database)
        .map_err(|error| error.to_string())?;
    let admin_url = postgres.url("postgres");

    let mut simulator = SimulatorChild::start(size, latency)?;
    let api = free_loopback_port()?;
    let config = work.join(format!("{database}.toml"));
    write_config(&config, &url, api, &simulator.addresses, &options.log_level)?;
    let log = work.join(format!("{database}.log"));
    let mut daemon = Daemon::start(&options.daemon, &options.environment, &config, &log)?;

    let result = (|| {
        wait_until_polling(&daemon, api, size, &log)?;
        sleep(Duration::from_secs(options.warmup));
        measure_window(
            &daemon,
            api,
            &url,
            &admin_url,
            size,
            options.seconds,
            ticks_per_second,
        )
    })();
    let result = result.and_then(|mut result| {
        result.overlaps = simulator.stats()?;
        Ok(result)
    });
    daemon.stop();
    let mut result = result?;

    if latency == "fast" {
        let (http, insert) = floor(options, &simulator.addresses, &url, size, ticks_per_second)?;
        result.floor_http_us = http;
        result.floor_insert_us = insert;
    }
    simulator.stop();
    drop_database(&admin_url, &database)?;
    Ok(result)
}

/// Drops a finished run's database, so that no autovacuum of its tables (the floor
/// loop leaves many rows) runs and writes WAL during the next run's window.
fn drop_database(admin_url: &str, database: &str) -> Result<(), String> {
    let mut admin =
        postgres::Client::connect(admin_url, postgres::NoTls).map_err(|e| e.to_string())?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .map_err(|error| format!("cannot drop the database {database}: {error}"))
}

/// Starts measuring once every thermostat has been polled once.
fn wait_until_polling(
    daemon: &Daemon,
    api: SocketAddr,
    size: usize,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120 + size as u64 / 10);
    loop {
        daemon.check_alive(log)?;
        if let Ok(text) = scrape(api) {
            let (polled, _) = family_sum(&text, "thermostat_polls_total");
            if polled >= size {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the daemon did not poll all {size} thermostats in time; see {}",
                log.display()
            ));
        }
        sleep(Duration::from_millis(500));
    }
}

/// One line of the WAL breakdown: the relation of the record's first block (`-` for
/// records without one, such as commits), the record type, and the records' count and
/// total size.
#[derive(Debug, Default)]
struct WalShare {
    relation: String,
    record: String,
    count: u64,
    bytes: u64,
}

/// The counters read at each end of the window.
struct Snapshot {
    cpu: CpuTicks,
    lateness: Buckets,
    wal_bytes: u64,
    wal_fpi: u64,
    commits: u64,
    readings: u64,
    batch_writes: u64,
}

fn measure_window(
    daemon: &Daemon,
    api: SocketAddr,
    url: &str,
    admin_url: &str,
    size: usize,
    seconds: u64,
    ticks_per_second: u64,
) -> Result<RunResult, String> {
    let mut database =
        postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
    let mut admin =
        postgres::Client::connect(admin_url, postgres::NoTls).map_err(|e| e.to_string())?;
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    let load_average = load_average();

    let start_lsn = reserve_wal(&mut database)?;
    let start = snapshot(daemon, api, &mut database, &mut admin, &name, true)?;
    let started = Instant::now();
    let mut rss = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        sleep(Duration::from_secs(1));
        rss.push(daemon.status_kib("VmRSS")?);
    }
    let end = snapshot(daemon, api, &mut database, &mut admin, &name, false)?;
    let window = started.elapsed();
    let end_lsn = current_wal_lsn(&mut database)?;
    let text = scrape(api)?;
    let wal_position_bytes: i64 = database
        .query_one(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::int8",
            &[&end_lsn, &start_lsn],
        )
        .map_err(|error| format!("cannot measure the WAL written: {}", db_message(&error)))?
        .get(0);
    let wal_records = wal_breakdown(&mut database, &start_lsn, &end_lsn).unwrap_or_else(|error| {
        println!("no WAL breakdown: {error}");
        Vec::new()
    });
    release_wal(&mut database)?;

    let lateness = end.lateness.since(&start.lateness);
    Ok(RunResult {
        size,
        window,
        load_average,
        polls: lateness.count(),
        cpu: ticks_to_duration(end.cpu.total() - start.cpu.total(), ticks_per_second),
        rss_steady_kib: median(&rss),
        rss_peak_kib: daemon.status_kib("VmHWM")?,
        lateness: Some(lateness),
        lateness_max_since_start: metric_value(&text, &format!("{LATENESS}_max")).unwrap_or(0.0),
        readings: end.readings - start.readings,
        wal_bytes: end.wal_bytes - start.wal_bytes,
        wal_fpi: end.wal_fpi - start.wal_fpi,
        // The two raw_readings counts of the benchmark are transactions too.
        commits: (end.commits - start.commits).saturating_sub(2),
        batch_writes: end.batch_writes - start.batch_writes,
        wal_records,
        wal_position_bytes: wal_position_bytes.max(0) as u64,
        ..RunResult::default()
    })
}

/// Reads every counter. At the start the scrape comes before the CPU reading and at
/// the end after it, so that the scrapes' own CPU stays out of the window.
fn snapshot(
    daemon: &Daemon,
    api: SocketAddr,
    database: &mut postgres::Client,
    admin: &mut postgres::Client,
    name: &str,
    at_start: bool,
) -> Result<Snapshot, String> {
    let mut text = if at_start {
        scrape(api)?
    } else {
        String::new()
    };
    let cpu = daemon.cpu()?;
    if !at_start {
        text = scrape(api)?;
    }
    let lateness = Buckets::parse(&text, LATENESS)
        .ok_or("the daemon's /metrics has no poll lateness histogram")?;
    let batch_writes =
        metric_value(&text, "thermostat_database_writes_total").unwrap_or(0.0) as u64;

    let query_error =
        |error: postgres::Error| format!("benchmark query failed: {}", db_message(&error));
    let admin_row = admin
        .query_one(
            "SELECT (SELECT wal_bytes FROM pg_stat_wal)::int8,
                    (SELECT xact_commit FROM pg_stat_database WHERE datname = $1)::int8,
                    (SELECT wal_fpi FROM pg_stat_wal)::int8",
            &[&name],
        )
        .map_err(query_error)?;
    let readings: i64 = database
        .query_one("SELECT count(*) FROM raw_readings", &[])
        .map_err(query_error)?
        .get(0);
    Ok(Snapshot {
        cpu,
        lateness,
        wal_bytes: admin_row.get::<_, i64>(0) as u64,
        commits: admin_row.get::<_, i64>(1) as u64,
        wal_fpi: admin_row.get::<_, i64>(2) as u64,
        readings: readings as u64,
        batch_writes,
    })
}

/// The replication slot that keeps the window's WAL until pg_walinspect has read it:
/// without it, a checkpoint in a long window recycles the window's first segments.
const WAL_SLOT: &str = "fleet_bench_window";

/// Creates [`WAL_SLOT`], which keeps the WAL from now on, and returns the WAL position.
fn reserve_wal(database: &mut postgres::Client) -> Result<String, String> {
    release_wal(database)?;
    database
        .execute(
            "SELECT pg_create_physical_replication_slot($1, true)",
            &[&WAL_SLOT],
        )
        .map_err(|error| format!("cannot create the slot {WAL_SLOT}: {}", db_message(&error)))?;
    current_wal_lsn(database)
}

/// Drops [`WAL_SLOT`] if it exists, so that PostgreSQL may recycle the WAL again.
fn release_wal(database: &mut postgres::Client) -> Result<(), String> {
    database
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE slot_name = $1",
            &[&WAL_SLOT],
        )
        .map(|_| ())
        .map_err(|error| format!("cannot drop the slot {WAL_SLOT}: {}", db_message(&error)))
}

fn current_wal_lsn(database: &mut postgres::Client) -> Result<String, String> {
    database
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .map(|row| row.get(0))
        .map_err(|error| format!("cannot read the WAL position: {}", db_message(&error)))
}

/// Returns PostgreSQL's own message for a server error, because the `Display` of
/// `postgres::Error` prints only "db error".
fn db_message(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => error.to_string(),
    }
}

/// Groups the WAL records between two positions by the relation of their first block
/// and their type, with pg_walinspect. The relation names resolve in the daemon's
/// database; a record of another database shows its file number.
fn wal_breakdown(
    database: &mut postgres::Client,
    start_lsn: &str,
    end_lsn: &str,
) -> Result<Vec<WalShare>, String> {
    let query_error =
        |error: postgres::Error| format!("WAL breakdown query failed: {}", db_message(&error));
    database
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .map_err(query_error)?;

    // The WAL writer flushes the last records within wal_writer_delay (200 ms), and
    // pg_walinspect reads only flushed WAL.
    sleep(Duration::from_millis(600));
    let rows = database
        .query(
            "SELECT coalesce(c.relname, r.file, '-'), w.resource_manager || '/' || w.record_type,
                    count(*)::int8, sum(w.record_length)::int8
             FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn) w
             LEFT JOIN LATERAL (SELECT (regexp_match(w.block_ref, 'rel \\d+/\\d+/(\\d+)'))[1] AS file) r
                    ON true
             LEFT JOIN pg_class c ON c.relfilenode::text = r.file
             GROUP BY 1, 2
             ORDER BY 4 DESC",
            &[&start_lsn, &end_lsn],
        )
        .map_err(query_error)?;
    Ok(rows
        .iter()
        .map(|row| WalShare {
            relation: row.get(0),
            record: row.get(1),
            count: row.get::<_, i64>(2) as u64,
            bytes: row.get::<_, i64>(3) as u64,
        })
        .collect())
}

/// Runs both floor loops and returns their CPU per request and per row, in µs.
fn floor(
    options: &Options,
    addresses: &[String],
    url: &str,
    size: usize,
    ticks_per_second: u64,
) -> Result<(Option<f64>, Option<f64>), String> {
    let input = addresses.join("\n");
    let http = run_floor_child(
        &["--floor-http".into(), options.floor_seconds.to_string()],
        &input,
    )?;
    // The daemon writes one batch per second: a fleet's polls of one second.
    let batch = (size as u64 / INTERVAL_SECONDS).max(1);
    let insert = run_floor_child(
        &[
            "--floor-insert".into(),
            url.into(),
            options.floor_seconds.to_string(),
            batch.to_string(),
        ],
        "",
    )?;
    let per = |(operations, ticks): (u64, u64)| {
        micros_per(ticks_to_duration(ticks, ticks_per_second), operations)
    };
    Ok((per(http), per(insert)))
}

fn run_floor_child(args: &[String], input: &str) -> Result<(u64, u64), String> {
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start the floor loop: {error}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text.split_whitespace().map(str::parse::<u64>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(operations)), Some(Ok(ticks))) if output.status.success() => {
            Ok((operations, ticks))
        }
        _ => Err(format!("floor loop {} failed: {text}", args[0])),
    }
}

fn print_run(result: &RunResult) {
    let lateness = result.lateness.as_ref();
    let last = lateness
        .and_then(|l| l.bounds.iter().rev().find(|b| b.is_finite()).copied())
        .unwrap_or(0.0);
    let quantile = |q: f64| format_bound_ms(lateness.and_then(|l| l.quantile_bound(q)), last);
    println!("load average: {}", result.load_average);
    println!(
        "polls {} in {:.1} s; daemon CPU {:.3} s = {} µs/poll",
        result.polls,
        result.window.as_secs_f64(),
        result.cpu.as_secs_f64(),
        format_us(result.cpu_per_poll_us())
    );
    println!(
        "RSS steady {} KiB, peak {} KiB",
        result.rss_steady_kib, result.rss_peak_kib
    );
    println!(
        "lateness ms: p50 {} p99 {} max {} (max since start {:.1} ms)",
        quantile(0.5),
        quantile(0.99),
        format_bound_ms(lateness.and_then(Buckets::max_bound), last),
        result.lateness_max_since_start * 1000.0
    );
    println!(
        "readings {:.1}/s; WAL {:.0} B/reading by WAL position, {:.0} by pg_stat_wal ({} full-page images); \
         {:.2} commits/s in the database, {:.2} batch writes/s",
        result.per_second(result.readings),
        result.wal_position_bytes as f64 / result.readings.max(1) as f64,
        result.wal_bytes as f64 / result.readings.max(1) as f64,
        result.wal_fpi,
        result.per_second(result.commits),
        result.per_second(result.batch_writes),
    );
    print_wal_breakdown(result);
    if let Some(floor) = result.floor_us() {
        println!(
            "floor: GET {} µs/request + INSERT {} µs/row = {floor:.1} µs; daemon/floor {}",
            format_us(result.floor_http_us),
            format_us(result.floor_insert_us),
            format_ratio(result.cpu_per_poll_us(), floor)
        );
    }
    println!(
        "simulator: {} GET /tstat, {} overlapping requests on {} thermostats, at most {} connection(s) at once",
        result.overlaps.tstat_requests,
        result.overlaps.overlapping_requests,
        result.overlaps.devices_with_overlap,
        result.overlaps.max_concurrent
    );
}

/// Prints the largest WAL shares per reading, and the rest as one line.
fn print_wal_breakdown(result: &RunResult) {
    const SHOWN: usize = 12;
    if result.wal_records.is_empty() {
        return;
    }
    let readings = result.readings.max(1) as f64;
    println!("WAL per reading by relation and record (count per reading, bytes per reading):");
    for share in result.wal_records.iter().take(SHOWN) {
        println!(
            "  {:<32} {:<28} {:>6.3} {:>7.1}",
            share.relation,
            share.record,
            share.count as f64 / readings,
            share.bytes as f64 / readings
        );
    }
    let rest: u64 = result.wal_records.iter().skip(SHOWN).map(|s| s.bytes).sum();
    let total: u64 = result.wal_records.iter().map(|s| s.bytes).sum();
    println!(
        "  {:<61} {:>7.1}\n  {:<61} {:>7.1}",
        "the rest",
        rest as f64 / readings,
        "total in the records",
        total as f64 / readings
    );
}

fn print_table(results: &[RunResult]) {
    println!(
        "\n## summary (CPU per poll as a ratio to the floor; RSS growth against the previous size)"
    );
    println!(
        "{:>6} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "fleet",
        "µs/poll",
        "floor",
        "ratio",
        "RSS KiB",
        "peak KiB",
        "KiB/+1",
        "p99 ms",
        "WAL B/r",
        "stat B/r",
        "commit/s",
        "load1"
    );
    let mut previous: Option<&RunResult> = None;
    for result in results {
        let growth = previous.map_or("-".to_string(), |before| {
            let added = result.size.saturating_sub(before.size).max(1) as f64;
            format!(
                "{:.2}",
                (result.rss_steady_kib as f64 - before.rss_steady_kib as f64) / added
            )
        });
        let lateness = result.lateness.as_ref();
        let last = lateness
            .and_then(|l| l.bounds.iter().rev().find(|b| b.is_finite()).copied())
            .unwrap_or(0.0);
        println!(
            "{:>6} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8.0} {:>9.0} {:>9.2} {:>8}",
            result.size,
            format_us(result.cpu_per_poll_us()),
            format_us(result.floor_us()),
            result
                .floor_us()
                .map_or("-".into(), |f| format_ratio(result.cpu_per_poll_us(), f)),
            result.rss_steady_kib,
            result.rss_peak_kib,
            growth,
            format_bound_ms(lateness.and_then(|l| l.quantile_bound(0.99)), last),
            result.wal_position_bytes as f64 / result.readings.max(1) as f64,
            result.wal_bytes as f64 / result.readings.max(1) as f64,
            result.per_second(result.commits),
            result.load_average.split(' ').next().unwrap_or("-"),
        );
        previous = Some(result);
    }
}

fn print_realistic(result: &RunResult, seconds: u64) {
    let ticks = result.size as u64 * seconds / INTERVAL_SECONDS;
    let on_time = result
        .lateness
        .as_ref()
        .map_or(0, |l| l.at_or_under(ON_TIME_SECONDS));
    println!(
        "realistic: {} polls for {} grid ticks ({:.1} %); {:.1} % of ticks polled on time (<= {} ms late); \
         {} overlapping requests on {} of {} thermostats",
        result.polls,
        ticks,
        100.0 * result.polls as f64 / ticks.max(1) as f64,
        100.0 * on_time as f64 / ticks.max(1) as f64,
        ON_TIME_SECONDS * 1000.0,
        result.overlaps.overlapping_requests,
        result.overlaps.devices_with_overlap,
        result.size
    );
}

fn format_us(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.1}"))
}

fn format_ratio(daemon: Option<f64>, floor: f64) -> String {
    daemon.map_or("-".into(), |d| format!("{:.2}x", d / floor))
}

/// The simulator child process and the addresses its devices listen on.
struct SimulatorChild {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addresses: Vec<String>,
}

impl SimulatorChild {
    fn start(count: usize, latency: &str) -> Result<Self, String> {
        let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .args(["--simulator-child", &count.to_string(), latency])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start the simulator: {error}"))?;
        let stdin = child.stdin.take().ok_or("no simulator stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no simulator stdout")?);
        let mut addresses = Vec::with_capacity(count);
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("the simulator stopped before it was ready".into());
            }
            match line.trim().split_once(' ') {
                Some((address, _uuid)) => addresses.push(address.to_string()),
                None if line.trim() == "ready" => break,
                None => return Err(format!("unexpected simulator line {line:?}")),
            }
        }
        Ok(Self {
            child,
            stdin,
            stdout,
            addresses,
        })
    }

    fn stats(&mut self) -> Result<FleetStats, String> {
        writeln!(self.stdin, "stats").map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        FleetStats::parse(line.trim()).ok_or_else(|| format!("unexpected simulator line {line:?}"))
    }

    fn stop(mut self) {
        let _ = writeln!(self.stdin, "stop");
        let _ = self.child.wait();
    }
}

/// The daemon process.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(
        binary: &Path,
        environment: &[(String, String)],
        config: &Path,
        log: &Path,
    ) -> Result<Self, String> {
        let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .envs(environment.iter().map(|(name, value)| (name, value)))
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        Ok(Self { child })
    }

    fn proc_file(&self, name: &str) -> Result<String, String> {
        let path = format!("/proc/{}/{name}", self.child.id());
        std::fs::read_to_string(&path).map_err(|error| format!("cannot read {path}: {error}"))
    }

    fn cpu(&self) -> Result<CpuTicks, String> {
        parse_proc_stat(&self.proc_file("stat")?)
            .ok_or_else(|| "cannot parse the daemon's /proc stat".into())
    }

    fn status_kib(&self, key: &str) -> Result<u64, String> {
        parse_status_kib(&self.proc_file("status")?, key)
            .ok_or_else(|| format!("no {key} in the daemon's /proc status"))
    }

    fn check_alive(&self, log: &Path) -> Result<(), String> {
        match std::fs::metadata(format!("/proc/{}", self.child.id())) {
            Ok(_) if !self.proc_file("stat").unwrap_or_default().contains(") Z ") => Ok(()),
            _ => Err(format!("the daemon stopped; see {}", log.display())),
        }
    }

    /// Sends SIGTERM and waits up to 15 s, then kills.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(
    path: &Path,
    url: &str,
    api: SocketAddr,
    addresses: &[String],
    log_level: &str,
) -> Result<(), String> {
    let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        "# Generated by benches/fleet: loopback only.
[site]
site_id = \"bench\"
time_zone = \"UTC\"

[database]
url = \"{url}\"
flush_interval_ms = 1000

[polling]
interval_seconds = {INTERVAL_SECONDS}

[thermostats]
addresses = [{}]

[discovery]
methods = [\"database\"]
sync_clock = false
udp_group = \"127.0.0.1:9\"
udp_bind = \"127.0.0.1:0\"

[api]
listen = \"{api}\"

[log]
level = \"{log_level}\"
",
        list.join(", ")
    );
    std::fs::write(path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

fn scrape(api: SocketAddr) -> Result<String, String> {
    match http_get(api, "/metrics")? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("GET /metrics returned {status}: {body}")),
    }
}

fn free_loopback_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("no free loopback port: {error}"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100)
}
