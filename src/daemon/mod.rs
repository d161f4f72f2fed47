//! Start-up, wiring and shutdown of the daemon's parts.
//!
//! Threads: `main` runs the smol executor (polling, onboarding, signals), `store` owns
//! the PostgreSQL connection, `api-N` serve the local API. They share only the health
//! atomics, the shutdown signal and bounded queues.

mod onboard;

use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use async_io::Timer;

use crate::api::access::AccessPolicy;
use crate::api::health::HealthThresholds;
use crate::api::monitor::{self, MonitorContext};
use crate::api::views::config_json;
use crate::api::{ApiServer, ApiState};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::device::LinkOptions;
use crate::health::Health;
use crate::poll::schedule::ScheduleOptions;
use crate::poll::{PollContext, ReadingSink, Registry, StatusBoard};
use crate::reading::{PollFailure, Reading};
use crate::shutdown::Shutdown;
use crate::store::{self, StoreHandle, StoreOptions};
use crate::weather::OutsideTemperature;

/// Maximum time the store gets at shutdown to write what is buffered.
const STORE_FLUSH_DEADLINE: Duration = Duration::from_secs(3);

/// Number of threads serving the local API. A settings change occupies one for up to its
/// deadline, so reads still have workers while two changes run.
const API_WORKERS: usize = 4;

/// Time a settings change gets beyond two request deadlines: the gaps between its
/// requests and the read-back.
const CONTROL_SLACK: Duration = Duration::from_secs(10);

/// Options for one run of the daemon.
#[derive(Default)]
pub struct RunOptions {
    /// An already bound API listener (tests bind port 0); otherwise `api.listen` is bound.
    pub api_listener: Option<TcpListener>,
    /// Stops the daemon when triggered.
    pub shutdown: Shutdown,
    /// Turn SIGTERM and SIGINT into a shutdown.
    pub handle_signals: bool,
}

/// An error that stops the daemon from running.
#[derive(Debug)]
pub enum DaemonError {
    /// The API address could not be bound.
    Bind {
        address: String,
        error: std::io::Error,
    },
    /// A thread or signal handler could not be started.
    Startup(String),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind { address, error } => write!(
                f,
                "cannot listen on {address} for the local API: {error}; \
                 stop the other program on that port or set api.listen to a free address"
            ),
            Self::Startup(message) => write!(f, "cannot start: {message}"),
        }
    }
}

impl std::error::Error for DaemonError {}

impl ReadingSink for StoreHandle {
    fn submit_reading(&self, reading: Reading) {
        StoreHandle::submit_reading(self, reading);
    }

    fn submit_failure(&self, failure: PollFailure) {
        StoreHandle::submit_failure(self, failure);
    }
}

/// Runs the daemon until `options.shutdown` is triggered, then flushes and stops.
pub fn run(config: &Config, options: RunOptions) -> Result<(), DaemonError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let health = Arc::new(Health::new(clock.now().as_second()));
    let shutdown = options.shutdown.clone();
    log::info!(
        "thermostat-server {} starting for site {}",
        env!("CARGO_PKG_VERSION"),
        config.site.site_id
    );

    let listener = match options.api_listener {
        Some(listener) => listener,
        None => bind_api(config)?,
    };

    let store = store::start(store_options(config), clock.clone(), health.clone());
    let status = Arc::new(StatusBoard::new());
    let executor = Arc::new(smol::Executor::new());
    let context = PollContext {
        sink: Arc::new(store.handle()),
        health: health.clone(),
        clock: clock.clone(),
        schedule: schedule_options(config),
        status: status.clone(),
        outside: Arc::new(OutsideTemperature::disabled()),
        shutdown: shutdown.clone(),
    };
    let registry = Arc::new(Registry::new(
        Arc::downgrade(&executor),
        Arc::new(context),
        link_options(config),
    ));

    let monitors = MonitorContext {
        health: health.clone(),
        status: status.clone(),
        clock: clock.clone(),
        thresholds: HealthThresholds::for_polling(
            config.polling.interval,
            config.polling.request_timeout,
        ),
        shutdown: shutdown.clone(),
    };
    executor.spawn(monitor::run(monitors)).detach();

    let parts = ApiParts {
        store: store.handle(),
        registry: registry.clone(),
        status,
        health: health.clone(),
        clock: clock.clone(),
    };
    let api = api_state(config, &listener, parts).and_then(|state| {
        ApiServer::start(listener, Arc::new(state), API_WORKERS, shutdown.clone())
            .map_err(|error| DaemonError::Startup(error.to_string()))
    });
    let api = match api {
        Ok(api) => api,
        Err(error) => {
            store.shutdown(STORE_FLUSH_DEADLINE);
            return Err(error);
        }
    };

    let result = run_executor(
        config,
        &store.handle(),
        executor,
        registry,
        &shutdown,
        options.handle_signals,
    );

    shutdown.trigger();
    let report = store.shutdown(STORE_FLUSH_DEADLINE);
    if report.unwritten > 0 {
        log::warn!(
            "store stopped with {} reading(s) and failure(s) not written: PostgreSQL did not take them within {} s",
            report.unwritten,
            STORE_FLUSH_DEADLINE.as_secs()
        );
    } else if report.timed_out {
        log::warn!(
            "the store thread did not stop within {} s; leaving it",
            STORE_FLUSH_DEADLINE.as_secs()
        );
    } else {
        log::info!(
            "store stopped: {} readings and {} poll failures written since start, {} dropped",
            report.readings_written,
            report.failures_written,
            report.dropped
        );
    }
    api.join();
    log::info!("thermostat-server stopped");
    result
}

