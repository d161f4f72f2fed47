//! Tests of the fleet benchmark's pure parts: `/proc` parsing, Prometheus text, histogram
//! deltas and percentiles, and the checks of the options. The benchmark itself runs only with `cargo bench`.

#[path = "../benches/fleet/measure.rs"]
#[allow(dead_code)]
mod measure;

use std::time::Duration;

use measure::*;

#[test]
fn proc_stat_fields_counted_after_the_name() {
    // A command name with spaces and a parenthesis must not shift the fields.
    let text = "4242 (thermo (x) srv) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 3 0 100 1000 200";
    assert_eq!(
        parse_proc_stat(text),
        Some(CpuTicks {
            user: 1234,
            system: 567
        })
    );
    assert_eq!(parse_proc_stat("4242 (x) S 1 2"), None);
}

#[test]
fn status_lines_read_in_kib() {
    let text = "Name:\tthermostat-serv\nVmHWM:\t   10240 kB\nVmRSS:\t    8192 kB\n";
    assert_eq!(parse_status_kib(text, "VmRSS"), Some(8192));
    assert_eq!(parse_status_kib(text, "VmHWM"), Some(10240));
    assert_eq!(parse_status_kib(text, "VmSwap"), None);
}

const METRICS: &str = r#"# TYPE thermostat_polls_total counter
thermostat_polls_total{thermostat_id="5cdad4000001"} 12
thermostat_polls_total{thermostat_id="5cdad4000002"} 30
# TYPE thermostat_poll_lateness_seconds histogram
thermostat_poll_lateness_seconds_bucket{le="0.001"} 50
thermostat_poll_lateness_seconds_bucket{le="0.01"} 98
thermostat_poll_lateness_seconds_bucket{le="0.25"} 99
thermostat_poll_lateness_seconds_bucket{le="+Inf"} 100
thermostat_poll_lateness_seconds_sum 3.5
thermostat_poll_lateness_seconds_count 100
thermostat_poll_lateness_seconds_max 0.900000
thermostat_database_writes_total 7
"#;

#[test]
fn metrics_values_and_families() {
    assert_eq!(
        metric_value(METRICS, "thermostat_database_writes_total"),
        Some(7.0)
    );
    assert_eq!(
        metric_value(METRICS, "thermostat_poll_lateness_seconds_max"),
        Some(0.9)
    );
    assert_eq!(metric_value(METRICS, "thermostat_missing"), None);
    assert_eq!(family_sum(METRICS, "thermostat_polls_total"), (2, 42.0));
}

#[test]
fn percentiles_are_bucket_upper_bounds() {
    let buckets = Buckets::parse(METRICS, "thermostat_poll_lateness_seconds").expect("histogram");
    assert_eq!(buckets.count(), 100);
    assert_eq!(buckets.quantile_bound(0.5), Some(0.001));
    assert_eq!(buckets.quantile_bound(0.51), Some(0.01));
    assert_eq!(buckets.quantile_bound(0.99), Some(0.25));
    assert_eq!(buckets.max_bound(), Some(f64::INFINITY));
    assert_eq!(buckets.at_or_under(0.25), 99);
}

#[test]
fn window_delta_subtracts_an_earlier_scrape() {
    let later = Buckets::parse(METRICS, "thermostat_poll_lateness_seconds").expect("histogram");
    let earlier = Buckets {
        bounds: later.bounds.clone(),
        cumulative: vec![40, 60, 60, 61],
    };
    let window = later.since(&earlier);
    assert_eq!(window.cumulative, [10, 38, 39, 39]);
    assert_eq!(window.quantile_bound(0.99), Some(0.25));
    let empty = earlier.since(&earlier);
    assert_eq!(empty.quantile_bound(0.5), None);
}

#[test]
fn sizes_and_arithmetic() {
    assert_eq!(parse_sizes("10, 100,1000"), Ok(vec![10, 100, 1000]));
    assert!(parse_sizes("10,0").is_err());
    assert!(parse_sizes("ten").is_err());
    assert_eq!(median(&[5, 1, 3]), 3);
    assert_eq!(median(&[]), 0);
    assert_eq!(micros_per(Duration::from_millis(30), 300), Some(100.0));
    assert_eq!(micros_per(Duration::from_millis(30), 0), None);
    assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
    assert_eq!(format_bound_ms(Some(0.25), 5.0), "<=250");
    assert_eq!(format_bound_ms(Some(f64::INFINITY), 5.0), ">5000");
}

#[test]
fn whole_numbers_below_minimum_rejected() {
    assert_eq!(parse_whole_number("--seconds", "60", 5), Ok(60));
    assert_eq!(parse_whole_number("--realistic", "0", 0), Ok(0));

    let small = parse_whole_number("--seconds", "2", 5).expect_err("2 is under the minimum");
    assert!(small.contains("--seconds 2"), "{small}");
    assert!(small.contains("5 or more"), "{small}");

    let negative = parse_whole_number("--seconds", "-1", 5).expect_err("-1 is not a whole number");
    assert!(negative.contains("\"-1\""), "{negative}");
}

#[test]
fn daemon_must_be_executable_file() {
    use std::os::unix::fs::PermissionsExt;

    let folder = std::env::temp_dir().join(format!("bench-measure-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("create the test folder");
    let binary = folder.join("daemon");
    std::fs::write(&binary, b"#!/bin/sh\n").expect("write the test daemon");

    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o644))
        .expect("make the test daemon not executable");
    let not_executable = check_daemon(&binary).expect_err("mode 644 is not executable");
    assert!(
        not_executable.contains("not executable"),
        "{not_executable}"
    );

    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))
        .expect("make the test daemon executable");
    assert_eq!(check_daemon(&binary), Ok(()));

    let folder_error = check_daemon(&folder).expect_err("a folder is not a daemon");
    assert!(folder_error.contains("not a file"), "{folder_error}");

    let missing = check_daemon(&folder.join("missing")).expect_err("the file is missing");
    assert!(missing.contains("cargo build --release"), "{missing}");

    std::fs::remove_dir_all(&folder).expect("remove the test folder");
}

#[test]
fn http_replies_plain_and_chunked() {
    let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(parse_http_reply(plain), Some((200, b"hello".to_vec())));
    let chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nthe \r\na;x=1\r\nthermostat\r\n0\r\n\r\n";
    assert_eq!(
        parse_http_reply(chunked),
        Some((200, b"the thermostat".to_vec()))
    );
    let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nshort";
    assert_eq!(parse_http_reply(cut), None);
    assert_eq!(parse_http_reply(b"garbage"), None);
}

#[test]
fn unit_environment_lines_read_in_order() {
    let unit = "[Service]\n\
        # Environment=COMMENTED=1\n\
        Environment=MALLOC_ARENA_MAX=2 \"GREETING=a b\"\n\
        ExecStart=/bin/true\n\
        Environment=MALLOC_ARENA_MAX=1\n";
    assert_eq!(
        unit_environment(unit),
        vec![
            ("GREETING".to_string(), "a b".to_string()),
            ("MALLOC_ARENA_MAX".to_string(), "1".to_string()),
        ]
    );
    assert!(unit_environment("Environment=A=1\nEnvironment=\n").is_empty());
}
