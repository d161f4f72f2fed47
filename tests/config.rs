//! Tests of the configuration loader: the shipped files under `board/`, every kind of
//! problem it reports, secrets and the env file, and the `check-config` exit codes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use thermostat_server::config::{
    self, API_TOKEN_VAR, Config, ConfigErrors, DB_PASSWORD_VAR, EX_CONFIG, EX_NOINPUT, Loaded,
    Problem, SITE_TOKEN_VAR, Secret, WEATHER_API_KEY_VAR,
};
use thermostat_server::desired::Policy;

const SITE: &str = "site_id = \"test_site\"";
const DATABASE_URL: &str = "postgresql://thermostat@127.0.0.1:5432/thermostat";
const DATABASE: &str = "url = \"postgresql://thermostat@127.0.0.1:5432/thermostat\"";
const TOKEN: &str = "api-token-7f3a9c";
const PASSWORD: &str = "pg-password-51e0";

// ---------------------------------------------------------------------------------------
// Helpers

fn no_env(_: &str) -> Option<String> {
    None
}

/// Returns an environment lookup that finds only the variables in `pairs`.
fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }
}

/// Builds a valid file with `line` added to `section`.
fn config_with(section: &str, line: &str) -> String {
    let mut site = SITE.to_string();
    let mut database = DATABASE.to_string();
    let mut other = String::new();

    match section {
        "site" => site = format!("{site}\n{line}"),
        "database" => database = format!("{database}\n{line}"),
        _ => other = format!("[{section}]\n{line}\n"),
    }
    format!("[site]\n{site}\n\n[database]\n{database}\n\n{other}")
}

fn minimal() -> String {
    format!("[site]\n{SITE}\n\n[database]\n{DATABASE}\n")
}

fn accept(text: &str) -> Loaded {
    match config::parse(text, &no_env) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("expected no problems in\n{text}\nfound {errors}"),
    }
}

fn reject(text: &str) -> ConfigErrors {
    config::parse(text, &no_env).expect_err("expected problems")
}

fn problem_keys(errors: &ConfigErrors) -> Vec<&str> {
    errors
        .problems
        .iter()
        .map(|problem| problem.key.as_str())
        .collect()
}

fn find<'e>(errors: &'e ConfigErrors, key: &str) -> &'e Problem {
    errors
        .problems
        .iter()
        .find(|problem| problem.key == key)
        .unwrap_or_else(|| panic!("no problem on {key} in {errors}"))
}

/// A file under the temporary folder, deleted on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "thermostat-config-test-{}-{unique}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("temporary file is writable");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn set_mode(&self, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let permissions = std::fs::Permissions::from_mode(mode);
        std::fs::set_permissions(&self.0, permissions).expect("chmod works on own file");
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn board_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("board")
        .join(relative);
    std::fs::read_to_string(&path).expect("shipped board file is readable")
}

// ---------------------------------------------------------------------------------------
// Shipped files

#[test]
fn template_parses_cleanly() {
    let loaded = accept(&board_file("config.template.toml"));
    assert_eq!(loaded.config.site.site_id, "cape_home");
}

#[test]
fn template_sets_every_default() {
    let loaded = accept(&board_file("config.template.toml"));
    let defaults = Config::new("cape_home", DATABASE_URL);
    assert_eq!(loaded.config.polling, defaults.polling);
    assert_eq!(loaded.config.retention, defaults.retention);
    assert_eq!(loaded.config.api, defaults.api);
    assert_eq!(loaded.config.log, defaults.log);
    assert_eq!(loaded.config.thermostats, defaults.thermostats);
    assert_eq!(
        loaded.config.database.buffer_readings,
        defaults.database.buffer_readings
    );
    assert_eq!(
        loaded.config.database.flush_interval,
        defaults.database.flush_interval
    );
    assert_eq!(
        loaded.config.database.connect_timeout,
        defaults.database.connect_timeout
    );
}

#[test]
fn cape_site_parses_cleanly() {
    let loaded = accept(&board_file("sites/cape.toml"));
    assert_eq!(loaded.config.thermostats.addresses.len(), 5);
}

#[test]
fn fram_site_parses_cleanly() {
    let loaded = accept(&board_file("sites/fram.toml"));
    assert_eq!(loaded.config.polling.interval, Duration::from_secs(15));
}

#[test]
fn nh_site_parses_with_api_token() {
    let env = env_of(&[(API_TOKEN_VAR, TOKEN)]);
    let result = config::parse(&board_file("sites/nh.toml"), &env);
    let loaded = result.unwrap_or_else(|errors| panic!("nh.toml: {errors}"));
    assert_eq!(loaded.config.thermostats.addresses.len(), 3);
}

#[test]
fn nh_site_needs_api_token() {
    let errors = reject(&board_file("sites/nh.toml"));
    assert_eq!(problem_keys(&errors), ["api.listen"]);
}

#[test]
fn secrets_example_parses_cleanly() {
    let text = board_file("secrets.env.example");
    let (values, problems) = config::parse_env_file(&text, Path::new("secrets.env.example"));
    assert_eq!(problems, []);
    for name in [
        DB_PASSWORD_VAR,
        SITE_TOKEN_VAR,
        WEATHER_API_KEY_VAR,
        API_TOKEN_VAR,
    ] {
        assert!(values.contains_key(name), "{name} missing from the example");
    }
}

// ---------------------------------------------------------------------------------------
// Defaults and structure

