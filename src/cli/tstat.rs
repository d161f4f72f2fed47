//! `thermostat-server tstat list|status|set|time-sync|schedule`: the site scripts that
//! listed the thermostats, set them all to heat, set their clocks and showed a schedule.
//!
//! Thermostats are taken from the database. Requests go through [`Reach`]: the running
//! daemon when its API responds, a `DeviceLink` of this process otherwise. With `--all`
//! every thermostat is tried, one after the other, and any failure makes the exit
//! status 1 at the end.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};

use serde_json::{Value, json};

use jiff::Timestamp;

use super::args::{confirms, needs_confirmation, settings_change};
use super::operator::{self, Options, Spec, Targets};
use super::reach::{Reach, SetOutcome, TimeSync};
use super::render::{self, STATE_HEADER, Table};
use super::{EXIT_FAILURE, EXIT_OK};
use crate::api::views;
use crate::config::Config;
use crate::device::{DAY_NAMES, WeekProgram};
use crate::reading::ThermostatState;
use crate::store::queries;
use crate::store::report::{self, DesiredSummary};
use crate::thermostat::{ThermostatId, ThermostatRecord};

const USAGE: &str = "\
Usage: thermostat-server tstat COMMAND [ID|--all] --config FILE [OPTIONS]

Commands:
  list                  Thermostats in the database: id, name, address, model,
                        firmware, last seen and whether a reading arrived lately
  status ID|--all       Read each thermostat's state now (GET /tstat)
  set ID|--all OPTIONS  Change mode, setpoints, fan or hold, verified by reading back
  time-sync ID|--all    Set each thermostat's clock to the site's local time, skipping
                        units with a temporary setpoint
  schedule ID           Show the heat and cool weekly programs

ID is the thermostat's uuid as `tstat list` shows it. Requests go through the running
daemon's local API when it accepts connections (api.listen, with THERMOSTAT_API_TOKEN
when set), so a thermostat never gets two requests at once. When nothing listens
there, this command talks to the thermostat itself; when something listens but
rejects the request or does not respond within 10 s, it stops with exit status 1.
Run `tstat COMMAND --help` for each command's options.";

const LIST: Spec = Spec {
    name: "tstat list",
    usage: "\
Usage: thermostat-server tstat list --config FILE [--json]

Lists the thermostats stored in the database.

Options:
  --config FILE  Site configuration; database.url sets the database
  --json         Print JSON instead of a table

ONLINE is yes when the newest reading is younger than 3 poll intervals plus the
request timeout (polling.interval_seconds and polling.request_timeout_seconds).",
    targets: Targets::None,
    takes: &["json"],
    settings: false,
};

const STATUS: Spec = Spec {
    name: "tstat status",
    usage: "\
Usage: thermostat-server tstat status ID|--all --config FILE [--json]

Reads each thermostat's state now with GET /tstat and prints temperature (°F), mode,
heat and cool setpoints (°F), fan mode, HVAC activity, hold and temporary override.
Below it, from device_config: the desired settings, who commanded them and when, the
drift policy (enforce, report or off), whether the unit keeps its settings, and the
drift and re-apply events of the last 24 hours by kind.

Options:
  --config FILE  Site configuration
  --all          Every active thermostat in the database
  --json         Print JSON instead of a table",
    targets: Targets::OneOrAll,
    takes: &["json", "all"],
    settings: false,
};

const SET: Spec = Spec {
    name: "tstat set",
    usage: "\
Usage: thermostat-server tstat set ID|--all --config FILE [OPTIONS]

Changes settings the way remote commands do: setpoints rounded to 0.5 °F, only the
setpoint of the unit's mode is posted, and the result is read back and sent once more
if it did not stick. Give at least one of:

  --mode off|heat|cool|auto  Operating mode (tmode); auto only on models that have it
  --heat °F                  Heat setpoint (t_heat), 35 to 95 °F
  --cool °F                  Cool setpoint (t_cool), 35 to 95 °F
  --fan auto|circulate|on    Fan mode (fmode); circulate only on CT80 models
  --hold on|off              Keep the setpoint across program periods (hold)

A setpoint must match the mode the unit will be in (the current one, or --mode), since
posting it in the other mode would switch the unit; CT80 Rev B units in auto mode
take both. A model that cannot make the change fails without any write. An applied
change is recorded in device_config with source command_line (local_api when the
daemon applied it).

Other options:
  --config FILE  Site configuration
  --all          Every active thermostat in the database
  --yes          Do not ask for confirmation (asked only with --all from a terminal)
  --json         Print JSON instead of lines",
    targets: Targets::OneOrAll,
    takes: &["json", "all", "yes", "mode", "heat", "cool", "fan", "hold"],
    settings: true,
};

