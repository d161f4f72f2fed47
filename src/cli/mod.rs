//! The command line: `run`, `check-config`, `discover`, `simulate`, `demo`, the
//! operator commands `tstat` and `db`, and `--version`.
//!
//! Exit statuses follow sysexits: 0 success, 1 runtime failure (a thermostat or the
//! database returned an error), 2 bad usage, 66 unreadable config file, 78 invalid
//! config.
//!
//! - `tstat.rs`: `tstat list|status|set|time-sync|schedule`, through `reach.rs`, which
//!   picks the running daemon's API or a `DeviceLink` of this process.
//! - `db.rs`: `db check|gaps|minutes`, on a blocking client of this thread (the queries
//!   live in `store::report`).
//! - `args.rs` and `render.rs`: the pure parts: durations, mode names, the confirmation
//!   rule, tables and value formats.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use crate::{config, daemon, demo, discovery, simulator};

mod args;
mod db;
mod operator;
mod reach;
mod render;
mod tstat;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_CONFIG: i32 = 78;

const USAGE: &str = "\
Usage: thermostat-server COMMAND [OPTIONS]

Commands:
  run --config FILE       Run the daemon with the site configuration in FILE
  check-config FILE       Validate FILE and print every problem with its key
  discover --config FILE  Find the site's thermostats once and print them
                          (see discover --help)
  simulate [OPTIONS]      Serve simulated thermostats on loopback (see simulate --help)
  demo [OPTIONS]          Run the daemon against 20 simulated thermostats and a
                          throwaway PostgreSQL (see demo --help)
  tstat COMMAND           Operator commands for the thermostats: list, status, set,
                          time-sync, schedule (see tstat --help)
  db COMMAND              Database diagnostics: check, gaps, minutes (see db --help)
  --version               Print the version
  --help                  Print this text

Every command also takes --help. The log level comes from the config's log.level, or
from RUST_LOG when it is set.

Exit status: 0 success; 1 a thermostat or the database returned an error (with
--all: after trying every thermostat); 2 bad usage; 66 the config file cannot be
read; 78 the config file is invalid.";

const CHECK_CONFIG_USAGE: &str = "\
Usage: thermostat-server check-config FILE

Validates the site configuration in FILE and prints every problem with its key.
Exits 0 when the file is valid, 78 when it is not, and 66 when it cannot be read.";

const DEMO_USAGE: &str = "\
Usage: thermostat-server demo [OPTIONS]

Starts a throwaway PostgreSQL in a temporary folder (unless --database-url is
given), simulated thermostats on 127.0.0.1 (one of them faulty: timeouts and -1
readings) and the daemon with its API on 127.0.0.1:8000. Stops on Ctrl-C,
SIGTERM, or after --duration.

Options:
  --database-url URL      Use this PostgreSQL database instead of a throwaway one
  --thermostats N         Number of simulated thermostats (default 20, 1 to 500)
  --duration SECONDS      Stop cleanly after this many seconds (default: run until stopped)
  --api-listen ADDRESS    Address of the local API (default 127.0.0.1:8000)";

/// Runs the command line `args` (without the program name) and returns the exit status.
pub fn run(args: Vec<OsString>) -> i32 {
    let Some(command) = args
        .first()
        .and_then(|first| first.to_str())
        .map(str::to_string)
    else {
        eprintln!("{USAGE}");
        return EXIT_USAGE;
    };
    let rest = args[1..].to_vec();

    match command.as_str() {
        "run" => run_command(rest),
        "check-config" => check_config_command(rest),
        "simulate" => {
            init_logging(log::LevelFilter::Info);
            simulator::run_cli(rest)
        }
        "demo" => demo_command(rest),
        "discover" => {
            init_logging(log::LevelFilter::Warn);
            discovery::command::run_cli(rest)
        }
        "tstat" => {
            init_logging(log::LevelFilter::Warn);
            tstat::run(rest)
        }
        "db" => {
            init_logging(log::LevelFilter::Warn);
            db::run(rest)
        }
        "--version" | "-V" | "version" => {
            println!("thermostat-server {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            EXIT_OK
        }
        other => usage_error(&format!("unknown command {other:?}"), USAGE),
    }
}

fn usage_error(message: &str, usage: &str) -> i32 {
    eprintln!("thermostat-server: {message}\n\n{usage}");
    EXIT_USAGE
}

fn run_command(args: Vec<OsString>) -> i32 {
    let mut config_path: Option<PathBuf> = None;
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        match parser.next() {
            Ok(Some(Long("config") | Short('c'))) => match parser.value() {
                Ok(value) => config_path = Some(PathBuf::from(value)),
                Err(error) => return usage_error(&error.to_string(), USAGE),
            },
            Ok(Some(Long("help"))) => {
                println!("{USAGE}");
                return EXIT_OK;
            }
            Ok(Some(other)) => return usage_error(&other.unexpected().to_string(), USAGE),
            Ok(None) => break,
            Err(error) => return usage_error(&error.to_string(), USAGE),
        }
    }
    let Some(path) = config_path else {
        return usage_error("run needs --config FILE", USAGE);
    };

    if let Err(error) = std::fs::read(&path) {
        eprintln!("{}: cannot read the file: {error}", path.display());
        return config::EX_NOINPUT;
    }
    init_logging(log::LevelFilter::Info);
    let loaded = match config::load(&path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for problem in &errors.problems {
                eprintln!("{}: {problem}", path.display());
            }
            return EXIT_CONFIG;
        }
    };
    for warning in &loaded.warnings {
        log::warn!("{}: {warning}", path.display());
    }
    set_log_level(loaded.config.log.level);

    let options = daemon::RunOptions {
        handle_signals: true,
        ..Default::default()
    };
    match daemon::run(&loaded.config, options) {
        Ok(()) => EXIT_OK,
        Err(error) => {
            log::error!("{error}");
            EXIT_FAILURE
        }
    }
}