#[test]
fn minimal_file_takes_defaults() {
    let loaded = accept(&minimal());
    let defaults = Config::new("test_site", DATABASE_URL);
    assert_eq!(loaded.config.polling, defaults.polling);
    assert_eq!(loaded.config.retention, defaults.retention);
    assert_eq!(loaded.config.api, defaults.api);
    assert_eq!(loaded.config.log, defaults.log);
}

#[test]
fn minimal_file_has_no_warnings() {
    let loaded = accept(&minimal());
    assert_eq!(loaded.warnings, []);
}

#[test]
fn name_defaults_to_site_id() {
    let loaded = accept(&minimal());
    assert_eq!(loaded.config.site.name, "test_site");
}

#[test]
fn default_api_listen_is_loopback() {
    let config = Config::new("x", DATABASE_URL);
    assert!(config.api.listen.ip().is_loopback());
}

#[test]
fn durations_use_their_units() {
    let text = format!(
        "{}\n[polling]\ninterval_seconds = 7\nmin_request_gap_ms = 250\n",
        minimal()
    );
    let polling = accept(&text).config.polling;
    assert_eq!(polling.interval, Duration::from_secs(7));
    assert_eq!(polling.min_request_gap, Duration::from_millis(250));
}

#[test]
fn time_zone_is_read() {
    let loaded = accept(&config_with("site", "time_zone = \"America/New_York\""));
    assert_eq!(
        loaded.config.site.time_zone.iana_name(),
        Some("America/New_York")
    );
}

#[test]
fn unknown_time_zone_is_rejected() {
    let errors = reject(&config_with("site", "time_zone = \"America/NewYork\""));
    let problem = find(&errors, "site.time_zone");
    assert!(problem.message.contains("\"America/NewYork\""), "{problem}");
    assert!(
        problem
            .message
            .contains("did you mean \"America/New_York\""),
        "{problem}"
    );
}

#[test]
fn log_level_is_read() {
    let loaded = accept(&config_with("log", "level = \"debug\""));
    assert_eq!(loaded.config.log.level, log::LevelFilter::Debug);
}

#[test]
fn unknown_log_level_is_rejected() {
    let errors = reject(&config_with("log", "level = \"verbose\""));
    let problem = find(&errors, "log.level");
    assert!(problem.message.contains("found \"verbose\""), "{problem}");
}

// ---------------------------------------------------------------------------------------
// Reporting every problem

#[test]
fn several_mistakes_all_reported() {
    let text = r#"
[site]
site_id = "Cape Home"

[database]
url = "postgresql://thermostat@127.0.0.1/thermostat"
buffer_readings = 5

[polling]
interval_seconds = 0
request_timeout = 25

[thermostats]
addresses = ["10.0.60.21", "thermostat.local"]

[log]
level = 3
"#;
    let errors = reject(text);
    let keys = problem_keys(&errors);
    assert!(keys.contains(&"site.site_id"), "{errors}");
    assert!(keys.contains(&"database.buffer_readings"), "{errors}");
    assert!(keys.contains(&"polling.interval_seconds"), "{errors}");
    assert!(keys.contains(&"polling.request_timeout"), "{errors}");
    assert!(keys.contains(&"thermostats.addresses[1]"), "{errors}");
    assert!(keys.contains(&"log.level"), "{errors}");
    assert_eq!(keys.len(), 6, "{errors}");
}

#[test]
fn problem_display_names_the_key() {
    let errors = reject(&config_with("polling", "interval_seconds = 0"));
    assert_eq!(
        errors.problems[0].to_string(),
        "polling.interval_seconds: must be between 1 and 3600 seconds, found 0"
    );
}

#[test]
fn syntax_error_is_one_problem() {
    let errors = reject("[site]\nsite_id = \"x\"\nname = \n");
    assert_eq!(errors.problems.len(), 1);
}

#[test]
fn syntax_error_has_line_and_column() {
    let errors = reject("[site]\nsite_id = \"x\"\nname = \n");
    let message = &errors.problems[0].message;
    assert!(message.starts_with("line 3, column "), "{message}");
}

#[test]
fn wrong_type_says_what_was_found() {
    let errors = reject(&config_with("polling", "interval_seconds = \"5\""));
    let problem = find(&errors, "polling.interval_seconds");
    assert_eq!(
        problem.message,
        "expected a whole number of seconds, found the string \"5\""
    );
}

#[test]
fn float_for_integer_is_rejected() {
    let errors = reject(&config_with("polling", "interval_seconds = 2.5"));
    let problem = find(&errors, "polling.interval_seconds");
    assert!(problem.message.contains("the float 2.5"), "{problem}");
}

#[test]
fn section_as_plain_value_rejected() {
    let text = format!("polling = 5\n{}", minimal());
    let errors = reject(&text);
    let problem = find(&errors, "polling");
    assert!(problem.message.contains("[polling]"), "{problem}");
}

// ---------------------------------------------------------------------------------------
// Unknown and missing keys

#[test]
fn unknown_key_suggests_close_key() {
    let errors = reject(&config_with("polling", "interval_secs = 5"));
    let problem = find(&errors, "polling.interval_secs");
    assert_eq!(
        problem.message,
        "unknown key; did you mean polling.interval_seconds?"
    );
}

#[test]
fn unknown_key_suggests_unit_suffix() {
    let errors = reject(&config_with("polling", "request_timeout = 25"));
    let problem = find(&errors, "polling.request_timeout");
    assert!(
        problem
            .message
            .contains("did you mean polling.request_timeout_seconds?"),
        "{problem}"
    );
}

#[test]
fn unknown_key_names_its_section() {
    let errors = reject(&config_with("database", "interval_seconds = 5"));
    let problem = find(&errors, "database.interval_seconds");
    assert!(
        problem.message.contains("belongs under [polling]"),
        "{problem}"
    );
}

