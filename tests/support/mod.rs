//! Shared helpers for integration tests: a database of its own for every test.
//!
//! With `TEST_DATABASE_URL` set, each test gets a new database on that server. Without it,
//! the first test of the process starts one throwaway cluster and every test creates its
//! own database in it, so tests run in parallel without seeing each other's rows.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

pub mod daemon;
pub mod log_capture;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use thermostat_server::pgtemp::{TempPostgres, TempPostgresOptions};

static CLUSTER: OnceLock<TempPostgres> = OnceLock::new();
static DATABASE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates a database for `test_name` and returns its URL. Panics when no server can be
/// reached or started, because a test without a database cannot run.
pub fn fresh_database_url(test_name: &str) -> String {
    let name = unique_database_name(test_name);
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) => create_on_external_server(&url, &name),
        Err(_) => shared_cluster()
            .create_database(&name)
            .unwrap_or_else(|error| panic!("creating test database {name}: {error}")),
    }
}

/// Starts a cluster for tests, with `fsync=off` because test data need not survive a crash.
pub fn start_test_cluster() -> TempPostgres {
    TempPostgres::start_with(TempPostgresOptions { durable: false })
        .unwrap_or_else(|error| panic!("starting a throwaway PostgreSQL: {error}"))
}

fn shared_cluster() -> &'static TempPostgres {
    CLUSTER.get_or_init(start_test_cluster)
}

/// Builds `t_<test name>_<pid>_<n>`, trimmed to PostgreSQL's 63-byte name limit.
fn unique_database_name(test_name: &str) -> String {
    let number = DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("_{}_{number}", std::process::id());
    let cleaned: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(63 - 2 - suffix.len())
        .collect();
    format!("t_{cleaned}{suffix}")
}

/// Creates `name` on the server behind `url` and returns a URL for the new database.
fn create_on_external_server(url: &str, name: &str) -> String {
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|error| panic!("connecting to TEST_DATABASE_URL: {error}"));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|error| panic!("creating test database {name}: {error}"));
    replace_database_in_url(url, name)
}

/// Replaces the path of a `postgresql://` URL with `/name`, keeping the query string.
fn replace_database_in_url(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |index| index + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |index| scheme_end + index);
    let mut replaced = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    replaced
}

/// Opens a plain client for checks on the test's own thread.
pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|error| panic!("connecting to {url}: {error}"))
}
