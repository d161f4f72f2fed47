//! `thermostat-server db check|gaps|minutes`: the database diagnostics that replaced
//! the site's diagnostic, minute-analysis and gap-analysis scripts. They only read. The
//! queries live in `store::report` and run on a blocking client of this (non-async)
//! thread.

use std::ffi::OsString;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::EXIT_OK;
use super::operator::{self, Options, Spec, Targets};
use super::render::{self, Table};
use crate::config::Config;
use crate::store::report::{self, DatabaseCheck, MinuteReport, ThermostatGaps};

/// Poll failures this close to a gap are listed with it.
const FAILURE_MARGIN: SignedDuration = SignedDuration::from_mins(5);

const DEFAULT_GAPS_SINCE: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_MINUTES_SINCE: Duration = Duration::from_secs(3600);

const USAGE: &str = "\
Usage: thermostat-server db COMMAND --config FILE [OPTIONS]

Commands:
  check       Schema version, row counts, newest reading per thermostat, public server
              outbox backlog and oldest unsent row, table sizes
  gaps        Minutes without a minute row, per thermostat, merged into ranges, with
              the poll failures around each range
  minutes ID  The minute rows of one thermostat

Every command reads database.url from the config and changes nothing. Run
`db COMMAND --help` for each command's options.";

const CHECK: Spec = Spec {
    name: "db check",
    usage: "\
Usage: thermostat-server db check --config FILE [--json]

Row counts of tables the planner estimates at a million rows or more are that
estimate, marked ~ (JSON: estimated_row_counts), because counting them exactly reads
the whole table.

Options:
  --config FILE  Site configuration; database.url sets the database
  --json         Print JSON instead of text",
    targets: Targets::None,
    takes: &["json"],
    settings: false,
};

const GAPS: Spec = Spec {
    name: "db gaps",
    usage: "\
Usage: thermostat-server db gaps --config FILE [--since DURATION] [--json]

Lists, for every active thermostat, the closed minutes that have no row in
minute_readings, merged into ranges of consecutive minutes, with the poll failures
(by kind) from 5 minutes before to 5 minutes after each range. A thermostat is checked
from --since ago or from when it was first seen, up to the last rolled-up minute.

Options:
  --config FILE     Site configuration; database.url sets the database
  --since DURATION  How far back to look: a whole number with s, m, h or d (seconds,
                    minutes, hours, days), such as 90m, 6h or 2d (default 24h)
  --json            Print JSON instead of tables",
    targets: Targets::None,
    takes: &["json", "since"],
    settings: false,
};

const MINUTES: Spec = Spec {
    name: "db minutes",
    usage: "\
Usage: thermostat-server db minutes ID --config FILE [--since DURATION] [--json]

Prints the minute rows of one thermostat, oldest first: mean temperature (°F), last
heat and cool setpoints (°F), mean outside temperature (°F), HVAC runtime (% of polls
heating or cooling), last mode, and successful and failed polls. Times are minute
starts in site.time_zone.

Options:
  --config FILE     Site configuration; database.url sets the database
  --since DURATION  How far back to look: a whole number with s, m, h or d (seconds,
                    minutes, hours, days), such as 90m, 6h or 2d (default 1h)
  --json            Print JSON instead of a table",
    targets: Targets::One,
    takes: &["json", "since"],
    settings: false,
};

/// Runs `db` with `args` (after `db`) and returns the exit status.
pub fn run(args: Vec<OsString>) -> i32 {
    let commands = [&CHECK, &GAPS, &MINUTES];
    let operator::Session {
        spec,
        options,
        config,
        mut client,
    } = match operator::start("db", USAGE, &commands, args) {
        Ok(session) => session,
        Err(status) => return status,
    };

    let result = match spec.name {
        "db check" => check(&mut client, &options, &config),
        "db gaps" => gaps(&mut client, &options, &config),
        _ => minutes(&mut client, &options, &config),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(message) => operator::fail(spec, &message),
    }
}