#[test]
fn unknown_key_without_match() {
    let errors = reject(&config_with("polling", "colour = \"blue\""));
    let problem = find(&errors, "polling.colour");
    assert_eq!(problem.message, "unknown key");
}

#[test]
fn unknown_section_suggests_close_name() {
    let errors = reject(&config_with("poling", "interval_seconds = 5"));
    let problem = find(&errors, "poling");
    assert!(
        problem.message.contains("did you mean [polling]?"),
        "{problem}"
    );
}

#[test]
fn top_level_key_suggests_section() {
    let text = format!("level = \"info\"\n{}", minimal());
    let errors = reject(&text);
    let problem = find(&errors, "level");
    assert!(problem.message.contains("log.level"), "{problem}");
}

#[test]
fn empty_file_misses_required_keys() {
    let errors = reject("");
    assert_eq!(problem_keys(&errors), ["site.site_id", "database.url"]);
}

#[test]
fn missing_key_says_expected_form() {
    let errors = reject("");
    let problem = find(&errors, "site.site_id");
    assert!(
        problem.message.starts_with("required key is missing"),
        "{problem}"
    );
}

#[test]
fn missing_url_reported_alone() {
    let errors = reject(&format!("[site]\n{SITE}\n"));
    assert_eq!(problem_keys(&errors), ["database.url"]);
}

// ---------------------------------------------------------------------------------------
// Values and ranges

#[test]
fn site_id_rejects_upper_case() {
    let errors = reject("[site]\nsite_id = \"Cape\"\n[database]\nurl = \"host=127.0.0.1\"\n");
    assert_eq!(problem_keys(&errors), ["site.site_id"]);
}

#[test]
fn site_id_length_edges() {
    let longest = "a".repeat(64);
    let too_long = "a".repeat(65);
    let text = |id: &str| format!("[site]\nsite_id = \"{id}\"\n[database]\n{DATABASE}\n");

    assert!(config::parse(&text(&longest), &no_env).is_ok());
    assert!(config::parse(&text(&too_long), &no_env).is_err());
    assert!(config::parse(&text(""), &no_env).is_err());
    assert!(config::parse(&text("a"), &no_env).is_ok());
}

#[test]
fn empty_name_is_rejected() {
    let errors = reject(&config_with("site", "name = \"  \""));
    assert_eq!(problem_keys(&errors), ["site.name"]);
}

/// Each bounded integer key with its section and inclusive range.
const RANGES: &[(&str, &str, i64, i64)] = &[
    ("database", "buffer_readings", 100, 1_000_000),
    ("database", "flush_interval_ms", 100, 60_000),
    ("database", "connect_timeout_seconds", 1, 120),
    ("polling", "interval_seconds", 1, 3600),
    ("polling", "request_timeout_seconds", 2, 300),
    ("polling", "min_request_gap_ms", 0, 60_000),
    ("polling", "program_gap_seconds", 0, 120),
    ("polling", "offline_after_failures", 1, 100),
    ("polling", "max_backoff_seconds", 1, 3600),
    ("retention", "raw_days", 1, 3650),
    ("retention", "minute_days", 1, 36_500),
    ("retention", "hour", 0, 23),
];

/// Builds a file with `key = value`. A key bounded by another key gets that key set to
/// its extreme too, so that only the range check can fail.
fn range_case(section: &str, key: &str, value: i64) -> String {
    let line = match key {
        "interval_seconds" => format!("max_backoff_seconds = 3600\n{key} = {value}"),
        "max_backoff_seconds" => format!("interval_seconds = 1\n{key} = {value}"),
        "raw_days" => format!("minute_days = 36500\n{key} = {value}"),
        "minute_days" => format!("raw_days = 1\n{key} = {value}"),
        _ => format!("{key} = {value}"),
    };
    config_with(section, &line)
}

#[test]
fn range_minimum_accepted() {
    for (section, key, min, _) in RANGES {
        let result = config::parse(&range_case(section, key, *min), &no_env);
        assert!(
            result.is_ok(),
            "{section}.{key} = {min}: {:?}",
            result.err()
        );
    }
}

#[test]
fn range_maximum_accepted() {
    for (section, key, _, max) in RANGES {
        let result = config::parse(&range_case(section, key, *max), &no_env);
        assert!(
            result.is_ok(),
            "{section}.{key} = {max}: {:?}",
            result.err()
        );
    }
}

#[test]
fn range_below_minimum_rejected() {
    for (section, key, min, max) in RANGES {
        let errors = reject(&range_case(section, key, min - 1));
        let problem = find(&errors, &format!("{section}.{key}"));
        let expected = format!("must be between {min} and {max}");
        assert!(problem.message.starts_with(&expected), "{problem}");
    }
}

#[test]
fn range_above_maximum_rejected() {
    for (section, key, min, max) in RANGES {
        let errors = reject(&range_case(section, key, max + 1));
        let problem = find(&errors, &format!("{section}.{key}"));
        let expected = format!("found {}", max + 1);
        assert!(
            problem.message.ends_with(&expected),
            "{section}.{key} from {min}: {problem}"
        );
    }
}

#[test]
fn max_backoff_below_interval_rejected() {
    let errors = reject(&config_with(
        "polling",
        "interval_seconds = 60\nmax_backoff_seconds = 30",
    ));
    let problem = find(&errors, "polling.max_backoff_seconds");
    assert_eq!(
        problem.message,
        "must be at least polling.interval_seconds (60), found 30"
    );
}

