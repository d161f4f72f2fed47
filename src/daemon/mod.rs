//! Start-up, wiring and shutdown of the daemon's parts.
//!
//! Threads: `main` runs the smol executor (polling, onboarding, signals), `store` owns
//! the PostgreSQL connection, `api-N` serve the local API. They share only the health
//! atomics, the shutdown signal and bounded queues.

mod discover;
mod memory;
mod onboard;
pub mod systemd;

use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use async_io::Timer;

use crate::api::access::AccessPolicy;
use crate::api::health::HealthThresholds;
use crate::api::monitor::{self, MonitorContext};
use crate::api::views::config_json;
use crate::api::{ApiServer, ApiState, DiscoveryHook};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::device::LinkOptions;
use crate::health::Health;
use crate::poll::schedule::ScheduleOptions;
use crate::poll::{PollContext, ReadingSink, Registry, StatusBoard};
use crate::reading::{PollFailure, Reading};
use crate::shutdown::Shutdown;
use crate::store::{self, StoreHandle, StoreOptions};
use crate::sync::{DiscoveryRunner, Sync, SyncOptions};
use crate::weather::{Weather, WeatherService, WeatherStatus};

/// Maximum time the store gets at shutdown to write what is buffered.
const STORE_FLUSH_DEADLINE: Duration = Duration::from_secs(3);

/// Offline reports waiting for discovery; more in one burst share a run anyway.
const OFFLINE_REPORTS: usize = 64;

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
    /// Runs the public server's `discover_devices` commands; without one they fail.
    pub discovery: Option<Arc<dyn DiscoveryRunner>>,
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

    // Before the store and the executor start: this reads the CA file.
    let sync = prepare_sync(config)?;

    let store = store::start(store_options(config), clock.clone(), health.clone());
    let weather = Weather::from_config(
        &config.weather,
        config.secrets.weather_api_key.as_ref(),
        clock.clone(),
    );

    // The registry exists before the API starts, because the API controls thermostats
    // through it; the executor only runs once the API is up.
    let executor = Arc::new(smol::Executor::new());
    let (offline_sender, offline_receiver) = async_channel::bounded(OFFLINE_REPORTS);
    let status = Arc::new(StatusBoard::new());
    let context = Arc::new(PollContext {
        sink: Arc::new(store.handle()),
        health: health.clone(),
        clock: clock.clone(),
        schedule: schedule_options(config),
        status: status.clone(),
        outside: weather.cell.clone(),
        shutdown: shutdown.clone(),
        went_offline: Some(offline_sender),
    });
    let registry = Arc::new(Registry::new(
        Arc::downgrade(&executor),
        context.clone(),
        link_options(config),
    ));
    registry.set_policies(config.thermostats.policies.clone());

    let discovery = discover::DiscoveryService {
        store: store.handle(),
        registry: registry.clone(),
        config: config.discovery.clone(),
        options: config.discovery.options(&config.polling),
        shutdown: shutdown.clone(),
        offline: offline_receiver,
        progress: None,
        scanning: Arc::default(),
        defaults: config.defaults,
        time_zone: config.site.time_zone.clone(),
    };
    // The public server's discover_devices command and the local API's scan run the
    // same discovery as the daemon.
    let command_discovery = Arc::new(discover::CommandDiscovery {
        service: discovery.clone(),
    });

    let monitors = MonitorContext {
        health: health.clone(),
        status: status.clone(),
        clock: clock.clone(),
        thresholds: HealthThresholds::for_polling(
            config.polling.interval,
            config.polling.request_timeout,
        ),
        public_server: sync.as_ref().map(Sync::link_status),
        weather: weather.status.clone(),
        shutdown: shutdown.clone(),
    };
    executor.spawn(monitor::run(monitors)).detach();

    let parts = ApiParts {
        store: store.handle(),
        registry: registry.clone(),
        status,
        health: health.clone(),
        clock: clock.clone(),
        weather: weather.status.clone(),
        discovery: discover::api_scan_hook(command_discovery.clone()),
        public_server: sync.as_ref().map(Sync::link_status),
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

    let core = Core {
        executor,
        registry,
        context,
    };
    let services = Services {
        weather: weather.service,
        sync: sync.map(|sync| (sync, options.discovery)),
        discovery,
        command_discovery,
    };
    let result = run_executor(
        config,
        &store.handle(),
        core,
        services,
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

/// The parts built before the API starts, which the executor then runs.
struct Core {
    executor: Arc<smol::Executor<'static>>,
    registry: Arc<Registry>,
    context: Arc<PollContext>,
}

/// The services that run on the executor beside polling.
struct Services {
    weather: Option<WeatherService>,
    /// The public server sync and the discovery runner its commands use, when given.
    sync: Option<(Sync, Option<Arc<dyn DiscoveryRunner>>)>,
    /// The daemon's discovery: start-up, periodic and targeted runs.
    discovery: discover::DiscoveryService,
    /// The same discovery for commands that ask for it.
    command_discovery: Arc<discover::CommandDiscovery>,
}

/// The shared parts that the API reads.
struct ApiParts {
    store: StoreHandle,
    registry: Arc<Registry>,
    status: Arc<StatusBoard>,
    health: Arc<Health>,
    clock: Arc<dyn Clock>,
    weather: Arc<WeatherStatus>,
    discovery: DiscoveryHook,
    public_server: Option<Arc<crate::sync::LinkStatus>>,
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
        weather: parts.weather,
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
        discovery: Some(parts.discovery),
        public_server: parts.public_server,
        control_deadline: config.polling.request_timeout * 2 + CONTROL_SLACK,
    })
}