fn since(options: &Options, default: Duration) -> Timestamp {
    let span =
        SignedDuration::try_from(options.since.unwrap_or(default)).unwrap_or(SignedDuration::MAX);
    Timestamp::now()
        .checked_sub(span)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn text_time(ts: Option<Timestamp>) -> Value {
    ts.map_or(Value::Null, |ts| ts.to_string().into())
}

fn check(client: &mut postgres::Client, options: &Options, config: &Config) -> Result<(), String> {
    let check =
        report::database_check(client, report::EXACT_COUNT_LIMIT).map_err(operator::describe)?;
    if options.json {
        operator::print_json(&check_json(&check));
    } else {
        print!("{}", check_text(&check, &config.site.time_zone));
    }
    Ok(())
}

fn check_json(check: &DatabaseCheck) -> Value {
    let pairs = |list: &[(String, i64)]| -> Value {
        list.iter()
            .map(|(name, value)| (name.clone(), Value::from(*value)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let counts: serde_json::Map<String, Value> = check
        .row_counts
        .iter()
        .map(|count| (count.table.clone(), Value::from(count.rows)))
        .collect();
    let estimated: Vec<&str> = check
        .row_counts
        .iter()
        .filter(|count| count.estimated)
        .map(|count| count.table.as_str())
        .collect();
    json!({
        "schema_version": check.schema_version,
        "expected_schema_version": check.expected_version,
        "row_counts": counts,
        "estimated_row_counts": estimated,
        "newest_readings": check.newest_readings.iter()
            .map(|(id, ts)| json!({"thermostat_id": id, "ts": text_time(*ts)}))
            .collect::<Vec<_>>(),
        "outbox_backlog": check.outbox_backlog,
        "oldest_unsent": text_time(check.oldest_unsent),
        "table_bytes": pairs(&check.table_sizes),
    })
}

fn check_text(check: &DatabaseCheck, zone: &jiff::tz::TimeZone) -> String {
    let version = match check.schema_version {
        Some(version) if version == check.expected_version => format!("{version} (current)"),
        Some(version) => format!(
            "{version} (this build expects {}; the daemon migrates on start)",
            check.expected_version
        ),
        None => "none: the daemon has not set up this database yet".to_string(),
    };
    let mut out = format!("Schema version: {version}\n\nRows\n");

    let mut rows = Table::new(&["TABLE", "ROWS"]);
    for count in &check.row_counts {
        // An estimate comes from the planner's statistics, for tables too large to count.
        let prefix = if count.estimated { "~" } else { "" };
        rows.push(vec![count.table.clone(), format!("{prefix}{}", count.rows)]);
    }
    out.push_str(&rows.render());

    out.push_str("\nNewest reading per thermostat\n");
    let mut newest = Table::new(&["ID", "NEWEST READING"]);
    for (id, ts) in &check.newest_readings {
        newest.push(vec![id.clone(), render::local_time(*ts, zone)]);
    }
    out.push_str(&newest.render());

    out.push_str(&format!(
        "\nPublic server outbox: {} unsent state change(s), oldest {}\n",
        check.outbox_backlog,
        render::local_time(check.oldest_unsent, zone)
    ));

    out.push_str("\nTable sizes (with indexes)\n");
    let mut sizes = Table::new(&["TABLE", "SIZE"]);
    for (table, bytes) in &check.table_sizes {
        sizes.push(vec![table.clone(), render::bytes(*bytes)]);
    }
    out.push_str(&sizes.render());
    out
}

fn gaps(client: &mut postgres::Client, options: &Options, config: &Config) -> Result<(), String> {
    let from = since(options, DEFAULT_GAPS_SINCE);
    let report = report::gap_report(client, from, FAILURE_MARGIN).map_err(operator::describe)?;
    if options.json {
        let list: Vec<Value> = report.iter().map(gaps_json).collect();
        operator::print_json(&json!({ "since": from.to_string(), "thermostats": list }));
    } else {
        print!("{}", gaps_text(&report, &config.site.time_zone));
    }
    Ok(())
}

fn gaps_json(thermostat: &ThermostatGaps) -> Value {
    let gaps: Vec<Value> = thermostat
        .gaps
        .iter()
        .map(|gap| {
            let failures: Vec<Value> = gap
                .failures
                .iter()
                .map(|failure| {
                    json!({
                        "kind": failure.kind,
                        "count": failure.count,
                        "first": failure.first.to_string(),
                        "last": failure.last.to_string(),
                    })
                })
                .collect();
            json!({
                "first_minute": gap.range.first.to_string(),
                "end": gap.range.end.to_string(),
                "minutes": gap.range.len(),
                "failures_around": failures,
            })
        })
        .collect();
    json!({
        "thermostat_id": thermostat.id,
        "name": thermostat.name,
        "checked_from": thermostat.window.first.to_string(),
        "checked_to": thermostat.window.end.to_string(),
        "missing_minutes": thermostat.gaps.iter().map(|gap| gap.range.len()).sum::<usize>(),
        "gaps": gaps,
    })
}

fn gaps_text(report: &[ThermostatGaps], zone: &jiff::tz::TimeZone) -> String {
    let mut out = String::new();
    for thermostat in report {
        let missing: usize = thermostat.gaps.iter().map(|gap| gap.range.len()).sum();
        out.push_str(&format!(
            "{} {}: {missing} missing minute(s) in {} range(s) of {} checked\n",
            thermostat.id,
            thermostat.name,
            thermostat.gaps.len(),
            thermostat.window.len()
        ));
        if thermostat.gaps.is_empty() {
            continue;
        }
        let mut table = Table::new(&["FROM", "TO", "MINUTES", "POLL FAILURES AROUND"]);
        for gap in &thermostat.gaps {
            let last_minute = gap.range.end - SignedDuration::from_mins(1);
            let failures: Vec<String> = gap
                .failures
                .iter()
                .map(|failure| format!("{} x{}", failure.kind, failure.count))
                .collect();
            table.push(vec![
                render::local_minute(gap.range.first, zone),
                render::local_minute(last_minute, zone),
                gap.range.len().to_string(),
                if failures.is_empty() {
                    "none".to_string()
                } else {
                    failures.join(", ")
                },
            ]);
        }
        for line in table.render().lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if report.is_empty() {
        out.push_str("no active thermostat in the database\n");
    }
    out
}

fn minutes(
    client: &mut postgres::Client,
    options: &Options,
    config: &Config,
) -> Result<(), String> {
    let Some(id) = &options.id else {
        return Err("db minutes needs a thermostat ID".to_string());
    };
    let known = report::thermostats(client, Some(id)).map_err(operator::describe)?;
    if known.is_empty() {
        return Err(format!(
            "no thermostat with id {id} in the database; tstat list shows the known ids"
        ));
    }
    let rows = report::minute_rows(client, id, since(options, DEFAULT_MINUTES_SINCE))
        .map_err(operator::describe)?;
    if options.json {
        let list: Vec<Value> = rows.iter().map(minute_json).collect();
        operator::print_json(&json!({ "thermostat_id": id.as_str(), "minutes": list }));
    } else {
        print!("{}", minutes_table(&rows, &config.site.time_zone).render());
        println!("{} minute row(s)", rows.len());
    }
    Ok(())
}

fn minute_json(row: &MinuteReport) -> Value {
    json!({
        "minute": row.minute.to_string(),
        "temp_avg": row.temp_avg,
        "t_heat_last": row.t_heat_last,
        "t_cool_last": row.t_cool_last,
        "local_temp_avg": row.local_temp_avg,
        "hvac_runtime_percent": row.hvac_runtime_percent,
        "tmode_last": row.tmode_last,
        "poll_count": row.poll_count,
        "poll_failures": row.poll_failures,
    })
}

fn minutes_table(rows: &[MinuteReport], zone: &jiff::tz::TimeZone) -> Table {
    let mut table = Table::new(&[
        "MINUTE",
        "TEMP °F",
        "HEAT °F",
        "COOL °F",
        "OUTSIDE °F",
        "HVAC %",
        "MODE",
        "POLLS",
        "FAILED",
    ]);
    for row in rows {
        let mode = row
            .tmode_last
            .and_then(|code| crate::reading::Tmode::from_code(i64::from(code)))
            .map_or("-", |mode| mode.name());
        table.push(vec![
            render::local_minute(row.minute, zone),
            render::degrees(row.temp_avg),
            render::degrees(row.t_heat_last),
            render::degrees(row.t_cool_last),
            render::degrees(row.local_temp_avg),
            render::degrees(row.hvac_runtime_percent),
            mode.to_string(),
            row.poll_count.to_string(),
            row.poll_failures.to_string(),
        ]);
    }
    table
}
