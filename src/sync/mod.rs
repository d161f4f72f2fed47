//! The public server sync, protocol version 1. Registration, state changes, the status
//! snapshot and minute rows go up, and commands come down with their results going up.
//!
//! Everything that must not be lost waits in PostgreSQL until the server responds 2xx.
//! State changes wait in `sync_outbox`, queued in the transaction that stores the
//! reading. Minute rows wait behind the `minute` checkpoint, and command results in
//! `sync_result_outbox`.
//! Each stream is its own task on the executor with its own backoff. The decisions are
//! plain functions in [`decide`], [`command`] and [`protocol`]; the tasks in `upload`
//! and `commands` are the thin shell around them. The site token travels only in the
//! `X-Site-Token` header and never reaches a log line.

mod client;
pub mod command;
mod commands;
pub mod decide;
pub mod protocol;
pub mod status;
mod upload;

use std::sync::Arc;
use std::time::Duration;

pub use commands::{DiscoveryRunner, ProgressFn};
pub use status::{LinkReport, LinkStatus};

use crate::clock::Clock;
use crate::config::Secret;
use crate::net::{HttpClient, NetError, TlsOptions};
use crate::poll::Registry;
use crate::shutdown::Shutdown;
use crate::store::StoreHandle;
use client::{Stream, SyncClient};

/// Settings of the sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// `https://host[:port]`; the paths go under `/api/v1/sites/{site_id}`.
    pub base_url: String,
    pub site_id: String,
    pub token: Secret,
    pub tls: TlsOptions,
    /// Deadline of one request, connect to last byte.
    pub request_timeout: Duration,
    /// Maximum time a state change waits for nine more before it is sent.
    pub state_change_wait: Duration,
    pub snapshot_interval: Duration,
    pub minute_interval: Duration,
    pub command_interval: Duration,
    pub results_interval: Duration,
    /// How often the thermostat list is compared with the one last registered.
    pub register_interval: Duration,
    /// First and maximum backoff after a 429 or 5xx response, or none.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// Wait after 401 or 403, which is also the interval of the auth failure log line.
    pub auth_retry: Duration,
}

impl SyncOptions {
    /// Returns options with the protocol's intervals: state changes within 5 s, a
    /// snapshot every 30 s, minute rows every 60 s, commands every 10 s and results every
    /// 2 s. Requests get 30 s, backoff runs from 1 s to 5 minutes, and an auth failure
    /// waits 5 minutes.
    pub fn new(base_url: &str, site_id: &str, token: Secret) -> Self {
        Self {
            base_url: base_url.to_string(),
            site_id: site_id.to_string(),
            token,
            tls: TlsOptions {
                extra_ca_file: None,
                verify: true,
            },
            request_timeout: Duration::from_secs(30),
            state_change_wait: Duration::from_secs(5),
            snapshot_interval: Duration::from_secs(30),
            minute_interval: Duration::from_secs(60),
            command_interval: Duration::from_secs(10),
            results_interval: Duration::from_secs(2),
            register_interval: Duration::from_secs(10),
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            auth_retry: Duration::from_secs(300),
        }
    }
}

/// Builds the task of one stream: `$stream::new`, then `step` until shutdown, sleeping
/// for the wait that each step returns.
macro_rules! run_stream {
    ($context:expr, $stream:ty) => {{
        let context = $context.clone();
        async move {
            let mut stream = <$stream>::new(&context);
            loop {
                let Some(wait) = context.shutdown.or_stop(stream.step(&context)).await else {
                    return;
                };
                if !context.shutdown.sleep(wait).await {
                    return;
                }
            }
        }
    }};
}

/// The state shared by every sync task.
pub(crate) struct SyncContext {
    client: SyncClient,
    store: StoreHandle,
    options: SyncOptions,
    links: Arc<Registry>,
    discovery: Option<Arc<dyn DiscoveryRunner>>,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
    running: commands::Running,
}

impl SyncContext {
    fn stream(&self, name: &'static str) -> Stream {
        Stream::new(name, self.options.retry_first, self.options.retry_max)
    }

    fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.links.spawn(task);
    }
}

/// A sync ready to start: the HTTP client is built (the CA file read) before the
/// executor runs, because reading a file blocks.
pub struct Sync {
    options: SyncOptions,
    http: HttpClient,
    status: Arc<LinkStatus>,
}

impl Sync {
    /// Builds the HTTP client. Fails when the CA file cannot be read or contains no
    /// certificate. Logs a warning when certificate verification is off.
    pub fn prepare(options: SyncOptions) -> Result<Self, NetError> {
        let http = HttpClient::new(&options.tls)?;
        if !options.tls.verify {
            log::warn!(
                "public_server.ssl_verify is false: the public server's certificate is not \
                 checked, so anyone on the path can read the site token and the data"
            );
        }
        Ok(Self {
            options,
            http,
            status: Arc::default(),
        })
    }

    /// Returns the link state that every request updates, for the local API.
    pub fn link_status(&self) -> Arc<LinkStatus> {
        self.status.clone()
    }

    /// Starts every sync task on the registry's executor.
    pub fn start(
        self,
        store: StoreHandle,
        links: Arc<Registry>,
        discovery: Option<Arc<dyn DiscoveryRunner>>,
        clock: Arc<dyn Clock>,
        shutdown: Shutdown,
    ) {
        let client = SyncClient::new(
            self.http,
            &self.options.base_url,
            &self.options.site_id,
            self.options.token.clone(),
            self.options.request_timeout,
            self.options.auth_retry,
            self.status.clone(),
        );
        log::info!(
            "public server sync on: {}",
            crate::net::redact_url(&client.url(""))
        );
        let context = Arc::new(SyncContext {
            client,
            store,
            options: self.options,
            links,
            discovery,
            clock,
            shutdown,
            running: commands::Running::default(),
        });

        context.spawn(run_stream!(context, upload::Registration));
        context.spawn(run_stream!(context, upload::StateChanges));
        context.spawn(run_stream!(context, upload::Snapshot));
        context.spawn(run_stream!(context, upload::Minutes));
        context.spawn(run_stream!(context, commands::CommandPoll));
        context.spawn(run_stream!(context, commands::Results));
    }
}