/// Runs signals, systemd reporting, weather, onboarding, discovery and the sync on the
/// executor until shutdown.
fn run_executor(
    config: &Config,
    store: &StoreHandle,
    core: Core,
    services: Services,
    shutdown: &Shutdown,
    handle_signals: bool,
) -> Result<(), DaemonError> {
    let Core {
        executor,
        registry,
        context,
    } = core;
    let Services {
        weather,
        sync,
        discovery,
        command_discovery,
    } = services;
    let clock = context.clock.clone();

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

    start_systemd_tasks(&executor, config, store, &context);
    executor
        .spawn(memory::trim_periodically(
            shutdown.clone(),
            memory::TRIM_INTERVAL,
        ))
        .detach();
    if let Some(service) = weather {
        executor.spawn(service.run(shutdown.clone())).detach();
    }

    let addresses = config.thermostats.addresses.clone();
    let onboarding = onboard::start_polling(
        store.clone(),
        registry.clone(),
        addresses,
        link_options(config),
        config.defaults,
        shutdown.clone(),
    );
    // Discovery starts once the stored thermostats are polled, so that its checks of
    // their addresses go through their links.
    executor
        .spawn(async move {
            onboarding.await;
            // Onboarding is the heap's peak; give its freed pages back now rather
            // than at the next periodic trim.
            memory::release_free_memory();
            discovery.run().await;
        })
        .detach();

    if let Some((sync, runner)) = sync {
        sync.start(
            store.clone(),
            registry.clone(),
            Some(runner.unwrap_or(command_discovery)),
            clock,
            shutdown.clone(),
        );
    }

    // Let the tasks see the shutdown and end on their own before the executor drops.
    smol::block_on(executor.run(async {
        shutdown.wait().await;
        Timer::after(Duration::from_millis(50)).await;
    }));
    drop(registry);
    Ok(())
}

/// Starts readiness and watchdog reporting when systemd asked for them.
fn start_systemd_tasks(
    executor: &smol::Executor<'static>,
    config: &Config,
    store: &StoreHandle,
    context: &PollContext,
) {
    let notifier = Arc::new(systemd::Notifier::from_env());
    if !notifier.is_active() {
        return;
    }
    let ready = systemd::report_ready(
        notifier.clone(),
        store.clone(),
        context.health.clone(),
        context.shutdown.clone(),
    );
    executor.spawn(ready).detach();

    if let Some(interval) = systemd::watchdog_interval() {
        let limits = progress_limits(config);
        log::info!(
            "petting the systemd watchdog every {} s while polls finish within {} s and the store thread runs within {} s",
            (interval / 2).as_secs_f32(),
            limits.poll.as_secs(),
            limits.store.as_secs()
        );
        let pet = systemd::pet_watchdog(
            notifier,
            interval,
            limits,
            context.health.clone(),
            context.clock.clone(),
            context.shutdown.clone(),
        );
        executor.spawn(pet).detach();
    }
}

/// Returns the maximum gaps between heartbeats that still count as progress: a fleet that is all
/// offline polls once per maximum backoff, and a store thread blocks for at most a
/// connect or statement timeout.
fn progress_limits(config: &Config) -> systemd::ProgressLimits {
    let polling = &config.polling;
    systemd::ProgressLimits {
        poll: polling.max_backoff + polling.request_timeout + polling.interval * 2,
        store: (config.database.connect_timeout * 2).max(Duration::from_secs(60)),
    }
}

async fn stop_on_signal(mut signals: async_signal::Signals, shutdown: Shutdown) {
    use futures_lite::StreamExt;

    if let Some(Ok(signal)) = signals.next().await {
        let name = match signal {
            async_signal::Signal::Term => "SIGTERM",
            async_signal::Signal::Int => "SIGINT",
            _ => "a signal",
        };
        log::info!("received {name}; stopping");
        shutdown.trigger();
    }
}

/// Builds the public server sync when `[public_server]` is configured. A CA file that
/// cannot be used stops the start, because the sync could never succeed.
fn prepare_sync(config: &Config) -> Result<Option<Sync>, DaemonError> {
    let Some(section) = &config.public_server else {
        log::info!("no [public_server] section: the public server sync is off");
        return Ok(None);
    };
    let Some(token) = config.secrets.site_token.clone() else {
        return Err(DaemonError::Startup(format!(
            "[public_server] is configured but {} is not set; set it or remove the section",
            crate::config::SITE_TOKEN_VAR
        )));
    };

    let mut options = SyncOptions::new(&section.base_url, &config.site.site_id, token);
    options.tls.extra_ca_file = section.ca_cert.clone();
    options.tls.verify = section.ssl_verify;
    options.request_timeout = section.request_timeout;
    options.state_change_wait = section.state_change_wait;
    options.snapshot_interval = section.snapshot_interval;
    options.minute_interval = section.minute_interval;
    options.command_interval = section.command_interval;
    options.results_interval = section.results_interval;
    options.retry_max = section.max_backoff;
    options.auth_retry = section.auth_retry;

    Sync::prepare(options)
        .map(Some)
        .map_err(|error| DaemonError::Startup(format!("public server sync: {error}")))
}

pub(crate) fn store_options(config: &Config) -> StoreOptions {
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
    config.polling.link_options()
}