const TIME_SYNC: Spec = Spec {
    name: "tstat time-sync",
    usage: "\
Usage: thermostat-server tstat time-sync ID|--all --config FILE [--yes] [--json]

Sets each thermostat's clock (day, hour, minute) to the local time of site.time_zone.
A clock write clears a temporary setpoint, so a unit with one (override 1), in auto
mode or with an unknown setpoint is skipped and named on stdout. After a write the
setpoint is read back and put back if it changed.

Options:
  --config FILE  Site configuration
  --all          Every active thermostat in the database
  --yes          Do not ask for confirmation (asked only with --all from a terminal)
  --json         Print JSON instead of lines",
    targets: Targets::OneOrAll,
    takes: &["json", "all", "yes"],
    settings: false,
};

const SCHEDULE: Spec = Spec {
    name: "tstat schedule",
    usage: "\
Usage: thermostat-server tstat schedule ID --config FILE [--json]

Reads GET /tstat/program/heat, then /tstat/program/cool, with polling.program_gap_seconds
(15 s by default) of quiet before, between and after them, and prints each as a week
table: days as rows, program periods as columns, each period as its start time (HH:MM)
and target (°F). Expect it to take 30 s or more; the daemon's polls of that unit wait.

Options:
  --config FILE  Site configuration
  --json         Print JSON instead of tables",
    targets: Targets::One,
    takes: &["json"],
    settings: false,
};

/// Runs `tstat` with `args` (after `tstat`) and returns the exit status.
pub fn run(args: Vec<OsString>) -> i32 {
    let commands = [&LIST, &STATUS, &SET, &TIME_SYNC, &SCHEDULE];
    let operator::Session {
        spec,
        options,
        config,
        mut client,
    } = match operator::start("tstat", USAGE, &commands, args) {
        Ok(session) => session,
        Err(status) => return status,
    };
    if spec.name == LIST.name {
        return list(&mut client, &options, &config);
    }
    let targets = match operator::load_targets(&mut client, &options) {
        Ok(targets) => targets,
        Err(message) => return operator::fail(spec, &message),
    };
    match spec.name {
        "tstat set" => set(&options, &config, &targets, &mut client),
        "tstat time-sync" => time_sync(&options, &config, &targets),
        "tstat schedule" => schedule(&options, &config, &targets[0]),
        _ => status(&options, &config, &targets, &mut client),
    }
}

/// Picks the way to the thermostats and prints it on stderr, or returns exit status 1
/// when neither way is safe.
fn announce(spec: &Spec, config: &Config, count: usize) -> Result<Reach, i32> {
    let reach = Reach::detect(config).map_err(|message| operator::fail(spec, &message))?;
    eprintln!("{}: {count} thermostat(s), {}", spec.name, reach.describe());
    Ok(reach)
}

/// Asks on the terminal before a write to every thermostat, unless `--yes`. Prints
/// that nothing was changed when the operator declines.
fn confirmed(spec: &Spec, options: &Options, action: &str, count: usize) -> bool {
    if !needs_confirmation(options.all, options.yes, std::io::stdin().is_terminal()) {
        return true;
    }
    eprint!("{action} on {count} thermostat(s)? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let confirmed = match std::io::stdin().lock().read_line(&mut answer) {
        Ok(_) => confirms(&answer),
        Err(_) => false,
    };
    if !confirmed {
        eprintln!(
            "thermostat-server {}: cancelled; nothing was changed",
            spec.name
        );
    }
    confirmed
}

/// One thermostat and what the command got from it.
type Attempt<'a, T> = (&'a ThermostatRecord, Result<T, String>);

/// Runs `action` on every target in turn, one thermostat after the other, with a
/// progress line on stderr for `--all` and the error of each failure.
fn attempt_each<'a, T>(
    spec: &Spec,
    options: &Options,
    targets: &'a [ThermostatRecord],
    mut action: impl FnMut(&ThermostatRecord) -> Result<T, String>,
) -> Vec<Attempt<'a, T>> {
    let mut attempts = Vec::with_capacity(targets.len());
    for (index, target) in targets.iter().enumerate() {
        let result = action(target);
        if options.all {
            let verdict = if result.is_ok() { "done" } else { "failed" };
            eprintln!("[{}/{}] {} {verdict}", index + 1, targets.len(), target.id);
        }
        if let Err(message) = &result {
            eprintln!(
                "thermostat-server {}: thermostat {}: {message}",
                spec.name, target.id
            );
        }
        attempts.push((target, result));
    }
    attempts
}