#[test]
fn max_backoff_equal_to_interval_accepted() {
    accept(&config_with(
        "polling",
        "interval_seconds = 60\nmax_backoff_seconds = 60",
    ));
}

#[test]
fn minute_days_below_raw_days_rejected() {
    let errors = reject(&config_with("retention", "raw_days = 30\nminute_days = 29"));
    let problem = find(&errors, "retention.minute_days");
    assert_eq!(
        problem.message,
        "must be at least retention.raw_days (30), found 29"
    );
}

#[test]
fn short_request_timeout_warns() {
    let loaded = accept(&config_with("polling", "request_timeout_seconds = 19"));
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].key, "polling.request_timeout_seconds");
}

#[test]
fn request_timeout_of_twenty_does_not_warn() {
    let loaded = accept(&config_with("polling", "request_timeout_seconds = 20"));
    assert_eq!(loaded.warnings, []);
}

// ---------------------------------------------------------------------------------------
// Thermostat addresses

#[test]
fn addresses_parsed_with_ports() {
    let loaded = accept(&config_with(
        "thermostats",
        "addresses = [\"127.0.0.2\", \"127.0.0.3:8081\"]",
    ));
    let ports: Vec<u16> = loaded
        .config
        .thermostats
        .addresses
        .iter()
        .map(|address| address.socket_addr().port())
        .collect();
    assert_eq!(ports, [80, 8081]);
}

#[test]
fn duplicate_address_rejected() {
    let errors = reject(&config_with(
        "thermostats",
        "addresses = [\"127.0.0.2\", \"127.0.0.3\", \"127.0.0.2:80\"]",
    ));
    let problem = find(&errors, "thermostats.addresses[2]");
    assert!(
        problem
            .message
            .contains("duplicate of thermostats.addresses[0]"),
        "{problem}"
    );
}

#[test]
fn same_ip_other_port_not_duplicate() {
    accept(&config_with(
        "thermostats",
        "addresses = [\"127.0.0.2:8081\", \"127.0.0.2:8082\"]",
    ));
}

#[test]
fn bad_addresses_each_reported() {
    let errors = reject(&config_with(
        "thermostats",
        "addresses = [\"thermostat.local\", \"127.0.0.2\", \"10.0.60\", 5]",
    ));
    let mut keys = problem_keys(&errors);
    keys.sort();
    assert_eq!(
        keys,
        [
            "thermostats.addresses[0]",
            "thermostats.addresses[2]",
            "thermostats.addresses[3]"
        ]
    );
}

#[test]
fn bad_address_message_shows_value() {
    let errors = reject(&config_with(
        "thermostats",
        "addresses = [\"thermostat.local\"]",
    ));
    let problem = find(&errors, "thermostats.addresses[0]");
    assert!(
        problem.message.contains("\"thermostat.local\""),
        "{problem}"
    );
}

#[test]
fn addresses_must_be_array() {
    let errors = reject(&config_with("thermostats", "addresses = \"127.0.0.2\""));
    let problem = find(&errors, "thermostats.addresses");
    assert!(
        problem.message.starts_with("expected an array"),
        "{problem}"
    );
}

// ---------------------------------------------------------------------------------------
// Database URL

#[test]
fn key_value_url_accepted() {
    let text = format!("[site]\n{SITE}\n[database]\nurl = \"host=127.0.0.1 user=thermostat\"\n");
    accept(&text);
}

#[test]
fn password_in_url_rejected() {
    let url = format!("postgresql://thermostat:{PASSWORD}@127.0.0.1:5432/thermostat");
    let errors = reject(&format!("[site]\n{SITE}\n[database]\nurl = \"{url}\"\n"));
    let problem = find(&errors, "database.url");
    assert!(problem.message.contains(DB_PASSWORD_VAR), "{problem}");
}

#[test]
fn password_in_url_not_echoed() {
    let url = format!("postgresql://thermostat:{PASSWORD}@127.0.0.1:5432/thermostat");
    let errors = reject(&format!("[site]\n{SITE}\n[database]\nurl = \"{url}\"\n"));
    assert!(!errors.to_string().contains(PASSWORD), "{errors}");
}

#[test]
fn password_pair_rejected() {
    let url = format!("host=127.0.0.1 user=thermostat password={PASSWORD}");
    let errors = reject(&format!("[site]\n{SITE}\n[database]\nurl = \"{url}\"\n"));
    assert_eq!(problem_keys(&errors), ["database.url"]);
}

#[test]
fn password_query_parameter_rejected() {
    let url = format!("postgresql://thermostat@127.0.0.1/thermostat?password={PASSWORD}");
    let errors = reject(&format!("[site]\n{SITE}\n[database]\nurl = \"{url}\"\n"));
    assert_eq!(problem_keys(&errors), ["database.url"]);
}

#[test]
fn invalid_url_rejected() {
    let errors = reject(&format!(
        "[site]\n{SITE}\n[database]\nurl = \"host=127.0.0.1 colour=blue\"\n"
    ));
    let problem = find(&errors, "database.url");
    assert!(
        problem.message.starts_with("invalid connection string"),
        "{problem}"
    );
}

#[test]
fn empty_url_rejected() {
    let errors = reject(&format!("[site]\n{SITE}\n[database]\nurl = \"\"\n"));
    assert_eq!(problem_keys(&errors), ["database.url"]);
}

#[test]
fn postgres_config_takes_password_from_secret() {
    let config = Config::new("x", DATABASE_URL);
    let password = Secret::new(PASSWORD);
    let postgres = config
        .database
        .postgres_config(Some(&password))
        .expect("valid URL");
    assert_eq!(postgres.get_password(), Some(PASSWORD.as_bytes()));
}

