//! `thermostat-server discover --config FILE [--json] [--methods LIST] [--register]`:
//! one discovery run that prints every thermostat found. Installers run it on a new
//! site. It registers nothing unless `--register` is given.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lexopt::prelude::*;

use super::{
    Discovered, Method, NoLinks, Progress, ProgressCallback, ProgressTracker, discover,
    parse_methods,
};
use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config, EX_CONFIG, EX_NOINPUT};
use crate::health::Health;
use crate::store::{self, StoreHandle};
use crate::thermostat::ThermostatRecord;

const EXIT_OK: i32 = 0;
const EXIT_FAILURE: i32 = 1;
const EXIT_USAGE: i32 = 2;

/// Time the store gets at the end to finish its work.
const STORE_STOP_DEADLINE: Duration = Duration::from_secs(3);

pub const USAGE: &str = "\
Usage: thermostat-server discover --config FILE [--json] [--methods LIST] [--register]

Runs one discovery and prints each thermostat found: uuid, address, name, model,
firmware version and the method that found it.

Options:
  --config FILE       Site configuration; its [discovery] section sets the group,
                      ranges and deadlines
  --json              Print one JSON object with \"thermostats\" and \"phase_history\"
  --methods LIST      Comma-separated methods from database, udp, tcp
                      (default: discovery.methods of the config)
  --register          Store every thermostat found in the database, keeping the
                      away temperature and first-seen time of known ones";

/// The parsed command line.
#[derive(Debug, Clone, PartialEq)]
struct Arguments {
    config: PathBuf,
    json: bool,
    methods: Option<Vec<Method>>,
    register: bool,
}

/// Runs the command with `args` (after `discover`) and returns the exit status.
pub fn run_cli(args: Vec<OsString>) -> i32 {
    let arguments = match parse_arguments(args) {
        Ok(Some(arguments)) => arguments,
        Ok(None) => {
            println!("{USAGE}");
            return EXIT_OK;
        }
        Err(message) => {
            eprintln!("thermostat-server discover: {message}\n\n{USAGE}");
            return EXIT_USAGE;
        }
    };

    let config = match config::load(&arguments.config) {
        Ok(loaded) => loaded.config,
        Err(errors) => {
            for problem in &errors.problems {
                eprintln!("{}: {problem}", arguments.config.display());
            }
            let unreadable = errors.problems.iter().any(|problem| problem.key.is_empty())
                && !arguments.config.is_file();
            return if unreadable { EX_NOINPUT } else { EX_CONFIG };
        }
    };

    let methods = arguments
        .methods
        .clone()
        .unwrap_or_else(|| config.discovery.methods.clone());
    match run_discovery(&config, &methods, arguments.register) {
        Ok((devices, progress)) => {
            print_devices(&devices, &progress, arguments.json);
            EXIT_OK
        }
        Err(message) => {
            eprintln!("thermostat-server discover: {message}");
            EXIT_FAILURE
        }
    }
}

fn parse_arguments(args: Vec<OsString>) -> Result<Option<Arguments>, String> {
    let mut config = None;
    let mut json = false;
    let mut methods = None;
    let mut register = false;

    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|error| error.to_string())? {
        match arg {
            Long("config") | Short('c') => {
                let value = parser.value().map_err(|error| error.to_string())?;
                config = Some(PathBuf::from(value));
            }
            Long("json") => json = true,
            Long("register") => register = true,
            Long("methods") => {
                let value = parser.value().map_err(|error| error.to_string())?;
                let text = value.string().map_err(|error| error.to_string())?;
                methods = Some(parse_methods(&text)?);
            }
            Long("help") | Short('h') => return Ok(None),
            other => return Err(other.unexpected().to_string()),
        }
    }

    let config = config.ok_or("discover needs --config FILE")?;
    Ok(Some(Arguments {
        config,
        json,
        methods,
        register,
    }))
}