fn bind_api(config: &Config) -> Result<TcpListener, DaemonError> {
    let address = config.api.listen;
    TcpListener::bind(address).map_err(|error| DaemonError::Bind {
        address: address.to_string(),
        error,
    })
}

/// The shared parts that the API reads.
struct ApiParts {
    store: StoreHandle,
    registry: Arc<Registry>,
    status: Arc<StatusBoard>,
    health: Arc<Health>,
    clock: Arc<dyn Clock>,
}

/// Builds the API's state: access rules from `[api]` and the token, the redacted config.
fn api_state(
    config: &Config,
    listener: &TcpListener,
    parts: ApiParts,
) -> Result<ApiState, DaemonError> {
    let bound = listener.local_addr().map_err(|error| {
        DaemonError::Startup(format!("cannot read the API listener's address: {error}"))
    })?;
    let token = config.secrets.api_token.clone();
    Ok(ApiState {
        health: parts.health,
        clock: parts.clock,
        thresholds: HealthThresholds::for_polling(
            config.polling.interval,
            config.polling.request_timeout,
        ),
        store: parts.store,
        registry: parts.registry,
        status: parts.status,
        access: AccessPolicy::new(&config.api, bound, token),
        site_id: config.site.site_id.clone(),
        site_name: config.site.name.clone(),
        time_zone: config.site.time_zone.clone(),
        listen: config.api.listen,
        config_view: config_json(config),
        discovery: None,
        control_deadline: config.polling.request_timeout * 2 + CONTROL_SLACK,
    })
}

/// Runs polling and onboarding on the executor until shutdown.
fn run_executor(
    config: &Config,
    store: &StoreHandle,
    executor: Arc<smol::Executor<'static>>,
    registry: Arc<Registry>,
    shutdown: &Shutdown,
    handle_signals: bool,
) -> Result<(), DaemonError> {
    if handle_signals {
        let signals =
            async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
                .map_err(|error| {
                    DaemonError::Startup(format!("cannot watch SIGTERM and SIGINT: {error}"))
                })?;
        executor
            .spawn(stop_on_signal(signals, shutdown.clone()))
            .detach();
    }

    let addresses = config.thermostats.addresses.clone();
    let startup = onboard::start_polling(
        store.clone(),
        registry.clone(),
        addresses,
        link_options(config),
        shutdown.clone(),
    );
    executor.spawn(startup).detach();

    // Let the tasks see the shutdown and end on their own before the executor drops.
    smol::block_on(executor.run(async {
        shutdown.wait().await;
        Timer::after(Duration::from_millis(50)).await;
    }));
    drop(registry);
    Ok(())
}

async fn stop_on_signal(mut signals: async_signal::Signals, shutdown: Shutdown) {
    use futures_lite::StreamExt;

    if let Some(Ok(signal)) = signals.next().await {
        log::info!("received {signal:?}; stopping");
        shutdown.trigger();
    }
}

fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        url: config.database.url.clone(),
        password: config
            .secrets
            .database_password
            .as_ref()
            .map(|secret| secret.expose().to_string()),
        buffer_limit: config.database.buffer_readings,
        flush_interval: config.database.flush_interval,
        connect_timeout: config.database.connect_timeout,
        rollup_grace: Duration::from_secs(5),
        raw_retention_days: config.retention.raw_days,
        minute_retention_days: config.retention.minute_days,
        retention_hour: config.retention.hour,
        time_zone: config.site.time_zone.clone(),
    }
}

fn schedule_options(config: &Config) -> ScheduleOptions {
    ScheduleOptions {
        interval: config.polling.interval,
        max_backoff: config.polling.max_backoff,
        offline_after_failures: config.polling.offline_after_failures,
    }
}

fn link_options(config: &Config) -> LinkOptions {
    LinkOptions {
        request_timeout: config.polling.request_timeout,
        min_request_gap: config.polling.min_request_gap,
    }
}