/// Prints the attempts as one JSON document (`--json`, each success through `to_json`)
/// or through `print_human`, and returns 1 when any attempt failed.
fn report<T>(
    spec: &Spec,
    options: &Options,
    attempts: &[Attempt<'_, T>],
    to_json: impl Fn(&T) -> Value,
    print_human: impl FnOnce(Vec<(&ThermostatRecord, &T)>),
) -> i32 {
    if options.json {
        let list: Vec<Value> = attempts
            .iter()
            .map(|(target, result)| {
                let mut body = match result {
                    Ok(value) => to_json(value),
                    Err(message) => json!({ "error": message }),
                };
                body["thermostat_id"] = target.id.as_str().into();
                body["name"] = target.name.clone().into();
                body
            })
            .collect();
        operator::print_json(&json!({ "thermostats": list }));
    } else {
        let successes = attempts
            .iter()
            .filter_map(|(target, result)| result.as_ref().ok().map(|value| (*target, value)))
            .collect();
        print_human(successes);
    }

    let failed = attempts
        .iter()
        .filter(|(_, result)| result.is_err())
        .count();
    if failed == 0 {
        return EXIT_OK;
    }
    eprintln!(
        "thermostat-server {}: {failed} of {} thermostat(s) failed",
        spec.name,
        attempts.len()
    );
    EXIT_FAILURE
}

fn status(
    options: &Options,
    config: &Config,
    targets: &[ThermostatRecord],
    client: &mut postgres::Client,
) -> i32 {
    let reach = match announce(&STATUS, config, targets.len()) {
        Ok(reach) => reach,
        Err(status) => return status,
    };
    let summaries = desired_summaries(client);

    let attempts = attempt_each(&STATUS, options, targets, |target| {
        let summary = summaries
            .iter()
            .find(|(id, _)| *id == target.id)
            .map(|(_, summary)| summary.clone());
        reach.status(target).map(|state| (state, summary))
    });
    let to_json = |(state, summary): &(ThermostatState, Option<DesiredSummary>)| {
        let mut body = views::state_json(Timestamp::now(), state, None);
        body["desired"] = summary.as_ref().map_or(Value::Null, desired_json);
        body
    };
    report(&STATUS, options, &attempts, to_json, |successes| {
        let mut table = Table::new(&[&["ID", "NAME"][..], &STATE_HEADER[..]].concat());
        let mut desired = Table::new(&render::DESIRED_HEADER);
        for (target, (state, summary)) in &successes {
            let mut row = vec![target.id.to_string(), target.name.clone()];
            row.extend(render::state_cells(state));
            table.push(row);
            if let Some(summary) = summary {
                let mut row = vec![target.id.to_string()];
                row.extend(render::desired_cells(summary));
                desired.push(row);
            }
        }
        if !table.is_empty() {
            print!("{}", table.render());
        }
        if !desired.is_empty() {
            println!("\nDesired state (device_config) and drift in the last 24 hours:");
            print!("{}", desired.render());
        }
    })
}

/// Loads the desired state summaries, or none with a warning on stderr: the live state
/// is still worth printing when the drift tables cannot be read.
fn desired_summaries(client: &mut postgres::Client) -> Vec<(ThermostatId, DesiredSummary)> {
    report::desired_summaries(client).unwrap_or_else(|error| {
        eprintln!(
            "thermostat-server tstat status: desired state not shown: {}",
            operator::describe(error)
        );
        Vec::new()
    })
}

fn desired_json(summary: &DesiredSummary) -> Value {
    let events: serde_json::Map<String, Value> = summary
        .recent_events
        .iter()
        .map(|(kind, count)| (kind.clone(), (*count).into()))
        .collect();
    json!({
        "settings": summary.settings.describe(),
        "source": summary.source,
        "commanded_at": summary.commanded_at.map(|at| at.to_string()),
        "policy": summary.policy,
        "holding_settings": summary.holding_settings,
        "drift_events_24h": events,
    })
}

/// Label of `device_config` rows for changes this command applied itself; through the
/// daemon, the local API records them as `local_api`.
const RECORD_SOURCE: &str = "command_line";

fn set(
    options: &Options,
    config: &Config,
    targets: &[ThermostatRecord],
    client: &mut postgres::Client,
) -> i32 {
    // `operator::parse` has checked the settings already; this only converts them.
    let change = match settings_change(&options.fields) {
        Ok(change) => change,
        Err(message) => return operator::usage_error(&SET, &message),
    };
    let action = format!("apply {}", change.describe());
    if !confirmed(&SET, options, &action, targets.len()) {
        return EXIT_FAILURE;
    }

    let reach = match announce(&SET, config, targets.len()) {
        Ok(reach) => reach,
        Err(status) => return status,
    };
    let attempts = attempt_each(&SET, options, targets, |target| {
        let outcome = reach.set(target, &change)?;
        if reach.is_direct() {
            queries::record_settings(client, &target.id, &change, RECORD_SOURCE, Timestamp::now())
                .map_err(|error| {
                    format!(
                        "applied {}, but device_config was not updated: {error}",
                        change.describe()
                    )
                })?;
        }
        Ok(outcome)
    });
    let to_json = |outcome: &SetOutcome| {
        json!({
            "applied": change.describe(),
            "writes": outcome.writes,
            "state": views::state_json(Timestamp::now(), &outcome.state, None),
        })
    };
    report(&SET, options, &attempts, to_json, |successes| {
        for (target, outcome) in successes {
            println!(
                "{}: applied {} in {} write(s); now {}",
                target.id,
                change.describe(),
                outcome.writes,
                summary(&outcome.state)
            );
        }
    })
}

fn summary(state: &ThermostatState) -> String {
    let mode = state.tmode.map_or("unknown mode", |mode| mode.name());
    let setpoint = match (state.t_heat, state.t_cool) {
        (Some(heat), _) if mode == "heat" => format!(", heat setpoint {heat:.1} °F"),
        (_, Some(cool)) if mode == "cool" => format!(", cool setpoint {cool:.1} °F"),
        _ => String::new(),
    };
    let hold = match state.hold {
        Some(true) => ", hold on",
        Some(false) => ", hold off",
        None => "",
    };
    format!("{mode}{setpoint}{hold}")
}

fn time_sync(options: &Options, config: &Config, targets: &[ThermostatRecord]) -> i32 {
    if !confirmed(&TIME_SYNC, options, "set the clock", targets.len()) {
        return EXIT_FAILURE;
    }
    let reach = match announce(&TIME_SYNC, config, targets.len()) {
        Ok(reach) => reach,
        Err(status) => return status,
    };
    let attempts = attempt_each(&TIME_SYNC, options, targets, |target| {
        reach.time_sync(target)
    });
    report(
        &TIME_SYNC,
        options,
        &attempts,
        time_sync_json,
        |successes| {
            for (target, outcome) in successes {
                match outcome {
                    TimeSync::Synced => println!("{}: clock set", target.id),
                    TimeSync::Restored(value) => println!(
                        "{}: clock set; the setpoint {value:.1} °F was put back",
                        target.id
                    ),
                    TimeSync::Skipped(reason) => {
                        println!("{}: skipped, clock not set: {reason}", target.id);
                    }
                }
            }
        },
    )
}

fn time_sync_json(outcome: &TimeSync) -> Value {
    match outcome {
        TimeSync::Synced => json!({"outcome": "synced"}),
        TimeSync::Restored(value) => json!({"outcome": "restored", "target": value}),
        TimeSync::Skipped(reason) => json!({"outcome": "skipped", "reason": reason}),
    }
}

fn list(client: &mut postgres::Client, options: &Options, config: &Config) -> i32 {
    let overviews = match crate::store::report::thermostats(client, None) {
        Ok(overviews) => overviews,
        Err(error) => return operator::fail(&LIST, &error.to_string()),
    };
    let window = config.polling.interval * 3 + config.polling.request_timeout;
    let now = jiff::Timestamp::now();
    let online = |seen: Option<jiff::Timestamp>| is_online(seen, now, window);

    if options.json {
        let list: Vec<Value> = overviews
            .iter()
            .map(|overview| {
                let record = &overview.record;
                json!({
                    "thermostat_id": record.id.as_str(),
                    "name": record.name,
                    "address": record.address.to_string(),
                    "model": record.model,
                    "fw_version": record.fw_version,
                    "active": record.active,
                    "last_seen": record.last_seen.map(|ts| ts.to_string()),
                    "online": online(record.last_seen),
                })
            })
            .collect();
        operator::print_json(&json!({ "count": list.len(), "thermostats": list }));
        return EXIT_OK;
    }

    let mut table = Table::new(&[
        "ID",
        "NAME",
        "ADDRESS",
        "MODEL",
        "FIRMWARE",
        "LAST SEEN",
        "ONLINE",
    ]);
    for overview in &overviews {
        let record = &overview.record;
        table.push(vec![
            record.id.to_string(),
            record.name.clone(),
            record.address.to_string(),
            record.model.clone(),
            record.fw_version.clone().unwrap_or_else(|| "-".into()),
            render::local_time(record.last_seen, &config.site.time_zone),
            render::flag(Some(online(record.last_seen))),
        ]);
    }
    print!("{}", table.render());
    println!("{} thermostat(s)", overviews.len());
    EXIT_OK
}

/// Returns true when the newest reading is younger than `window`.
pub fn is_online(
    last_seen: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    window: std::time::Duration,
) -> bool {
    let Some(seen) = last_seen else {
        return false;
    };
    let age = now.duration_since(seen);
    age.as_secs_f64() <= window.as_secs_f64()
}

fn schedule(options: &Options, config: &Config, target: &ThermostatRecord) -> i32 {
    let reach = match announce(&SCHEDULE, config, 1) {
        Ok(reach) => reach,
        Err(status) => return status,
    };
    let (heat, cool) = match reach.schedule(target) {
        Ok(programs) => programs,
        Err(message) => {
            return operator::fail(&SCHEDULE, &format!("thermostat {}: {message}", target.id));
        }
    };
    if options.json {
        operator::print_json(&json!({
            "thermostat_id": target.id.as_str(),
            "heat": program_json(&heat),
            "cool": program_json(&cool),
        }));
    } else {
        println!("{} {}", target.id, target.name);
        println!("\nHeat program (start HH:MM, target °F)");
        print!("{}", program_table(&heat).render());
        println!("\nCool program (start HH:MM, target °F)");
        print!("{}", program_table(&cool).render());
    }
    EXIT_OK
}

/// Renders a week program as a table: one row per day, one column per period.
pub fn program_table(program: &WeekProgram) -> Table {
    let periods = program.days.iter().map(Vec::len).max().unwrap_or(0);
    let header: Vec<String> = std::iter::once("DAY".to_string())
        .chain((1..=periods).map(|number| format!("PERIOD {number}")))
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(&header);
    for (day, periods) in DAY_NAMES.iter().zip(&program.days) {
        let mut row = vec![day.to_string()];
        row.extend(
            periods
                .iter()
                .map(|period| format!("{} {:.1}", period.start_text(), period.target)),
        );
        table.push(row);
    }
    table
}

/// Returns a program as JSON: the days in order, Monday first, each with its periods.
fn program_json(program: &WeekProgram) -> Value {
    let days: Vec<Value> = DAY_NAMES
        .iter()
        .zip(&program.days)
        .map(|(day, periods)| {
            let list: Vec<Value> = periods
                .iter()
                .map(|period| json!({"start": period.start_text(), "target": period.target}))
                .collect();
            json!({ "day": day, "periods": list })
        })
        .collect();
    Value::from(days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::parse_program;
    use std::time::Duration;

    #[test]
    fn week_table_rows_are_days() {
        let program = parse_program(br#"{"0":[360,70,1320,62.5],"1":[360,70]}"#).expect("valid");
        let text = program_table(&program).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        assert!(
            lines[0].starts_with("DAY") && lines[0].ends_with("PERIOD 2"),
            "{text}"
        );
        assert_eq!(lines[1], "Mon  06:00 70.0  22:00 62.5");
        assert_eq!(lines[2], "Tue  06:00 70.0");
        assert_eq!(lines[7], "Sun");
    }

    #[test]
    fn online_needs_recent_reading() {
        let now: jiff::Timestamp = "2026-12-04T12:00:00Z".parse().expect("valid");
        let window = Duration::from_secs(60);
        let recent = now - jiff::SignedDuration::from_secs(30);
        let old = now - jiff::SignedDuration::from_secs(90);
        assert!(is_online(Some(recent), now, window));
        assert!(!is_online(Some(old), now, window));
        assert!(!is_online(None, now, window));
    }
}