/// Runs discovery, starting the store only when the database is needed.
fn run_discovery(
    config: &Config,
    methods: &[Method],
    register: bool,
) -> Result<(Vec<Discovered>, Progress), String> {
    let needs_database = register || methods.contains(&Method::Database);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let health = Arc::new(Health::new(clock.now().as_second()));
    let store =
        needs_database.then(|| store::start(crate::daemon::store_options(config), clock, health));
    let handle = store.as_ref().map(store::Store::handle);

    let options = config.discovery.options(&config.polling);
    let callback: ProgressCallback = Arc::new(log_progress);
    let result = smol::block_on(async {
        let known = match &handle {
            Some(handle) if methods.contains(&Method::Database) => {
                load_known(handle, config).await?
            }
            _ => Vec::new(),
        };

        let mut tracker = ProgressTracker::new(Some(callback));
        let devices = discover(&options, methods, &known, &NoLinks, &mut tracker).await;
        if let (true, Some(handle)) = (register, &handle) {
            register_all(handle, &devices).await?;
        }
        Ok((devices, tracker.progress().clone()))
    });

    if let Some(store) = store {
        store.shutdown(STORE_STOP_DEADLINE);
    }
    result
}

async fn load_known(store: &StoreHandle, config: &Config) -> Result<Vec<ThermostatRecord>, String> {
    let wait = config.database.connect_timeout + Duration::from_secs(5);
    store.wait_until_migrated(wait).await.map_err(|error| {
        format!("cannot reach the database for the stored addresses: {error}; check database.url, or leave out the database method with --methods udp,tcp")
    })?;
    store
        .load_thermostats()
        .await
        .map_err(|error| format!("cannot load the stored thermostats: {error}"))
}

async fn register_all(store: &StoreHandle, devices: &[Discovered]) -> Result<(), String> {
    for device in devices {
        let record = device.to_record();
        let id = record.id.clone();
        store
            .upsert_thermostat(record)
            .await
            .map_err(|error| format!("cannot register thermostat {id}: {error}"))?;
        log::info!("registered thermostat {id} at {}", device.address);
    }
    Ok(())
}

/// Prints each phase's progress on stderr, so an operator sees a long scan move while
/// stdout keeps only the result.
fn log_progress(progress: &Progress) {
    if let Some(phase) = progress.phase_history.last() {
        eprintln!(
            "discovery {} phase {:?}: {} ({} found, {:.1} s)",
            phase.phase,
            phase.status,
            phase.current_action,
            phase.devices_found,
            phase.elapsed_time
        );
    }
}

fn print_devices(devices: &[Discovered], progress: &Progress, json: bool) {
    if json {
        let thermostats: Vec<serde_json::Value> = devices.iter().map(Discovered::to_json).collect();
        let output = serde_json::json!({
            "thermostats": thermostats,
            "phase_history": progress.phase_history,
        });
        println!("{output}");
        return;
    }

    if devices.is_empty() {
        eprintln!("no thermostats found");
        return;
    }
    println!(
        "{:<14} {:<22} {:<24} {:<20} {:<10} METHOD",
        "UUID", "ADDRESS", "NAME", "MODEL", "FIRMWARE"
    );
    for device in devices {
        let identity = &device.identity;
        println!(
            "{:<14} {:<22} {:<24} {:<20} {:<10} {}",
            identity.sys.uuid.as_str(),
            device.address.to_string(),
            identity.name,
            identity.model,
            identity.sys.fw_version.as_deref().unwrap_or("?"),
            device.method
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Arguments>, String> {
        parse_arguments(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn every_option_parses() {
        let parsed = parse(&[
            "--config",
            "site.toml",
            "--json",
            "--methods",
            "udp,tcp",
            "--register",
        ])
        .expect("valid")
        .expect("not help");
        assert_eq!(parsed.config, PathBuf::from("site.toml"));
        assert!(parsed.json);
        assert_eq!(parsed.methods, Some(vec![Method::Udp, Method::Tcp]));
        assert!(parsed.register);
    }

    #[test]
    fn config_is_required() {
        let error = parse(&["--json"]).expect_err("missing --config");
        assert!(error.contains("--config"), "{error}");
    }

    #[test]
    fn unknown_method_rejected() {
        let error = parse(&["--config", "x", "--methods", "dhcp"]).expect_err("unknown");
        assert!(error.contains("dhcp"), "{error}");
    }

    #[test]
    fn help_returns_none() {
        assert_eq!(parse(&["--help"]), Ok(None));
    }
}