// ---------------------------------------------------------------------------------------
// Local API

#[test]
fn lan_bind_without_token_rejected() {
    let errors = reject(&config_with("api", "listen = \"0.0.0.0:8000\""));
    let problem = find(&errors, "api.listen");
    assert!(problem.message.contains(API_TOKEN_VAR), "{problem}");
}

#[test]
fn lan_bind_with_token_accepted() {
    let env = env_of(&[(API_TOKEN_VAR, TOKEN)]);
    let result = config::parse(&config_with("api", "listen = \"0.0.0.0:8000\""), &env);
    assert!(result.is_ok(), "{:?}", result.err());
}

#[test]
fn loopback_bind_needs_no_token() {
    accept(&config_with("api", "listen = \"127.0.0.5:9000\""));
}

#[test]
fn ipv6_loopback_needs_no_token() {
    accept(&config_with("api", "listen = \"[::1]:8000\""));
}

#[test]
fn listen_without_port_rejected() {
    let errors = reject(&config_with("api", "listen = \"127.0.0.1\""));
    assert_eq!(problem_keys(&errors), ["api.listen"]);
}

#[test]
fn listen_port_zero_rejected() {
    let errors = reject(&config_with("api", "listen = \"127.0.0.1:0\""));
    assert_eq!(problem_keys(&errors), ["api.listen"]);
}

#[test]
fn allowed_hosts_lower_cased() {
    let loaded = accept(&config_with(
        "api",
        "allowed_hosts = [\"Thermostat.Local\"]",
    ));
    assert_eq!(loaded.config.api.allowed_hosts, ["thermostat.local"]);
}

#[test]
fn allowed_hosts_wildcard_rejected() {
    let errors = reject(&config_with("api", "allowed_hosts = [\"*.local\"]"));
    let problem = find(&errors, "api.allowed_hosts[0]");
    assert!(problem.message.contains("DNS rebinding"), "{problem}");
}

// ---------------------------------------------------------------------------------------
// Env file and secrets

#[test]
fn env_file_handles_quotes_comments_export() {
    let text = "\
# comment
; another comment

THERMOSTAT_DB_PASSWORD=\"with spaces\"
export THERMOSTAT_SITE_TOKEN='single'
THERMOSTAT_WEATHER_API_KEY = plain
THERMOSTAT_API_TOKEN=\"escaped \\\" quote\"
";
    let (values, problems) = config::parse_env_file(text, Path::new("secrets.env"));
    assert_eq!(problems, []);
    assert_eq!(values[DB_PASSWORD_VAR], "with spaces");
    assert_eq!(values[SITE_TOKEN_VAR], "single");
    assert_eq!(values[WEATHER_API_KEY_VAR], "plain");
    assert_eq!(values[API_TOKEN_VAR], "escaped \" quote");
    assert_eq!(values.len(), 4);
}

#[test]
fn env_file_keeps_hash_inside_value() {
    let (values, _) = config::parse_env_file("A=x#y\n", Path::new("secrets.env"));
    assert_eq!(values["A"], "x#y");
}

#[test]
fn env_file_later_line_wins() {
    let (values, _) = config::parse_env_file("A=1\nA=2\n", Path::new("secrets.env"));
    assert_eq!(values["A"], "2");
}

#[test]
fn env_file_malformed_line_has_number() {
    let text = "A=1\n\nhunter2-secret-value\n";
    let (_, problems) = config::parse_env_file(text, Path::new("/etc/x/secrets.env"));
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .message
            .starts_with("/etc/x/secrets.env: line 3: "),
        "{}",
        problems[0]
    );
}

#[test]
fn env_file_malformed_line_not_echoed() {
    let text = "A=1\n\nhunter2-secret-value\n";
    let (_, problems) = config::parse_env_file(text, Path::new("/etc/x/secrets.env"));
    assert!(!problems[0].message.contains("hunter2"), "{}", problems[0]);
}

#[test]
fn env_file_bad_name_not_echoed() {
    let (_, problems) = config::parse_env_file("hunter2 x=1\n", Path::new("secrets.env"));
    assert_eq!(problems.len(), 1);
    assert!(!problems[0].message.contains("hunter2"), "{}", problems[0]);
}

#[test]
fn env_file_unterminated_quote_not_echoed() {
    let (_, problems) = config::parse_env_file("A=\"hunter2\n", Path::new("secrets.env"));
    assert_eq!(problems.len(), 1);
    assert!(!problems[0].message.contains("hunter2"), "{}", problems[0]);
}

fn config_with_env_file(path: &Path) -> String {
    config_with("secrets", &format!("env_file = \"{}\"", path.display()))
}

#[test]
fn secrets_read_from_env_file() {
    let file = TempFile::new("secrets.env", &format!("{DB_PASSWORD_VAR}={PASSWORD}\n"));
    file.set_mode(0o600);
    let loaded = accept(&config_with_env_file(file.path()));
    let password = loaded
        .config
        .secrets
        .database_password
        .expect("password set");
    assert_eq!(password.expose(), PASSWORD);
}

#[test]
fn process_env_wins_over_file() {
    let file = TempFile::new("secrets.env", &format!("{DB_PASSWORD_VAR}=from-file\n"));
    file.set_mode(0o600);
    let env = env_of(&[(DB_PASSWORD_VAR, "from-env")]);
    let loaded = config::parse(&config_with_env_file(file.path()), &env).expect("valid");
    let password = loaded
        .config
        .secrets
        .database_password
        .expect("password set");
    assert_eq!(password.expose(), "from-env");
}

