//! Tests of the `[public_server]` section of the site configuration: defaults, the site
//! token it requires, and the problems it reports with their keys.

use std::time::Duration;

use thermostat_server::config::{self, ConfigErrors, Loaded, SITE_TOKEN_VAR};

const BASE: &str = "[site]\nsite_id = \"test_site\"\n\n[database]\n\
                    url = \"postgresql://thermostat@127.0.0.1:5432/thermostat\"\n\n";

fn with_token(name: &str) -> Option<String> {
    (name == SITE_TOKEN_VAR).then(|| "site-token-1234".to_string())
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn file(section: &str) -> String {
    format!("{BASE}[public_server]\n{section}\n")
}

fn accept(text: &str) -> Loaded {
    config::parse(text, &with_token).unwrap_or_else(|errors| panic!("rejected: {errors}"))
}

fn reject(text: &str, env: &dyn Fn(&str) -> Option<String>) -> ConfigErrors {
    match config::parse(text, env) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errors) => errors,
    }
}

fn problem_keys(errors: &ConfigErrors) -> Vec<String> {
    errors.problems.iter().map(|p| p.key.clone()).collect()
}

#[test]
fn no_section_turns_sync_off() {
    let loaded = accept(BASE);
    assert!(loaded.config.public_server.is_none());
}

#[test]
fn section_gets_protocol_defaults() {
    let loaded = accept(&file("base_url = \"https://cloud.example.org\""));
    let section = loaded.config.public_server.expect("sync on");
    assert_eq!(section.base_url, "https://cloud.example.org");
    assert!(section.ssl_verify);
    assert_eq!(section.state_change_wait, Duration::from_secs(5));
    assert_eq!(section.snapshot_interval, Duration::from_secs(30));
    assert_eq!(section.minute_interval, Duration::from_secs(60));
    assert_eq!(section.command_interval, Duration::from_secs(10));
    assert_eq!(section.results_interval, Duration::from_secs(2));
}

#[test]
fn section_reads_every_key() {
    let loaded = accept(&file(
        "base_url = \"https://cloud.example.org:8443\"\nssl_verify = true\n\
         request_timeout_seconds = 20\nstate_change_max_wait_seconds = 3\n\
         snapshot_interval_seconds = 60\nminute_interval_seconds = 120\n\
         command_poll_seconds = 15\nresults_interval_seconds = 4\n\
         max_backoff_seconds = 600\nauth_retry_seconds = 120",
    ));
    let section = loaded.config.public_server.expect("sync on");
    assert_eq!(section.request_timeout, Duration::from_secs(20));
    assert_eq!(section.state_change_wait, Duration::from_secs(3));
    assert_eq!(section.minute_interval, Duration::from_secs(120));
    assert_eq!(section.max_backoff, Duration::from_secs(600));
    assert_eq!(section.auth_retry, Duration::from_secs(120));
}

#[test]
fn missing_token_reported() {
    let errors = reject(&file("base_url = \"https://cloud.example.org\""), &no_env);
    assert_eq!(problem_keys(&errors), vec!["public_server"]);
    assert!(errors.problems[0].message.contains(SITE_TOKEN_VAR));
}

#[test]
fn missing_base_url_reported() {
    let errors = reject(&file("ssl_verify = true"), &with_token);
    assert_eq!(problem_keys(&errors), vec!["public_server.base_url"]);
}

#[test]
fn plain_http_to_lan_rejected() {
    let errors = reject(
        &file("base_url = \"http://cloud.example.org\""),
        &with_token,
    );
    assert!(errors.problems[0].message.contains("use https"), "{errors}");
}

#[test]
fn plain_http_to_loopback_accepted() {
    let loaded = accept(&file("base_url = \"http://127.0.0.1:8443\""));
    assert!(loaded.config.public_server.is_some());
}

#[test]
fn base_url_with_path_rejected() {
    let errors = reject(
        &file("base_url = \"https://cloud.example.org/api/v1\""),
        &with_token,
    );
    assert_eq!(problem_keys(&errors), vec!["public_server.base_url"]);
}

#[test]
fn missing_ca_file_reported() {
    let errors = reject(
        &file("base_url = \"https://cloud.example.org\"\nca_cert = \"/nonexistent/ca.pem\""),
        &with_token,
    );
    assert_eq!(problem_keys(&errors), vec!["public_server.ca_cert"]);
}

#[test]
fn verify_off_warns() {
    let loaded = accept(&file(
        "base_url = \"https://cloud.example.org\"\nssl_verify = false",
    ));
    let keys: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, vec!["public_server.ssl_verify"]);
}

#[test]
fn verify_not_boolean_reported() {
    let errors = reject(
        &file("base_url = \"https://cloud.example.org\"\nssl_verify = \"no\""),
        &with_token,
    );
    assert_eq!(problem_keys(&errors), vec!["public_server.ssl_verify"]);
}

#[test]
fn interval_out_of_range_reported() {
    let errors = reject(
        &file("base_url = \"https://cloud.example.org\"\nminute_interval_seconds = 1"),
        &with_token,
    );
    assert_eq!(
        problem_keys(&errors),
        vec!["public_server.minute_interval_seconds"]
    );
}

#[test]
fn unknown_key_reported() {
    let errors = reject(
        &file("base_url = \"https://cloud.example.org\"\nbase_ulr = \"x\""),
        &with_token,
    );
    assert_eq!(problem_keys(&errors), vec!["public_server.base_ulr"]);
}