fn check_config_command(args: Vec<OsString>) -> i32 {
    match args.as_slice() {
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{CHECK_CONFIG_USAGE}");
            EXIT_OK
        }
        [path] => config::check_config_command(&PathBuf::from(path)),
        _ => usage_error("check-config needs exactly one FILE", CHECK_CONFIG_USAGE),
    }
}

fn demo_command(args: Vec<OsString>) -> i32 {
    let mut options = demo::DemoOptions::default();
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(error) => return usage_error(&error.to_string(), DEMO_USAGE),
        };
        let parsed = match arg {
            Long("database-url") => parser.value().map(|value| {
                options.database_url = Some(value.string().unwrap_or_default());
            }),
            Long("thermostats") => parse_number(&mut parser, "--thermostats", 1..=500)
                .map(|count| options.thermostats = count as usize),
            Long("duration") => parse_number(&mut parser, "--duration", 1..=31_536_000)
                .map(|seconds| options.duration = Some(Duration::from_secs(seconds))),
            Long("api-listen") => parse_socket_address(&mut parser, "--api-listen")
                .map(|address| options.api_listen = address),
            Long("help") | Short('h') => {
                println!("{DEMO_USAGE}");
                return EXIT_OK;
            }
            other => Err(other.unexpected()),
        };
        if let Err(error) = parsed {
            return usage_error(&error.to_string(), DEMO_USAGE);
        }
    }

    init_logging(log::LevelFilter::Info);
    demo::run(options)
}

fn parse_number(
    parser: &mut lexopt::Parser,
    option: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, lexopt::Error> {
    let text = parser.value()?.string()?;
    match text.parse::<u64>() {
        Ok(number) if range.contains(&number) => Ok(number),
        _ => Err(lexopt::Error::Custom(
            format!(
                "invalid {option} {text:?}: expected a whole number from {} to {}",
                range.start(),
                range.end()
            )
            .into(),
        )),
    }
}

fn parse_socket_address(
    parser: &mut lexopt::Parser,
    option: &str,
) -> Result<SocketAddr, lexopt::Error> {
    let text = parser.value()?.string()?;
    text.parse().map_err(|_| {
        lexopt::Error::Custom(
            format!("invalid {option} {text:?}: expected IP:PORT such as 127.0.0.1:8000").into(),
        )
    })
}

/// Starts logging to stderr. `RUST_LOG`, when set to a level name, wins over `level`.
fn init_logging(level: log::LevelFilter) {
    let logger = simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Trace)
        .with_utc_timestamps()
        .with_module_level("hyper", log::LevelFilter::Warn)
        .with_module_level("tokio_postgres", log::LevelFilter::Warn)
        .with_module_level("postgres", log::LevelFilter::Warn)
        .with_module_level("tiny_http", log::LevelFilter::Warn);
    if logger.init().is_err() {
        return;
    }
    set_log_level(level);
}

fn set_log_level(level: log::LevelFilter) {
    let from_env = std::env::var("RUST_LOG").ok();
    let parsed = from_env.as_deref().and_then(|text| text.parse().ok());
    if let (Some(text), None) = (&from_env, parsed) {
        log::warn!(
            "ignoring RUST_LOG={text:?}: expected a level name (error, warn, info, debug or trace)"
        );
    }
    log::set_max_level(parsed.unwrap_or(level));
}