#[test]
fn empty_process_env_falls_back_to_file() {
    let file = TempFile::new("secrets.env", &format!("{DB_PASSWORD_VAR}=from-file\n"));
    file.set_mode(0o600);
    let env = env_of(&[(DB_PASSWORD_VAR, "")]);
    let loaded = config::parse(&config_with_env_file(file.path()), &env).expect("valid");
    let password = loaded
        .config
        .secrets
        .database_password
        .expect("password set");
    assert_eq!(password.expose(), "from-file");
}

#[test]
fn api_token_from_env_file_allows_lan_bind() {
    let file = TempFile::new("secrets.env", &format!("{API_TOKEN_VAR}={TOKEN}\n"));
    file.set_mode(0o600);
    let text = format!(
        "{}\n[api]\nlisten = \"0.0.0.0:8000\"\n[secrets]\nenv_file = \"{}\"\n",
        minimal(),
        file.path().display()
    );
    let result = config::parse(&text, &no_env);
    assert!(result.is_ok(), "{:?}", result.err());
}

#[test]
fn malformed_env_file_is_a_problem() {
    let file = TempFile::new("secrets.env", "A=1\nnot an assignment\n");
    file.set_mode(0o600);
    let errors = reject(&config_with_env_file(file.path()));
    let problem = find(&errors, "secrets.env_file");
    assert!(problem.message.contains(": line 2: "), "{problem}");
}

#[test]
fn missing_env_file_warns() {
    let path = std::env::temp_dir().join("thermostat-config-test-no-such-file.env");
    let loaded = accept(&config_with_env_file(&path));
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].key, "secrets.env_file");
}

#[test]
fn readable_env_file_with_secrets_warns() {
    let file = TempFile::new("secrets.env", &format!("{SITE_TOKEN_VAR}={TOKEN}\n"));
    file.set_mode(0o644);
    let loaded = accept(&config_with_env_file(file.path()));
    assert_eq!(loaded.warnings.len(), 1);
    assert!(
        loaded.warnings[0].message.contains("chmod 600"),
        "{}",
        loaded.warnings[0]
    );
}

#[test]
fn readable_env_file_without_secrets_quiet() {
    let file = TempFile::new("secrets.env", "OTHER=1\n");
    file.set_mode(0o644);
    let loaded = accept(&config_with_env_file(file.path()));
    assert_eq!(loaded.warnings, []);
}

#[test]
fn relative_env_file_read_beside_config() {
    let secrets = TempFile::new("relative.env", &format!("{SITE_TOKEN_VAR}={TOKEN}\n"));
    secrets.set_mode(0o600);
    let name = secrets.path().file_name().expect("file name");
    let text = config_with(
        "secrets",
        &format!("env_file = {:?}", name.to_string_lossy()),
    );
    let file = TempFile::new("config.toml", &text);

    let loaded = config::load_with_env(file.path(), &no_env).expect("valid");
    assert!(loaded.config.secrets.site_token.is_some());
}

#[test]
fn readable_config_with_password_warns() {
    let url = format!("postgresql://thermostat:{PASSWORD}@127.0.0.1/thermostat");
    let file = TempFile::new(
        "config.toml",
        &format!("[site]\n{SITE}\n[database]\nurl = \"{url}\"\n"),
    );
    file.set_mode(0o644);
    let errors = config::load_with_env(file.path(), &no_env).expect_err("password rejected");
    assert_eq!(errors.warnings.len(), 1);
    assert_eq!(errors.warnings[0].key, "database.url");
}

