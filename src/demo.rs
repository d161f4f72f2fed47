//! `thermostat-server demo`: the daemon against a simulated fleet and a throwaway
//! PostgreSQL, for a first look and for end-to-end checks. Everything listens on
//! 127.0.0.1.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::cli::{EXIT_FAILURE, EXIT_OK};
use crate::config::Config;
use crate::daemon::{self, RunOptions};
use crate::pgtemp::TempPostgres;
use crate::shutdown::Shutdown;
use crate::simulator::{Fault, Fleet, FleetOptions, Latency, ModelProfile};
use crate::thermostat::DeviceAddress;

/// The options of `demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Use this database instead of starting a throwaway one.
    pub database_url: Option<String>,
    pub thermostats: usize,
    /// Stop after this long; `None` runs until a signal.
    pub duration: Option<Duration>,
    pub api_listen: SocketAddr,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            database_url: None,
            thermostats: 20,
            duration: None,
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
        }
    }
}

/// Runs the demo and returns the exit status.
pub fn run(options: DemoOptions) -> i32 {
    // Claim the API port first, so a second demo fails at once with the fix.
    let listener = match TcpListener::bind(options.api_listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "thermostat-server demo: cannot listen on {} for the local API: {error}; \
                 stop the other demo or pass --api-listen 127.0.0.1:PORT with a free port",
                options.api_listen
            );
            return EXIT_FAILURE;
        }
    };

    let (throwaway, url) = match database(&options) {
        Ok(database) => database,
        Err(message) => {
            eprintln!("thermostat-server demo: {message}");
            return EXIT_FAILURE;
        }
    };

    let fleet = match Fleet::start(fleet_options(options.thermostats)) {
        Ok(fleet) => fleet,
        Err(error) => {
            eprintln!("thermostat-server demo: cannot start the simulated thermostats: {error}");
            return EXIT_FAILURE;
        }
    };
    let addresses: Vec<DeviceAddress> = fleet
        .devices()
        .iter()
        .map(|device| DeviceAddress::new(device.address()))
        .collect();
    log::info!(
        "demo: {} simulated thermostats on 127.0.0.1, the last one ({}) faulty",
        addresses.len(),
        addresses
            .last()
            .map(ToString::to_string)
            .unwrap_or_default()
    );

    let mut config = Config::new("demo", &url);
    config.thermostats.addresses = addresses;
    config.api.listen = options.api_listen;

    let shutdown = Shutdown::new();
    if let Some(duration) = options.duration {
        stop_after(duration, shutdown.clone());
    }
    let api_address = listener.local_addr().unwrap_or(options.api_listen);
    log::info!("demo: health check at http://{api_address}/api/system/health");

    let result = daemon::run(
        &config,
        RunOptions {
            shutdown,
            handle_signals: true,
            api_listener: Some(listener),
            ..RunOptions::default()
        },
    );
    fleet.stop();
    print_summary(&url);
    drop(throwaway);

    match result {
        Ok(()) => EXIT_OK,
        Err(error) => {
            log::error!("{error}");
            EXIT_FAILURE
        }
    }
}

/// Returns the database to use, starting a throwaway server when no URL was given.
fn database(options: &DemoOptions) -> Result<(Option<TempPostgres>, String), String> {
    if let Some(url) = &options.database_url {
        check_database(url)?;
        return Ok((None, url.clone()));
    }
    let server = TempPostgres::start().map_err(|error| error.to_string())?;
    let url = server
        .create_database("thermostat")
        .map_err(|error| format!("cannot create the demo database: {error}"))?;
    log::info!("demo: throwaway PostgreSQL at {}", server.url("thermostat"));
    Ok((Some(server), url))
}

/// Connects once to `url`, so that a wrong URL stops the demo at once instead of
/// leaving the daemon waiting for a database that never comes.
fn check_database(url: &str) -> Result<(), String> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|error| format!("invalid --database-url: {error}"))?;
    config.connect_timeout(Duration::from_secs(5));
    match config.connect(postgres::NoTls) {
        Ok(_) => Ok(()),
        Err(error) => Err(format!(
            "cannot connect to the database given with --database-url: {}",
            crate::store::describe(&error)
        )),
    }
}

/// Returns a realistic fleet whose last thermostat times out now and then and sends `-1`. The
/// CT80 V2.34T profile is left out because it replies to `/tstat` after 16 s, so a
/// short demo would show few readings from it.
fn fleet_options(count: usize) -> FleetOptions {
    let models = vec![
        ModelProfile::Ct50,
        ModelProfile::Ct30,
        ModelProfile::Ct80RevB,
        ModelProfile::Ct50V109,
    ];
    let mut options = FleetOptions {
        count,
        latency: Latency::Realistic,
        models,
        ..FleetOptions::default()
    };
    options.faults.push((
        count.saturating_sub(1),
        Fault::Flaky {
            hang_probability: 0.3,
            negative_one_probability: 0.3,
        },
    ));
    options
}

fn stop_after(duration: Duration, shutdown: Shutdown) {
    let spawned = std::thread::Builder::new()
        .name("demo-timer".into())
        .spawn(move || {
            std::thread::sleep(duration);
            log::info!("demo: {} s have passed; stopping", duration.as_secs());
            shutdown.trigger();
        });
    if let Err(error) = spawned {
        log::error!("demo: cannot start the --duration timer, stop with Ctrl-C: {error}");
    }
}

/// Prints what the demo stored, so the run can be judged without a SQL client.
fn print_summary(url: &str) {
    let summary = || -> Result<String, postgres::Error> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        let count = |client: &mut postgres::Client, sql: &str| -> Result<i64, postgres::Error> {
            Ok(client.query_one(sql, &[])?.get(0))
        };
        Ok(format!(
            "demo summary: thermostats {}, raw readings {}, poll failures {}, minute rows {}",
            count(&mut client, "SELECT count(*) FROM thermostats")?,
            count(&mut client, "SELECT count(*) FROM raw_readings")?,
            count(&mut client, "SELECT count(*) FROM poll_failures")?,
            count(&mut client, "SELECT count(*) FROM minute_readings")?,
        ))
    };
    match summary() {
        Ok(line) => println!("{line}"),
        Err(error) => log::warn!("demo: cannot read the summary from PostgreSQL: {error}"),
    }
}