#[test]
fn config_debug_hides_secrets() {
    let file = TempFile::new(
        "secrets.env",
        &format!("{DB_PASSWORD_VAR}={PASSWORD}\n{WEATHER_API_KEY_VAR}=weather-key-99\n"),
    );
    file.set_mode(0o600);
    let env = env_of(&[(API_TOKEN_VAR, TOKEN), (SITE_TOKEN_VAR, "site-token-42")]);
    let loaded = config::parse(&config_with_env_file(file.path()), &env).expect("valid");
    let debug = format!("{:?}", loaded.config);

    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(!debug.contains("site-token-42"), "{debug}");
    assert!(!debug.contains("weather-key-99"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn secret_debug_and_display_redacted() {
    let secret = Secret::new(PASSWORD);
    assert!(!format!("{secret:?}").contains(PASSWORD));
    assert!(!secret.to_string().contains(PASSWORD));
}

// ---------------------------------------------------------------------------------------
// Loading files and check-config

#[test]
fn load_reads_a_file() {
    let file = TempFile::new("config.toml", &minimal());
    let loaded = config::load(file.path()).expect("valid");
    assert_eq!(loaded.config.site.site_id, "test_site");
}

#[test]
fn load_unreadable_file_names_path() {
    let path = std::env::temp_dir().join("thermostat-config-test-missing.toml");
    let errors = config::load(&path).expect_err("missing file");
    assert_eq!(errors.problems.len(), 1);
    let message = &errors.problems[0].message;
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("os error"), "{message}");
}

/// Runs check-config with no secrets in the environment and returns the exit status,
/// stdout and stderr.
fn run_check(path: &Path) -> (i32, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = config::check_config(path, &no_env, &mut out, &mut err);
    let out = String::from_utf8(out).expect("stdout is UTF-8");
    let err = String::from_utf8(err).expect("stderr is UTF-8");
    (status, out, err)
}

#[test]
fn check_config_good_file_exits_zero() {
    let file = TempFile::new("config.toml", &minimal());
    let (status, _, _) = run_check(file.path());
    assert_eq!(status, 0);
}

#[test]
fn check_config_good_file_prints_summary() {
    let file = TempFile::new(
        "config.toml",
        &config_with("thermostats", "addresses = [\"127.0.0.2\"]"),
    );
    let (_, out, _) = run_check(file.path());
    let expected = format!(
        "{}: ok\nsite test_site: 1 thermostat address, API on 127.0.0.1:8000\n",
        file.path().display()
    );
    assert_eq!(out, expected);
}

#[test]
fn check_config_bad_file_exits_78() {
    let file = TempFile::new(
        "config.toml",
        &config_with("polling", "interval_seconds = 0"),
    );
    let (status, _, _) = run_check(file.path());
    assert_eq!(status, EX_CONFIG);
    assert_eq!(EX_CONFIG, 78);
}

#[test]
fn check_config_prints_file_key_message() {
    let file = TempFile::new(
        "config.toml",
        &config_with("polling", "interval_seconds = 0"),
    );
    let (_, out, err) = run_check(file.path());
    let expected = format!(
        "{}: polling.interval_seconds: must be between 1 and 3600 seconds, found 0\n",
        file.path().display()
    );
    assert_eq!(err, expected);
    assert_eq!(out, "");
}

#[test]
fn check_config_missing_file_exits_66() {
    let path = std::env::temp_dir().join("thermostat-config-test-absent.toml");
    let (status, _, err) = run_check(&path);
    assert_eq!(status, EX_NOINPUT);
    assert_eq!(EX_NOINPUT, 66);
    assert!(err.contains("cannot read the file"), "{err}");
}

#[test]
fn check_config_command_exits_zero() {
    let file = TempFile::new("config.toml", &minimal());
    assert_eq!(config::check_config_command(file.path()), 0);
}

// ---------------------------------------------------------------------------------------
// Weather

const ZIP: &str = "zip = \"02601\"";

fn weather_with(line: &str) -> String {
    config_with("weather", &format!("{ZIP}\n{line}"))
}

#[test]
fn template_weather_takes_defaults() {
    let loaded = accept(&board_file("config.template.toml"));
    let defaults = Config::new("cape_home", DATABASE_URL).weather;
    let weather = loaded.config.weather;
    assert_eq!(weather.zip.as_deref(), Some("02601"));
    assert_eq!(weather.base_url, defaults.base_url);
    assert_eq!(weather.refresh, defaults.refresh);
    assert_eq!(weather.max_age, defaults.max_age);
    assert_eq!(weather.fallback_temp, defaults.fallback_temp);
    assert_eq!(weather.retries, defaults.retries);
    assert_eq!(weather.request_timeout, defaults.request_timeout);
}

#[test]
fn weather_defaults_match_documentation() {
    let weather = Config::new("x", DATABASE_URL).weather;
    assert_eq!(weather.base_url, "https://api.openweathermap.org");
    assert_eq!(weather.refresh, Duration::from_secs(600));
    assert_eq!(weather.max_age, Duration::from_secs(1800));
    assert_eq!(weather.retries, 3);
    assert_eq!(weather.request_timeout, Duration::from_secs(10));
}

#[test]
fn weather_absent_leaves_zip_unset() {
    let loaded = accept(&minimal());
    assert_eq!(loaded.config.weather.zip, None);
}

#[test]
fn weather_zip_without_key_warns() {
    let loaded = accept(&config_with("weather", ZIP));
    let keys: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["weather.zip"]);
    assert!(
        loaded.warnings[0].message.contains(WEATHER_API_KEY_VAR),
        "{}",
        loaded.warnings[0]
    );
}

#[test]
fn weather_zip_with_key_has_no_warning() {
    let env = env_of(&[(WEATHER_API_KEY_VAR, "weather-key-0c4d")]);
    let loaded = config::parse(&config_with("weather", ZIP), &env).expect("valid file");
    assert_eq!(loaded.warnings, []);
}

#[test]
fn weather_section_requires_zip() {
    let errors = reject(&config_with("weather", "refresh_minutes = 10"));
    let problem = find(&errors, "weather.zip");
    assert!(problem.message.contains("required"), "{problem}");
}

#[test]
fn weather_zip_needs_five_digits() {
    for zip in ["2601", "026010", "0260A", " 02601"] {
        let errors = reject(&config_with("weather", &format!("zip = \"{zip}\"")));
        let problem = find(&errors, "weather.zip");
        assert!(problem.message.contains("5-digit"), "{zip}: {problem}");
    }
}

#[test]
fn weather_zip_as_integer_rejected() {
    let errors = reject(&config_with("weather", "zip = 12345"));
    let problem = find(&errors, "weather.zip");
    assert!(problem.message.contains("the integer 12345"), "{problem}");
}

#[test]
fn weather_durations_use_minutes() {
    let text =
        weather_with("refresh_minutes = 15\nmax_age_minutes = 45\nrequest_timeout_seconds = 7");
    let weather = accept(&text).config.weather;
    assert_eq!(weather.refresh, Duration::from_secs(15 * 60));
    assert_eq!(weather.max_age, Duration::from_secs(45 * 60));
    assert_eq!(weather.request_timeout, Duration::from_secs(7));
}

#[test]
fn weather_max_age_below_refresh_rejected() {
    let errors = reject(&weather_with("refresh_minutes = 20\nmax_age_minutes = 10"));
    let problem = find(&errors, "weather.max_age_minutes");
    assert!(
        problem
            .message
            .contains("at least weather.refresh_minutes (20)"),
        "{problem}"
    );
}

#[test]
fn weather_fallback_accepts_float() {
    let weather = accept(&weather_with("fallback_temp = 45.5")).config.weather;
    assert_eq!(weather.fallback_temp, Some(45.5));
}

#[test]
fn weather_fallback_accepts_integer() {
    let weather = accept(&weather_with("fallback_temp = -5")).config.weather;
    assert_eq!(weather.fallback_temp, Some(-5.0));
}

#[test]
fn weather_fallback_out_of_range_rejected() {
    let errors = reject(&weather_with("fallback_temp = 278.15"));
    let problem = find(&errors, "weather.fallback_temp");
    assert!(problem.message.contains("between -90 and 140"), "{problem}");
}

#[test]
fn weather_fallback_string_rejected() {
    let errors = reject(&weather_with("fallback_temp = \"45\""));
    let problem = find(&errors, "weather.fallback_temp");
    assert!(problem.message.contains("expected a number"), "{problem}");
}

#[test]
fn weather_retries_range_checked() {
    let errors = reject(&weather_with("retries = 11"));
    let problem = find(&errors, "weather.retries");
    assert!(problem.message.contains("between 0 and 10"), "{problem}");
}

#[test]
fn weather_base_url_loses_trailing_slash() {
    let weather = accept(&weather_with("base_url = \"http://127.0.0.1:8099/\""))
        .config
        .weather;
    assert_eq!(weather.base_url, "http://127.0.0.1:8099");
}

#[test]
fn weather_base_url_with_query_rejected() {
    let errors = reject(&weather_with("base_url = \"https://h.example/?appid=x\""));
    let problem = find(&errors, "weather.base_url");
    assert!(
        problem.message.contains("without a query string"),
        "{problem}"
    );
}

#[test]
fn weather_base_url_needs_http_scheme() {
    let errors = reject(&weather_with("base_url = \"ftp://h.example\""));
    assert_eq!(problem_keys(&errors), ["weather.base_url"]);
}

#[test]
fn weather_api_key_in_file_is_unknown() {
    let errors = reject(&weather_with("api_key = \"abc\""));
    assert_eq!(problem_keys(&errors), ["weather.api_key"]);
}
#[test]
fn template_sets_discovery_defaults() {
    let loaded = accept(&board_file("config.template.toml"));
    assert_eq!(
        loaded.config.discovery,
        thermostat_server::config::DiscoveryConfig::default()
    );
}

// ---------------------------------------------------------------------------------------
// Defaults for new thermostats

#[test]
fn defaults_absent_change_nothing() {
    let loaded = accept(&minimal());
    assert!(loaded.config.defaults.is_empty());
}

#[test]
fn defaults_parsed_and_rounded() {
    let text = config_with(
        "defaults",
        "tmode = 1\nt_heat = 68.3\nfmode = 0\nhold = true",
    );
    let defaults = accept(&text).config.defaults;
    assert_eq!(
        defaults.tmode,
        Some(thermostat_server::reading::Tmode::Heat)
    );
    assert_eq!(defaults.t_heat, Some(68.5));
    assert_eq!(defaults.t_cool, None);
    assert_eq!(
        defaults.fmode,
        Some(thermostat_server::reading::Fmode::Auto)
    );
    assert_eq!(defaults.hold, Some(true));
}

#[test]
fn defaults_invalid_values_reported_by_key() {
    let text = config_with(
        "defaults",
        "tmode = 7\nt_heat = 200\nhold = \"yes\"\nspeed = 3",
    );
    let errors = reject(&text);
    let keys: Vec<&str> = errors
        .problems
        .iter()
        .map(|problem| problem.key.as_str())
        .collect();
    assert!(keys.contains(&"defaults.tmode"), "{keys:?}");
    assert!(keys.contains(&"defaults.t_heat"), "{keys:?}");
    assert!(keys.contains(&"defaults.hold"), "{keys:?}");
    assert!(keys.contains(&"defaults.speed"), "{keys:?}");
}

#[test]
fn drift_policy_and_overrides_parse() {
    let text = config_with(
        "thermostats",
        "policy = \"report\"\npolicy_overrides = { \"5cdad4000001\" = \"enforce\", \"5cdad4000002\" = \"off\" }",
    );
    let policies = accept(&text).config.thermostats.policies;
    assert_eq!(policies.default, Policy::Report);
    assert_eq!(
        policies.overrides.get("5cdad4000001"),
        Some(&Policy::Enforce)
    );
    assert_eq!(policies.overrides.get("5cdad4000002"), Some(&Policy::Off));
    assert_eq!(
        accept(&minimal()).config.thermostats.policies.default,
        Policy::Enforce
    );
}

#[test]
fn invalid_drift_policies_name_the_key() {
    let text = config_with(
        "thermostats",
        "policy = \"always\"\npolicy_overrides = { \"not a uuid\" = \"off\", \"5cdad4000001\" = \"sometimes\", \"5cdad4000002\" = 3 }",
    );
    let errors = reject(&text);
    assert!(
        find(&errors, "thermostats.policy")
            .message
            .contains("\"enforce\", \"report\" or \"off\""),
        "{errors}"
    );
    let keys = problem_keys(&errors);
    assert_eq!(keys.len(), 4, "{errors}");
    assert!(
        keys.iter()
            .any(|key| key.starts_with("thermostats.policy_overrides.")
                && key.contains("not a uuid")),
        "{errors}"
    );
    assert!(
        keys.iter().any(|key| key.contains("5cdad4000001")),
        "{errors}"
    );
    assert!(
        keys.iter().any(|key| key.contains("5cdad4000002")),
        "{errors}"
    );
}
